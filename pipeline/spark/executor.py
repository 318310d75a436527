"""Code that runs inside Spark tasks: read a unit's input files, call the stage function, write outputs.

Every file a task writes carries a fresh suffix, so a retried or speculative attempt never
overwrites another; the driver commits only the files the successful attempts reported.
"""
from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from threadpoolctl import threadpool_limits

from sparkcnn.pipeline import numerics
from sparkcnn.pipeline.runroot.layout import output_path, progress_record
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


IN_JOB = "@"


def in_job_input(key: str, output: str) -> str:
    """A unit's input that an earlier stage of the same multi-stage job writes (each task knows its own
    file for it, by the unit's part)."""
    return f"{IN_JOB}{key}:{output}"


@dataclass
class MultiStageTask:
    """Several stages of an iteration in one Spark job. Each task runs every stage in turn over its units
    (the same shards for every stage), reading what the stages before it wrote, and records a stage's
    result rows under progress_dir once its units are done, so the driver can commit the stage then."""

    storage: Storage
    stages: list[StageTask]
    progress_dir: str

    @property
    def units(self) -> list[Unit]:
        return self.stages[0].units


def run_stages_of_partition(task: MultiStageTask, indices: list[int]) -> Iterator[dict]:
    """The stages of a multi-stage task over one partition's units. A stage's record is created once: an
    attempt that finds one (an earlier attempt of this task finished the stage, or a concurrent one did
    first) takes its rows and files instead of its own. Rows carry their stage's key."""
    written: dict[tuple[str, str], str] = {}
    for stage in task.stages:
        record = progress_record(task.progress_dir, stage.key, indices[0])
        created = False
        if not task.storage.exists(record):
            try:
                with task.storage.deferred_writes():
                    rows = [{**row, "key": stage.key} for index in indices
                            for row in run_unit(stage, _resolved(stage.units[index], written))]
            except Exception:
                with contextlib.suppress(Exception):
                    task.storage.write_bytes(progress_record(task.progress_dir, stage.key, indices[0], True), b"")
                raise
            created = task.storage.create_exclusive(record, json.dumps(rows).encode())
        if not created:
            rows = json.loads(task.storage.read_bytes(record))
        for row in rows:
            written[(in_job_input(stage.key, row["output"]), row["part"])] = row["path"]
        yield from rows


def _resolved(unit: Unit, written: dict[tuple[str, str], str]) -> Unit:
    """The unit with its inputs from earlier stages of the job named by the files they were written to."""
    inputs = {}
    for name, paths in unit.inputs.items():
        missing = [p for p in paths if p.startswith(IN_JOB) and (p, unit.part) not in written]
        if missing:
            raise RuntimeError(f"input {missing[0]} of part {unit.part}: no earlier stage of this job wrote it")
        inputs[name] = [written.get((p, unit.part), p) for p in paths]
    return Unit(unit.part, inputs)


def execute(task: StageTask | FusedTask | MultiStageTask, indices):
    """mapPartitions body over unit indices: the result rows of each unit.

    BLAS runs single-threaded (one task per core), which also keeps its sums in one fixed order.
    """
    numerics.check_worker()
    with threadpool_limits(limits=1, user_api="blas"):
        if isinstance(task, MultiStageTask):
            yield from run_stages_of_partition(task, list(indices))
            return
        run = run_fused_unit if isinstance(task, FusedTask) else run_unit
        with task.storage.deferred_writes():
            rows = [row for index in indices for row in run(task, task.units[index])]
        yield from rows


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

