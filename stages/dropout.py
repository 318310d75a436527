"""Dropout (inverted: kept elements are scaled by 1 / (1 - rate)), with a mask that is a pure function of
(seed, layer, iteration, image id), so that restarts, modes and partitionings draw the same mask."""
from __future__ import annotations

import numpy as np

from sparkcnn.stages.tabular import StageResult, backward_result, layer_input, per_image_table, tensor

STREAM = 0xD809


def keep_mask(shape: tuple[int, ...], rate: float, seed: int, layer: int, iteration: int,
              image_ids: np.ndarray) -> np.ndarray:
    """Boolean (N, *shape): which elements of each image's tensor are kept."""
    return np.stack([np.random.default_rng([seed, STREAM, layer, iteration, int(i)]).random(shape) >= rate
                     for i in image_ids]) if len(image_ids) else np.zeros((0, *shape), bool)


def forward(x: np.ndarray, params: dict) -> tuple[np.ndarray, dict]:
    """x (N, ...) -> out = x * mask / (1 - rate); params: rate and mask (N, ...) bool, or no mask when
    not training (then out = x). The cache holds the scaled mask."""
    scale = _scale(params)
    return (x if scale is None else x * scale), {"scale": scale}


def _scale(params: dict) -> np.ndarray | None:
    mask = params.get("mask")
    return None if mask is None else mask * np.float32(1.0 / (1.0 - params["rate"]))


def backward(dout: np.ndarray, cache: dict) -> tuple[np.ndarray, dict]:
    """dout (N, ...) -> dx = dout * mask / (1 - rate); no parameters."""
    return (dout if cache["scale"] is None else dout * cache["scale"]), {}


def layer_params(layer, ctx, keys: tuple[int, np.ndarray] | None = None) -> dict:
    """rate and, when training ((iteration, image ids) given), the mask of those images."""
    if keys is None:
        return {"rate": layer["rate"], "mask": None}
    iteration, ids = keys
    return {"rate": layer["rate"], "mask": keep_mask(layer.in_shape, layer["rate"], ctx.seed, layer.index,
                                                     iteration, ids)}


def _keys(table) -> tuple[int, np.ndarray]:
    ids = table.column("image_id").to_numpy()
    return (table.column("iteration")[0].as_py() if table.num_rows else 0), ids


def forward_stage(inputs, ctx) -> StageResult:
    """x -> out."""
    out, _ = forward(layer_input(inputs["x"], ctx), layer_params(ctx.layer, ctx, _keys(inputs["x"])))
    return StageResult({"out": per_image_table(ctx, inputs["x"], out=out)})


def backward_stage(inputs, ctx) -> StageResult:
    """dout(dx) -> dx, the mask drawn again from the keys."""
    scale = _scale(layer_params(ctx.layer, ctx, _keys(inputs["dout"])))
    dx, _ = backward(tensor(inputs["dout"], "dx"), {"scale": scale})
    return backward_result(ctx, inputs["dout"], dx, {})
