"""The whole network composed from its layers: evaluation, prediction, the reference loop and the bench."""
from __future__ import annotations

import numpy as np

from sparkcnn.schemas.topology import MULTI_INPUT
from sparkcnn.stages import add, avg_pool, batch_norm, conv, dropout, fc, global_avg_pool, loss, pool, relu
from sparkcnn.stages.tabular import StageContext, StageResult, layer_input, per_image_table, sum_gradients

LAYERS = {"conv": conv, "relu": relu, "max_pool": pool, "avg_pool": avg_pool, "fc": fc, "dropout": dropout,
          "batch_norm": batch_norm, "add": add, "global_avg_pool": global_avg_pool}


def layer_params(layer, ctx: StageContext, keys=None) -> dict:
    """The params a layer's forward takes; keys = (iteration, image ids) when training (dropout's masks,
    batch_norm's batch statistics)."""
    if layer.type == "dropout":
        return dropout.layer_params(layer, ctx, keys)
    if layer.type == "batch_norm":
        return batch_norm.layer_params(layer, ctx, keys is not None)
    return LAYERS[layer.type].layer_params(layer, ctx)


def forward(x: np.ndarray, labels: np.ndarray, ctx: StageContext, keys: tuple[int, np.ndarray] | None = None
            ) -> tuple[np.ndarray, list]:
    """Normalised images (N, H, W, C) -> per-image losses (N,) and every layer's cache (the loss's last).
    keys = (iteration, image ids) when training (dropout draws its masks from them, batch_norm normalises by
    the batch's statistics), None for inference (batch_norm's running statistics)."""
    caches, outputs = [], {}
    for layer in ctx.network.layers:
        inputs = tuple(outputs[n] for n in layer.inputs) or (x,)
        outputs[layer.name], cache = LAYERS[layer.type].forward(
            inputs if layer.type in MULTI_INPUT else inputs[0], layer_params(layer, ctx, keys))
        caches.append(cache)
    losses, loss_cache = loss.forward(outputs[ctx.network.output.name], {"labels": labels})
    return losses, [*caches, loss_cache]


def gradients(x: np.ndarray, labels: np.ndarray, ctx: StageContext, keys=None) -> tuple[np.ndarray, dict]:
    """Per-image losses and the gradient of sum(losses) / ctx.normalizer by every parameter."""
    losses, caches = forward(x, labels, ctx, keys)
    return losses, backward(caches, ctx)


def shard_gradients(x: np.ndarray, labels: np.ndarray, ctx: StageContext, keys: tuple[int, np.ndarray],
                    shard_size: int) -> tuple[dict, dict[str, list]]:
    """A batch run shard by shard as the pipeline runs it: gradients summed in shard order, and each
    batch_norm forward's statistics tables (count, mean, M2) by stage, in shard order."""
    net = ctx.network
    grads, stats = {}, {s: [] for s in net.statistics_stages}
    for start in range(0, labels.size, shard_size):
        part = slice(start, start + shard_size)
        _, caches = forward(x[part], labels[part], ctx, (keys[0], keys[1][part]))
        for name, g in backward(caches, ctx).items():
            grads[name] = grads[name] + g if name in grads else g.copy()
        for layer, stage in zip(net.batch_norm_layers, net.statistics_stages):
            c = caches[layer.index]
            stats[stage].append(batch_norm.stats_table(ctx.at(layer.forward_stage), None, c["count"], c["mean"], c["m2"]))
    return grads, stats


def backward(caches: list, ctx: StageContext) -> dict:
    """Gradients of sum(losses) / ctx.normalizer by every parameter, from forward's caches."""
    net = ctx.network
    loss_cache = caches[-1]
    count = loss_cache["labels"].shape[0]
    dscores, _ = loss.backward(np.full(count, 1.0 / ctx.normalizer, np.float32), loss_cache)
    received = {net.output.name: {-1: dscores}}  # by layer: gradients by the reader's position
    grads = {}
    for layer in reversed(net.layers):
        if not net.has_backward(layer):
            continue
        douts = received.pop(layer.name)
        dx, layer_grads = LAYERS[layer.type].backward(sum_gradients([douts[k] for k in sorted(douts)]),
                                                      caches[layer.index])
        grads.update({f"{layer.name}.{k}": v for k, v in layer_grads.items()})
        for name in layer.inputs if net.input_grad(layer) else ():
            received.setdefault(name, {})[layer.index] = dx
    return grads


def evaluate_stage(inputs, ctx: StageContext) -> StageResult:
    """x(pixels) -> evaluate(loss, predicted, probs): all forward layers in one pass, dropout off."""
    batch = inputs["x"]
    labels = batch.column("label").to_numpy()
    losses, caches = forward(layer_input(batch, ctx), labels, ctx)
    probs = caches[-1]["probs"]
    predicted = probs.argmax(axis=1)
    table = per_image_table(ctx, batch, "evaluate", loss=losses, predicted=predicted, probs=probs)
    return StageResult({"out": table}, loss.summary(losses, predicted, labels))
