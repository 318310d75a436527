"""SGD with momentum and weight decay (PyTorch's formulation)."""
from __future__ import annotations

import math

import numpy as np

from schemas.tables import arrays_to_table, table_to_arrays
from stages.tabular import StageResult


def sgd_step(params: dict, velocity: dict, grads: dict, lr: float, momentum: float, weight_decay: float) -> tuple[dict, dict]:
    """v <- momentum * v + (g + weight_decay * p); p <- p - lr * v. All arrays float32."""
    new_params, new_velocity = {}, {}
    for name, p in params.items():
        g = grads[name] + np.float32(weight_decay) * p
        v = np.float32(momentum) * velocity[name] + g
        new_velocity[name] = v.astype(np.float32)
        new_params[name] = (p - np.float32(lr) * v).astype(np.float32)
    return new_params, new_velocity


def learning_rate(base: float, schedule: str, iteration: int, total_iterations: int) -> float:
    """Learning rate of an iteration: constant, or cosine-annealed to zero over the run."""
    if schedule == "constant":
        return base
    if schedule == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * iteration / total_iterations))
    raise ValueError(f"unknown learning-rate schedule {schedule!r} (expected 'constant' or 'cosine')")


def init_params(network, seed: int) -> dict[str, np.ndarray]:
    """PyTorch's default init: uniform in +-1/sqrt(fan_in) for weights and biases of each layer,
    drawn layer by layer in the network's order from one seeded stream."""
    rng = np.random.default_rng([seed, 0x5EED])
    params = {}
    for layer in network.trained_layers:
        bound = 1.0 / math.sqrt(layer.fan_in)
        for name, shape in layer.param_shapes.items():
            params[f"{layer.name}.{name}"] = rng.uniform(-bound, bound, shape).astype(np.float32)
    return params


def sum_shard_grads(tables) -> dict[str, np.ndarray]:
    """Sum per-shard gradient tables in the order given (shard order), so the sum is reproducible."""
    total: dict[str, np.ndarray] = {}
    for table in tables:
        for name, grad in table_to_arrays(table).items():
            total[name] = total[name] + grad if name in total else grad.copy()
    return total


def update_stage(inputs, ctx) -> StageResult:
    """Every gradient stage's shard tables (one list per stage, in shard order) + velocity
    -> the next params and velocity, and whether they are all finite."""
    grads = sum_shard_grads([t for name, tables in inputs.items() if name != "velocity" for t in tables])
    missing = sorted(set(ctx.params) - set(grads))
    if missing:
        raise ValueError(f"update: no gradient for parameters {missing}")
    h = ctx.hyper
    params, velocity = sgd_step(ctx.params, table_to_arrays(inputs["velocity"]), grads,
                                h["learning_rate"], h["momentum"], h["weight_decay"])
    version = h.get("iteration")
    finite = all(np.isfinite(a).all() for a in (*params.values(), *velocity.values()))
    return StageResult({"params": arrays_to_table(params, "params", version),
                        "velocity": arrays_to_table(velocity, "velocity", version)}, {"params_finite": bool(finite)})
