"""Batch normalisation on the last axis (channels of NHWC images, units of fc outputs).

Training normalises by the batch's own statistics (per shard, sync = false); inference by the running
statistics, which are state kept with the parameters and stepped by the update (PyTorch's momentum).
"""
from __future__ import annotations

import numpy as np

from schemas.tables import arrays_to_table
from stages.tabular import StageResult, backward_result, layer_input, per_image_table, tensor


def moments(x: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """x (N, ..., C) -> (count, mean (C,), sum of squared deviations M2 (C,)) per channel, in float64."""
    axes = tuple(range(x.ndim - 1))
    count = x.size // x.shape[-1]
    mean = x.mean(axis=axes, dtype=np.float64)
    m2 = np.square(x - mean).sum(axis=axes)
    return count, mean, m2


def forward(x: np.ndarray, params: dict) -> tuple[np.ndarray, dict]:
    """x (N, ..., C), params gamma, beta, running_mean, running_var (C,), eps, training -> out shaped as x.

    Training normalises by the batch's biased variance (or by params' `batch` = (count, mean, M2) when
    given: the whole iteration's statistics); inference by the running statistics. The cache holds
    xhat, the inverse deviation, gamma and the batch statistics (count, mean, m2) it used.
    """
    gamma, beta, eps = params["gamma"], params["beta"], params["eps"]
    if params.get("training"):
        count, mean, m2 = params.get("batch") or moments(x)
        var = m2 / count
    else:
        count, mean, m2 = 0, params["running_mean"].astype(np.float64), None
        var = params["running_var"].astype(np.float64)
    inv_std = (1.0 / np.sqrt(var + eps)).astype(x.dtype)
    xhat = (x - mean.astype(x.dtype)) * inv_std
    out = xhat * gamma + beta
    return out, {"xhat": xhat, "inv_std": inv_std, "gamma": gamma, "count": count, "mean": mean, "m2": m2}


def backward(dout: np.ndarray, cache: dict) -> tuple[np.ndarray, dict]:
    """dout shaped as x -> dx, grads {gamma, beta} (C,), through the batch statistics. With cache's
    `sums` = (sum dout, sum dout*xhat) over the whole batch (sync), dx uses those instead of the shard's."""
    xhat, inv_std, gamma = cache["xhat"], cache["inv_std"], cache["gamma"]
    axes = tuple(range(dout.ndim - 1))
    dbeta = dout.sum(axis=axes, dtype=np.float64)
    dgamma = (dout * xhat).sum(axis=axes, dtype=np.float64)
    total_beta, total_gamma = cache.get("sums") or (dbeta, dgamma)
    n = cache["count"]
    dt = dout.dtype
    dx = (gamma * inv_std) * (dout - (total_beta / n).astype(dt) - xhat * (total_gamma / n).astype(dt))
    return dx.astype(dt), {"gamma": dgamma.astype(dt), "beta": dbeta.astype(dt)}


def running_step(mean: np.ndarray, var: np.ndarray, stats: tuple, momentum: float) -> tuple[np.ndarray, np.ndarray]:
    """One momentum step of the running statistics (float32 (C,)) by batch statistics (count, mean, M2),
    with the unbiased variance, as PyTorch does."""
    count, batch_mean, m2 = stats
    new_mean = (1 - momentum) * mean.astype(np.float64) + momentum * batch_mean
    new_var = (1 - momentum) * var.astype(np.float64) + momentum * (m2 / (count - 1))
    return new_mean.astype(np.float32), new_var.astype(np.float32)


def check_count(layer, count: int) -> None:
    if count < 2:
        raise ValueError(f"layer {layer.name}: a shard with one value per channel has no unbiased variance "
                         f"(batch_norm needs at least two images, or two positions, per shard)")


def layer_params(layer, ctx, training: bool = False) -> dict:
    """gamma and beta, the running statistics, eps and whether the batch's statistics normalise."""
    p = ctx.params
    return {**ctx.layer_params(layer), "running_mean": p[f"{layer.name}.running_mean"],
            "running_var": p[f"{layer.name}.running_var"], "eps": layer["eps"], "training": training}


def stats_table(ctx, keys, count: int, mean: np.ndarray, m2: np.ndarray):
    """A shard's batch statistics as named arrays `<layer>.count`, `.mean`, `.m2` (float64)."""
    name = ctx.layer.name
    arrays = {f"{name}.count": np.array([count], np.float64), f"{name}.mean": mean, f"{name}.m2": m2}
    where = (ctx.key_of(keys, "iteration"), ctx.key_of(keys, "shard")) if keys is not None else ()
    return arrays_to_table(arrays, f"{ctx.stage}.stats", *where)


def forward_stage(inputs, ctx) -> StageResult:
    """x -> out, normalised by the shard's statistics, and stats (the shard's count, mean, M2)."""
    x = layer_input(inputs["x"], ctx)
    check_count(ctx.layer, x.size // max(1, x.shape[-1]))
    out, cache = forward(x, layer_params(ctx.layer, ctx, True))
    return StageResult({"out": per_image_table(ctx, inputs["x"], out=out),
                        "stats": stats_table(ctx, inputs["x"], cache["count"], cache["mean"], cache["m2"])})


def backward_stage(inputs, ctx) -> StageResult:
    """dout(dx) + x -> dx and the shard's gradients by gamma and beta (the forward recomputed)."""
    x = layer_input(inputs["x"], ctx, inputs["dout"])
    _, cache = forward(x, layer_params(ctx.layer, ctx, True))
    dx, grads = backward(tensor(inputs["dout"], "dx"), cache)
    return backward_result(ctx, inputs["dout"], dx, grads)
