"""Max-pooling layer on NHWC tensors."""
from __future__ import annotations

import numpy as np

from sparkcnn.schemas.layers import MAX_POOL_WINDOW
from sparkcnn.stages.tabular import StageResult, backward_result, layer_input, per_image_table, tensor

TILE_BYTES = 1 << 18  # input bytes of the images pooled together: they stay in a core's L2 cache


def tiles(n: int, image_bytes: int):
    """Slices of a few images each, about TILE_BYTES of input apiece."""
    step = max(1, TILE_BYTES // max(1, image_bytes))
    return (slice(start, start + step) for start in range(0, n, step))


def forward(x: np.ndarray, params: dict) -> tuple[np.ndarray, dict]:
    """x (N, H, W, C) -> out (N, Ho, Wo, C); cache holds the argmax (N, Ho, Wo, C) int8 in the window.

    params: size, stride.
    """
    size, stride = params["size"], params["stride"]
    if size * size > MAX_POOL_WINDOW:
        raise ValueError(f"pool window {size}x{size} has more than {MAX_POOL_WINDOW} elements; argmax must fit int8")
    ho, wo = (x.shape[1] - size) // stride + 1, (x.shape[2] - size) // stride + 1
    out = np.empty((x.shape[0], ho, wo, x.shape[3]), x.dtype)
    argmax = np.zeros(out.shape, np.int8)
    for t in tiles(x.shape[0], x[0].nbytes):
        _max_windows(x[t], out[t], argmax[t], size, stride)
    return out, {"argmax": argmax, "input_shape": x.shape, "size": size, "stride": stride}


def _max_windows(x: np.ndarray, out: np.ndarray, argmax: np.ndarray, size: int, stride: int) -> None:
    """out = each window's maximum, argmax = the first index in the window that holds it (argmax zeroed)."""
    ho, wo = out.shape[1:3]
    np.copyto(out, x[:, : stride * ho: stride, : stride * wo: stride])
    better, index = np.empty(out.shape, bool), np.empty(out.shape, np.int8)
    for k in range(1, size * size):
        i, j = divmod(k, size)
        window = x[:, i: i + stride * ho: stride, j: j + stride * wo: stride]
        np.greater(window, out, out=better)
        np.multiply(better.view(np.int8), np.int8(k), out=index)
        np.maximum(argmax, index, out=argmax)  # k where this element is greater: k exceeds every earlier index
        np.maximum(out, window, out=out)


def backward(dout: np.ndarray, cache: dict) -> tuple[np.ndarray, dict]:
    """dout (N, Ho, Wo, C) -> dx (N, H, W, C), routed to each window's maximum; no parameters."""
    argmax, size, stride = cache["argmax"], cache["size"], cache["stride"]
    ho, wo = dout.shape[1:3]
    _, h, w, _ = cache["input_shape"]
    tiled = stride == size and (h, w) == (ho * size, wo * size)
    dx = (np.empty if tiled else np.zeros)(cache["input_shape"], dtype=dout.dtype)
    for t in tiles(dx.shape[0], dx[0].nbytes):
        (_written_once if tiled else _summed)(dout[t], argmax[t], dx[t], size, stride)
    return dx, {}


def _summed(dout: np.ndarray, argmax: np.ndarray, dx: np.ndarray, size: int, stride: int) -> None:
    """dx (zeroed) += each window's dout times whether it is the window's maximum, window by window."""
    ho, wo = dout.shape[1:3]
    chosen, share = np.empty(argmax.shape, bool), np.empty(dout.shape, dout.dtype)
    for i in range(size):
        for j in range(size):
            np.equal(argmax, i * size + j, out=chosen)
            np.multiply(dout, chosen, out=share)
            dx[:, i: i + stride * ho: stride, j: j + stride * wo: stride, :] += share


def _written_once(dout: np.ndarray, argmax: np.ndarray, dx: np.ndarray, size: int, stride: int) -> None:
    """_summed where the windows tile the input: each element of dx written once, as dout times whether
    it was its window's maximum, plus 0.0 (a -0.0 becomes 0.0, as in a sum started from zero)."""
    chosen = np.empty(argmax.shape, bool)
    for i in range(size):
        for j in range(size):
            np.equal(argmax, i * size + j, out=chosen)
            np.multiply(dout, chosen, out=dx[:, i::size, j::size, :])
    dx += 0.0


def layer_params(layer, ctx=None) -> dict:
    return {"size": layer["size"], "stride": layer["stride"]}


def forward_stage(inputs, ctx) -> StageResult:
    """x -> out, and the argmax when the cache policy keeps it."""
    out, cache = forward(layer_input(inputs["x"], ctx), layer_params(ctx.layer))
    kept = {"argmax": cache["argmax"]} if ctx.cache["pool_argmax"] == "int8" else {}
    return StageResult({"out": per_image_table(ctx, inputs["x"], out=out, **kept)})


def backward_stage(inputs, ctx) -> StageResult:
    """dout(dx) + saved(argmax), or x to recompute it -> dx."""
    layer = ctx.layer
    if "saved" in inputs:
        argmax = tensor(inputs["saved"], "argmax")
    else:
        argmax = forward(layer_input(inputs["x"], ctx, inputs["dout"]), layer_params(layer))[1]["argmax"]
    cache = {"argmax": argmax, "input_shape": (argmax.shape[0], *layer.in_shape), **layer_params(layer)}
    dx, _ = backward(tensor(inputs["dout"], "dx"), cache)
    return backward_result(ctx, inputs["dout"], dx, {})
