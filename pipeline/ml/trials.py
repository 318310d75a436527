"""Trials: run roots under `<root>/trials/` that read the ingest of `<root>` by reference. The base root
commits the ingest once; a trial's ingest entry lists the base's files as `../../data/...`, so the trial
has its own lock, stages and config, and its gc (which only looks under its own folders) never removes
a shared file."""
from __future__ import annotations

import dataclasses
import json
import threading

from sparkcnn.pipeline import stage_keys
from sparkcnn.pipeline.config import Config
from sparkcnn.pipeline.errors import ConfigError
from sparkcnn.pipeline.runroot.layout import TRIAL_DOC, TRIALS
from sparkcnn.pipeline.runroot.lock import RunLock
from sparkcnn.pipeline.training.run import Run

SHARED = "../.."  # a trial's root -> its base root
VARIABLE_SECTIONS = ("train", "model")
INGEST_KEYS = ("train.seed",)  # a train.* key that changes the ingest (the split rule's seed)
FREE_KEYS = ("run.mode", "run.iterations")  # change no result, so a trial may set them


def check_grid(settings: list[dict]) -> None:
    """Refuse a grid over anything but train.* and model.* (or over a key that changes the ingest)."""
    for point in settings:
        for key in point:
            if key in FREE_KEYS:
                continue
            if key.split(".")[0] not in VARIABLE_SECTIONS or key in INGEST_KEYS:
                raise ConfigError(f"{key} cannot vary across trials: trials share one ingest, and only train.* "
                                  f"and model.* keys (not {', '.join(INGEST_KEYS)}) leave it unchanged")


def ingest_base(spark, cfg: Config) -> Run:
    """The base run root with its ingest committed (once: a later call finds it)."""
    run = Run.open(cfg.run.root) if Run.exists(cfg.run.root) else Run(cfg)
    if not run.manifest.committed("ingest"):
        with RunLock(run.storage):
            if not Run.exists(run.storage.url):
                run.save_config()
            if not run.manifest.committed("ingest"):
                run.run_stage(spark, "ingest")
    return run


def check_same_ingest(base: Run, cfg: Config) -> None:
    """Refuse trials whose data settings (or split seed) are not those the base root was ingested with."""
    differ = [f"data.{k}" for k, v in base.cfg.to_dict()["data"].items() if cfg.to_dict()["data"][k] != v]
    differ += list(INGEST_KEYS) if base.cfg.get(INGEST_KEYS[0]) != cfg.get(INGEST_KEYS[0]) else []
    if differ:
        raise ConfigError(f"run root {base.storage.url} was ingested with other {', '.join(differ)}; its trials "
                          f"share that ingest: use the same settings or another --run-root")


def trial_root(base: Run, cfg: Config) -> str:
    """A trial's run root: named by its result settings, so the same settings find the same trial."""
    return f"{base.storage.url}/{TRIALS}/t-{cfg.fingerprint()}"


def open_trial(base: Run, cfg: Config, settings: dict) -> Run:
    """The trial of `cfg` (whatever its run.root) under `base`, made with the shared ingest linked when missing."""
    root = trial_root(base, cfg)
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, root=root))
    trial = Run(cfg, root)
    if not trial.manifest.committed("ingest"):
        link_ingest(base, trial)
        trial = Run(cfg, root)  # the network as the linked ingest recorded it
    if not trial.storage.exists(TRIAL_DOC):
        trial.storage.write_bytes(TRIAL_DOC, json.dumps({"settings": settings}, sort_keys=True).encode())
    return trial


def link_ingest(base: Run, trial: Run) -> None:
    """Commit the base's ingest in the trial, its files named relative to the trial's root."""
    entry = base.manifest.get("ingest")
    outputs = {name: [{**f, "path": f"{SHARED}/{f['path']}"} for f in files]
               for name, files in entry["outputs"].items()}
    extra = {"data": entry["values"][stage_keys.ALL_PARTS]["digest"]}
    trial.manifest.commit({**{k: v for k, v in entry.items() if k != "committed_at"}, "outputs": outputs,
                           "extra": extra, "identity": trial.identity("ingest", [], extra)})


def trial_roots(base_url: str) -> list[str]:
    """The run roots of the trials under a base run root, by name."""
    base = Run.open(base_url).storage
    return [f"{base.url}/{TRIALS}/{name}" for name in base.listdir(TRIALS) if Run.exists(f"{base.url}/{TRIALS}/{name}")]


def train_trial(spark, trial: Run, on_stage=None, before_stage=None) -> Run:
    """Train a trial to its end (or run.iterations) under its own lock; a finished trial is left as it is."""
    with RunLock(trial.storage):
        trial.save_config()
        trial.train(spark, trial.cfg.run.iterations, on_stage=on_stage, before_stage=before_stage)
    return trial


class Trials:
    """A thread-safe iterator over trials: each `next()` takes the next index and trains it in the caller's
    thread (so trials taken by several threads train at the same time, as concurrent Spark jobs);
    yields (index, make(index, trained run))."""

    def __init__(self, count: int, train, make):
        self._count, self._train, self._make = count, train, make
        self._next = 0
        self._lock = threading.Lock()

    def __iter__(self):
        return self

    def __next__(self):
        with self._lock:
            index = self._next
            if index >= self._count:
                raise StopIteration
            self._next += 1
        return index, self._make(index, self._train(index))
