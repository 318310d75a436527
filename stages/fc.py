"""Fully connected layer."""
from __future__ import annotations

import numpy as np

from sparkcnn.stages.tabular import StageResult, backward_result, layer_input, per_image_table, tensor


def forward(x: np.ndarray, params: dict) -> tuple[np.ndarray, dict]:
    """x (N, ...) flattened to (N, D), params w (D, K), b (K,) -> scores (N, K); cache holds x."""
    w, b = params["w"], params["b"]
    out = x.reshape(x.shape[0], -1) @ w
    out += b
    return out, {"x": x, "w": w}


def backward(dout: np.ndarray, cache: dict) -> tuple[np.ndarray, dict]:
    """dout (N, K) -> dx (N, ...) shaped as x, grads {w (D, K), b (K,)}."""
    x, w = cache["x"], cache["w"]
    flat = x.reshape(x.shape[0], -1)
    dx = (dout @ w.T).reshape(x.shape)
    return dx, {"w": flat.T @ dout, "b": dout.sum(axis=0, dtype=np.float32)}


def layer_params(layer, ctx) -> dict:
    return ctx.layer_params(layer)


def forward_stage(inputs, ctx) -> StageResult:
    """x -> out (the input flattened in NHWC order)."""
    out, _ = forward(layer_input(inputs["x"], ctx), ctx.layer_params(ctx.layer))
    return StageResult({"out": per_image_table(ctx, inputs["x"], out=out)})


def backward_stage(inputs, ctx) -> StageResult:
    """dout(dx) + x -> dx (except for the first trained layer) and the shard's parameter gradients."""
    x = layer_input(inputs["x"], ctx, inputs["dout"])
    dx, grads = backward(tensor(inputs["dout"], "dx"), {"x": x, "w": ctx.params[f"{ctx.layer.name}.w"]})
    return backward_result(ctx, inputs["dout"], dx, grads)
