"""A training run: its root, config, manifest, and the driver that runs its stages in order."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import shlex
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline import config as config_mod
from pipeline import faults, graph, ingest, modes, signals
from pipeline.config import Config, ConfigError
from pipeline.errors import RunError
from pipeline.executor import ShuffleTask, StageTask, Unit, execute, output_path, write_shard
from pipeline.manifest import Manifest
from pipeline.retention import Retention
from pipeline.verify import dependents, verify
from pipeline.storage import Storage
from schemas.tables import METRICS_SCHEMA, TASK_RESULT_SCHEMA, arrays_to_table, table_to_arrays
from stages import update
from stages.network import geometry_of
from stages.tabular import StageContext

CONFIG_FILE = "config.json"
DIVERGED_FILE = "diverged.json"
BRANCH_FILE = "branch.json"
SAMPLE_DATA = Path(__file__).resolve().parent / "sample" / "cifar-10-sample.tar.gz"


class MissingInput(RunError):
    pass


class StageFailed(RunError):
    """A stage that raised; nothing of it is committed."""

    resumable = True

    def __init__(self, key: str, reason: str):
        super().__init__(f"stage {key} failed: {reason}")
        self.key = key


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


def resolve_data_path(path: str) -> str:
    """The data to ingest: the given path, else the embedded sample (copied out of a zipped package)."""
    if path:
        return path
    if SAMPLE_DATA.exists():
        return str(SAMPLE_DATA)
    from importlib import resources

    data = resources.files("pipeline").joinpath("sample", SAMPLE_DATA.name).read_bytes()
    copy = Path(tempfile.gettempdir()) / f"sparkcnn-{hashlib.sha256(data).hexdigest()[:12]}-{SAMPLE_DATA.name}"
    if not copy.exists():
        tmp = copy.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, copy)
    return str(copy)


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
        self.retention = Retention(self)
        self.geometry = geometry_of(cfg.model)
        try:
            self.geometry.check()
        except ValueError as e:
            raise ConfigError(f"the network cannot be built: {e}") from None
        self.cache = dataclasses.asdict(cfg.cache)
        self.running: str | None = None

    @staticmethod
    def exists(root: str) -> bool:
        return Storage(root).exists(CONFIG_FILE)

    @classmethod
    def open(cls, root: str, overrides: list[str] = ()) -> "Run":
        """Open an existing run root with the config it was started with (plus overrides)."""
        storage = run_root_storage(root)
        try:
            raw = json.loads(storage.read_bytes(CONFIG_FILE))
            raw["run"]["root"] = storage.url
        except FileNotFoundError:
            if Manifest(storage).keys():
                raise RunError(f"run root {storage.url} has committed stages but its {CONFIG_FILE} is missing; "
                               f"restore it with `sparkcnn resume --run-root {shlex.quote(storage.url)} --config "
                               f"FILE` naming the config the run was started with (checked against the "
                               f"committed stages)") from None
            raise RunError(f"{storage.url} holds no run (no {CONFIG_FILE}); start one with sparkcnn train") from None
        except (ValueError, KeyError, TypeError) as e:
            raise RunError(f"{storage.where(CONFIG_FILE)} is damaged ({type(e).__name__}: {e}); restore it with "
                           f"`sparkcnn resume --run-root {shlex.quote(storage.url)} --config FILE` after removing "
                           f"it") from None
        return cls(config_mod.from_dict(config_mod.apply_overrides(raw, list(overrides))), storage.url)

    def save_config(self) -> None:
        """Record the config at the run root; a run root keeps the result settings it began with."""
        if self.storage.exists(CONFIG_FILE):
            saved = json.loads(self.storage.read_bytes(CONFIG_FILE))
            old = {s: saved[s] for s in Config.RESULT_SECTIONS}
            changed = [f"{s}.{k}" for s in old for k in old[s] if old[s][k] != self.cfg.to_dict()[s][k]]
            if changed:
                raise RunError(f"run root {self.storage.url} was started with other settings that change results: "
                               f"{', '.join(changed)}; to continue with the new values from the last checkpoint, "
                               f"add --branch NEW_ROOT to `sparkcnn resume`, or use a new --run-root")
        elif not self._settings_match_commits():
            raise RunError(f"the config given does not match the one run root {self.storage.url} was started with "
                           f"(its model.* and train.* settings differ from those of the committed stages); name "
                           f"the run's own config, or use a new --run-root")
        data = {**self.cfg.to_dict(), "run": {**self.cfg.to_dict()["run"], "root": self.storage.url}}
        self.storage.write_bytes(CONFIG_FILE, json.dumps(data, indent=1, allow_nan=False).encode())

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

    def schedule(self) -> graph.Schedule:
        entry = self.manifest.get("ingest")
        if entry is None:
            raise MissingInput("stage ingest is not committed")
        counts = entry["values"]["all"]
        t = self.cfg.train
        train_images = min(t.images, counts["train"]) if t.images else counts["train"]
        return graph.Schedule(train_images, counts["test"], t.batch_size, t.shard_size, t.epochs,
                              self.branch().get("iteration", 0))

    def branch(self) -> dict:
        """Where this run branched from ({} for a run that started from scratch)."""
        if not hasattr(self, "_branch"):
            self._branch = json.loads(self.storage.read_bytes(BRANCH_FILE)) if self.storage.exists(BRANCH_FILE) else {}
        return self._branch

    def iterations_done(self) -> int:
        """Iterations whose update is committed, counted from iteration 0."""
        sched = self.schedule()
        t = sched.start_iteration
        while self.manifest.committed(graph.iteration_key(t, "update")):
            t += 1
        return t

    def iteration_stages(self) -> tuple[str, ...]:
        """The committed stages of an iteration: all ten when staged; in memory and fused modes
        an iteration runs whole and commits only its update (checkpoint)."""
        return graph.ITERATION_STAGES if self.cfg.run.mode == "staged" else ("update",)

    def plan(self) -> list[str]:
        """Every stage key still to run or already run, in order. An iteration whose update is
        committed (in whatever mode it ran) needs none of its other stages."""
        if not self.manifest.committed("ingest"):
            return list(graph.SETUP_STAGES)
        finished = {k.split(".")[0] for k in self.manifest.keys() if k.endswith(".update")}
        return [k for k in self.schedule().plan(self.iteration_stages())
                if k.endswith(".update") or k.split(".")[0] not in finished]

    def next_stage(self) -> str | None:
        done = set(self.manifest.keys())
        return next((k for k in self.plan() if k not in done), None)

    # running

    def train(self, spark, iterations: int = 0, on_stage=None, before_stage=None) -> list[StageOutcome]:
        """Run every uncommitted stage in order; stop before iteration `iterations` when given.
        before_stage(run, key) and on_stage(run, outcome) are called around each stage."""
        if diverged := self.divergence():
            raise self._diverged(diverged)
        outcomes = []
        while (key := self.next_stage()) is not None:
            if iterations and key not in graph.SETUP_STAGES and self.schedule().first_iteration_needing(key) > iterations:
                break
            if before_stage:
                before_stage(self, key)
            outcomes.append(self.run_stage(spark, key))
            if on_stage:
                on_stage(self, outcomes[-1])
        return outcomes

    def run_stage(self, spark, key: str) -> StageOutcome:
        if self.manifest.committed(key):
            raise RunError(f"stage {key} is already committed")
        stage, epoch, iteration = graph.parse_key(key)
        start = time.perf_counter()
        self.running = key
        try:
            entry = self._compute(spark, key, stage, epoch, iteration)
        except (RunError, ingest.DataError):
            raise
        except Exception as e:
            raise (signals.received() or StageFailed(key, failure_reason(e))) from e
        self._check_finite(key, iteration, entry["values"])
        entry["seconds"] = time.perf_counter() - start
        files = [f for fs in entry["outputs"].values() for f in fs]
        entry["rows"] = sum(f["rows"] for f in files if f["output"] in ("out", "images"))
        entry["bytes"] = sum(f["bytes"] for f in files)
        if stage == "update":
            self._write_iteration_metrics(entry, iteration)
        elif stage == "evaluate":
            self._write_eval_metrics(entry, epoch)
        self.retention.forget(key)
        self.manifest.commit(entry)
        self.running = None
        faults.hit("after-commit", key)
        if stage == "update":
            self.retention.apply(iteration + 1)
        return StageOutcome(key, entry["seconds"], entry["rows"], entry["bytes"])

    def _check_finite(self, key: str, iteration: int | None, values: dict) -> None:
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
        self.storage.write_bytes(DIVERGED_FILE, json.dumps(doc).encode())
        raise self._diverged(doc)

    def _diverged(self, doc: dict) -> "Diverged":
        try:
            start = f"the parameters after {self.last_checkpoint()} iterations"
        except RunError:
            start = "a new run: no checkpoint before the divergence is kept"
        return Diverged(
            f"iteration {doc['iteration']}: {doc['what']} ({doc['stage']} is not committed); the run cannot go on "
            f"with these settings. To continue with a smaller learning rate from {start}: sparkcnn resume "
            f"--run-root {shlex.quote(self.storage.url)} --branch NEW_ROOT --set train.learning_rate=SMALLER "
            f"(now {self.cfg.train.learning_rate:g})")

    def divergence(self) -> dict:
        """Where this run diverged ({} when it did not)."""
        return json.loads(self.storage.read_bytes(DIVERGED_FILE)) if self.storage.exists(DIVERGED_FILE) else {}

    def _compute(self, spark, key: str, stage: str, epoch: int | None, iteration: int | None) -> dict:
        if stage == "ingest":
            entry = self._ingest()
        elif stage == "init":
            entry = self._branch_init() if self.branch() else self._init()
        elif stage in ("testset", "batches"):
            entry = self._shuffle(spark, key, epoch)
        elif stage == "evaluate":
            entry = self._evaluate(spark, key, epoch)
        elif stage == "update" and self.cfg.run.mode != "staged":
            entry = self._whole_iteration(spark, key, iteration)
        elif stage in graph.STAGE_DEFS and iteration is not None:
            entry = self._iteration_stage(spark, key, stage, iteration)
        else:
            raise RunError(f"unknown stage {key!r}")
        return entry

    def _entry(self, key: str, inputs: list[str], extra_identity: dict, outputs: list[dict], values: dict) -> dict:
        stage, epoch, iteration = graph.parse_key(key)
        identity = self.identity(key, inputs, extra_identity)
        grouped: dict[str, list[dict]] = {}
        for f in outputs:
            grouped.setdefault(f["output"], []).append({k: f[k] for k in ("part", "output", "path", "rows", "bytes")})
        return {"key": key, "stage": stage, "epoch": epoch, "iteration": iteration, "identity": identity,
                "inputs": inputs, "outputs": grouped, "values": values, "cache": self.cache}

    def identity(self, key: str, inputs: list[str], extra: dict) -> str:
        """Hash of the stage, the settings that shape results, and its inputs' identities."""
        input_ids = {}
        for dep in inputs:
            entry = self.manifest.get(dep)
            if entry is None:
                raise MissingInput(f"cannot run {key}: its input stage {dep} is not committed")
            input_ids[dep] = entry["identity"]
        doc = {"key": key, "settings": self.cfg.result_settings(), "inputs": input_ids, **extra}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    def _ingest(self) -> dict:
        data = resolve_data_path(self.cfg.data.path)
        tables, stats, digest = ingest.load(data, self.geometry)
        outputs = []
        for name, table in tables.items():
            path = output_path("data/images", "images", name)
            outputs.append(_file(name, "images", path, table.num_rows, self.storage.write_parquet(table, path)))
        path = output_path("data", "stats", "all")
        outputs.append(_file("all", "stats", path, stats.num_rows, self.storage.write_parquet(stats, path)))
        counts = {"train": sum(t.num_rows for n, t in tables.items() if n != ingest.TEST_BATCH),
                  "test": tables[ingest.TEST_BATCH].num_rows, "digest": digest, "source": data}
        return self._entry("ingest", [], {"data": digest}, outputs, {"all": counts})

    def _init(self) -> dict:
        params = update.init_params(self.geometry.param_shapes, self.cfg.train.seed)
        velocity = {n: np.zeros_like(p) for n, p in params.items()}
        outputs = []
        for name, arrays in (("params", params), ("velocity", velocity)):
            table = arrays_to_table(arrays, name, 0)
            path = output_path("params/v000000", name, graph.ALL_PARTS)
            outputs.append(_file(graph.ALL_PARTS, name, path, table.num_rows, self.storage.write_parquet(table, path)))
        return self._entry("init", [], {}, outputs, {})

    def _branch_init(self) -> dict:
        """The parameters and velocity this branch starts from, copied from its source run."""
        branch = self.branch()
        source = Run.open(branch["from"])
        outputs = []
        for name in ("params", "velocity"):
            table = source.storage.read_parquet(source._params_file(branch["iteration"], name)["path"])
            path = output_path(f"params/v{branch['iteration']:06d}", name, graph.ALL_PARTS)
            outputs.append(_file(graph.ALL_PARTS, name, path, table.num_rows, self.storage.write_parquet(table, path)))
        return self._entry("init", [], {"branch": branch}, outputs, {})

    def last_checkpoint(self) -> int:
        """The latest iteration whose starting parameters and velocity are stored and intact (and, in a
        run that diverged, gave a finite loss)."""
        sched = self.schedule()
        last = min(self.iterations_done(), self.divergence().get("last_good", self.iterations_done()))
        for t in range(last, sched.start_iteration - 1, -1):
            key = graph.params_key(t, sched.start_iteration)
            if self.manifest.committed(key) and not ({"params", "velocity"} & self.retention.retired_outputs(key)) \
                    and not verify(self, [key]):
                return t
        raise RunError(f"run {self.storage.url} has no intact checkpoint")

    def branch_to(self, cfg: Config, root: str) -> "Run":
        """A new run at `root` with config `cfg`, starting from this run's last intact checkpoint."""
        new = Run(cfg, root)
        if new.geometry.param_shapes != self.geometry.param_shapes:
            raise RunError("cannot branch: the model settings change the parameter shapes, so no checkpoint fits")
        if new.storage.exists(CONFIG_FILE):
            raise RunError(f"cannot branch into {new.storage.url}: it already holds a run")
        iteration = self.last_checkpoint()
        new.save_config()
        key = graph.params_key(iteration, self.schedule().start_iteration)
        doc = {"from": self.storage.url, "iteration": iteration, "identity": self.manifest.get(key)["identity"]}
        new.storage.write_bytes(BRANCH_FILE, json.dumps(doc).encode())
        entry = self.manifest.get("ingest")
        for files in entry["outputs"].values():
            for f in files:
                new.storage.write_bytes(f["path"], self.storage.read_bytes(f["path"]))
        new.manifest.commit({k: v for k, v in entry.items() if k != "committed_at"})
        return new

    def _shuffle(self, spark, key: str, epoch: int | None) -> dict:
        """Write the images of an epoch (or the test split) as one file per (iteration, shard)."""
        from pyspark.sql import functions as F

        images = self.manifest.files("ingest", "images")
        test = epoch is None
        order = self._image_order(epoch)
        frame = spark.read.parquet(*[self.storage.uri(f["path"]) for f in images])
        frame = frame.where(F.col("split") == ("test" if test else "train")).drop("split", "source_batch")
        order_frame = spark.createDataFrame(order)
        joined = frame.join(F.broadcast(order_frame), "image_id")
        out_dir = "data/testset" if test else f"epochs/e{epoch:04d}/batches"
        task = ShuffleTask(self.storage, StageContext(self.geometry), out_dir, -1 if test else epoch)
        spark.sparkContext.setJobDescription(key)
        result = joined.groupBy("iteration", "shard").applyInArrow(
            lambda table: write_shard(task, table), _spark_schema(TASK_RESULT_SCHEMA)).toArrow()
        rows = result.to_pylist()
        expected = self._shuffle_parts(order)
        self._check_parts(key, rows, {"out": expected})
        return self._entry(key, ["ingest"], {}, rows, {})

    def _image_order(self, epoch: int | None) -> pa.Table:
        """image_id -> (iteration, shard, position) for an epoch's shuffle, or the test split in order."""
        sched = self.schedule()
        start_id = self.manifest.get("ingest")["values"]["all"]["train"]
        if epoch is None:
            ids = np.arange(start_id, start_id + sched.test_images, dtype=np.int64)
            iterations = np.zeros(ids.size, np.int32)
            positions = np.arange(ids.size, dtype=np.int32)
        else:
            ids = graph.epoch_permutation(self.cfg.train.seed, epoch, sched.train_images).astype(np.int64)
            index = np.arange(ids.size)
            iterations = (epoch * sched.iterations_per_epoch + index // sched.batch_size).astype(np.int32)
            positions = (index % sched.batch_size).astype(np.int32)
        shards = (positions // sched.shard_size).astype(np.int32)
        return pa.table({"image_id": ids, "iteration": iterations, "shard": shards, "position": positions})

    @staticmethod
    def _shuffle_parts(order: pa.Table) -> set[str]:
        pairs = set(zip(order.column("iteration").to_pylist(), order.column("shard").to_pylist()))
        return {graph.batch_part(i, s) for i, s in pairs}

    @staticmethod
    def _check_parts(key: str, rows: list[dict], expected: dict[str, set[str]]) -> None:
        for output, parts in expected.items():
            got = [r["part"] for r in rows if r["output"] == output]
            if sorted(got) != sorted(parts):
                missing = sorted(set(parts) - set(got))
                extra = sorted(p for p in set(got) if got.count(p) > 1 or p not in parts)
                raise RunError(f"stage {key}: output {output} has missing parts {missing[:5]} "
                               f"or repeated/unexpected parts {extra[:5]}")

    def params_at(self, iteration: int) -> dict[str, np.ndarray]:
        """Parameters an iteration starts from (iteration N+1 -> the parameters after N)."""
        return table_to_arrays(self.storage.read_parquet(self._params_file(iteration, "params")["path"]))

    def _params_file(self, iteration: int, output: str) -> dict:
        start = self.schedule().start_iteration if self.manifest.committed("ingest") else 0
        if iteration < start:
            raise RunError(f"this run branched at iteration {start}; parameters of iteration {iteration} "
                           f"are in {self.branch()['from']}")
        key = graph.params_key(iteration, start)
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
                if {"params"} - self.retention.retired_outputs(graph.params_key(v, start))]

    def context(self, params: dict, normalizer: int = 1, hyper: dict | None = None) -> StageContext:
        (f,) = self.manifest.files("ingest", "stats")
        stats = self.storage.read_parquet(f["path"])
        return StageContext(self.geometry, params, stats.column("mean").to_numpy(),
                            stats.column("std").to_numpy(), normalizer, hyper or {}, self.cache)

    def _sources(self, t: int) -> dict[str, str]:
        sched = self.schedule()
        return {"batches": graph.batches_key(sched.epoch_of(t)), "params": graph.params_key(t, sched.start_iteration)}

    def _stage_def(self, stage: str, t: int) -> graph.StageDef:
        """A stage of iteration t, reading its inputs as the policies they were written with hold them."""
        written = {}
        for source in graph.ITERATION_STAGES[:graph.ITERATION_STAGES.index(stage)]:
            entry = self.manifest.get(graph.iteration_key(t, source))
            if entry is not None and "cache" in entry:
                written[source] = entry["cache"]
        return graph.stage_def(stage, self.cache, written)

    def _stage_deps(self, stage: str, t: int) -> list[str]:
        sdef = self._stage_def(stage, t)
        source_key = self._sources(t)
        return sorted({source_key.get(i.source, graph.iteration_key(t, i.source)) for i in sdef.inputs.values()}
                      | ({source_key["params"]} if sdef.uses_params else set()))

    def _hyper(self, t: int) -> dict:
        t_cfg = self.cfg.train
        return {"learning_rate": update.learning_rate(t_cfg.learning_rate, t_cfg.lr_schedule, t,
                                                      self.schedule().total_iterations),
                "momentum": t_cfg.momentum, "weight_decay": t_cfg.weight_decay, "iteration": t + 1}

    def _iteration_stage(self, spark, key: str, stage: str, t: int) -> dict:
        sched = self.schedule()
        sdef = self._stage_def(stage, t)
        source_key = self._sources(t)
        deps = self._stage_deps(stage, t)
        self.identity(key, deps, {})
        shards = [graph.shard_part(s) for s in range(sched.shards(sched.batch_images(t)))]
        parts = [graph.ALL_PARTS] if stage == "update" else shards
        units = []
        for part in parts:
            inputs = {}
            for name, inp in sdef.inputs.items():
                src = source_key.get(inp.source, graph.iteration_key(t, inp.source))
                files = self.manifest.files(src, inp.output)
                if inp.many:
                    inputs[name] = [f["path"] for f in files]
                else:
                    want = graph.batch_part(t, int(part)) if inp.source == "batches" else (
                        graph.ALL_PARTS if inp.source == "params" else part)
                    inputs[name] = [f["path"] for f in files if f["part"] == want]
                    if len(inputs[name]) != 1:
                        raise RunError(f"stage {src} has {len(inputs[name])} files for part {want}")
            units.append(Unit(part, inputs))
        hyper = self._hyper(t) if stage == "update" else {}
        params = self.params_at(t) if sdef.uses_params else {}
        out_dir = f"params/v{t + 1:06d}" if stage == "update" else f"iterations/i{t:06d}/{stage}"
        task = StageTask(self.storage, sdef.function, self.context(params, sched.batch_images(t), hyper), out_dir,
                         {n: list(i.columns) if i.columns else None for n, i in sdef.inputs.items()},
                         frozenset(n for n, i in sdef.inputs.items() if i.many), units, key)
        rows = self._run_task(spark, key, task)
        outputs = {r["output"] for r in rows}
        self._check_parts(key, rows, {o: parts for o in outputs})
        return self._entry(key, deps, {}, rows, {r["part"]: json.loads(r["values"]) for r in rows})

    def _batch_units(self, t: int) -> list[Unit]:
        files = {f["part"]: f["path"] for f in self.manifest.files(self._sources(t)["batches"], "out")}
        shards = range(self.schedule().shards(self.schedule().batch_images(t)))
        return [Unit(graph.shard_part(s), {"batches": [files[graph.batch_part(t, s)]]}) for s in shards]

    def inspected(self, t: int) -> bool:
        """Whether iteration t keeps its stage outputs: listed for inspection, or every N-th in fused mode."""
        every = self.cfg.run.inspect_every
        return t in self.cfg.run.inspect_iterations or (self.cfg.run.mode == "fused" and every > 0 and t % every == 0)

    def _whole_iteration(self, spark, key: str, t: int) -> dict:
        """An iteration in memory or fused mode, ending in its update (the only commit, unless inspected)."""
        deps = sorted(self._sources(t).values())
        self.identity(key, deps, {})
        units = self._batch_units(t)
        ctx = self.context(self.params_at(t), self.schedule().batch_images(t))
        start = time.perf_counter()
        inspect_dir = f"iterations/i{t:06d}" if self.cfg.run.mode == "fused" and self.inspected(t) else None
        if self.cfg.run.mode == "memory":
            result = modes.memory_iteration(spark, self.storage, units, ctx, self.cfg.spark.partitions)
        else:
            result = modes.fused_iteration(spark, self._run_task, self.storage, units, ctx, key, inspect_dir)
            wall, busy = time.perf_counter() - start, sum(result["seconds"].values()) or 1.0
            result["seconds"] = {s: v * wall / busy for s, v in result["seconds"].items()}
        self._check_finite(key, t, result["values"])
        if inspect_dir:
            self._commit_inspection(t, result["files"], result["values"])
        update_start = time.perf_counter()
        outputs = self._driver_update(t, result["grads"])
        entry = self._entry(key, deps, {}, outputs, result["values"])
        entry["stage_seconds"] = {**result["seconds"], "update": time.perf_counter() - update_start}
        return entry

    def _commit_inspection(self, t: int, files: list[dict], values: dict) -> None:
        """Commit the stage outputs a fused iteration wrote for inspection, as staged mode would."""
        for stage in graph.ITERATION_STAGES[:-1]:
            key = graph.iteration_key(t, stage)
            mine = [{**f, "output": f["output"].split(":", 1)[1]} for f in files if f["output"].startswith(f"{stage}:")]
            entry = self._entry(key, self._stage_deps(stage, t), {}, mine, values if stage == "loss" else {})
            entry.update(seconds=0.0, rows=sum(f["rows"] for f in mine if f["output"] == "out"),
                         bytes=sum(f["bytes"] for f in mine))
            self.retention.forget(key)
            self.manifest.commit(entry)

    def _driver_update(self, t: int, grads: dict[str, list[pa.Table]]) -> list[dict]:
        """The update stage's function, run on the driver on gradients that came back from the tasks."""
        ctx = self.context(self.params_at(t), self.schedule().batch_images(t), self._hyper(t))
        velocity = self.storage.read_parquet(self._params_file(t, "velocity")["path"])
        function = graph.resolve(graph.STAGE_DEFS["update"].function)
        result = function({"fc_bwd": grads["fc_bwd"], "conv_bwd": grads["conv_bwd"], "velocity": velocity}, ctx)
        self._check_finite(graph.iteration_key(t, "update"), t, {graph.ALL_PARTS: result.values})
        outputs = []
        for name, table in result.tables.items():
            path = output_path(f"params/v{t + 1:06d}", name, graph.ALL_PARTS)
            outputs.append(_file(graph.ALL_PARTS, name, path, table.num_rows, self.storage.write_parquet(table, path)))
        return outputs

    def _run_task(self, spark, key: str, task) -> list[dict]:
        partitions = max(1, min(self.cfg.spark.partitions, len(task.units)))
        spark.sparkContext.setJobDescription(key)
        frame = spark.range(len(task.units), numPartitions=partitions)
        result = frame.mapInArrow(lambda batches: execute(task, batches), _spark_schema(TASK_RESULT_SCHEMA)).toArrow()
        return result.to_pylist()

    def _evaluate(self, spark, key: str, epoch: int) -> dict:
        sched = self.schedule()
        last = (epoch + 1) * sched.iterations_per_epoch - 1
        deps = ["testset", graph.iteration_key(last, "update")]
        self.identity(key, deps, {})
        files = self.manifest.files("testset", "out")
        units = [Unit(graph.shard_part(i), {"batches": [f["path"]]}) for i, f in enumerate(files)]
        sdef = graph.EVALUATE
        task = StageTask(self.storage, sdef.function, self.context(self.params_at(last + 1)),
                         f"epochs/e{epoch:04d}/evaluate", {"batches": list(sdef.inputs["batches"].columns)},
                         frozenset(), units, key)
        rows = self._run_task(spark, key, task)
        self._check_parts(key, rows, {"out": {u.part for u in units}})
        return self._entry(key, deps, {}, rows, {r["part"]: json.loads(r["values"]) for r in rows})

    # metrics

    def _stage_metric_rows(self, keys: list[str], extra: dict | None = None) -> list[dict]:
        rows = []
        for k in keys:
            e = self.manifest.get(k) if (extra is None or k != extra["key"]) else extra
            rows.append({"kind": "stage", "stage": e["stage"], "epoch": e["epoch"], "iteration": e["iteration"],
                         "seconds": e["seconds"], "rows": e["rows"], "bytes": e["bytes"]})
        return rows

    def _write_iteration_metrics(self, entry: dict, t: int) -> None:
        sched = self.schedule()
        epoch = sched.epoch_of(t)
        if "stage_seconds" in entry:
            images = sched.batch_images(t)
            rows = [{"kind": "stage", "stage": s, "iteration": t, "seconds": sec, "rows": images,
                     "bytes": entry["bytes"] if s == "update" else 0} for s, sec in entry["stage_seconds"].items()]
            totals = _totals(entry["values"])
        else:
            rows = self._stage_metric_rows([graph.iteration_key(t, s) for s in graph.ITERATION_STAGES], entry)
            totals = _totals(self.manifest.get(graph.iteration_key(t, "loss"))["values"])
        mode = self.cfg.run.mode if "stage_seconds" in entry else "staged"
        for row in rows:
            row.update(epoch=epoch, mode=mode)
        rows.append({"kind": "train", "mode": mode, "stage": "loss", "epoch": epoch, "iteration": t,
                     "seconds": sum(r["seconds"] for r in rows), "rows": totals["count"],
                     "bytes": sum(r["bytes"] for r in rows), "loss": totals["loss_sum"] / totals["count"],
                     "accuracy": totals["correct"] / totals["count"]})
        self._attach_metrics(entry, f"metrics/i{t:06d}", rows)

    def _write_eval_metrics(self, entry: dict, epoch: int) -> None:
        totals = _totals(entry["values"])
        rows = [{"kind": "eval", "mode": self.cfg.run.mode, "stage": "evaluate", "epoch": epoch, "iteration": None,
                 "seconds": entry["seconds"], "rows": totals["count"], "bytes": entry["bytes"],
                 "loss": totals["loss_sum"] / totals["count"], "accuracy": totals["correct"] / totals["count"]}]
        self._attach_metrics(entry, f"metrics/e{epoch:04d}", rows)

    def _attach_metrics(self, entry: dict, stem: str, rows: list[dict]) -> None:
        table = pa.Table.from_pylist(rows, schema=METRICS_SCHEMA)
        path = output_path(stem.rsplit("/", 1)[0], stem.rsplit("/", 1)[1], graph.ALL_PARTS)
        entry["outputs"]["metrics"] = [_file(graph.ALL_PARTS, "metrics", path, table.num_rows,
                                             self.storage.write_parquet(table, path))]

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

    def verify(self) -> dict[str, list[str]]:
        return verify(self)

    def repair(self, problems: dict[str, list[str]]) -> list[str]:
        """Uncommit the stages with problems and every committed stage that depends on them,
        dependents first (latest commit first, unreadable entries last); the next training run
        recomputes them. Returns the uncommitted keys."""
        doomed = dependents(self, problems)
        removed = sorted(doomed, key=lambda k: (self.manifest.readable(k) or {}).get("committed_at", 0.0),
                         reverse=True)
        for key in removed:
            self.manifest.remove(key)
            self.retention.forget(key)
        return removed


def _spark_schema(schema: pa.Schema):
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


def _file(part: str, output: str, path: str, rows: int, size: int) -> dict:
    return {"part": part, "output": output, "path": path, "rows": rows, "bytes": size}


def _totals(values: dict) -> dict:
    parts = [values[p] for p in sorted(values)]
    return {k: sum(v[k] for v in parts) for k in ("loss_sum", "correct", "count")}
