"""Max-pooling layer on NHWC tensors."""
from __future__ import annotations

import numpy as np

from stages.tabular import StageResult, per_image_table, tensor

MAX_WINDOW = 127


def forward(x: np.ndarray, params: dict) -> tuple[np.ndarray, dict]:
    """x (N, H, W, C) -> out (N, Ho, Wo, C); cache holds the argmax (N, Ho, Wo, C) int8 in the window.

    params: size, stride.
    """
    size, stride = params["size"], params["stride"]
    if size * size > MAX_WINDOW:
        raise ValueError(f"pool window {size}x{size} has more than {MAX_WINDOW} elements; argmax must fit int8")
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
    dx = np.zeros(cache["input_shape"], dtype=dout.dtype)
    for i in range(size):
        for j in range(size):
            dx[:, i: i + stride * ho: stride, j: j + stride * wo: stride, :] += dout * (argmax == i * size + j)
    return dx, {}


def layer_params(ctx) -> dict:
    return {"size": ctx.geometry.pool_size, "stride": ctx.geometry.pool_stride}


def forward_stage(inputs, ctx) -> StageResult:
    """relu_fwd(out) -> pool_fwd(out, argmax)."""
    out, cache = forward(tensor(inputs["relu_fwd"], "out"), layer_params(ctx))
    kept = {"argmax": cache["argmax"]} if ctx.cache["pool_argmax"] == "int8" else {}
    table = per_image_table(ctx, "pool_fwd", inputs["relu_fwd"], out=out, **kept)
    return StageResult({"out": table})


def backward_stage(inputs, ctx) -> StageResult:
    """fc_bwd(dx) + pool_fwd(argmax), or relu_fwd(out) to recompute it -> pool_bwd(dx)."""
    g = ctx.geometry
    if "pool_fwd" in inputs:
        argmax = tensor(inputs["pool_fwd"], "argmax")
    else:
        argmax = forward(tensor(inputs["relu_fwd"], "out"), layer_params(ctx))[1]["argmax"]
    cache = {"argmax": argmax, "input_shape": (argmax.shape[0], *g.conv), **layer_params(ctx)}
    dx, _ = backward(tensor(inputs["fc_bwd"], "dx"), cache)
    return StageResult({"out": per_image_table(ctx, "pool_bwd", inputs["fc_bwd"], dx=dx)})
