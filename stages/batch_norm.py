"""Batch normalisation on the last axis (channels of NHWC images, units of fc outputs).

Training normalises by the batch's own statistics (per shard, sync = false); inference by the running
statistics, which are state kept with the parameters and stepped by the update (PyTorch's momentum).
"""
from __future__ import annotations

import math

import numpy as np

from sparkcnn.schemas.statistics import batch_stats_of, batch_stats_table
from sparkcnn.schemas.tables import arrays_to_table, table_to_arrays
from sparkcnn.schemas.topology import NetworkError
from sparkcnn.stages.tabular import StageResult, backward_result, layer_input, per_image_table, tensor


def moments(x: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """x (N, ..., C) -> (count, mean (C,), sum of squared deviations M2 (C,)) per channel, in float64."""
    axes = tuple(range(x.ndim - 1))
    count = x.size // x.shape[-1]
    mean = x.mean(axis=axes, dtype=np.float64)
    m2 = np.square(x - mean).sum(axis=axes)
    return count, mean, m2


def combine(parts: list[tuple[int, np.ndarray, np.ndarray]]) -> tuple[int, np.ndarray, np.ndarray]:
    """Per-shard (count, mean, M2) -> the whole batch's, combined pairwise in the order given (Chan et al.),
    in float64: no sum of squares, so no cancellation."""
    count, mean, m2 = parts[0]
    for n, part_mean, part_m2 in parts[1:]:
        total = count + n
        delta = part_mean - mean
        mean = mean + delta * (n / total)
        m2 = m2 + part_m2 + delta * delta * (count * n / total)
        count = total
    return count, mean, m2


def gradient_sums(dout: np.ndarray, xhat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sum of dout, sum of dout x xhat) per channel in float64: a shard's part of the backward statistics."""
    axes = tuple(range(dout.ndim - 1))
    return dout.sum(axis=axes, dtype=np.float64), (dout * xhat).sum(axis=axes, dtype=np.float64)


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
    dbeta, dgamma = gradient_sums(dout, xhat)
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


def check_shard(network, images: int) -> None:
    """Refuse a shard of `images` images that gives a batch_norm layer one value per channel."""
    for layer in network.batch_norm_layers:
        if images * math.prod(layer.in_shape[:-1]) < 2:
            raise NetworkError(f"layer {layer.name}: a shard of {images} image(s) gives one value per channel, "
                               f"whose unbiased variance is undefined; choose train.shard_size and batch_size so "
                               f"that no shard holds a single image")


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
    """A shard's batch statistics, a row per channel (count, mean, M2 in float64, biased variance)."""
    where = (ctx.key_of(keys, "iteration"), ctx.key_of(keys, "shard")) if keys is not None else ()
    return batch_stats_table(ctx.layer.name, count, mean, m2, *where)


def in_shard_order(tables: list) -> list:
    return sorted(tables, key=lambda t: t.column("shard")[0].as_py())


def training_params(inputs, ctx) -> dict:
    """The forward's params in training; a synced layer's carry the whole batch's statistics, every
    shard's combined in shard order."""
    params = layer_params(ctx.layer, ctx, True)
    if "stats" in inputs:
        params["batch"] = combine([batch_stats_of(t) for t in in_shard_order(inputs["stats"])])
    return params


def stats_stage(inputs, ctx) -> StageResult:
    """x -> stats: the shard's count, mean and M2 per channel (a synced layer's statistics stage)."""
    x = layer_input(inputs["x"], ctx)
    check_count(ctx.layer, x.size // max(1, x.shape[-1]))
    return StageResult({"stats": stats_table(ctx, inputs["x"], *moments(x))})


def forward_stage(inputs, ctx) -> StageResult:
    """x -> out, normalised by the shard's statistics, and stats (the shard's count, mean, M2); synced:
    x + every shard's stats -> out, normalised by the whole batch's."""
    x = layer_input(inputs["x"], ctx)
    check_count(ctx.layer, x.size // max(1, x.shape[-1]))
    out, cache = forward(x, training_params(inputs, ctx))
    if "stats" in inputs:
        return StageResult({"out": per_image_table(ctx, inputs["x"], out=out)})
    return StageResult({"out": per_image_table(ctx, inputs["x"], out=out),
                        "stats": stats_table(ctx, inputs["x"], cache["count"], cache["mean"], cache["m2"])})


def grads_stage(inputs, ctx) -> StageResult:
    """dout(dx) + x + every shard's stats -> the shard's gradients by gamma and beta (grads, float32, for the
    update) and the same sums in float64 (sums, for every shard's backward): a synced layer's backward statistics."""
    x = layer_input(inputs["x"], ctx, inputs["dout"])
    _, cache = forward(x, training_params(inputs, ctx))
    dbeta, dgamma = gradient_sums(tensor(inputs["dout"], "dx"), cache["xhat"])
    name, keys = ctx.layer.name, (ctx.key_of(inputs["dout"], "iteration"), ctx.key_of(inputs["dout"], "shard"))
    grads = {f"{name}.gamma": dgamma.astype(np.float32), f"{name}.beta": dbeta.astype(np.float32)}
    return StageResult({"grads": arrays_to_table(grads, f"{ctx.stage}.grads", *keys),
                        "sums": arrays_to_table({f"{name}.dgamma": dgamma, f"{name}.dbeta": dbeta},
                                                f"{ctx.stage}.sums", *keys)})


def backward_stage(inputs, ctx) -> StageResult:
    """dout(dx) + x -> dx and the shard's gradients by gamma and beta (the forward recomputed); synced:
    dout(dx) + x + every shard's stats and sums -> dx, through the whole batch's sums."""
    x = layer_input(inputs["x"], ctx, inputs["dout"])
    _, cache = forward(x, training_params(inputs, ctx))
    if "sums" in inputs:
        sums = [table_to_arrays(t) for t in in_shard_order(inputs["sums"])]
        name = ctx.layer.name
        cache["sums"] = tuple(sum(s[f"{name}.{k}"] for s in sums) for k in ("dbeta", "dgamma"))
        dx, _ = backward(tensor(inputs["dout"], "dx"), cache)
        return backward_result(ctx, inputs["dout"], dx, {})
    dx, grads = backward(tensor(inputs["dout"], "dx"), cache)
    return backward_result(ctx, inputs["dout"], dx, grads)
