"""Global average pooling: the mean of each channel over height and width."""
from __future__ import annotations

import numpy as np

from sparkcnn.stages.tabular import StageResult, backward_result, layer_input, per_image_table, tensor


def forward(x: np.ndarray, params: dict | None = None) -> tuple[np.ndarray, dict]:
    """x (N, H, W, C) -> out (N, C); the cache holds the input shape."""
    return x.mean(axis=(1, 2), dtype=x.dtype), {"input_shape": x.shape}


def backward(dout: np.ndarray, cache: dict) -> tuple[np.ndarray, dict]:
    """dout (N, C) -> dx (N, H, W, C), each position's share; no parameters."""
    n, h, w, c = cache["input_shape"]
    share = dout * dout.dtype.type(1.0 / (h * w))
    return np.ascontiguousarray(np.broadcast_to(share[:, None, None, :], (n, h, w, c))), {}


def layer_params(layer, ctx) -> dict:
    return {}


def forward_stage(inputs, ctx) -> StageResult:
    """x -> out."""
    out, _ = forward(layer_input(inputs["x"], ctx))
    return StageResult({"out": per_image_table(ctx, inputs["x"], out=out)})


def backward_stage(inputs, ctx) -> StageResult:
    """dout(dx) -> dx."""
    dout = tensor(inputs["dout"], "dx")
    dx, _ = backward(dout, {"input_shape": (dout.shape[0], *ctx.layer.in_shape)})
    return backward_result(ctx, inputs["dout"], dx, {})
