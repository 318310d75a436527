"""SGD with momentum, optional Nesterov term and weight decay (PyTorch's formulation); the running
statistics of batch_norm layers stepped by the shards' batch statistics."""
from __future__ import annotations

import math

import numpy as np

from sparkcnn.schemas.statistics import batch_stats_of, running_stats_table
from sparkcnn.schemas.tables import arrays_to_table, table_to_arrays
from sparkcnn.stages.batch_norm import combine, running_step
from sparkcnn.stages.tabular import StageResult


def sgd_step(params: dict, velocity: dict, grads: dict, lr: float, momentum: float, weight_decay: float,
             nesterov: bool = False) -> tuple[dict, dict]:
    """v <- momentum * v + (g + weight_decay * p); p <- p - lr * v (Nesterov: p <- p - lr * (g' + momentum * v)).
    Arrays without velocity (running statistics) pass through. All arrays float32."""
    new_params, new_velocity = dict(params), {}
    for name in velocity:
        p = params[name]
        g = grads[name] + np.float32(weight_decay) * p
        v = np.float32(momentum) * velocity[name] + g
        new_velocity[name] = v.astype(np.float32)
        step = g + np.float32(momentum) * v if nesterov else v
        new_params[name] = (p - np.float32(lr) * step).astype(np.float32)
    return new_params, new_velocity


def learning_rate(base: float, schedule: str, iteration: int, total_iterations: int, warmup: int = 0) -> float:
    """Learning rate of an iteration: over the first `warmup` iterations base x (i+1)/warmup, then
    constant, or cosine-annealed from base to zero over the remaining iterations."""
    if iteration < warmup:
        return base * (iteration + 1) / warmup
    if schedule == "constant":
        return base
    if schedule == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * (iteration - warmup) / (total_iterations - warmup)))
    raise ValueError(f"unknown learning-rate schedule {schedule!r} (expected 'constant' or 'cosine')")


def init_params(network, seed: int) -> dict[str, np.ndarray]:
    """PyTorch's default init: uniform in +-1/sqrt(fan_in) for weights and biases of each conv and fc
    layer, drawn layer by layer in the network's order from one seeded stream; batch_norm's gamma 1,
    beta 0, running mean 0 and running variance 1."""
    rng = np.random.default_rng([seed, 0x5EED])
    params = {}
    for layer in network.trained_layers:
        if layer.type == "batch_norm":
            ones, zeros = (np.ones(layer.in_shape[-1:], np.float32), np.zeros(layer.in_shape[-1:], np.float32))
            params.update({f"{layer.name}.gamma": ones, f"{layer.name}.beta": zeros,
                           f"{layer.name}.running_mean": zeros.copy(), f"{layer.name}.running_var": ones.copy()})
            continue
        bound = 1.0 / math.sqrt(layer.fan_in)
        for name, shape in layer.param_shapes.items():
            params[f"{layer.name}.{name}"] = rng.uniform(-bound, bound, shape).astype(np.float32)
    return params


def zero_velocity(network) -> dict[str, np.ndarray]:
    """The optimizer's starting velocity: zeros for every trained parameter (none for running statistics)."""
    return {name: np.zeros(shape, np.float32) for name, shape in network.param_shapes.items()}


def sum_shard_grads(tables) -> dict[str, np.ndarray]:
    """Sum per-shard gradient tables in the order given (shard order), so the sum is reproducible."""
    total: dict[str, np.ndarray] = {}
    for table in tables:
        for name, grad in table_to_arrays(table).items():
            total[name] = total[name] + grad if name in total else grad.copy()
    return total


def step_running_stats(network, params: dict, stats: dict[str, list]) -> dict[str, np.ndarray]:
    """Each batch_norm layer's running statistics after one momentum step per shard, in shard order
    (PyTorch's forward passes over the shards as micro-batches), or, synced, one step by the whole batch's:
    stats tables by statistics stage, in shard order."""
    new = {}
    for layer, stage in zip(network.batch_norm_layers, network.statistics_stages):
        name = layer.name
        mean, var = params[f"{name}.running_mean"], params[f"{name}.running_var"]
        parts = [batch_stats_of(t) for t in stats[stage]]
        for part in [combine(parts)] if layer.synced else parts:  # synced: one step by the whole batch's
            mean, var = running_step(mean, var, part, layer["momentum"])
        new.update({f"{name}.running_mean": mean, f"{name}.running_var": var})
    return new


def update_stage(inputs, ctx) -> StageResult:
    """Every gradient stage's shard tables and every batch_norm forward's statistics tables (one list per
    stage, in shard order) + velocity -> the next params (running statistics stepped) and velocity, and
    whether they are all finite."""
    net = ctx.network
    grads = sum_shard_grads([t for s in net.gradient_stages for t in inputs[s]])
    missing = sorted(set(net.param_shapes) - set(grads))
    if missing:
        raise ValueError(f"update: no gradient for parameters {missing}")
    h = ctx.hyper
    params, velocity = sgd_step(ctx.params, table_to_arrays(inputs["velocity"]), grads, h["learning_rate"],
                                h["momentum"], h["weight_decay"], h.get("nesterov", False))
    params.update(step_running_stats(net, ctx.params, {s: inputs[s] for s in net.statistics_stages}))
    version = h.get("iteration")
    finite = all(np.isfinite(a).all() for a in (*params.values(), *velocity.values()))
    return StageResult(version_tables(net, params, velocity, version), {"params_finite": bool(finite)})


def version_tables(network, params: dict, velocity: dict, version: int | None) -> dict:
    """A parameter version's tables: params (running statistics included), velocity, and, with batch
    norm, the running statistics a row per channel (for SQL; kept when retention removes the rest)."""
    tables = {"params": arrays_to_table(params, "params", version),
              "velocity": arrays_to_table(velocity, "velocity", version)}
    if network.batch_norm_layers:
        tables["running"] = running_stats_table(network, params, version)
    return tables
