"""The stages of a run, their inputs and their keys in the manifest."""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, replace

import numpy as np

from schemas.tables import DEFAULT_CACHE, KEY_COLUMNS

ITERATION_STAGES = ("conv_fwd", "relu_fwd", "pool_fwd", "fc_fwd", "loss",
                    "fc_bwd", "pool_bwd", "relu_bwd", "conv_bwd", "update")
SETUP_STAGES = ("ingest", "init", "testset")
PER_IMAGE = "out"
ALL_PARTS = "all"


@dataclass(frozen=True)
class Input:
    """Where a stage input comes from: a source (an iteration stage, 'batches' or 'params'),
    which output of it, which columns, and whether all its parts are read at once."""

    source: str
    output: str
    columns: tuple[str, ...] | None
    many: bool = False


def _image_input(source: str, *columns: str, keys: bool = True) -> Input:
    return Input(source, PER_IMAGE, (*(KEY_COLUMNS if keys else ()), *columns))


@dataclass(frozen=True)
class StageDef:
    function: str
    inputs: dict[str, Input]
    uses_params: bool = False


STAGE_DEFS = {
    "conv_fwd": StageDef("stages.conv:forward_stage", {"batches": _image_input("batches", "pixels")}, True),
    "relu_fwd": StageDef("stages.relu:forward_stage", {"conv_fwd": _image_input("conv_fwd", "out")}),
    "pool_fwd": StageDef("stages.pool:forward_stage", {"relu_fwd": _image_input("relu_fwd", "out")}),
    "fc_fwd": StageDef("stages.fc:forward_stage", {"pool_fwd": _image_input("pool_fwd", "out")}, True),
    "loss": StageDef("stages.loss:forward_stage", {"fc_fwd": _image_input("fc_fwd", "scores")}),
    "fc_bwd": StageDef("stages.fc:backward_stage", {"loss": _image_input("loss", "dscores"),
                                                    "pool_fwd": _image_input("pool_fwd", "out", keys=False)}, True),
    "pool_bwd": StageDef("stages.pool:backward_stage", {"fc_bwd": _image_input("fc_bwd", "dx"),
                                                        "pool_fwd": _image_input("pool_fwd", "argmax", keys=False)}),
    "relu_bwd": StageDef("stages.relu:backward_stage", {"pool_bwd": _image_input("pool_bwd", "dx"),
                                                        "relu_fwd": _image_input("relu_fwd", "mask", keys=False)}),
    "conv_bwd": StageDef("stages.conv:backward_stage", {"relu_bwd": _image_input("relu_bwd", "dx"),
                                                        "batches": _image_input("batches", "pixels", keys=False)}, True),
    "update": StageDef("stages.update:update_stage", {"fc_bwd": Input("fc_bwd", "grads", None, many=True),
                                                      "conv_bwd": Input("conv_bwd", "grads", None, many=True),
                                                      "velocity": Input("params", "velocity", None)}, True),
}


def stage_def(stage: str, cache: dict | None = None, written: dict[str, dict] | None = None) -> StageDef:
    """A stage's definition under a cache policy, which decides what its backward stages read: each
    input as the policy its table was written with holds it (`written`, by source stage; else `cache`)."""
    def policy(source: str, key: str):
        return {**DEFAULT_CACHE, **(cache or {}), **((written or {}).get(source) or {})}[key]

    def dx(source: str) -> tuple[str, ...]:
        return ("dx_mask", "dx_values") if policy(source, "sparse_gradients") else ("dx",)

    sdef = STAGE_DEFS[stage]
    inputs = dict(sdef.inputs)
    if stage == "pool_bwd" and policy("pool_fwd", "pool_argmax") == "recompute":
        del inputs["pool_fwd"]
        inputs["relu_fwd"] = _image_input("relu_fwd", "out", keys=False)
    elif stage == "relu_bwd":
        mask = "out" if policy("relu_fwd", "relu_mask") == "recompute" else "mask"
        inputs["pool_bwd"] = _image_input("pool_bwd", *dx("pool_bwd"))
        inputs["relu_fwd"] = _image_input("relu_fwd", mask, keys=False)
    elif stage == "conv_bwd":
        inputs["relu_bwd"] = _image_input("relu_bwd", *dx("relu_bwd"))
    return replace(sdef, inputs=inputs)


EVALUATE = StageDef("stages.network:evaluate_stage", {"batches": _image_input("batches", "pixels")}, True)


def resolve(function: str):
    """The stage function named 'module:function'."""
    module, name = function.split(":")
    return getattr(importlib.import_module(module), name)


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

    def plan(self, iteration_stages: tuple[str, ...] = ITERATION_STAGES) -> list[str]:
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
