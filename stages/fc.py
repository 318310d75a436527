"""Fully connected layer."""
from __future__ import annotations

import numpy as np

from schemas.tables import arrays_to_table
from stages.tabular import StageResult, per_image_table, tensor


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


def forward_stage(inputs, ctx) -> StageResult:
    """pool_fwd(out) -> fc_fwd(scores)."""
    scores, _ = forward(tensor(inputs["pool_fwd"], "out"), ctx.layer_params("fc"))
    return StageResult({"out": per_image_table(ctx, "fc_fwd", inputs["pool_fwd"], scores=scores)})


def backward_stage(inputs, ctx) -> StageResult:
    """loss(dscores) + pool_fwd(out) -> fc_bwd(dx) and the shard's parameter gradients."""
    x = tensor(inputs["pool_fwd"], "out")
    dx, grads = backward(tensor(inputs["loss"], "dscores"), {"x": x, "w": ctx.params["fc.w"]})
    return StageResult({
        "out": per_image_table(ctx, "fc_bwd", inputs["loss"], dx=dx),
        "grads": arrays_to_table({f"fc.{k}": v for k, v in grads.items()}, "fc_bwd.grads",
                                 ctx.key_of(inputs["loss"], "iteration"), ctx.key_of(inputs["loss"], "shard")),
    })
