"""A training run: its root, config, manifest, and the driver that runs its stages in order."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import shlex
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from sparkcnn.pipeline import config as config_mod, numerics, stage_keys
from sparkcnn.pipeline.config import Config
from sparkcnn.pipeline.data import ingest
from sparkcnn.pipeline.data.fingerprint import fingerprint
from sparkcnn.pipeline.data.sources import locate
from sparkcnn.pipeline.data.sources.cifar import CIFAR10_CLASSES
from sparkcnn.pipeline.errors import ConfigError, JobFailed, RunError
from sparkcnn.pipeline.runroot import layout
from sparkcnn.pipeline.runroot.manifest import Manifest
from sparkcnn.pipeline.runroot.retention import Policy, Retention
from sparkcnn.pipeline.runroot.storage import Storage
from sparkcnn.pipeline.runroot.verify import dependents, verify
from sparkcnn.pipeline.spark import faults, signals
from sparkcnn.pipeline.spark.executor import Params
from sparkcnn.pipeline.spark.session import jvm_ended
from sparkcnn.pipeline.training import metrics, modes, planner, runners
from sparkcnn.schemas.network import Network, NetworkError, StageDef
from sparkcnn.schemas.tables import METRICS_SCHEMA
from sparkcnn.stages import batch_norm, update
from sparkcnn.stages.tabular import STD_FLOOR, StageContext


class MissingInput(RunError):
    pass


class StageFailed(RunError):
    """A stage that raised; nothing of it is committed."""

    resumable = True

    def __init__(self, key: str, reason: str):
        super().__init__(f"stage {key} failed: {reason}")
        self.key = key


class _CallerError(Exception):
    """An error of a caller's callback while a job runs: its cause is raised as it is, not as the stage's."""


class Diverged(RunError):
    """Training produced a loss or parameters that are not finite numbers."""


ERROR_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Invalid|Interrupt|Exit)(?::|$)")
NOT_A_CAUSE = ("org.apache.", "java.", "scala.", "py4j.", "pyspark.errors.")


def failure_reason(error: BaseException) -> str:
    """The root cause of an error, also when it comes back from a Spark task as a long trace:
    the last line that names a Python exception, not the Java or py4j wrappers around it."""
    text = str(error)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    causes = [ln for ln in lines if ERROR_LINE.match(ln) and not ln.startswith(NOT_A_CAUSE)]
    if causes:
        return causes[-1].split(" SQLSTATE:", 1)[0]
    reason = lines[0] if lines else type(error).__name__
    return reason if ERROR_LINE.match(reason) else f"{type(error).__name__}: {reason}"


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


@dataclass
class StageOutcome:
    key: str
    seconds: float
    rows: int
    bytes: int


class Run:
    """The driver side of a run root."""

    def __init__(self, cfg: Config, root: str | None = None):
        self.cfg = cfg
        self.storage = run_root_storage(root or cfg.run.root)
        self.manifest = Manifest(self.storage)
        self.cache = dataclasses.asdict(cfg.cache)
        self.running: str | None = None
        self._network: Network | None = None
        self._stats: tuple[str, np.ndarray, np.ndarray] | None = None
        r = cfg.run
        self.retention = Retention(self.storage, self.manifest, Policy(r.keep_iterations, r.checkpoint_every,
                                                                        self.network.iteration_stages, self.inspected))

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
        return cls(config_mod.from_dict(config_mod.apply_overrides(raw, list(overrides))), storage.url)

    def save_config(self) -> None:
        """Record the config at the run root; a run root keeps the result settings it began with, the data
        source it ingested, and the arithmetic its first parameters were computed with."""
        init = self.manifest.readable("init")
        if init is not None:
            numerics.check_run(init.get("arithmetic", numerics.PINNED), self.storage.url)
        self.check_source()
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
        elif not self._settings_match_commits():
            raise RunError(f"the config given does not match the one run root {self.storage.url} was started with "
                           f"(its model.* and train.* settings differ from those of the committed stages); name "
                           f"the run's own config, or use a new --run-root")
        data = {**self.cfg.to_dict(), "run": {**self.cfg.to_dict()["run"], "root": self.storage.url}}
        self.storage.write_bytes(layout.CONFIG, json.dumps(data, indent=1, allow_nan=False).encode())

    def check_source(self) -> None:
        """One run root, one data source: once ingested, data.path must hold what ingest read."""
        entry = self.manifest.get("ingest")
        if entry is None:
            return
        recorded = entry["values"][stage_keys.ALL_PARTS]
        path = ingest.resolve_data_path(self.cfg.data.path)
        if not self.ingested_from(path):
            raise RunError(f"run root {self.storage.url} ingested {recorded['source']}, and data.path {path} holds "
                           f"other data: a run root trains on one data source; use a new --run-root for {path} "
                           f"(`sparkcnn resume --run-root {shlex.quote(self.storage.url)}` continues this run)")

    def ingested_from(self, path: str) -> bool:
        """Whether `path` holds the data this run ingested: by fingerprint, so the same data under another
        path or URL will do; by path for a run ingested before fingerprints were recorded, or when the
        data is no longer there."""
        recorded = self.manifest.get("ingest")["values"][stage_keys.ALL_PARTS]
        storage, rel = locate(path)
        if "fingerprint" in recorded and storage.exists(rel):
            return fingerprint(path) == recorded["fingerprint"]
        return storage.where(rel) == recorded["source"]

    def data_notes(self) -> list[str]:
        """Warnings about the data source still to be ingested (images it does not use)."""
        return [] if self.manifest.committed("ingest") else list(ingest.configured_source(self.cfg)[1].notes)

    def _settings_match_commits(self) -> bool:
        """Whether this config's result settings are those the committed stages were computed with
        (what a config.json that went missing must be restored to)."""
        for key, extra in (("init", lambda: {"branch": self.branch()} if self.branch() else {}),
                           ("ingest", lambda: {"data": self.manifest.get("ingest")["values"]["all"]["digest"]})):
            entry = self.manifest.get(key)
            if entry is not None:
                return self.identity(key, entry["inputs"], extra()) == entry["identity"]
        return True

    # schedule and plan

    def schedule(self) -> stage_keys.Schedule:
        entry = self.manifest.get("ingest")
        if entry is None:
            raise MissingInput("stage ingest is not committed")
        counts = entry["values"]["all"]
        t = self.cfg.train
        train_images = min(t.images, counts["train"]) if t.images else counts["train"]
        return stage_keys.Schedule(train_images, counts["test"], t.batch_size, t.shard_size, t.epochs,
                              self.branch().get("iteration", 0))

    def branch(self) -> dict:
        """Where this run branched from ({} for a run that started from scratch)."""
        if not hasattr(self, "_branch"):
            self._branch = json.loads(self.storage.read_bytes(layout.BRANCH)) if self.storage.exists(layout.BRANCH) else {}
        return self._branch

    def iterations_done(self) -> int:
        """Iterations whose update is committed, counted from iteration 0."""
        sched = self.schedule()
        t = sched.start_iteration
        while self.manifest.committed(stage_keys.iteration_key(t, "update")):
            t += 1
        return t

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
        if diverged := self.divergence():
            raise self._diverged(diverged)
        if self.manifest.committed("ingest"):
            sched = self.schedule()
            for t in range(sched.start_iteration, sched.total_iterations):
                size = sched.batch_images(t)
                batch_norm.check_shard(self.network, size - (sched.shards(size) - 1) * sched.shard_size)
        outcomes = []

        def committed(outcome: StageOutcome, following: str | None) -> None:
            outcomes.append(outcome)
            if stage_keys.parse_key(outcome.key)[0] == "evaluate":
                self.refresh_indexes()
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
                keys = self.job_stages(key)
                if len(keys) > 1:
                    self.run_many(spark, keys, committed)
                else:
                    committed(self.run_stage(spark, key), None)
        except BaseException:
            with contextlib.suppress(Exception):
                self.retention.settle()
            raise
        self.retention.settle()
        self.refresh_indexes()
        return outcomes

    def refresh_indexes(self) -> None:
        """Bring the manifest's and the retirement records' indexes up to date (at epoch ends and when
        training stops), so that a reader of a long run reads a few files, not one per committed stage."""
        self.manifest.refresh_index()
        self.retention.refresh_index()

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

    def job_stages(self, key: str) -> list[str]:
        """The stages that run with `key` in one Spark job: in a mode with multi-stage jobs (staged, unless
        run.job_per_stage), the uncommitted shard stages of its iteration from it on; else `key` alone."""
        stage, _, t = stage_keys.parse_key(key)
        shard_stages = self.network.iteration_stages[:-1]
        if self.cfg.run.job_per_stage or not self.mode.multi_stage_jobs or t is None or stage not in shard_stages:
            return [key]
        keys, group = [], set()
        for s in shard_stages[shard_stages.index(stage):]:
            k = stage_keys.iteration_key(t, s)
            reads_all = {i.source for i in self.network.stage_def(s).inputs.values() if i.many}
            if self.manifest.committed(k) or (keys and reads_all & group):  # a synced layer's barrier
                break
            keys.append(k)
            group.add(s)
        return keys

    def run_stage(self, spark, key: str) -> StageOutcome:
        if self.manifest.committed(key):
            raise RunError(f"stage {key} is already committed")
        stage, epoch, iteration = stage_keys.parse_key(key)
        start = time.perf_counter()
        self.running = key
        with self._failures():
            entry = self._compute(spark, key, stage, epoch, iteration)
        entry.setdefault("seconds", time.perf_counter() - start)
        return self._commit(entry)

    def run_many(self, spark, keys: list[str], committed) -> None:
        """Consecutive shard stages of one iteration as one Spark job (see job_stages), each committed as it
        finishes; committed(outcome, next key or None) is called after each commit."""
        self.running = keys[0]
        outcomes = []

        def commit(entry: dict) -> None:
            outcomes.append(self._commit(entry))
            self.running = keys[len(outcomes)] if len(outcomes) < len(keys) else None
            try:
                committed(outcomes[-1], self.running)
            except Exception as e:
                raise _CallerError() from e

        try:
            with self._failures():
                self.mode.run_many(self, spark, keys, commit)
        except _CallerError as e:
            raise e.__cause__ from None

    @contextlib.contextmanager
    def _failures(self):
        """An error while computing a stage as one line naming the stage (none of it is committed)."""
        try:
            yield
        except (RunError, ingest.DataError, _CallerError):
            raise
        except Exception as e:
            key, cause = (e.key, e.__cause__) if isinstance(e, JobFailed) else (self.running, e)
            self.running = key
            raise (signals.received() or StageFailed(key, jvm_ended(cause) or failure_reason(cause))) from cause

    def _commit(self, entry: dict) -> StageOutcome:
        """Commit a computed stage: its checks, totals and metrics, then its manifest entry."""
        key = entry["key"]
        stage, epoch, iteration = stage_keys.parse_key(key)
        self.check_finite(key, iteration, entry["values"])
        files = [f for fs in entry["outputs"].values() for f in fs]
        entry["rows"] = sum(f["rows"] for f in files if f["output"] in ("out", "images"))
        entry["bytes"] = sum(f["bytes"] for f in files)
        if stage == "update":
            metrics.attach_iteration_metrics(self, entry, iteration)
        elif stage == "evaluate":
            metrics.attach_eval_metrics(self, entry, epoch)
        self.retention.forget(key)
        self.manifest.commit(entry)
        self.running = None
        faults.hit("after-commit", key)
        if stage == "update":
            self.retention.apply(iteration + 1, self.schedule())
        return StageOutcome(key, entry["seconds"], entry["rows"], entry["bytes"])

    def check_finite(self, key: str, iteration: int | None, values: dict) -> None:
        """Refuse to commit a training loss or parameters that are not finite: such a run cannot learn.
        The run root records where it diverged, so that it is not recomputed and a branch starts from
        parameters that gave a finite loss."""
        if iteration is None:
            return
        losses_finite = all(math.isfinite(v["loss_sum"]) for v in values.values() if "loss_sum" in v)
        if losses_finite and all(v.get("params_finite", True) for v in values.values()):
            return
        what = "the training loss is not a finite number" if not losses_finite else \
            "the updated parameters are not all finite numbers"
        doc = {"iteration": iteration, "stage": key, "what": what,
               "last_good": iteration if losses_finite else iteration - 1}
        self.storage.write_bytes(layout.DIVERGED, json.dumps(doc).encode())
        raise self._diverged(doc)

    def _diverged(self, doc: dict) -> "Diverged":
        what = f"iteration {doc['iteration']}: {doc['what']} ({doc['stage']} is not committed); the run cannot go on"
        if floored := self.floored_channels():
            return Diverged(f"{what}: the data may be the cause, not the learning rate: channel(s) "
                            f"{', '.join(map(str, floored))} of the training images hardly vary (standard deviation "
                            f"below {STD_FLOOR:.6f}, normalised by that floor); check the data")
        try:
            start = f"the parameters after {self.last_checkpoint()} iterations"
        except RunError:
            start = "a new run: no checkpoint before the divergence is kept"
        return Diverged(
            f"{what} with these settings. To continue with a smaller learning rate from {start}: sparkcnn resume "
            f"--run-root {shlex.quote(self.storage.url)} --branch NEW_ROOT --set train.learning_rate=SMALLER "
            f"(now {self.cfg.train.learning_rate:g})")

    def floored_channels(self) -> list[int]:
        """The channels whose std ingest found below the floor (normalised by STD_FLOOR instead)."""
        entry = self.manifest.get("ingest")
        return entry["values"][stage_keys.ALL_PARTS].get("std_floored", []) if entry else []

    def divergence(self) -> dict:
        """Where this run diverged ({} when it did not)."""
        return json.loads(self.storage.read_bytes(layout.DIVERGED)) if self.storage.exists(layout.DIVERGED) else {}

    def _compute(self, spark, key: str, stage: str, epoch: int | None, iteration: int | None) -> dict:
        if iteration is not None and stage in self.network.iteration_stages:
            return self.mode.run(self, spark, key, stage, iteration)
        if stage in runners.SETUP and iteration is None:
            return runners.SETUP[stage](self, spark, key, epoch)
        raise RunError(f"unknown stage {key!r}")

    def entry(self, key: str, inputs: list[str], extra_identity: dict, outputs: list[dict], values: dict) -> dict:
        stage, epoch, iteration = stage_keys.parse_key(key)
        identity = self.identity(key, inputs, extra_identity)
        grouped: dict[str, list[dict]] = {}
        for f in outputs:
            grouped.setdefault(f["output"], []).append({k: f[k] for k in ("part", "output", "path", "rows", "bytes")})
        return {"key": key, "stage": stage, "epoch": epoch, "iteration": iteration, "identity": identity,
                "inputs": inputs, "extra": extra_identity, "outputs": grouped, "values": values, "cache": self.cache,
                "arithmetic": numerics.arithmetic()}

    def identity(self, key: str, inputs: list[str], extra: dict) -> str:
        """Hash of the stage, the settings that shape results, and its inputs' identities."""
        input_ids = {}
        for dep in inputs:
            entry = self.manifest.get(dep)
            if entry is None:
                raise MissingInput(f"cannot run {key}: its input stage {dep} is not committed")
            input_ids[dep] = entry["identity"]
        doc = {"key": key, "settings": self.cfg.result_settings(), "inputs": input_ids, **extra,
               **numerics.identity_extra()}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    def last_checkpoint(self) -> int:
        """The latest iteration whose starting parameters and velocity are stored and intact (and, in a
        run that diverged, gave a finite loss)."""
        sched = self.schedule()
        last = min(self.iterations_done(), self.divergence().get("last_good", self.iterations_done()))
        for t in range(last, sched.start_iteration - 1, -1):
            key = stage_keys.params_key(t, sched.start_iteration)
            if self.manifest.committed(key) and not ({"params", "velocity"} & self.retention.retired_outputs(key)) \
                    and not self.verify([key]):
                return t
        raise RunError(f"run {self.storage.url} has no intact checkpoint")

    def branch_to(self, cfg: Config, root: str) -> "Run":
        """A new run at `root` with config `cfg`, starting from this run's last intact checkpoint."""
        new = Run(cfg, root)
        if new.network.param_shapes != self.network.param_shapes:
            raise RunError("cannot branch: the model settings change the parameter shapes, so no checkpoint fits")
        if new.storage.exists(layout.CONFIG):
            raise RunError(f"cannot branch into {new.storage.url}: it already holds a run")
        iteration = self.last_checkpoint()
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
                             "identity": new.identity("ingest", [], extra)})
        return new

    def params_at(self, iteration: int) -> dict[str, np.ndarray]:
        """Parameters an iteration starts from (iteration N+1 -> the parameters after N)."""
        return self.params_ref(iteration).load()

    def params_ref(self, iteration: int) -> Params:
        """The same parameters by reference, for tasks to read."""
        return Params(self.storage, self.params_file(iteration, "params")["path"])

    def params_file(self, iteration: int, output: str) -> dict:
        start = self.schedule().start_iteration if self.manifest.committed("ingest") else 0
        if iteration < start:
            raise RunError(f"this run branched at iteration {start}; parameters of iteration {iteration} "
                           f"are in {self.branch()['from']}")
        key = stage_keys.params_key(iteration, start)
        if not self.manifest.committed(key):
            raise MissingInput(f"parameters for iteration {iteration}: stage {key} is not committed")
        if output in self.retention.retired_outputs(key):
            kept = ", ".join(map(str, self.kept_params()))
            raise RunError(f"the parameters after {iteration} iterations were removed by the checkpoint policy "
                           f"(kept: every run.checkpoint_every={self.cfg.run.checkpoint_every}-th, epoch ends, the "
                           f"last, inspected iterations' and those of the last run.keep_iterations="
                           f"{self.cfg.run.keep_iterations} iterations); kept here: after {kept} iterations")
        (f,) = self.manifest.files(key, output)
        return f

    def kept_params(self) -> list[int]:
        """The iteration counts whose parameters are stored."""
        start = self.schedule().start_iteration
        return [v for v in range(start, self.iterations_done() + 1)
                if {"params"} - self.retention.retired_outputs(stage_keys.params_key(v, start))]

    def context(self, params: dict, normalizer: int = 1, hyper: dict | None = None, stage: str = "") -> StageContext:
        mean, std = self.channel_stats()
        augment = self.cfg.data.augment
        return StageContext(self.network, params, mean, std, normalizer, hyper or {}, self.cache, stage,
                            self.cfg.train.seed, augment=(augment.crop_padding, augment.flip))

    def class_names(self) -> list[str]:
        """The classes' names in label order, as ingest recorded them (runs ingested before names were
        recorded were CIFAR-10)."""
        values = self.manifest.get("ingest")["values"][stage_keys.ALL_PARTS]
        return values.get("class_names") or list(CIFAR10_CLASSES[: values.get("classes", 10)])

    def channel_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """The training split's per-channel mean and std, as ingest committed them (read once)."""
        (f,) = self.manifest.files("ingest", "stats")
        if self._stats is None or self._stats[0] != f["path"]:
            stats = self.storage.read_parquet(f["path"])
            self._stats = f["path"], stats.column("mean").to_numpy(), stats.column("std").to_numpy()
        return self._stats[1], self._stats[2]

    def stage_def(self, stage: str, t: int) -> StageDef:
        """A stage of iteration t, reading its inputs as the policies they were written with hold them."""
        entries = {stage_keys.iteration_key(t, s): self.manifest.get(stage_keys.iteration_key(t, s))
                   for s in self.network.iteration_stages[:self.network.iteration_stages.index(stage)]}
        return self.network.stage_def(stage, self.cache, planner.written_policies(self.network, stage, t, entries))

    def hyper(self, t: int) -> dict:
        t_cfg = self.cfg.train
        sched = self.schedule()
        return {"learning_rate": update.learning_rate(t_cfg.learning_rate, t_cfg.lr_schedule, t, sched.total_iterations,
                                                      t_cfg.lr_warmup_epochs * sched.iterations_per_epoch),
                "momentum": t_cfg.momentum, "weight_decay": t_cfg.weight_decay, "nesterov": t_cfg.nesterov,
                "iteration": t + 1}

    def inspected(self, t: int) -> bool:
        """Whether iteration t keeps its stage outputs: listed for inspection, or every N-th in fused mode."""
        every = self.cfg.run.inspect_every
        return t in self.cfg.run.inspect_iterations or (self.cfg.run.mode == "fused" and every > 0 and t % every == 0)

    def metrics(self) -> pa.Table:
        """All committed metrics rows of the run."""
        tables = [self.storage.read_parquet(f["path"]) for k in self.manifest.keys()
                  for f in (self.manifest.get(k)["outputs"].get("metrics") or [])]
        return pa.concat_tables(tables) if tables else METRICS_SCHEMA.empty_table()

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
        keys = list(self.manifest.keys() if keys is None else keys)
        problems = verify(self.storage, self.manifest, self.retention, keys)
        for key in sorted(keys, key=lambda k: (self.manifest.readable(k) or {}).get("committed_at", 0.0)):
            entry = self.manifest.readable(key)  # inputs before their readers: only the first stale one is named
            if key in problems or entry is None or "extra" not in entry or set(entry.get("inputs", ())) & set(problems):
                continue
            try:
                same = self.identity(key, entry.get("inputs", []), entry["extra"]) == entry.get("identity")
            except RunError as e:  # an input that is not committed, or whose entry is damaged
                problems[key] = [str(e)]
                continue
            if not same:
                problems[key] = [f"{layout.manifest_entry(key)}: computed with other settings or inputs than this "
                                 f"run's (its identity differs)"]
        return problems

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
