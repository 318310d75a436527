"""Code that runs inside Spark tasks: read a unit's input files, call the stage function, write outputs.

Every file a task writes carries a fresh suffix, so a retried or speculative attempt never
overwrites another; the driver commits only the files the successful attempts reported.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from threadpoolctl import threadpool_limits

from pipeline import chain, faults, graph
from pipeline.layout import output_path
from pipeline.storage import Storage
from schemas.tables import TASK_RESULT_SCHEMA, table_schema
from stages.tabular import StageContext


@dataclass
class Unit:
    """One shard (or the single unit of an update): its part name and input files by input name."""

    part: str
    inputs: dict[str, list[str]]


@dataclass
class StageTask:
    storage: Storage
    function: str
    context: StageContext
    out_dir: str
    columns: dict[str, list[str] | None]
    many: frozenset = frozenset()
    units: list[Unit] = field(default_factory=list)
    key: str = ""


def result_row(part: str, output: str, path: str, rows: int, size: int, values: dict, data: bytes | None = None) -> dict:
    return {"part": part, "output": output, "path": path, "rows": rows, "bytes": size, "values": json.dumps(values),
            "data": data}


def run_unit(task: StageTask, unit: Unit) -> list[dict]:
    fn = graph.resolve(task.function)
    inputs = {}
    for name, paths in unit.inputs.items():
        tables = [task.storage.read_parquet(p, task.columns.get(name)) for p in paths]
        inputs[name] = tables if name in task.many else tables[0]
    result = fn(inputs, task.context)
    rows = []
    for output, table in result.tables.items():
        path = output_path(task.out_dir, output, unit.part)
        faults.hit("write", task.key)
        size = task.storage.write_parquet(table, path)
        rows.append(result_row(unit.part, output, path, table.num_rows, size, result.values))
        faults.hit("in-task", task.key)
    return rows


@dataclass
class FusedTask:
    """Forward and backward of whole shards in one task; only gradients (and scalars) leave it,
    unless inspect_dir is set, where every stage's outputs are written as in staged mode."""

    storage: Storage
    context: StageContext
    units: list[Unit]
    key: str
    inspect_dir: str | None = None


def run_fused_unit(task: FusedTask, unit: Unit) -> list[dict]:
    batch = task.storage.read_parquet(unit.inputs["batches"][0])
    produced, values, seconds = chain.run_chain(batch, task.context)
    values = {**values, "seconds": seconds}
    rows = []
    for stage in chain.shard_stages(task.context):
        for output, table in produced[stage].items():
            name = f"{stage}:{output}"
            if output == "grads":
                rows.append(result_row(unit.part, name, "", table.num_rows, 0, values, chain.to_ipc(table)))
            if task.inspect_dir:
                path = output_path(f"{task.inspect_dir}/{stage}", output, unit.part)
                size = task.storage.write_parquet(table, path)
                rows.append(result_row(unit.part, name, path, table.num_rows, size, values))
    faults.hit("in-task", task.key)
    return rows


def execute(task: StageTask | FusedTask, batches):
    """mapInArrow body: the input batches carry unit indices in their first column.

    BLAS runs single-threaded (one task per core), which also keeps its sums in one fixed order.
    """
    run = run_fused_unit if isinstance(task, FusedTask) else run_unit
    for batch in batches:
        for index in batch.column(0).to_pylist():
            with threadpool_limits(limits=1, user_api="blas"):
                rows = run(task, task.units[index])
            yield pa.RecordBatch.from_pylist(rows, schema=TASK_RESULT_SCHEMA)


@dataclass
class ShuffleTask:
    """Write one batch shard: images of one (iteration, shard), in position order."""

    storage: Storage
    context: StageContext
    out_dir: str
    epoch: int


def write_shard(task: ShuffleTask, table: pa.Table) -> pa.Table:
    """applyInArrow body for one (iteration, shard) group."""
    table = table.sort_by("position")
    n = table.num_rows
    table = table.append_column("epoch", pa.array(np.full(n, task.epoch, np.int32)))
    schema = table_schema(task.context.network, "batches")
    table = table.select([f.name for f in schema]).cast(schema)
    iteration = pc.min(table.column("iteration")).as_py()
    shard = pc.min(table.column("shard")).as_py()
    part = f"{iteration:06d}.{shard:04d}"
    path = output_path(task.out_dir, "out", part)
    size = task.storage.write_parquet(table, path)
    return pa.Table.from_pylist([result_row(part, "out", path, n, size, {})], schema=TASK_RESULT_SCHEMA)

