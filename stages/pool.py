"""Max-pooling layer on NHWC tensors."""
from __future__ import annotations

import numpy as np

from schemas.network import MAX_POOL_WINDOW
from stages.tabular import StageResult, backward_result, layer_input, per_image_table, tensor



def forward(x: np.ndarray, params: dict) -> tuple[np.ndarray, dict]:
    """x (N, H, W, C) -> out (N, Ho, Wo, C); cache holds the argmax (N, Ho, Wo, C) int8 in the window.

    params: size, stride.
    """
    size, stride = params["size"], params["stride"]
    if size * size > MAX_POOL_WINDOW:
        raise ValueError(f"pool window {size}x{size} has more than {MAX_POOL_WINDOW} elements; argmax must fit int8")
    ho, wo = (x.shape[1] - size) // stride + 1, (x.shape[2] - size) // stride + 1
    out = x[:, : stride * ho: stride, : stride * wo: stride].copy()
    argmax = np.zeros(out.shape, np.int8)
    for k in range(1, size * size):
        i, j = divmod(k, size)
        window = x[:, i: i + stride * ho: stride, j: j + stride * wo: stride]
        better = window > out
        argmax += better * (np.int8(k) - argmax)
        np.maximum(out, window, out=out)
    return out, {"argmax": argmax, "input_shape": x.shape, "size": size, "stride": stride}


def backward(dout: np.ndarray, cache: dict) -> tuple[np.ndarray, dict]:
    """dout (N, Ho, Wo, C) -> dx (N, H, W, C), routed to each window's maximum; no parameters."""
    argmax, size, stride = cache["argmax"], cache["size"], cache["stride"]
    ho, wo = dout.shape[1:3]
    _, h, w, _ = cache["input_shape"]
    if stride == size and (h, w) == (ho * size, wo * size):
        return _tiled_backward(dout, argmax, size, cache["input_shape"]), {}
    dx = np.zeros(cache["input_shape"], dtype=dout.dtype)
    for i in range(size):
        for j in range(size):
            dx[:, i: i + stride * ho: stride, j: j + stride * wo: stride, :] += dout * (argmax == i * size + j)
    return dx, {}


def _tiled_backward(dout: np.ndarray, argmax: np.ndarray, size: int, shape: tuple) -> np.ndarray:
    """backward where the windows tile the input: each element of dx written once, as dout times
    whether it was its window's maximum, plus 0.0 (a -0.0 becomes 0.0, as in a sum started from zero)."""
    dx = np.empty(shape, dtype=dout.dtype)
    chosen = np.empty(argmax.shape, bool)
    for i in range(size):
        for j in range(size):
            np.equal(argmax, i * size + j, out=chosen)
            np.multiply(dout, chosen, out=dx[:, i::size, j::size, :])
    dx += 0.0
    return dx


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
