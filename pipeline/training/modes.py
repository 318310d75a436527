"""The three execution modes, peers behind one interface: which stages of an iteration a mode commits,
and how it computes a committed one from a StageEnvironment (environment.py), returning its entry.

- staged: every stage its own commit; an iteration's shard stages one Spark job (or one job per stage);
- memory: the study's naive Spark version, one job per stage with outputs cached in Spark memory;
- fused: forward and backward of each shard in one task (locality).

All run the same stage functions on the same shards and hand the update the same per-shard gradient
tables in the same order, so parameters are bitwise identical whatever the mode.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace

import pyarrow as pa

from sparkcnn.pipeline import stage_keys
from sparkcnn.pipeline.errors import RunError
from sparkcnn.pipeline.runroot import layout
from sparkcnn.pipeline.spark import chain
from sparkcnn.pipeline.spark.executor import FusedTask, Params, StageTask, Unit
from sparkcnn.pipeline.spark.jobs import StagesJob, clear_progress, in_job_input, run_job
from sparkcnn.pipeline.training import planner
from sparkcnn.pipeline.training.environment import StageEnvironment
from sparkcnn.pipeline.training.runners import check_parts, write_table
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

    def run(self, env: StageEnvironment, spark, key: str, stage: str, t: int) -> dict:
        """One stage as one Spark job."""
        planning = time.time()
        sdef, deps, units = self._plan(env, key, stage, t, ())
        task = self._task(env, key, stage, t, sdef, units)
        submitted = time.time()
        rows = run_job(spark, key, task, env.cfg.spark.partitions)
        entry = self._entry(env, key, sdef, deps, units, rows)
        entry["phases"] = phases(rows, submitted, time.time(), planning)
        return entry

    def run_many(self, env: StageEnvironment, spark, keys: list[str], commit) -> None:
        """Consecutive shard stages of one iteration, in order, as one Spark job: each task runs them all over
        its shards, reading the files the stages before wrote. Each stage's entry goes to commit(entry) as
        soon as every task has recorded the stage, in stage order, while the job goes on, so an entry is
        never committed before the entries it reads. A stage's seconds run from the previous stage's end
        (the job's planning, for the first) to the moment the driver finds it finished. A failed job
        commits the stages that finished, then raises JobFailed naming the stage it failed in."""
        planning = time.time()
        t = stage_keys.parse_key(keys[0])[2]
        plans = {}
        for i, key in enumerate(keys):
            stage = stage_keys.parse_key(key)[0]
            sdef, deps, units = self._plan(env, key, stage, t, keys[:i])
            plans[key] = (sdef, deps, units, self._task(env, key, stage, t, sdef, units))
        clear_progress(env.storage, t, env.committer.discard)
        previous_end = planning
        with StagesJob(spark, f"{keys[0]} .. {stage_keys.parse_key(keys[-1])[0]}", env.storage,
                       [p[3] for p in plans.values()], layout.progress_dir(t), env.cfg.spark.partitions,
                       env.committer.discard) as job:
            for key, rows in job.finished():
                sdef, deps, units, _ = plans[key]
                end = time.time()
                entry = self._entry(env, key, sdef, deps, units, rows)
                entry["phases"] = phases(rows, job.submitted, end, planning if key == keys[0] else None)
                entry["seconds"], previous_end = end - previous_end, end
                commit(entry)

    @staticmethod
    def _plan(env: StageEnvironment, key: str, stage: str, t: int, in_job: list[str]):
        """A stage's definition, dependencies and units; inputs from stages earlier in the same job are
        named for the task to find, the others are committed files."""
        sched = env.schedule
        sdef = env.catalog.stage_def(stage, t)
        deps = planner.dependencies(sdef, sched, t)
        env.catalog.identity(key, [d for d in deps if d not in in_job], {})
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
                files = input_files(env.catalog.files(src, inp.output), inp, t, part)
                if not inp.many and len(files) != 1:
                    raise RunError(f"stage {src} has {len(files)} files for part {source_part(inp, t, part)}")
                inputs[name] = [f["path"] for f in files]
            units.append(Unit(part, inputs))
        return sdef, deps, units

    @staticmethod
    def _task(env: StageEnvironment, key: str, stage: str, t: int, sdef, units: list[Unit]) -> StageTask:
        sched = env.schedule
        hyper = env.contexts.hyper(t) if stage == "update" else {}
        out_dir = layout.params_dir(t + 1) if stage == "update" else layout.stage_dir(t, stage)
        ctx = env.contexts.context({}, sched.batch_images(t), hyper, stage)
        return StageTask(env.storage, sdef.function, ctx, out_dir,
                         {n: list(i.columns) if i.columns else None for n, i in sdef.inputs.items()},
                         frozenset(n for n, i in sdef.inputs.items() if i.many), units, key,
                         env.catalog.params_ref(t) if sdef.uses_params else None)

    @staticmethod
    def _entry(env: StageEnvironment, key: str, sdef, deps: list[str], units: list[Unit], rows: list[dict]) -> dict:
        """The manifest entry of a stage whose units all returned, with the bytes it read (its inputs
        are committed by now)."""
        parts = [u.part for u in units]
        check_parts(key, rows, {o: parts for o in {r["output"] for r in rows}})
        entry = env.committer.entry(key, deps, {}, rows, {r["part"]: json.loads(r["values"]) for r in rows})
        sched, (_, _, t) = env.schedule, stage_keys.parse_key(key)
        read = [f for inp in sdef.inputs.values() for part in parts
                for f in input_files(env.catalog.files(planner.source_key(sched, t, inp.source), inp.output),
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

    def iterate(self, env: StageEnvironment, spark, key: str, t: int, units: list[Unit], ctx: StageContext,
                params: Params) -> dict:
        """Every shard's stages but the update (ctx bound to params in the tasks): gradient tables and loss
        values by shard, seconds by stage."""
        raise NotImplementedError

    def run(self, env: StageEnvironment, spark, key: str, stage: str, t: int) -> dict:
        if stage != "update":
            raise RunError(f"stage {key} is not run on its own in {self.name} mode")
        sched = env.schedule
        deps = planner.whole_iteration_dependencies(sched, t)
        env.catalog.identity(key, deps, {})
        files = {f["part"]: f["path"] for f in env.catalog.files(planner.sources(sched, t)["batches"], "out")}
        units = [Unit(stage_keys.shard_part(s), {"batches": [files[stage_keys.batch_part(t, s)]]})
                 for s in range(sched.shards(sched.batch_images(t)))]
        ctx = env.contexts.context({}, sched.batch_images(t))
        result = self.iterate(env, spark, key, t, units, ctx, env.catalog.params_ref(t))
        env.committer.check_finite(key, t, result["values"])
        if result.get("files"):
            self._commit_inspection(env, t, result["files"], result["values"])
        update_start = time.perf_counter()
        outputs = self._driver_update(env, t, result["grads"])
        entry = env.committer.entry(key, deps, {}, outputs, result["values"])
        entry["stage_seconds"] = {**result["seconds"], "update": time.perf_counter() - update_start}
        return entry

    @staticmethod
    def _commit_inspection(env: StageEnvironment, t: int, files: list[dict], values: dict) -> None:
        """Commit the stage outputs an iteration wrote for inspection, as staged mode would."""
        for stage in env.network.iteration_stages[:-1]:
            key = stage_keys.iteration_key(t, stage)
            mine = [{**f, "output": f["output"].split(":", 1)[1]} for f in files if f["output"].startswith(f"{stage}:")]
            deps = planner.dependencies(env.catalog.stage_def(stage, t), env.schedule, t)
            entry = env.committer.entry(key, deps, {}, mine, values if stage == "loss" else {})
            entry.update(seconds=0.0, rows=sum(f["rows"] for f in mine if f["output"] == "out"),
                         bytes=sum(f["bytes"] for f in mine))
            env.committer.commit_as_is(entry)

    @staticmethod
    def _driver_update(env: StageEnvironment, t: int, grads: dict[str, list[pa.Table]]) -> list[dict]:
        """The update stage's function, run on the driver on the gradients (and batch statistics) that came
        back from the tasks, by stage in shard order."""
        ctx = env.contexts.context(env.catalog.params_at(t), env.schedule.batch_images(t), env.contexts.hyper(t),
                                   "update")
        velocity = env.storage.read_parquet(env.catalog.params_file(t, "velocity")["path"])
        function = registry.stage_function(env.network.stage_def("update").function)
        result = function({**{s: grads[s] for s in env.network.update_reads}, "velocity": velocity}, ctx)
        env.committer.check_finite(stage_keys.iteration_key(t, "update"), t, {stage_keys.ALL_PARTS: result.values})
        return [write_table(env.storage, table, layout.params_dir(t + 1), name, stage_keys.ALL_PARTS)
                for name, table in result.tables.items()]


def _zip_all(rdds):
    zipped = rdds[0].map(lambda e: (e,))
    for rdd in rdds[1:]:
        zipped = zipped.zip(rdd).map(lambda pair: (*pair[0], pair[1]))
    return zipped


class Memory(WholeIteration):
    """The study's naive Spark version: one Spark job per stage, outputs cached in Spark memory."""

    name = "memory"
    times_stages = True

    def iterate(self, env: StageEnvironment, spark, key: str, t: int, units: list[Unit], ctx: StageContext,
                params: Params) -> dict:
        from pyspark import StorageLevel

        sc = spark.sparkContext
        storage = env.storage
        ctx = replace(ctx, summaries=False)
        paths = [u.inputs["batches"][0] for u in units]
        base = sc.parallelize(paths, max(1, min(env.cfg.spark.partitions, len(paths))))
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
                    chain.memory_stage(stage, sources, elements, ctx, params, gathered))
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

    def iterate(self, env: StageEnvironment, spark, key: str, t: int, units: list[Unit], ctx: StageContext,
                params: Params) -> dict:
        if any(layer.synced for layer in ctx.network.batch_norm_layers):  # the chain splits at every stage
            return MODES["memory"].iterate(env, spark, key, t, units, ctx, params)
        start = time.perf_counter()
        inspect_dir = layout.iteration_dir(t) if env.contexts.inspected(t) else None
        task = FusedTask(env.storage, replace(ctx, summaries=inspect_dir is not None), units, key, params, inspect_dir)
        rows = run_job(spark, key, task, env.cfg.spark.partitions)
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
