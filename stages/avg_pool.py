"""Average-pooling layer on NHWC tensors."""
from __future__ import annotations

import numpy as np

from sparkcnn.stages.pool import layer_params, tiles
from sparkcnn.stages.tabular import StageResult, backward_result, layer_input, per_image_table, tensor


def forward(x: np.ndarray, params: dict) -> tuple[np.ndarray, dict]:
    """x (N, H, W, C) -> out (N, Ho, Wo, C), the mean of each window; params: size, stride.
    The cache holds only the input shape."""
    size, stride = params["size"], params["stride"]
    ho, wo = (x.shape[1] - size) // stride + 1, (x.shape[2] - size) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, x.shape[3]), x.dtype)
    for t in tiles(x.shape[0], x[0].nbytes):
        for i in range(size):
            for j in range(size):
                out[t] += x[t, i: i + stride * ho: stride, j: j + stride * wo: stride]
    out *= np.float32(1.0 / (size * size))
    return out, {"input_shape": x.shape, "size": size, "stride": stride}


def backward(dout: np.ndarray, cache: dict) -> tuple[np.ndarray, dict]:
    """dout (N, Ho, Wo, C) -> dx (N, H, W, C), each window's gradient spread evenly; no parameters."""
    size, stride = cache["size"], cache["stride"]
    ho, wo = dout.shape[1:3]
    share = dout * np.float32(1.0 / (size * size))
    dx = np.zeros(cache["input_shape"], dtype=dout.dtype)
    for t in tiles(dx.shape[0], dx[0].nbytes):
        for i in range(size):
            for j in range(size):
                dx[t, i: i + stride * ho: stride, j: j + stride * wo: stride, :] += share[t]
    return dx, {}


def forward_stage(inputs, ctx) -> StageResult:
    """x -> out."""
    out, _ = forward(layer_input(inputs["x"], ctx), layer_params(ctx.layer))
    return StageResult({"out": per_image_table(ctx, inputs["x"], out=out)})


def backward_stage(inputs, ctx) -> StageResult:
    """dout(dx) -> dx."""
    dout = tensor(inputs["dout"], "dx")
    dx, _ = backward(dout, {"input_shape": (dout.shape[0], *ctx.layer.in_shape), **layer_params(ctx.layer)})
    return backward_result(ctx, inputs["dout"], dx, {})
