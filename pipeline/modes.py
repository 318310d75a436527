"""Memory and fused execution of one iteration; staged execution lives in Run itself.

Both run the same stage functions on the same shards as staged mode and hand the update the
same per-shard gradient tables in the same order, so parameters are bitwise identical.
"""
from __future__ import annotations

import json
import time

from pipeline import chain, graph
from pipeline.executor import FusedTask, Unit
from stages.tabular import StageContext

MODES = ("staged", "memory", "fused")


def _memory_stage(stage: str, sources: list[str], elements: tuple, ctx: StageContext) -> dict:
    from threadpoolctl import threadpool_limits

    produced = {s: {o: chain.from_ipc(b) for o, b in e["tables"].items()} for s, e in zip(sources, elements)}
    with threadpool_limits(limits=1, user_api="blas"):
        result = chain.run_stage(stage, produced, ctx)
    return {"tables": {o: chain.to_ipc(t) for o, t in result.tables.items()}, "values": result.values}


def _zip_all(rdds):
    zipped = rdds[0].map(lambda e: (e,))
    for rdd in rdds[1:]:
        zipped = zipped.zip(rdd).map(lambda pair: (*pair[0], pair[1]))
    return zipped


def memory_iteration(spark, storage, units: list[Unit], ctx: StageContext, partitions: int) -> dict:
    """The study's naive Spark version: one Spark job per stage, outputs cached in Spark memory.

    Returns gradient tables and loss values by shard, and each stage's wall seconds.
    """
    from pyspark import StorageLevel

    sc = spark.sparkContext
    paths = [u.inputs["batches"][0] for u in units]
    base = sc.parallelize(paths, max(1, min(partitions, len(paths))))
    level = StorageLevel.MEMORY_AND_DISK
    rdds = {"batches": base.map(lambda p: {"tables": {graph.PER_IMAGE: chain.to_ipc(storage.read_parquet(p))},
                                           "values": {}}).persist(level)}
    seconds = {}
    needed_later = {s: i for i, stage in enumerate(chain.BACKWARD_STAGES)
                    for s in {inp.source for inp in graph.stage_def(stage, ctx.cache).inputs.values()}}
    try:
        for i, stage in enumerate(chain.BACKWARD_STAGES):
            sources = sorted({inp.source for inp in graph.stage_def(stage, ctx.cache).inputs.values()})
            sc.setJobDescription(f"memory {stage}")
            start = time.perf_counter()
            rdd = _zip_all([rdds[s] for s in sources]).map(
                lambda elements, stage=stage, sources=sources: _memory_stage(stage, sources, elements, ctx))
            rdds[stage] = rdd.persist(level)
            rdds[stage].count()
            seconds[stage] = time.perf_counter() - start
            for source in sources:
                if needed_later.get(source, -1) <= i and source not in ("fc_bwd", "conv_bwd", "loss"):
                    rdds.pop(source).unpersist()
        grads = {s: [chain.from_ipc(b) for b in rdds[s].map(lambda e: e["tables"]["grads"]).collect()]
                 for s in ("fc_bwd", "conv_bwd")}
        losses = rdds["loss"].map(lambda e: e["values"]).collect()
    finally:
        for rdd in rdds.values():
            rdd.unpersist()
    return {"grads": grads, "values": {u.part: v for u, v in zip(units, losses)}, "seconds": seconds}


def fused_iteration(spark, run_task, storage, units: list[Unit], ctx: StageContext, key: str,
                    inspect_dir: str | None) -> dict:
    """Locality: forward and backward of each shard in one task. Returns gradient tables and loss
    values by shard, per-stage task seconds (summed over tasks), and the inspection files written."""
    rows = run_task(spark, key, FusedTask(storage, ctx, units, key, inspect_dir))
    grads = {s: [chain.from_ipc(r["data"]) for r in sorted(rows, key=lambda r: r["part"])
                 if r["output"] == f"{s}:grads" and r["data"] is not None] for s in ("fc_bwd", "conv_bwd")}
    values, seconds = {}, {}
    for r in rows:
        v = json.loads(r["values"])
        values[r["part"]] = {k: v[k] for k in ("loss_sum", "correct", "count")}
        for stage, s in v["seconds"].items():
            seconds.setdefault((stage, r["part"]), s)
    stage_seconds = {}
    for (stage, _), s in seconds.items():
        stage_seconds[stage] = stage_seconds.get(stage, 0.0) + s
    files = [r for r in rows if r["path"]]
    return {"grads": grads, "values": values, "seconds": stage_seconds, "files": files}
