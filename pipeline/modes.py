"""The three execution modes, peers behind one interface: which stages of an iteration a mode commits,
and how it computes a committed one.

- staged: every stage is its own Spark job and its own commit;
- memory: the study's naive Spark version, one job per stage with outputs cached in Spark memory;
- fused: forward and backward of each shard in one task (locality).

All run the same stage functions on the same shards and hand the update the same per-shard gradient
tables in the same order, so parameters are bitwise identical whatever the mode.
"""
from __future__ import annotations

import json
import time

import pyarrow as pa

from pipeline import chain, graph, layout, planner
from pipeline.errors import RunError
from pipeline.executor import FusedTask, Params, StageTask, Unit
from pipeline.runners import check_parts, run_task, write_table
from stages.tabular import StageContext


class Staged:
    """Every stage of an iteration a Spark job of its own, committed as it finishes."""

    name = "staged"
    job_per_stage = True

    def committed_stages(self, network) -> tuple[str, ...]:
        return network.iteration_stages

    def run(self, run, spark, key: str, stage: str, t: int) -> dict:
        planning = time.time()
        sched = run.schedule()
        sdef = run.stage_def(stage, t)
        deps = planner.dependencies(sdef, sched, t)
        run.identity(key, deps, {})
        shards = [graph.shard_part(s) for s in range(sched.shards(sched.batch_images(t)))]
        parts = [graph.ALL_PARTS] if stage == "update" else shards
        units, read_bytes = [], 0
        for part in parts:
            inputs = {}
            for name, inp in sdef.inputs.items():
                src = planner.source_key(sched, t, inp.source)
                files = run.manifest.files(src, inp.output)
                if not inp.many:
                    want = graph.batch_part(t, int(part)) if inp.source == "batches" else (
                        graph.ALL_PARTS if inp.source == "params" else part)
                    files = [f for f in files if f["part"] == want]
                    if len(files) != 1:
                        raise RunError(f"stage {src} has {len(files)} files for part {want}")
                inputs[name] = [f["path"] for f in files]
                read_bytes += sum(f["bytes"] for f in files)
            units.append(Unit(part, inputs))
        hyper = run.hyper(t) if stage == "update" else {}
        out_dir = layout.params_dir(t + 1) if stage == "update" else layout.stage_dir(t, stage)
        task = StageTask(run.storage, sdef.function, run.context({}, sched.batch_images(t), hyper, stage), out_dir,
                         {n: list(i.columns) if i.columns else None for n, i in sdef.inputs.items()},
                         frozenset(n for n, i in sdef.inputs.items() if i.many), units, key,
                         run.params_ref(t) if sdef.uses_params else None)
        submitted = time.time()
        rows = run_task(spark, key, task, run.cfg.spark.partitions)
        check_parts(key, rows, {o: parts for o in {r["output"] for r in rows}})
        entry = run.entry(key, deps, {}, rows, {r["part"]: json.loads(r["values"]) for r in rows})
        entry["phases"] = phases(planning, submitted, time.time(), rows)
        entry["read_bytes"] = read_bytes
        return entry


def phases(planning: float, submitted: float, collected: float, rows: list[dict]) -> dict:
    """Where a stage's time went (seconds): planning on the driver, launching its tasks (from the job's
    submission to the first unit's start), reading, computing and writing summed over its units, and
    collecting (from the last unit's end to the results on the driver)."""
    timings = list({r["part"]: r["timing"] for r in rows}.values())
    ends = [t["start"] + t["read"] + t["compute"] + t["write"] for t in timings]
    return {"plan": submitted - planning, "launch": min(t["start"] for t in timings) - submitted,
            **{p: sum(t[p] for t in timings) for p in ("read", "compute", "write")},
            "collect": collected - max(ends)}


class WholeIteration:
    """An iteration run whole, committed only as its update (a checkpoint), unless kept for inspection."""

    name = ""
    job_per_stage = False

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
        units = [Unit(graph.shard_part(s), {"batches": [files[graph.batch_part(t, s)]]})
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
            key = graph.iteration_key(t, stage)
            mine = [{**f, "output": f["output"].split(":", 1)[1]} for f in files if f["output"].startswith(f"{stage}:")]
            entry = run.entry(key, planner.dependencies(run.stage_def(stage, t), run.schedule(), t), {}, mine,
                              values if stage == "loss" else {})
            entry.update(seconds=0.0, rows=sum(f["rows"] for f in mine if f["output"] == "out"),
                         bytes=sum(f["bytes"] for f in mine))
            run.retention.forget(key)
            run.manifest.commit(entry)

    @staticmethod
    def _driver_update(run, t: int, grads: dict[str, list[pa.Table]]) -> list[dict]:
        """The update stage's function, run on the driver on gradients that came back from the tasks."""
        ctx = run.context(run.params_at(t), run.schedule().batch_images(t), run.hyper(t), "update")
        velocity = run.storage.read_parquet(run.params_file(t, "velocity")["path"])
        function = graph.resolve(run.network.stage_def("update").function)
        result = function({**{s: grads[s] for s in run.network.gradient_stages}, "velocity": velocity}, ctx)
        run.check_finite(graph.iteration_key(t, "update"), t, {graph.ALL_PARTS: result.values})
        return [write_table(run.storage, table, layout.params_dir(t + 1), name, graph.ALL_PARTS)
                for name, table in result.tables.items()]


def _memory_stage(stage: str, sources: list[str], elements: tuple, ctx: StageContext, params: Params) -> dict:
    from threadpoolctl import threadpool_limits

    produced = {s: {o: chain.from_ipc(b) for o, b in e["tables"].items()} for s, e in zip(sources, elements)}
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
    job_per_stage = True

    def iterate(self, run, spark, key: str, t: int, units: list[Unit], ctx: StageContext, params: Params) -> dict:
        from pyspark import StorageLevel

        sc = spark.sparkContext
        storage = run.storage
        paths = [u.inputs["batches"][0] for u in units]
        base = sc.parallelize(paths, max(1, min(run.cfg.spark.partitions, len(paths))))
        level = StorageLevel.MEMORY_AND_DISK
        rdds = {"batches": base.map(lambda p: {"tables": {graph.PER_IMAGE: chain.to_ipc(storage.read_parquet(p))},
                                               "values": {}}).persist(level)}
        seconds = {}
        net = ctx.network
        stages = chain.shard_stages(ctx)
        sources_of = {stage: sorted({inp.source for inp in net.stage_def(stage, ctx.cache).inputs.values()})
                      for stage in stages}
        needed_later = {s: i for i, stage in enumerate(stages) for s in sources_of[stage]}
        kept = {*net.gradient_stages, "loss"}
        try:
            for i, stage in enumerate(stages):
                sources = sources_of[stage]
                sc.setJobDescription(f"memory {stage}")
                start = time.perf_counter()
                rdd = _zip_all([rdds[s] for s in sources]).map(
                    lambda elements, stage=stage, sources=sources: _memory_stage(stage, sources, elements, ctx, params))
                rdds[stage] = rdd.persist(level)
                rdds[stage].count()
                seconds[stage] = time.perf_counter() - start
                for source in sources:
                    if needed_later.get(source, -1) <= i and source not in kept:
                        rdds.pop(source).unpersist()
            grads = {s: [chain.from_ipc(b) for b in rdds[s].map(lambda e: e["tables"]["grads"]).collect()]
                     for s in net.gradient_stages}
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
        start = time.perf_counter()
        inspect_dir = layout.iteration_dir(t) if run.inspected(t) else None
        rows = run_task(spark, key, FusedTask(run.storage, ctx, units, key, params, inspect_dir),
                        run.cfg.spark.partitions)
        grads = {s: [chain.from_ipc(r["data"]) for r in sorted(rows, key=lambda r: r["part"])
                     if r["output"] == f"{s}:grads" and r["data"] is not None] for s in ctx.network.gradient_stages}
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
