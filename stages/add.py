"""Element-wise sum of two or more inputs of one shape (a residual connection's join)."""
from __future__ import annotations

import numpy as np

from sparkcnn.stages.tabular import StageResult, backward_result, layer_input, per_image_table, tensor


def forward(x: tuple[np.ndarray, ...], params: dict | None = None) -> tuple[np.ndarray, dict]:
    """x: inputs (N, ...) of one shape -> out = their sum in input order; the cache holds their count."""
    out = x[0].copy()
    for other in x[1:]:
        out += other
    return out, {"inputs": len(x)}


def backward(dout: np.ndarray, cache: dict) -> tuple[np.ndarray, dict]:
    """dout (N, ...) -> dx, the gradient by each input (the same for all); no parameters."""
    return dout, {}


def layer_params(layer, ctx) -> dict:
    return {}


def forward_stage(inputs, ctx) -> StageResult:
    """x0, x1, ... -> out."""
    roles = [f"x{k}" for k in range(len(ctx.layer.inputs))]
    out, _ = forward(tuple(layer_input(inputs[r], ctx) for r in roles))
    return StageResult({"out": per_image_table(ctx, inputs["x0"], out=out)})


def backward_stage(inputs, ctx) -> StageResult:
    """dout(dx) -> dx, read by every input's backward."""
    dx, _ = backward(tensor(inputs["dout"], "dx"), {})
    return backward_result(ctx, inputs["dout"], dx, {})
