"""Stage keys in the manifest, and how the training images fall into epochs, iterations and shards."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sparkcnn.schemas.network import PER_IMAGE  # noqa: F401  (graph.PER_IMAGE: the per-image output of a stage)

SETUP_STAGES = ("ingest", "init", "testset")
ALL_PARTS = "all"


def iteration_key(iteration: int, stage: str) -> str:
    return f"i{iteration:06d}.{stage}"


def batches_key(epoch: int) -> str:
    return f"batches.e{epoch:04d}"


def eval_key(epoch: int) -> str:
    return f"eval.e{epoch:04d}"


def params_key(iteration: int, start: int = 0) -> str:
    """The stage whose output holds the parameters an iteration starts from; a run (or a branch)
    starting at iteration `start` takes them from its init stage."""
    return "init" if iteration == start else iteration_key(iteration - 1, "update")


def shard_part(shard: int) -> str:
    return f"{shard:04d}"


def batch_part(iteration: int, shard: int) -> str:
    return f"{iteration:06d}.{shard:04d}"


def parse_key(key: str) -> tuple[str, int | None, int | None]:
    """key -> (stage name, epoch or None, iteration or None)."""
    if key.startswith("i") and "." in key and key[1:7].isdigit():
        return key.split(".", 1)[1], None, int(key[1:7])
    if key.startswith(("batches.e", "eval.e")):
        name, epoch = key.split(".e")
        return ("evaluate" if name == "eval" else name), int(epoch), None
    return key, None, None


@dataclass(frozen=True)
class Schedule:
    """How the training images fall into epochs, iterations and shards."""

    train_images: int
    test_images: int
    batch_size: int
    shard_size: int
    epochs: int
    start_iteration: int = 0

    @property
    def iterations_per_epoch(self) -> int:
        return math.ceil(self.train_images / self.batch_size)

    @property
    def total_iterations(self) -> int:
        return self.epochs * self.iterations_per_epoch

    def epoch_of(self, iteration: int) -> int:
        return iteration // self.iterations_per_epoch

    def batch_images(self, iteration: int) -> int:
        start = (iteration % self.iterations_per_epoch) * self.batch_size
        return min(self.batch_size, self.train_images - start)

    def shards(self, images: int) -> int:
        return math.ceil(images / self.shard_size)

    def plan(self, iteration_stages: tuple[str, ...]) -> list[str]:
        """Every stage key of the run, in execution order."""
        keys = list(SETUP_STAGES)
        for epoch in range(self.epoch_of(self.start_iteration), self.epochs):
            keys.append(batches_key(epoch))
            first = max(epoch * self.iterations_per_epoch, self.start_iteration)
            for t in range(first, (epoch + 1) * self.iterations_per_epoch):
                keys.extend(iteration_key(t, s) for s in iteration_stages)
            keys.append(eval_key(epoch))
        return keys

    def first_iteration_needing(self, key: str) -> int:
        """The iteration count a run must be allowed to reach for this stage to run."""
        stage, epoch, iteration = parse_key(key)
        if iteration is not None:
            return iteration + 1
        if stage == "batches":
            return epoch * self.iterations_per_epoch + 1
        if stage == "evaluate":
            return (epoch + 1) * self.iterations_per_epoch
        return 0


def epoch_permutation(seed: int, epoch: int, images: int) -> np.ndarray:
    """The order in which an epoch visits the training images (indices from 0)."""
    return np.random.default_rng([seed, epoch]).permutation(images)
