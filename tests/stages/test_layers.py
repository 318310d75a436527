"""Every layer's backward pass against finite differences, over several shapes, strides and paddings."""
from __future__ import annotations

import numpy as np
import pytest

from sparkcnn.schemas.network import Network
from sparkcnn.stages import avg_pool, conv, dropout, fc, loss, pool, relu, whole_network
from sparkcnn.stages.tabular import StageContext
from tests.stages.gradcheck import assert_gradient


def objective(out: np.ndarray, weights: np.ndarray) -> float:
    return float((out.astype(np.float64) * weights).sum())


@pytest.mark.parametrize("n,h,w,c,f,k,stride,pad", [
    (2, 7, 7, 3, 4, 3, 1, 1), (3, 8, 6, 2, 5, 5, 1, 2), (2, 9, 9, 3, 2, 3, 2, 0), (1, 10, 8, 4, 3, 4, 3, 2),
])
def test_conv_gradients(n, h, w, c, f, k, stride, pad):
    rng = np.random.default_rng(n * 100 + k)
    x = rng.standard_normal((n, h, w, c))
    params = {"w": rng.standard_normal((f, c, k, k)), "b": rng.standard_normal(f),
              "stride": stride, "padding": pad, "input_grad": True}
    out, cache = conv.forward(x, params)
    weights = rng.standard_normal(out.shape)
    dx, grads = conv.backward(weights, cache)

    def f_():
        return objective(conv.forward(x, params)[0], weights)

    assert_gradient(dx, f_, x)
    assert_gradient(grads["w"], f_, params["w"])
    assert_gradient(grads["b"], f_, params["b"])


def test_conv_matches_direct_convolution():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 6, 5, 3)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    out, _ = conv.forward(x, {"w": w, "b": b, "stride": 2, "padding": 1})
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    expected = np.zeros((2, 3, 3, 4), np.float32)
    for i in range(3):
        for j in range(3):
            patch = xp[:, 2 * i: 2 * i + 3, 2 * j: 2 * j + 3, :]
            expected[:, i, j, :] = np.einsum("nhwc,fchw->nf", patch, w) + b
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert out.dtype == np.float32


def test_first_layer_skips_input_gradient():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 5, 5, 3)).astype(np.float32)
    params = {"w": rng.standard_normal((2, 3, 3, 3)).astype(np.float32), "b": np.zeros(2, np.float32),
              "stride": 1, "padding": 1}
    out, cache = conv.forward(x, params)
    dx, grads = conv.backward(np.ones_like(out), cache)
    assert dx is None and set(grads) == {"w", "b"}


@pytest.mark.parametrize("shape", [(2, 4, 4, 3), (5, 7), (3, 2, 6, 1)])
def test_relu_gradients(shape):
    rng = np.random.default_rng(len(shape))
    x = rng.standard_normal(shape)
    x[np.abs(x) < 0.01] = 0.5  # keep finite differences away from the kink
    out, mask = relu.forward(x)
    weights = rng.standard_normal(shape)
    dx, _ = relu.backward(weights, mask)
    assert_gradient(dx, lambda: objective(relu.forward(x)[0], weights), x)


def test_relu_bitmask_round_trip():
    mask = np.random.default_rng(3).random((4, 5, 3, 7)) > 0.5
    bits = relu.pack_mask(mask)
    assert bits.shape == (4, (5 * 3 * 7 + 7) // 8) and bits.dtype == np.uint8
    np.testing.assert_array_equal(relu.unpack_mask(bits, (5, 3, 7)), mask)


@pytest.mark.parametrize("n,h,w,c,size,stride", [(2, 8, 8, 3, 2, 2), (2, 7, 9, 2, 3, 2), (1, 6, 6, 4, 3, 3), (2, 5, 5, 2, 2, 1)])
def test_pool_gradients(n, h, w, c, size, stride):
    rng = np.random.default_rng(size * 10 + stride)
    x = rng.permutation(n * h * w * c).reshape(n, h, w, c).astype(np.float64) * 0.01  # distinct values: no ties
    params = {"size": size, "stride": stride}
    out, cache = pool.forward(x, params)
    assert cache["argmax"].dtype == np.int8
    weights = rng.standard_normal(out.shape)
    dx, _ = pool.backward(weights, cache)
    assert_gradient(dx, lambda: objective(pool.forward(x, params)[0], weights), x, h=1e-4)


@pytest.mark.parametrize("h,size", [(8, 2), (9, 3), (7, 2)])
def test_pool_backward_is_bitwise_the_sum_it_stands_for(h, size):
    """dx is every window's dout routed to its maximum, summed from zeros: the same bits whether the
    windows tile the input (written once) or not, signed zeros included."""
    rng = np.random.default_rng(h)
    x = np.round(rng.standard_normal((3, h, h, 4)), 1).astype(np.float32)  # ties
    out, cache = pool.forward(x, {"size": size, "stride": size})
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dout[0, 0] = -0.0
    want = np.zeros(x.shape, np.float32)
    for k in range(size * size):
        i, j = divmod(k, size)
        view = want[:, i: i + size * out.shape[1]: size, j: j + size * out.shape[2]: size]
        view += dout * (cache["argmax"] == k)
    assert pool.backward(dout, cache)[0].tobytes() == want.tobytes()


def test_pool_rejects_window_beyond_int8():
    with pytest.raises(ValueError, match="int8"):
        pool.forward(np.zeros((1, 12, 12, 1), np.float32), {"size": 12, "stride": 12})


@pytest.mark.parametrize("n,shape,k", [(3, (4, 4, 2), 10), (5, (7,), 3)])
def test_fc_gradients(n, shape, k):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, *shape))
    params = {"w": rng.standard_normal((int(np.prod(shape)), k)), "b": rng.standard_normal(k)}
    out, cache = fc.forward(x, params)
    weights = rng.standard_normal(out.shape)
    dx, grads = fc.backward(weights, cache)

    def f_():
        return objective(fc.forward(x, params)[0], weights)

    assert dx.shape == x.shape
    assert_gradient(dx, f_, x)
    assert_gradient(grads["w"], f_, params["w"])
    assert_gradient(grads["b"], f_, params["b"])


@pytest.mark.parametrize("n,k", [(4, 10), (7, 3)])
def test_softmax_cross_entropy_gradients(n, k):
    rng = np.random.default_rng(k)
    scores = rng.standard_normal((n, k)) * 3
    labels = rng.integers(0, k, n)
    losses, cache = loss.forward(scores, {"labels": labels})
    dout = np.full(n, 1.0 / n)
    dscores, _ = loss.backward(dout, cache)
    assert_gradient(dscores, lambda: float(loss.forward(scores, {"labels": labels})[0].mean()), scores)
    expected = -np.log(np.exp(scores)[np.arange(n), labels] / np.exp(scores).sum(axis=1))
    np.testing.assert_allclose(losses, expected, rtol=1e-10)


@pytest.mark.parametrize("n,h,w,c,size,stride", [(2, 8, 8, 3, 2, 2), (2, 7, 9, 2, 3, 2), (2, 5, 5, 2, 2, 1)])
def test_avg_pool_gradients(n, h, w, c, size, stride):
    rng = np.random.default_rng(size * 7 + stride)
    x = rng.standard_normal((n, h, w, c))
    params = {"size": size, "stride": stride}
    out, cache = avg_pool.forward(x, params)
    ho, wo = (h - size) // stride + 1, (w - size) // stride + 1
    np.testing.assert_allclose(out[:, 0, 0], x[:, :size, :size].mean(axis=(1, 2)), rtol=1e-6)
    assert out.shape == (n, ho, wo, c)
    weights = rng.standard_normal(out.shape)
    dx, _ = avg_pool.backward(weights, cache)
    assert_gradient(dx, lambda: objective(avg_pool.forward(x, params)[0], weights), x)


def test_dropout_gradients_and_mask():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 4, 2))
    ids = np.array([7, 8, 9])
    mask = dropout.keep_mask((4, 4, 2), 0.25, 0, 2, 5, ids)
    params = {"rate": 0.25, "mask": mask}
    out, cache = dropout.forward(x, params)
    np.testing.assert_allclose(out, np.where(mask, x / 0.75, 0), rtol=1e-6)
    weights = rng.standard_normal(out.shape)
    dx, _ = dropout.backward(weights, cache)
    assert_gradient(dx, lambda: objective(dropout.forward(x, params)[0], weights), x)
    # a pure function of (seed, layer, iteration, image id): the same image draws the same mask in any batch
    again = dropout.keep_mask((4, 4, 2), 0.25, 0, 2, 5, np.array([9, 7]))
    np.testing.assert_array_equal(again, mask[[2, 0]])
    assert not np.array_equal(dropout.keep_mask((4, 4, 2), 0.25, 0, 2, 6, ids), mask)
    assert 0.6 < mask.mean() < 0.9
    assert dropout.forward(x, {"rate": 0.25, "mask": None})[0] is x


def test_whole_network_gradients_by_finite_differences():
    """A stack with every layer type: whole_network.backward against finite differences of the mean loss."""
    layers = [{"type": "conv", "filters": 3, "kernel": 3, "padding": 1}, {"type": "relu"},
              {"type": "max_pool", "size": 2}, {"type": "conv", "filters": 4, "kernel": 3, "stride": 2},
              {"type": "avg_pool", "size": 2, "stride": 1}, {"type": "dropout", "rate": 0.3},
              {"type": "fc", "units": 6}, {"type": "relu"}, {"type": "fc", "units": 5}]
    net = Network(layers, (10, 10, 2), 5)
    rng = np.random.default_rng(11)
    params = {name: rng.standard_normal(shape) * 0.5 for name, shape in net.param_shapes.items()}
    x = rng.standard_normal((4, 10, 10, 2))
    labels = rng.integers(0, 5, 4)
    ctx = StageContext(net, params, normalizer=4, seed=3)
    keys = (2, np.arange(4))
    _, grads = whole_network.gradients(x, labels, ctx, keys)
    assert sorted(grads) == sorted(net.param_shapes)

    def mean_loss():
        return float(whole_network.forward(x, labels, ctx, keys)[0].sum() / 4)

    for name in grads:
        assert_gradient(grads[name], mean_loss, params[name], h=1e-5, samples=12)


@pytest.mark.parametrize("n,h,c,k,stride,pad", [(9, 7, 3, 3, 1, 1), (3, 9, 4, 3, 2, 1), (40, 5, 2, 5, 1, 2)])
def test_conv_input_gradient_is_bitwise_the_whole_batch_col2im(n, h, c, k, stride, pad, monkeypatch):
    """dx in cache-sized tiles of images is the same bits as the 25 slice-additions over the whole batch."""
    monkeypatch.setattr(conv, "COL2IM_BYTES", 1)  # one image a tile
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, h, h, c)).astype(np.float32)
    w = rng.standard_normal((4, c, k, k)).astype(np.float32)
    out, cache = conv.forward(x, {"w": w, "b": np.zeros(4, np.float32), "stride": stride, "padding": pad,
                                  "input_grad": True})
    dout = rng.standard_normal(out.shape).astype(np.float32)
    ho = out.shape[1]
    dcols = (dout.reshape(-1, 4) @ w.reshape(4, -1)).reshape(n, ho, ho, c, k, k)
    want = np.zeros((n, h + 2 * pad, h + 2 * pad, c), np.float32)
    for i in range(k):
        for j in range(k):
            want[:, i: i + stride * ho: stride, j: j + stride * ho: stride] += dcols[..., i, j]
    got = conv.backward(dout, cache)[0]
    assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(want[:, pad: pad + h, pad: pad + h]).tobytes()


@pytest.mark.parametrize("size,stride", [(3, 2), (2, 2), (2, 1)])
def test_pools_in_tiles_are_bitwise_the_whole_batch(size, stride, monkeypatch):
    """Max- and average-pooling a few images at a time give the bits of the whole batch at once (the
    argmax as the first greatest element of each window, ties included)."""
    rng = np.random.default_rng(size)
    x = np.round(rng.standard_normal((7, 9, 9, 3)), 1).astype(np.float32)
    params = {"size": size, "stride": stride}
    results = []
    for tile_bytes in (1, 1 << 30):
        monkeypatch.setattr(pool, "TILE_BYTES", tile_bytes)
        out, cache = pool.forward(x, params)
        avg, avg_cache = avg_pool.forward(x, params)
        dout = np.random.default_rng(1).standard_normal(out.shape).astype(np.float32)
        results.append([out, cache["argmax"], pool.backward(dout, cache)[0], avg,
                        avg_pool.backward(dout, avg_cache)[0]])
    assert all(a.tobytes() == b.tobytes() for a, b in zip(*results))
    ho = out.shape[1]
    windows = np.stack([x[:, i: i + stride * ho: stride, j: j + stride * ho: stride]
                        for i in range(size) for j in range(size)])
    np.testing.assert_array_equal(results[0][1], windows.argmax(axis=0))
