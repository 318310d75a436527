"""The three execution modes, peers behind one interface: which stages of an iteration a mode commits,
and how it computes a committed one.

- staged: every stage its own commit; an iteration's shard stages one Spark job (or one job per stage);
- memory: the study's naive Spark version, one job per stage with outputs cached in Spark memory;
- fused: forward and backward of each shard in one task (locality).

All run the same stage functions on the same shards and hand the update the same per-shard gradient
tables in the same order, so parameters are bitwise identical whatever the mode.
"""
from __future__ import annotations

import contextlib
import json
import time
import uuid
from dataclasses import replace

import pyarrow as pa

from sparkcnn.pipeline import numerics, stage_keys
from sparkcnn.pipeline.errors import JobFailed, RunError
from sparkcnn.pipeline.runroot import layout
from sparkcnn.pipeline.spark import chain
from sparkcnn.pipeline.spark.executor import FusedTask, MultiStageTask, Params, StageTask, Unit, in_job_input
from sparkcnn.pipeline.training import planner
from sparkcnn.pipeline.training.runners import check_parts, run_task, write_table
from sparkcnn.stages import registry
from sparkcnn.stages.tabular import StageContext


class Staged:
    """Every stage of an iteration committed on its own as it finishes: the shard stages of an iteration
    as one Spark job (run_many), or a single stage as one (run)."""

    name = "staged"
    times_stages = True
    multi_stage_jobs = True

    def committed_stages(self, network) -> tuple[str, ...]:
        return network.iteration_stages

    def run(self, run, spark, key: str, stage: str, t: int) -> dict:
        """One stage as one Spark job."""
        planning = time.time()
        sdef, deps, units = self._plan(run, key, stage, t, ())
        task = self._task(run, key, stage, t, sdef, units)
        submitted = time.time()
        rows = run_task(spark, key, task, run.cfg.spark.partitions)
        entry = self._entry(run, key, sdef, deps, units, rows)
        entry["phases"] = phases(rows, submitted, time.time(), planning)
        return entry

    def run_many(self, run, spark, keys: list[str], commit) -> None:
        """Consecutive shard stages of one iteration, in order, as one Spark job: each task runs them all over
        its shards, reading the files the stages before wrote. Each stage's entry goes to commit(entry) as
        soon as every task has recorded the stage, in stage order, while the job goes on, so an entry is
        never committed before the entries it reads. A stage's seconds run from the previous stage's end
        (the job's planning, for the first) to the moment the driver finds it finished. A failed job
        commits the stages that finished, then raises JobFailed naming the stage it failed in."""
        planning = time.time()
        t = stage_keys.parse_key(keys[0])[2]
        plans = []
        for i, key in enumerate(keys):
            stage = stage_keys.parse_key(key)[0]
            sdef, deps, units = self._plan(run, key, stage, t, keys[:i])
            plans.append((key, sdef, deps, units, self._task(run, key, stage, t, sdef, units)))
        for name in run.storage.listdir(layout.iteration_dir(t)):
            if name.startswith(layout.PROGRESS_PREFIX):  # a killed driver's job's records
                run.retention.remove_later(f"{layout.iteration_dir(t)}/{name}")
        progress = layout.progress_dir(t)
        partitions = max(1, min(run.cfg.spark.partitions, len(plans[0][3])))
        job = Job(spark, f"{keys[0]} .. {stage_keys.parse_key(keys[-1])[0]}",
                  MultiStageTask(run.storage, [p[4] for p in plans], progress), partitions)
        poll = POLL_LOCAL_S if run.storage.local else POLL_REMOTE_S
        done, previous_end = 0, planning
        try:
            while done < len(plans):
                finished = job.wait(poll)
                key, sdef, deps, units, _ = plans[done]
                rows = job.rows_of(key) if finished and job.error is None else \
                    recorded_rows(run.storage, progress, key, partitions)
                if rows is None:
                    if finished:
                        raise JobFailed(failed_stage(run.storage, progress, keys[done:]) or key) from job.error
                    continue
                end = time.time()
                entry = self._entry(run, key, sdef, deps, units, rows)
                entry["phases"] = phases(rows, job.submitted, end, planning if done == 0 else None)
                entry["seconds"], previous_end = end - previous_end, end
                commit(entry)
                done += 1
        finally:
            try:
                job.stop()
            finally:
                run.retention.remove_later(progress)

    @staticmethod
    def _plan(run, key: str, stage: str, t: int, in_job: list[str]):
        """A stage's definition, dependencies and units; inputs from stages earlier in the same job are
        named for the task to find, the others are committed files."""
        sched = run.schedule()
        sdef = run.stage_def(stage, t)
        deps = planner.dependencies(sdef, sched, t)
        run.identity(key, [d for d in deps if d not in in_job], {})
        shards = [stage_keys.shard_part(s) for s in range(sched.shards(sched.batch_images(t)))]
        units = []
        for part in [stage_keys.ALL_PARTS] if stage == "update" else shards:
            inputs = {}
            for name, inp in sdef.inputs.items():
                src = planner.source_key(sched, t, inp.source)
                if src in in_job:
                    if inp.many:
                        raise RunError(f"stage {key} reads every part of {src}, which runs in the same job")
                    inputs[name] = [in_job_input(src, inp.output)]
                    continue
                files = input_files(run.manifest.files(src, inp.output), inp, t, part)
                if not inp.many and len(files) != 1:
                    raise RunError(f"stage {src} has {len(files)} files for part {source_part(inp, t, part)}")
                inputs[name] = [f["path"] for f in files]
            units.append(Unit(part, inputs))
        return sdef, deps, units

    @staticmethod
    def _task(run, key: str, stage: str, t: int, sdef, units: list[Unit]) -> StageTask:
        sched = run.schedule()
        hyper = run.hyper(t) if stage == "update" else {}
        out_dir = layout.params_dir(t + 1) if stage == "update" else layout.stage_dir(t, stage)
        return StageTask(run.storage, sdef.function, run.context({}, sched.batch_images(t), hyper, stage), out_dir,
                         {n: list(i.columns) if i.columns else None for n, i in sdef.inputs.items()},
                         frozenset(n for n, i in sdef.inputs.items() if i.many), units, key,
                         run.params_ref(t) if sdef.uses_params else None)

    @staticmethod
    def _entry(run, key: str, sdef, deps: list[str], units: list[Unit], rows: list[dict]) -> dict:
        """The manifest entry of a stage whose units all returned, with the bytes it read (its inputs
        are committed by now)."""
        parts = [u.part for u in units]
        check_parts(key, rows, {o: parts for o in {r["output"] for r in rows}})
        entry = run.entry(key, deps, {}, rows, {r["part"]: json.loads(r["values"]) for r in rows})
        sched, (_, _, t) = run.schedule(), stage_keys.parse_key(key)
        read = [f for inp in sdef.inputs.values() for part in parts
                for f in input_files(run.manifest.files(planner.source_key(sched, t, inp.source), inp.output),
                                     inp, t, part)]
        entry["read_bytes"], entry["read_files"] = sum(f["bytes"] for f in read), len(read)
        return entry


def source_part(inp, t: int, part: str) -> str:
    """The part of an input's source that a unit of iteration t reads (unless it reads them all)."""
    return stage_keys.batch_part(t, int(part)) if inp.source == "batches" else (
        stage_keys.ALL_PARTS if inp.source == "params" else part)


def input_files(files: list[dict], inp, t: int, part: str) -> list[dict]:
    """The committed files of an input that the unit `part` of iteration t reads."""
    return files if inp.many else [f for f in files if f["part"] == source_part(inp, t, part)]


POLL_LOCAL_S = 0.01
POLL_REMOTE_S = 0.02


class Job:
    """A Spark job over a task's units, run in a thread of its own so that the driver can commit
    stages while it runs; stop() cancels it if it is still running and waits for it."""

    def __init__(self, spark, description: str, task, partitions: int):
        from pyspark import InheritableThread

        self.spark, self.group = spark, f"sparkcnn-{uuid.uuid4().hex[:12]}"
        self.rows: list[dict] | None = None
        self.error: BaseException | None = None
        self.submitted = time.time()

        def body():
            try:
                spark.sparkContext.setJobGroup(self.group, description, interruptOnCancel=True)
                self.rows = run_task(spark, description, task, partitions)
            except BaseException as e:  # handed to the driver's thread
                self.error = e

        self.thread = InheritableThread(target=body, daemon=True)
        self.thread.start()

    def wait(self, seconds: float) -> bool:
        """Wait up to `seconds`; whether the job has ended."""
        self.thread.join(seconds)
        return not self.thread.is_alive()

    def rows_of(self, key: str) -> list[dict]:
        return [r for r in self.rows if r["key"] == key]

    def stop(self) -> None:
        """Cancel the job if it still runs (a JVM that has gone cannot be asked), and wait for its thread."""
        if self.thread.is_alive():
            with contextlib.suppress(Exception):
                self.spark.sparkContext.cancelJobGroup(self.group)
        self.thread.join()


def recorded_rows(storage, progress: str, key: str, partitions: int) -> list[dict] | None:
    """A stage of a multi-stage job's result rows once every task of the job has recorded it (else None)."""
    names = [n for n in storage.listdir(progress) if n.startswith(f"{key}-") and n.endswith(".json")]
    if len(names) < partitions:
        return None
    return [row for n in names for row in json.loads(storage.read_bytes(f"{progress}/{n}"))]


def failed_stage(storage, progress: str, keys: list[str]) -> str | None:
    """The first of these stages that a task of the job failed in (and no attempt of it finished)."""
    names = set(storage.listdir(progress))
    return next((k for k in keys for n in names
                 if n.startswith(f"{k}-") and n.endswith(".failed") and n[:-len("failed")] + "json" not in names), None)


def unit_end(timing: dict) -> float:
    return timing["start"] + timing["read"] + timing["compute"] + timing["write"]


def phases(rows: list[dict], submitted: float, collected: float, planning: float | None) -> dict:
    """Where a stage's time went (seconds): planning on the driver and launching its tasks (from the
    job's submission to the first unit's start), both counted for the first stage of a job only
    (planning None: a later stage of a multi-stage job); reading, computing and writing summed over its
    units; collecting, from the last unit's end to the results on the driver (in a multi-stage job: to
    the moment the driver finds the stage finished)."""
    timings = list({r["part"]: r["timing"] for r in rows}.values())
    first = planning is not None
    return {"plan": submitted - planning if first else 0.0,
            "launch": min(t["start"] for t in timings) - submitted if first else 0.0,
            **{p: sum(t[p] for t in timings) for p in ("read", "compute", "write")},
            "collect": collected - max(unit_end(t) for t in timings)}


class WholeIteration:
    """An iteration run whole, committed only as its update (a checkpoint), unless kept for inspection."""

    name = ""
    times_stages = False
    multi_stage_jobs = False

    def committed_stages(self, network) -> tuple[str, ...]:
        return ("update",)

    def iterate(self, run, spark, key: str, t: int, units: list[Unit], ctx: StageContext, params: Params) -> dict:
        """Every shard's stages but the update (ctx bound to params in the tasks): gradient tables and loss
        values by shard, seconds by stage."""
        raise NotImplementedError

    def run(self, run, spark, key: str, stage: str, t: int) -> dict:
        if stage != "update":
            raise RunError(f"stage {key} is not run on its own in {self.name} mode")
        sched = run.schedule()
        deps = planner.whole_iteration_dependencies(sched, t)
        run.identity(key, deps, {})
        files = {f["part"]: f["path"] for f in run.manifest.files(planner.sources(sched, t)["batches"], "out")}
        units = [Unit(stage_keys.shard_part(s), {"batches": [files[stage_keys.batch_part(t, s)]]})
                 for s in range(sched.shards(sched.batch_images(t)))]
        result = self.iterate(run, spark, key, t, units, run.context({}, sched.batch_images(t)), run.params_ref(t))
        run.check_finite(key, t, result["values"])
        if result.get("files"):
            self._commit_inspection(run, t, result["files"], result["values"])
        update_start = time.perf_counter()
        outputs = self._driver_update(run, t, result["grads"])
        entry = run.entry(key, deps, {}, outputs, result["values"])
        entry["stage_seconds"] = {**result["seconds"], "update": time.perf_counter() - update_start}
        return entry

    @staticmethod
    def _commit_inspection(run, t: int, files: list[dict], values: dict) -> None:
        """Commit the stage outputs an iteration wrote for inspection, as staged mode would."""
        for stage in run.network.iteration_stages[:-1]:
            key = stage_keys.iteration_key(t, stage)
            mine = [{**f, "output": f["output"].split(":", 1)[1]} for f in files if f["output"].startswith(f"{stage}:")]
            entry = run.entry(key, planner.dependencies(run.stage_def(stage, t), run.schedule(), t), {}, mine,
                              values if stage == "loss" else {})
            entry.update(seconds=0.0, rows=sum(f["rows"] for f in mine if f["output"] == "out"),
                         bytes=sum(f["bytes"] for f in mine))
            run.retention.forget(key)
            run.manifest.commit(entry)

    @staticmethod
    def _driver_update(run, t: int, grads: dict[str, list[pa.Table]]) -> list[dict]:
        """The update stage's function, run on the driver on the gradients (and batch statistics) that came
        back from the tasks, by stage in shard order."""
        ctx = run.context(run.params_at(t), run.schedule().batch_images(t), run.hyper(t), "update")
        velocity = run.storage.read_parquet(run.params_file(t, "velocity")["path"])
        function = registry.stage_function(run.network.stage_def("update").function)
        result = function({**{s: grads[s] for s in run.network.update_reads}, "velocity": velocity}, ctx)
        run.check_finite(stage_keys.iteration_key(t, "update"), t, {stage_keys.ALL_PARTS: result.values})
        return [write_table(run.storage, table, layout.params_dir(t + 1), name, stage_keys.ALL_PARTS)
                for name, table in result.tables.items()]


def _memory_stage(stage: str, sources: list[str], elements: tuple, ctx: StageContext, params: Params,
                  gathered: dict) -> dict:
    from threadpoolctl import threadpool_limits

    numerics.check_worker()
    produced = {s: {o: chain.from_ipc(b) for o, b in e["tables"].items()} for s, e in zip(sources, elements)}
    produced.update({s: {o: [chain.from_ipc(b) for b in parts] for o, parts in outputs.items()}
                     for s, outputs in gathered.items()})
    with threadpool_limits(limits=1, user_api="blas"):
        result = chain.run_stage(stage, produced, params.bind(ctx))
    return {"tables": {o: chain.to_ipc(t) for o, t in result.tables.items()}, "values": result.values}


def _zip_all(rdds):
    zipped = rdds[0].map(lambda e: (e,))
    for rdd in rdds[1:]:
        zipped = zipped.zip(rdd).map(lambda pair: (*pair[0], pair[1]))
    return zipped


class Memory(WholeIteration):
    """The study's naive Spark version: one Spark job per stage, outputs cached in Spark memory."""

    name = "memory"
    times_stages = True

    def iterate(self, run, spark, key: str, t: int, units: list[Unit], ctx: StageContext, params: Params) -> dict:
        from pyspark import StorageLevel

        sc = spark.sparkContext
        storage = run.storage
        ctx = replace(ctx, summaries=False)
        paths = [u.inputs["batches"][0] for u in units]
        base = sc.parallelize(paths, max(1, min(run.cfg.spark.partitions, len(paths))))
        level = StorageLevel.MEMORY_AND_DISK
        rdds = {"batches": base.map(lambda p: {"tables": {stage_keys.PER_IMAGE: chain.to_ipc(storage.read_parquet(p))},
                                               "values": {}}).persist(level)}
        seconds = {}
        net = ctx.network
        stages = chain.shard_stages(ctx)
        sources_of = {stage: sorted({inp.source for inp in net.stage_def(stage, ctx.cache).inputs.values()
                                     if not inp.many}) for stage in stages}
        gathered_of = {stage: {(inp.source, inp.output) for inp in net.stage_def(stage, ctx.cache).inputs.values()
                               if inp.many} for stage in stages}  # a synced layer's statistics, every shard's
        needed_later = {s: i for i, stage in enumerate(stages)
                        for s in (*sources_of[stage], *(g[0] for g in gathered_of[stage]))}
        kept = {*net.update_reads, "loss"}
        try:
            for i, stage in enumerate(stages):
                sources = sources_of[stage]
                sc.setJobDescription(f"memory {stage}")
                start = time.perf_counter()
                gathered = {}
                for source, output in sorted(gathered_of[stage]):
                    gathered.setdefault(source, {})[output] = rdds[source].map(
                        lambda e, o=output: e["tables"][o]).collect()
                rdd = _zip_all([rdds[s] for s in sources]).map(
                    lambda elements, stage=stage, sources=sources, gathered=gathered:
                    _memory_stage(stage, sources, elements, ctx, params, gathered))
                rdds[stage] = rdd.persist(level)
                rdds[stage].count()
                seconds[stage] = time.perf_counter() - start
                for source in sources:
                    if needed_later.get(source, -1) <= i and source not in kept:
                        rdds.pop(source).unpersist()
            grads = {s: [chain.from_ipc(b) for b in rdds[s].map(lambda e, o=o: e["tables"][o]).collect()]
                     for s, o in net.update_reads.items()}
            losses = rdds["loss"].map(lambda e: e["values"]).collect()
        finally:
            for rdd in rdds.values():
                rdd.unpersist()
        return {"grads": grads, "values": {u.part: v for u, v in zip(units, losses)}, "seconds": seconds}


class Fused(WholeIteration):
    """Locality: forward and backward of each shard in one task; every inspect_every-th iteration (and
    those listed in run.inspect_iterations) also writes every stage's outputs."""

    name = "fused"

    def iterate(self, run, spark, key: str, t: int, units: list[Unit], ctx: StageContext, params: Params) -> dict:
        if any(layer.synced for layer in ctx.network.batch_norm_layers):  # the chain splits at every stage
            return MODES["memory"].iterate(run, spark, key, t, units, ctx, params)
        start = time.perf_counter()
        inspect_dir = layout.iteration_dir(t) if run.inspected(t) else None
        task = FusedTask(run.storage, replace(ctx, summaries=inspect_dir is not None), units, key, params, inspect_dir)
        rows = run_task(spark, key, task, run.cfg.spark.partitions)
        grads = {s: [chain.from_ipc(r["data"]) for r in sorted(rows, key=lambda r: r["part"])
                     if r["output"] == f"{s}:{o}" and r["data"] is not None] for s, o in ctx.network.update_reads.items()}
        values, seconds = {}, {}
        for r in rows:
            v = json.loads(r["values"])
            values[r["part"]] = {k: v[k] for k in ("loss_sum", "correct", "count")}
            for stage, s in v["seconds"].items():
                seconds.setdefault((stage, r["part"]), s)
        busy = {}
        for (stage, _), s in seconds.items():
            busy[stage] = busy.get(stage, 0.0) + s
        wall, total = time.perf_counter() - start, sum(busy.values()) or 1.0
        return {"grads": grads, "values": values, "seconds": {s: v * wall / total for s, v in busy.items()},
                "files": [r for r in rows if r["path"]]}


MODES = {mode.name: mode for mode in (Staged(), Memory(), Fused())}
