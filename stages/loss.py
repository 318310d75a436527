"""Softmax cross-entropy."""
from __future__ import annotations

import numpy as np

from sparkcnn.stages.tabular import StageResult, per_image_table, tensor


def forward(scores: np.ndarray, params: dict) -> tuple[np.ndarray, dict]:
    """scores (N, K), params labels (N,) -> per-image losses (N,); cache holds the probabilities."""
    labels = params["labels"].astype(np.intp)
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    losses = -log_probs[np.arange(scores.shape[0]), labels]
    return losses, {"probs": np.exp(log_probs), "labels": labels}


def backward(dout: np.ndarray, cache: dict) -> tuple[np.ndarray, dict]:
    """dout (N,), the gradient of the objective by each image's loss -> dscores (N, K)."""
    dscores = cache["probs"].copy()
    dscores[np.arange(dscores.shape[0]), cache["labels"]] -= 1
    return dscores * dout[:, None].astype(np.float32), {}


def forward_stage(inputs, ctx) -> StageResult:
    """x(scores) -> loss(loss, predicted, probs, dx) for the mean loss over a batch, dx being the
    gradient by the scores. Reports the shard's loss sum and count of correct predictions."""
    scores_table = inputs["x"]
    labels = scores_table.column("label").to_numpy()
    losses, cache = forward(tensor(scores_table, "out"), {"labels": labels})
    dout = np.full(losses.shape, 1.0 / ctx.normalizer, dtype=np.float32)
    dscores, _ = backward(dout, cache)
    predicted = cache["probs"].argmax(axis=1)
    table = per_image_table(ctx, scores_table, "loss", loss=losses, predicted=predicted, probs=cache["probs"],
                            dx=dscores)
    return StageResult({"out": table}, summary(losses, predicted, labels))


def summary(losses: np.ndarray, predicted: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {"loss_sum": float(losses.astype(np.float64).sum()), "correct": int((predicted == labels).sum()),
            "count": int(labels.shape[0])}
