"""A training run: its root, config, manifest, and the driver that runs its stages in order."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import shlex

import numpy as np
import pyarrow as pa

from sparkcnn.pipeline import config as config_mod, numerics, stage_keys
from sparkcnn.pipeline.config import Config
from sparkcnn.pipeline.data import ingest
from sparkcnn.pipeline.errors import ConfigError, Diverged, MissingInput, RunError, StageFailed
from sparkcnn.pipeline.runroot import layout
from sparkcnn.pipeline.runroot.manifest import Manifest
from sparkcnn.pipeline.runroot.retention import Policy, Retention
from sparkcnn.pipeline.runroot.storage import Storage
from sparkcnn.pipeline.runroot.verify import dependents
from sparkcnn.pipeline.spark.executor import Params
from sparkcnn.pipeline.training import contexts, modes, planner
from sparkcnn.pipeline.training.catalog import Catalog
from sparkcnn.pipeline.training.committer import Committer, StageOutcome
from sparkcnn.pipeline.training.contexts import Contexts
from sparkcnn.pipeline.training.driver import StageDriver, failure_reason
from sparkcnn.pipeline.training.environment import StageEnvironment
from sparkcnn.schemas.network import Network, NetworkError
from sparkcnn.stages import batch_norm
from sparkcnn.stages.tabular import StageContext

__all__ = ["Run", "RunError", "MissingInput", "StageFailed", "Diverged", "StageOutcome", "failure_reason",
           "network_for", "run_root_storage", "saved_config"]


def network_for(cfg: Config, ingested: dict | None = None) -> Network:
    """The configured layers on the data's image shape and classes: as an ingest recorded them, else as
    the data source describes them. An impossible stack is a ConfigError naming the layer."""
    if ingested and "image" in ingested:
        image, classes = tuple(ingested["image"]), ingested["classes"]
    else:
        described = ingest.configured_source(cfg)[1]
        image, classes = described.image, len(described.class_names)
    try:
        return Network(cfg.model.layers, image, classes)
    except NetworkError as e:
        raise ConfigError(f"the network cannot be built: {e}") from None


def run_root_storage(root: str) -> Storage:
    """Storage for a run root; a local run root must be a folder (created when missing)."""
    storage = Storage(root)
    if storage.local and os.path.exists(storage.base) and not os.path.isdir(storage.base):
        raise RunError(f"run root {storage.url} is a file, not a folder: name a folder for the run "
                       f"(it is created when missing)")
    return storage


def saved_config(storage: Storage) -> dict:
    """The config a run root was started with, as saved (its root: where it is now)."""
    try:
        raw = json.loads(storage.read_bytes(layout.CONFIG))
        raw["run"]["root"] = storage.url
    except FileNotFoundError:
        if Manifest(storage).keys():
            raise RunError(f"run root {storage.url} has committed stages but its {layout.CONFIG} is missing; "
                           f"restore it with `sparkcnn resume --run-root {shlex.quote(storage.url)} --config "
                           f"FILE` naming the config the run was started with (checked against the "
                           f"committed stages)") from None
        raise RunError(f"{storage.url} holds no run (no {layout.CONFIG}); start one with sparkcnn train") from None
    except (ValueError, KeyError, TypeError) as e:
        raise RunError(f"{storage.where(layout.CONFIG)} is damaged ({type(e).__name__}: {e}); restore it with "
                       f"`sparkcnn resume --run-root {shlex.quote(storage.url)} --config FILE` after removing "
                       f"it") from None
    return raw


def check_shards(network: Network, sched: stage_keys.Schedule) -> None:
    """Every iteration's last shard is large enough for the network's batch-norm layers."""
    for t in range(sched.start_iteration, sched.total_iterations):
        size = sched.batch_images(t)
        batch_norm.check_shard(network, size - (sched.shards(size) - 1) * sched.shard_size)


class Run:
    """The driver side of a run root."""

    def __init__(self, cfg: Config, root: str | None = None):
        self.cfg = cfg
        self.storage = run_root_storage(root or cfg.run.root)
        self.manifest = Manifest(self.storage)
        self.cache = dataclasses.asdict(cfg.cache)
        self._network: Network | None = None
        r = cfg.run
        self.retention = Retention(self.storage, self.manifest, Policy(r.keep_iterations, r.checkpoint_every,
                                                                        self.network.iteration_stages,
                                                                        functools.partial(contexts.inspected, r)))
        self.catalog = Catalog(cfg, self.storage, self.manifest, self.retention, self.network, self.cache)
        self.contexts = Contexts(self.catalog)
        self.committer = Committer(self.catalog, self.manifest, self.retention)
        self.driver = StageDriver(self.environment, self.mode)

    def environment(self) -> StageEnvironment:
        """What a mode or a setup runner is handed to compute a stage now."""
        schedule = self.catalog.schedule() if self.manifest.committed("ingest") else None
        return StageEnvironment(self.catalog, schedule, self.contexts, self.committer,
                                lambda root: Run.open(root).catalog)

    @property
    def running(self) -> str | None:
        """The stage under way, or the one that failed."""
        return self.driver.running

    @property
    def network(self) -> Network:
        """The configured layers on the data's image shape and classes (as ingested, or as the data
        source describes them before it is ingested)."""
        if self._network is None:
            self._network = network_for(self.cfg, (self.manifest.readable("ingest") or {}).get("values", {}).get("all"))
        return self._network

    @staticmethod
    def exists(root: str) -> bool:
        return Storage(root).exists(layout.CONFIG)

    @classmethod
    def open(cls, root: str, overrides: list[str] = ()) -> "Run":
        """Open an existing run root with the config it was started with (plus overrides)."""
        storage = run_root_storage(root)
        raw = saved_config(storage)
        return cls(config_mod.from_dict(config_mod.apply_overrides(raw, list(overrides))), storage.url)

    def save_config(self) -> None:
        """Record the config at the run root; a run root keeps the result settings it began with, the data
        source it ingested, and the arithmetic its first parameters were computed with."""
        init = self.manifest.readable("init")
        if init is not None:
            numerics.check_run(init.get("arithmetic", numerics.PINNED), self.storage.url)
        self.catalog.check_source(self.cfg.data.path)
        if self.storage.exists(layout.CONFIG):
            saved = json.loads(self.storage.read_bytes(layout.CONFIG))
            old = config_mod.from_dict(saved).result_settings()  # as identities see them: new keys at
            now = self.cfg.result_settings()                       # their defaults are not differences
            changed = [f"{s}.{k}" for s in Config.RESULT_SECTIONS for k in sorted(old[s].keys() | now[s].keys())
                       if old[s].get(k) != now[s].get(k)]
            if changed:
                raise RunError(f"run root {self.storage.url} was started with other settings that change results: "
                               f"{', '.join(changed)}; to continue with the new values from the last checkpoint, "
                               f"add --branch NEW_ROOT to `sparkcnn resume`, or use a new --run-root")
        elif not self.catalog.settings_match_commits():
            raise RunError(f"the config given does not match the one run root {self.storage.url} was started with "
                           f"(its model.* and train.* settings differ from those of the committed stages); name "
                           f"the run's own config, or use a new --run-root")
        data = {**self.cfg.to_dict(), "run": {**self.cfg.to_dict()["run"], "root": self.storage.url}}
        self.storage.write_bytes(layout.CONFIG, json.dumps(data, indent=1, allow_nan=False).encode())

    def ingested_from(self, path: str) -> bool:
        """Whether `path` holds the data this run ingested (see Catalog.ingested_from)."""
        return self.catalog.ingested_from(path)

    def data_notes(self) -> list[str]:
        """Warnings about the data source still to be ingested (images it does not use)."""
        return [] if self.manifest.committed("ingest") else list(ingest.configured_source(self.cfg)[1].notes)

    # schedule and plan (what is committed: self.catalog)

    def schedule(self) -> stage_keys.Schedule:
        return self.catalog.schedule()

    def iterations_done(self) -> int:
        """Iterations whose update is committed, counted from iteration 0."""
        return self.catalog.iterations_done()

    @property
    def mode(self):
        return modes.MODES[self.cfg.run.mode]

    def plan(self) -> list[str]:
        """Every stage key still to run or already run, in order."""
        if not self.manifest.committed("ingest"):
            return planner.plan(None, (), ())
        return planner.plan(self.schedule(), self.mode.committed_stages(self.network), self.manifest.keys())

    def next_stage(self) -> str | None:
        return planner.next_stage(self.plan(), self.manifest.keys())

    # running

    def train(self, spark, iterations: int = 0, on_stage=None, before_stage=None) -> list[StageOutcome]:
        """Run every uncommitted stage in order; stop before iteration `iterations` when given.
        before_stage(run, key) and on_stage(run, outcome) are called around each stage."""
        if diverged := self.catalog.divergence():
            raise self._diverged(diverged)
        if self.manifest.committed("ingest"):
            check_shards(self.network, self.schedule())
        outcomes = []

        def committed(outcome: StageOutcome, following: str | None) -> None:
            outcomes.append(outcome)
            if stage_keys.parse_key(outcome.key)[0] == "evaluate":
                self.committer.refresh_indexes()
            if on_stage:
                on_stage(self, outcome)
            if following and before_stage:
                before_stage(self, following)

        try:
            for key in self._pending_stages():
                if iterations and key not in stage_keys.SETUP_STAGES and \
                        self.schedule().first_iteration_needing(key) > iterations:
                    break
                if before_stage:
                    before_stage(self, key)
                keys = self.driver.job_stages(key)
                if len(keys) > 1:
                    self.driver.run_many(spark, keys, committed)
                else:
                    committed(self.run_stage(spark, key), None)
        except BaseException:
            with contextlib.suppress(Exception):
                self.retention.settle()
            raise
        self.retention.settle()
        self.committer.refresh_indexes()
        return outcomes

    def _pending_stages(self):
        """The planned stages not yet committed, in order, as they come due: the plan and the committed keys
        are read once (and again after each setup stage while there is no schedule, which ingest makes)."""
        while True:
            scheduled = self.manifest.committed("ingest")
            done = set(self.manifest.keys())
            pending = [k for k in self.plan() if k not in done]
            for key in pending:
                if not self.manifest.committed(key):  # a job over several stages commits those after it
                    yield key
                    if not scheduled:
                        break
            else:
                return

    def run_stage(self, spark, key: str) -> StageOutcome:
        """Compute one stage and commit it."""
        return self.driver.run_stage(spark, key)

    def _diverged(self, doc: dict) -> Diverged:
        return self.committer.diverged(doc)

    def identity(self, key: str, inputs: list[str], extra: dict) -> str:
        """Hash of the stage, the settings that shape results, and its inputs' identities."""
        return self.catalog.identity(key, inputs, extra)

    def branch_to(self, cfg: Config, root: str) -> "Run":
        """A new run at `root` with config `cfg`, starting from this run's last intact checkpoint."""
        new = Run(cfg, root)
        if new.network.param_shapes != self.network.param_shapes:
            raise RunError("cannot branch: the model settings change the parameter shapes, so no checkpoint fits")
        if new.storage.exists(layout.CONFIG):
            raise RunError(f"cannot branch into {new.storage.url}: it already holds a run")
        iteration = self.catalog.last_checkpoint()
        new.save_config()
        key = stage_keys.params_key(iteration, self.schedule().start_iteration)
        doc = {"from": self.storage.url, "iteration": iteration, "identity": self.manifest.get(key)["identity"]}
        new.storage.write_bytes(layout.BRANCH, json.dumps(doc).encode())
        entry = self.manifest.get("ingest")
        for files in entry["outputs"].values():
            for f in files:
                new.storage.write_bytes(f["path"], self.storage.read_bytes(f["path"]))
        extra = {"data": entry["values"][stage_keys.ALL_PARTS]["digest"]}
        new.manifest.commit({**{k: v for k, v in entry.items() if k != "committed_at"}, "extra": extra,
                             "identity": new.catalog.identity("ingest", [], extra)})
        return new

    # parameters and what ingest recorded, as committed (self.catalog)

    def params_at(self, iteration: int) -> dict[str, np.ndarray]:
        """Parameters an iteration starts from (iteration N+1 -> the parameters after N)."""
        return self.catalog.params_at(iteration)

    def params_ref(self, iteration: int) -> Params:
        """The same parameters by reference, for tasks to read."""
        return self.catalog.params_ref(iteration)

    def kept_params(self) -> list[int]:
        """The iteration counts whose parameters are stored."""
        return self.catalog.kept_params()

    def context(self, params: dict, normalizer: int = 1, hyper: dict | None = None, stage: str = "") -> StageContext:
        return self.contexts.context(params, normalizer, hyper, stage)

    def class_names(self) -> list[str]:
        """The classes' names in label order, as ingest recorded them."""
        return self.catalog.class_names()

    def channel_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """The training split's per-channel mean and std, as ingest committed them."""
        return self.catalog.channel_stats()

    def metrics(self) -> pa.Table:
        """All committed metrics rows of the run."""
        return self.catalog.metrics()

    def latest_params(self, iteration: int | None = None) -> tuple[int, dict[str, np.ndarray]]:
        """(iterations done, parameters) after `iteration` iterations, or after the last committed update."""
        if iteration is None:
            iteration = self.iterations_done()
        return iteration, self.params_at(iteration)

    # verification and repair

    def collect_garbage(self) -> dict:
        """Apply retention to every committed iteration and remove orphan files (gc)."""
        return self.retention.collect(self.iterations_done(), self.schedule())

    def verify(self, keys=None) -> dict[str, list[str]]:
        """Problems of committed stages (all, or those named): files that are not as recorded, and entries
        whose identity is not the one this run's settings and the inputs' identities give."""
        return self.catalog.verify(keys)

    def repair(self, problems: dict[str, list[str]]) -> list[str]:
        """Uncommit the stages with problems and every committed stage that depends on them,
        dependents first (latest commit first, unreadable entries last); the next training run
        recomputes them. Returns the uncommitted keys."""
        doomed = dependents(self.manifest, problems)
        removed = sorted(doomed, key=lambda k: (self.manifest.readable(k) or {}).get("committed_at", 0.0),
                         reverse=True)
        for key in removed:
            self.manifest.remove(key)
            self.retention.forget(key)
        return removed
