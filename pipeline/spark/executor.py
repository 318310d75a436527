"""Code that runs inside Spark tasks: read a unit's input files, call the stage function, write outputs.
(`jobs.py` submits the jobs of these tasks and collects their rows.)

Every file a task writes carries a fresh suffix, so a retried or speculative attempt never
overwrites another; the driver commits only the files the successful attempts reported.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sparkcnn.pipeline.runroot.layout import output_path
from sparkcnn.pipeline.runroot.storage import Storage
from sparkcnn.pipeline.spark import chain, faults
from sparkcnn.schemas.tables import TASK_RESULT_SCHEMA, table_schema, table_to_arrays
from sparkcnn.stages import registry
from sparkcnn.stages.tabular import StageContext

_LOADED: dict[tuple[str, str], dict[str, np.ndarray]] = {}


@dataclass(frozen=True)
class Params:
    """Parameters by reference: a committed params file that a worker process reads once and keeps,
    instead of a copy of the arrays in every task's closure."""

    storage: Storage
    path: str

    def load(self) -> dict[str, np.ndarray]:
        key = (self.storage.url, self.path)
        if key not in _LOADED:
            _LOADED.clear()
            arrays = table_to_arrays(self.storage.read_parquet(self.path))
            for array in arrays.values():
                array.setflags(write=False)
            _LOADED[key] = arrays
        return _LOADED[key]

    def bind(self, ctx: StageContext) -> StageContext:
        """The context with these parameters in it."""
        return replace(ctx, params=self.load())


@dataclass
class Unit:
    """One shard (or the single unit of an update): its part name and input files by input name."""

    part: str
    inputs: dict[str, list[str]]


@dataclass
class StageTask:
    storage: Storage
    function: tuple[str, str]
    context: StageContext
    out_dir: str
    columns: dict[str, list[str] | None]
    many: frozenset = frozenset()
    units: list[Unit] = field(default_factory=list)
    key: str = ""
    params: Params | None = None


def result_row(part: str, output: str, path: str, rows: int, size: int, values: dict, data: bytes | None = None) -> dict:
    return {"part": part, "output": output, "path": path, "rows": rows, "bytes": size, "values": json.dumps(values),
            "data": data}


def run_unit(task: StageTask, unit: Unit) -> list[dict]:
    """A unit's outputs written; each result row also carries the unit's timing: when it started
    (wall clock) and the seconds it spent reading, computing and writing."""
    start, t0 = time.time(), time.perf_counter()
    fn = registry.stage_function(task.function)
    ctx = task.params.bind(task.context) if task.params else task.context
    inputs = {}
    for name, paths in unit.inputs.items():
        tables = [task.storage.read_parquet(p, task.columns.get(name)) for p in paths]
        inputs[name] = tables if name in task.many else tables[0]
    t1 = time.perf_counter()
    result = fn(inputs, ctx)
    t2 = time.perf_counter()
    rows = []
    for output, table in result.tables.items():
        path = output_path(task.out_dir, output, unit.part)
        faults.hit("write", task.key)
        size = task.storage.write_parquet(table, path, fresh=True)
        rows.append(result_row(unit.part, output, path, table.num_rows, size, result.values))
        faults.hit("in-task", task.key)
    timing = {"start": start, "read": t1 - t0, "compute": t2 - t1, "write": time.perf_counter() - t2}
    return [{**row, "timing": timing} for row in rows]


@dataclass
class FusedTask:
    """Forward and backward of whole shards in one task; only gradients (and scalars) leave it,
    unless inspect_dir is set, where every stage's outputs are written as in staged mode."""

    storage: Storage
    context: StageContext
    units: list[Unit]
    key: str
    params: Params
    inspect_dir: str | None = None


def run_fused_unit(task: FusedTask, unit: Unit) -> list[dict]:
    batch = task.storage.read_parquet(unit.inputs["batches"][0])
    produced, values, seconds = chain.run_chain(batch, task.params.bind(task.context))
    values = {**values, "seconds": seconds}
    rows = []
    update_reads = task.context.network.update_reads
    for stage in chain.shard_stages(task.context):
        for output, table in produced[stage].items():
            name = f"{stage}:{output}"
            if update_reads.get(stage) == output:
                rows.append(result_row(unit.part, name, "", table.num_rows, 0, values, chain.to_ipc(table)))
            if task.inspect_dir:
                path = output_path(f"{task.inspect_dir}/{stage}", output, unit.part)
                size = task.storage.write_parquet(table, path, fresh=True)
                rows.append(result_row(unit.part, name, path, table.num_rows, size, values))
    faults.hit("in-task", task.key)
    return rows


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
    size = task.storage.write_parquet(table, path, fresh=True)
    return pa.Table.from_pylist([result_row(part, "out", path, n, size, {})], schema=TASK_RESULT_SCHEMA)

