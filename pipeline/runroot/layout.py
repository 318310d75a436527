"""Every path under a run root, relative to it: the one place that names the run root's folders and files."""
from __future__ import annotations

import uuid

CONFIG = "config.json"
DIVERGED = "diverged.json"
BRANCH = "branch.json"
MANIFEST = "manifest"
RETIRED = "retired"
LOCK = "lock"
LOGS = "logs"
DATA = "data"
IMAGES = "data/images"
TESTSET = "data/testset"
SCORES = "scores"
TRIALS = "trials"  # a sweep's trials, each a run root
TRIAL_DOC = "trial.json"  # the settings a trial varies
OWNED_ROOTS = (DATA, "epochs", "iterations", "params", "metrics")


def manifest_entry(key: str) -> str:
    return f"{MANIFEST}/{key}.json"


def folder_index(folder: str) -> str:
    """The cache of a folder's JSON documents (sparkcnn.pipeline.runroot.folder_index); not itself a document."""
    return f"{folder}/_index"


def retired_record(key: str) -> str:
    return f"{RETIRED}/{key}.json"


def score_record(stamp: str) -> str:
    """What one `sparkcnn score` wrote (where, with which parameters, on which data): the commit of a scoring."""
    return f"{SCORES}/{stamp}.json"


def log_file(stamp: str, pid: int, command: str) -> str:
    return f"{LOGS}/{stamp}-{pid}-{command}.log"


def batches_dir(epoch: int) -> str:
    return f"epochs/e{epoch:04d}/batches"


def evaluate_dir(epoch: int) -> str:
    return f"epochs/e{epoch:04d}/evaluate"


def iteration_dir(iteration: int) -> str:
    return f"iterations/i{iteration:06d}"


def stage_dir(iteration: int, stage: str) -> str:
    return f"{iteration_dir(iteration)}/{stage}"


PROGRESS_PREFIX = "_progress-"


def progress_dir(iteration: int) -> str:
    """Where the tasks of one job over several stages of an iteration record each stage as it finishes."""
    return f"{iteration_dir(iteration)}/{PROGRESS_PREFIX}{uuid.uuid4().hex[:12]}"


def progress_record(progress: str, key: str, first_unit: int, failed: bool = False) -> str:
    """One task's record of a stage it finished (its result rows), or of a stage it failed in, named by
    the task's first unit."""
    return f"{progress}/{key}-{first_unit:04d}.{'failed' if failed else 'json'}"


def params_dir(version: int) -> str:
    """Parameters and velocity after `version` iterations."""
    return f"params/v{version:06d}"


def iteration_metrics(iteration: int) -> str:
    return f"metrics/i{iteration:06d}"


def epoch_metrics(epoch: int) -> str:
    return f"metrics/e{epoch:04d}"


def output_path(out_dir: str, output: str, part: str) -> str:
    """A fresh file name for one part of a stage's output: a retried attempt never overwrites another."""
    return f"{out_dir}/{output}-{part}-{uuid.uuid4().hex[:12]}.parquet"
