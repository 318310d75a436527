"""Stages run back to back on one shard, tables handed over in memory (fused and memory modes)."""
from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.ipc as ipc

from sparkcnn.pipeline import numerics, stage_keys
from sparkcnn.stages import registry
from sparkcnn.stages.tabular import StageContext, StageResult


def to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes) -> pa.Table:
    return ipc.open_stream(data).read_all()


def shard_stages(ctx: StageContext) -> tuple[str, ...]:
    """The stages of an iteration that run on a shard: all but the update."""
    return ctx.network.iteration_stages[:-1]


def stage_inputs(stage: str, produced: dict[str, dict[str, pa.Table]], ctx: StageContext) -> dict:
    """A stage's inputs, taken from the tables earlier stages produced, projected as staged mode reads them
    (an input read from every shard: the list of their tables, in shard order)."""
    inputs = {}
    for name, inp in ctx.network.stage_def(stage, ctx.cache).inputs.items():
        table = produced[inp.source][inp.output]
        inputs[name] = table.select(list(inp.columns)) if inp.columns and not inp.many else table
    return inputs


def run_stage(stage: str, produced: dict[str, dict[str, pa.Table]], ctx: StageContext) -> StageResult:
    function = registry.stage_function(ctx.network.stage_def(stage, ctx.cache).function)
    return function(stage_inputs(stage, produced, ctx), ctx.at(stage))


def run_chain(batch: pa.Table, ctx: StageContext):
    """Every stage of an iteration but the update on one shard: (tables by stage, values, seconds by stage)."""
    produced = {"batches": {stage_keys.PER_IMAGE: batch}}
    values, seconds = {}, {}
    for stage in shard_stages(ctx):
        start = time.perf_counter()
        result = run_stage(stage, produced, ctx)
        seconds[stage] = time.perf_counter() - start
        produced[stage] = result.tables
        values.update(result.values)
    return produced, values, seconds


def memory_stage(stage: str, sources: list[str], elements: tuple, ctx: StageContext, params, gathered: dict) -> dict:
    """Memory mode's task body for one shard and stage: its sources' tables as one RDD element each (Arrow
    IPC), a synced layer's statistics of every shard gathered, `params` (executor.Params) bound in the tasks."""
    from threadpoolctl import threadpool_limits

    numerics.check_worker()
    produced = {s: {o: from_ipc(b) for o, b in e["tables"].items()} for s, e in zip(sources, elements)}
    produced.update({s: {o: [from_ipc(b) for b in parts] for o, parts in outputs.items()}
                     for s, outputs in gathered.items()})
    with threadpool_limits(limits=1, user_api="blas"):
        result = run_stage(stage, produced, params.bind(ctx))
    return {"tables": {o: to_ipc(t) for o, t in result.tables.items()}, "values": result.values}
