"""The whole network composed from its layers, for evaluation and the single-process reference."""
from __future__ import annotations

import numpy as np

from stages import conv, fc, loss, pool, relu
from stages.geometry import Geometry
from stages.tabular import StageContext, StageResult, per_image_table


def forward(x: np.ndarray, labels: np.ndarray, ctx: StageContext) -> tuple[np.ndarray, list]:
    """Normalised images (N, H, W, C) -> per-image losses (N,) and every layer's cache."""
    out, conv_cache = conv.forward(x, conv.layer_params(ctx))
    out, relu_cache = relu.forward(out)
    out, pool_cache = pool.forward(out, pool.layer_params(ctx))
    scores, fc_cache = fc.forward(out, ctx.layer_params("fc"))
    losses, loss_cache = loss.forward(scores, {"labels": labels})
    return losses, [conv_cache, relu_cache, pool_cache, fc_cache, loss_cache]


def gradients(x: np.ndarray, labels: np.ndarray, ctx: StageContext) -> tuple[np.ndarray, dict]:
    """Per-image losses and the gradient of sum(losses) / ctx.normalizer by every parameter."""
    losses, caches = forward(x, labels, ctx)
    return losses, backward(caches, ctx)


def backward(caches: list, ctx: StageContext) -> dict:
    """Gradients of sum(losses) / ctx.normalizer by every parameter, from forward's caches."""
    conv_cache, relu_cache, pool_cache, fc_cache, loss_cache = caches
    count = loss_cache["labels"].shape[0]
    dscores, _ = loss.backward(np.full(count, 1.0 / ctx.normalizer, np.float32), loss_cache)
    dpool, fc_grads = fc.backward(dscores, fc_cache)
    drelu, _ = pool.backward(dpool, pool_cache)
    dconv, _ = relu.backward(drelu, relu_cache)
    _, conv_grads = conv.backward(dconv, conv_cache)
    return {**{f"fc.{k}": v for k, v in fc_grads.items()}, **{f"conv.{k}": v for k, v in conv_grads.items()}}


def evaluate_stage(inputs, ctx: StageContext) -> StageResult:
    """batches(pixels) -> evaluate(loss, predicted, probs): all forward layers in one pass."""
    batch = inputs["batches"]
    labels = batch.column("label").to_numpy()
    losses, caches = forward(conv.images(inputs, ctx), labels, ctx)
    probs = caches[-1]["probs"]
    predicted = probs.argmax(axis=1)
    table = per_image_table(ctx, "evaluate", batch, loss=losses, predicted=predicted, probs=probs)
    return StageResult({"out": table}, loss.summary(losses, predicted, labels))


def geometry_of(model) -> Geometry:
    """Geometry of the network for a model config on 32x32x3 CIFAR images."""
    return Geometry(height=32, width=32, channels=3, filters=model.filters, kernel=model.kernel,
                    conv_stride=model.stride, padding=model.padding, pool_size=model.pool_size,
                    pool_stride=model.pool_stride, classes=model.classes)
