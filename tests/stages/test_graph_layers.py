"""batch_norm, add, global_avg_pool, conv without bias and a tensor with two readers against finite
differences; the running statistics' momentum steps."""
from __future__ import annotations

import numpy as np
import pytest

from sparkcnn.schemas.network import Network
from sparkcnn.stages import add, batch_norm, conv, global_avg_pool, update, whole_network
from sparkcnn.stages.tabular import StageContext
from tests.schemas.test_network import RESIDUAL
from tests.stages.gradcheck import assert_gradient


def objective(out: np.ndarray, weights: np.ndarray) -> float:
    return float((out.astype(np.float64) * weights).sum())


@pytest.mark.parametrize("shape", [(4, 3, 5, 3), (6, 7)])  # after a conv (per channel) and after an fc (per unit)
def test_batch_norm_gradients(shape):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape) * 2 + 1
    c = shape[-1]
    params = {"gamma": rng.standard_normal(c), "beta": rng.standard_normal(c), "running_mean": np.zeros(c),
              "running_var": np.ones(c), "eps": 1e-5, "training": True}
    weights = rng.standard_normal(shape)
    out, cache = batch_norm.forward(x, params)
    axes = tuple(range(x.ndim - 1))
    np.testing.assert_allclose(out.mean(axis=axes), params["beta"], atol=1e-9)
    dx, grads = batch_norm.backward(weights, cache)
    assert_gradient(dx, lambda: objective(batch_norm.forward(x, params)[0], weights), x, h=1e-5, rtol=1e-4)
    for name in ("gamma", "beta"):
        assert_gradient(grads[name], lambda: objective(batch_norm.forward(x, params)[0], weights), params[name],
                        h=1e-5, rtol=1e-4)


def test_batch_norm_inference_uses_the_running_statistics():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    params = {"gamma": np.full(4, 2, np.float32), "beta": np.ones(4, np.float32), "running_mean": np.full(4, 3, np.float32),
              "running_var": np.full(4, 4, np.float32), "eps": 0.0, "training": False}
    np.testing.assert_allclose(batch_norm.forward(x, params)[0], (x - 3) / 2 * 2 + 1)


def test_running_statistics_step_with_the_unbiased_variance():
    x = np.random.default_rng(2).standard_normal((5, 3))
    mean, var = batch_norm.running_step(np.zeros(3, np.float32), np.ones(3, np.float32), batch_norm.moments(x), 0.1)
    np.testing.assert_allclose(mean, 0.1 * x.mean(0), rtol=1e-6)
    np.testing.assert_allclose(var, 0.9 + 0.1 * x.var(0, ddof=1), rtol=1e-6)


def test_add_and_global_avg_pool_gradients():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 3, 4, 5))
    weights = rng.standard_normal((2, 3, 4, 5))
    dx, _ = add.backward(weights, add.forward((a, b))[1])
    for x in (a, b):
        assert_gradient(dx, lambda: objective(add.forward((a, b))[0], weights), x)
    weights = rng.standard_normal((2, 5))
    dx, _ = global_avg_pool.backward(weights, global_avg_pool.forward(a)[1])
    assert_gradient(dx, lambda: objective(global_avg_pool.forward(a)[0], weights), a)


def test_conv_without_bias_has_no_bias_gradient():
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((2, 5, 5, 3)), rng.standard_normal((4, 3, 3, 3))
    params = {"w": w, "stride": 1, "padding": 1, "input_grad": True}
    weights = rng.standard_normal((2, 5, 5, 4))
    dx, grads = conv.backward(weights, conv.forward(x, params)[1])
    assert set(grads) == {"w"}
    assert_gradient(dx, lambda: objective(conv.forward(x, params)[0], weights), x)


def test_residual_network_gradients_by_finite_differences():
    """A residual graph with a tensor read by two layers, a projection shortcut and batch norm after
    conv and fc layers: whole_network.backward against finite differences of the mean loss, in float64."""
    net = Network(RESIDUAL, (6, 6, 3), 10)
    rng = np.random.default_rng(5)
    params = {name: rng.standard_normal(shape) * 0.5 for name, shape in net.param_shapes.items()}
    params.update({name: np.full(shape, 0.5) for name, shape in net.state_shapes.items()})
    x = rng.standard_normal((4, 6, 6, 3))
    labels = rng.integers(0, 10, 4)
    ctx = StageContext(net, params, normalizer=4, seed=3)
    keys = (2, np.arange(4))
    _, grads = whole_network.gradients(x, labels, ctx, keys)
    assert sorted(grads) == sorted(net.param_shapes)

    def mean_loss():
        return float(whole_network.forward(x, labels, ctx, keys)[0].sum() / 4)

    for name in grads:
        assert_gradient(grads[name], mean_loss, params[name], h=1e-5, samples=6, rtol=1e-3, atol=1e-6)


def test_init_gives_batch_norm_ones_and_zeros_and_no_velocity_for_running_statistics():
    net = Network(RESIDUAL, (6, 6, 3), 10)
    params = update.init_params(net, 0)
    assert set(params) == {*net.param_shapes, *net.state_shapes}
    assert (params["stem_bn.gamma"] == 1).all() and (params["stem_bn.running_var"] == 1).all()
    assert set(update.zero_velocity(net)) == set(net.param_shapes)


def test_nesterov_and_warm_up_follow_pytorch():
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True)
    params, velocity = {"p": np.array([1.0, -2.0], np.float32)}, {"p": np.zeros(2, np.float32)}
    for g in ([0.5, 0.25], [-1.0, 2.0], [0.3, 0.3]):
        p.grad = torch.tensor(g)
        opt.step()
        params, velocity = update.sgd_step(params, velocity, {"p": np.array(g, np.float32)}, 0.1, 0.9, 0.01, True)
    np.testing.assert_allclose(params["p"], p.detach().numpy(), rtol=1e-6)
    rates = [update.learning_rate(1.0, "cosine", i, 10, 4) for i in range(10)]
    assert rates[:4] == [0.25, 0.5, 0.75, 1.0] and rates[4] == 1.0 and rates[7] == pytest.approx(0.5)


def test_whole_batch_statistics_from_shards_equal_the_batchs_own():
    """The kernels of whole-batch (synchronised) batch norm: per-shard count, mean and M2 combined in float64,
    and the backward through the batch sums of the gradients, equal the whole batch computed at once."""
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((9, 3, 3, 4)) * 3 + 1000).astype(np.float32)  # a large mean: no cancellation
    dout = rng.standard_normal(x.shape).astype(np.float32)
    c = x.shape[-1]
    params = {"gamma": rng.standard_normal(c).astype(np.float32), "beta": np.zeros(c, np.float32), "eps": 1e-5,
              "training": True}
    shards = [slice(0, 4), slice(4, 8), slice(8, 9)]
    count, mean, m2 = batch_norm.combine([batch_norm.moments(x[s]) for s in shards])
    whole = x.astype(np.float64).reshape(-1, c)
    assert count == whole.shape[0]
    np.testing.assert_allclose(mean, whole.mean(0), rtol=1e-12)
    np.testing.assert_allclose(m2 / count, whole.var(0), rtol=1e-9)
    synced = {**params, "batch": (count, mean, m2)}
    caches = [batch_norm.forward(x[s], synced)[1] for s in shards]
    sums = [batch_norm.gradient_sums(dout[s], cache["xhat"]) for s, cache in zip(shards, caches)]
    totals = tuple(sum(part[k] for part in sums) for k in (0, 1))
    dx = np.concatenate([batch_norm.backward(dout[s], {**cache, "sums": totals})[0] for s, cache in zip(shards, caches)])
    out_whole, cache_whole = batch_norm.forward(x, params)
    np.testing.assert_allclose(np.concatenate([batch_norm.forward(x[s], synced)[0] for s in shards]), out_whole,
                               atol=1e-5)
    np.testing.assert_allclose(dx, batch_norm.backward(dout, cache_whole)[0], atol=1e-5)
