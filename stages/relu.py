"""ReLU layer."""
from __future__ import annotations

import numpy as np

from sparkcnn.stages.tabular import StageResult, backward_result, layer_input, per_image_table, tensor


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


def layer_params(layer, ctx) -> dict:
    return {}


def forward_stage(inputs, ctx) -> StageResult:
    """x -> out, and the mask as the cache policy keeps it (a bitmask, a byte per element, or none)."""
    out, mask = forward(layer_input(inputs["x"], ctx))
    kept = {"bitmask": {"mask": pack_mask(mask)}, "bytes": {"mask": mask.view(np.uint8)}, "recompute": {}}
    return StageResult({"out": per_image_table(ctx, inputs["x"], out=out, **kept[ctx.cache["relu_mask"]])})


def stored_mask(table, shape: tuple[int, ...]) -> np.ndarray:
    """The ReLU mask as the forward table holds it, whatever the policy now: a bitmask, a byte per
    element, or no mask (recomputed from the output)."""
    if "mask" not in table.column_names:
        return tensor(table, "out") > 0
    mask = tensor(table, "mask")
    return mask.view(bool) if mask.shape[1:] == shape else unpack_mask(mask, shape)


def backward_stage(inputs, ctx) -> StageResult:
    """dout(dx) + saved(mask, or out when the mask is recomputed) -> dx."""
    dx, _ = backward(tensor(inputs["dout"], "dx"), stored_mask(inputs["saved"], ctx.layer.out_shape))
    return backward_result(ctx, inputs["dout"], dx, {})
