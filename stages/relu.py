"""ReLU layer."""
from __future__ import annotations

import numpy as np

from stages.tabular import StageResult, per_image_table, tensor


def forward(x: np.ndarray, params: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """x (any shape) -> out = max(x, 0), cache = boolean mask of x > 0."""
    return np.maximum(x, np.float32(0)), x > 0


def backward(dout: np.ndarray, cache: np.ndarray) -> tuple[np.ndarray, dict]:
    """dout, mask (same shape) -> dx = dout where the input was positive; no parameters."""
    return dout * cache, {}


def pack_mask(mask: np.ndarray) -> np.ndarray:
    """Boolean mask (N, ...) -> bitmask (N, ceil(size / 8)) uint8."""
    return np.packbits(mask.reshape(mask.shape[0], -1), axis=1)


def unpack_mask(bits: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Bitmask (N, B) -> boolean mask (N, *shape)."""
    size = int(np.prod(shape))
    return np.unpackbits(bits, axis=1, count=size).view(bool).reshape(bits.shape[0], *shape)


def forward_stage(inputs, ctx) -> StageResult:
    """conv_fwd(out) -> relu_fwd(out, mask as a bitmask)."""
    out, mask = forward(tensor(inputs["conv_fwd"], "out"))
    kept = {"bitmask": {"mask": pack_mask(mask)}, "bytes": {"mask": mask.view(np.uint8)}, "recompute": {}}
    table = per_image_table(ctx, "relu_fwd", inputs["conv_fwd"], out=out, **kept[ctx.cache["relu_mask"]])
    return StageResult({"out": table})


def stored_mask(table, ctx) -> np.ndarray:
    """The ReLU mask as the table holds it, whatever the policy now: a bitmask, a byte per element,
    or no mask (recomputed from the output)."""
    if "mask" not in table.column_names:
        return tensor(table, "out") > 0
    mask = tensor(table, "mask")
    return mask.view(bool) if mask.shape[1:] == ctx.geometry.conv else unpack_mask(mask, ctx.geometry.conv)


def backward_stage(inputs, ctx) -> StageResult:
    """pool_bwd(dx) + relu_fwd(mask, or out when the mask is recomputed) -> relu_bwd(dx)."""
    dx, _ = backward(tensor(inputs["pool_bwd"], "dx"), stored_mask(inputs["relu_fwd"], ctx))
    return StageResult({"out": per_image_table(ctx, "relu_bwd", inputs["pool_bwd"], dx=dx)})
