"""The whole network composed from its layers: evaluation, prediction, the reference loop and the bench."""
from __future__ import annotations

import numpy as np

from stages import avg_pool, conv, dropout, fc, loss, pool, relu
from stages.tabular import StageContext, StageResult, layer_input, per_image_table

LAYERS = {"conv": conv, "relu": relu, "max_pool": pool, "avg_pool": avg_pool, "fc": fc, "dropout": dropout}


def layer_params(layer, ctx: StageContext, keys=None) -> dict:
    """The params a layer's forward takes; keys = (iteration, image ids) when training (dropout's masks)."""
    if layer.type == "dropout":
        return dropout.layer_params(layer, ctx, keys)
    return LAYERS[layer.type].layer_params(layer, ctx)


def forward(x: np.ndarray, labels: np.ndarray, ctx: StageContext, keys: tuple[int, np.ndarray] | None = None
            ) -> tuple[np.ndarray, list]:
    """Normalised images (N, H, W, C) -> per-image losses (N,) and every layer's cache (the loss's last).
    keys = (iteration, image ids) when training (dropout draws its masks from them), None for inference."""
    caches = []
    for layer in ctx.network.layers:
        x, cache = LAYERS[layer.type].forward(x, layer_params(layer, ctx, keys))
        caches.append(cache)
    losses, loss_cache = loss.forward(x, {"labels": labels})
    return losses, [*caches, loss_cache]


def gradients(x: np.ndarray, labels: np.ndarray, ctx: StageContext, keys=None) -> tuple[np.ndarray, dict]:
    """Per-image losses and the gradient of sum(losses) / ctx.normalizer by every parameter."""
    losses, caches = forward(x, labels, ctx, keys)
    return losses, backward(caches, ctx)


def backward(caches: list, ctx: StageContext) -> dict:
    """Gradients of sum(losses) / ctx.normalizer by every parameter, from forward's caches."""
    net = ctx.network
    loss_cache = caches[-1]
    count = loss_cache["labels"].shape[0]
    dout, _ = loss.backward(np.full(count, 1.0 / ctx.normalizer, np.float32), loss_cache)
    grads = {}
    for layer in reversed(net.layers):
        if not net.has_backward(layer):
            break
        dout, layer_grads = LAYERS[layer.type].backward(dout, caches[layer.index])
        grads.update({f"{layer.name}.{k}": v for k, v in layer_grads.items()})
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
