"""Spark jobs of stage tasks: submitting one, and collecting the result rows its tasks recorded.

A job runs a task (`executor.py`: what a task does with one unit) over its units, an RDD of their indices
(no query to plan, unlike a DataFrame), and returns every unit's result rows. A multi-stage job runs
several stages of an iteration in each task, one after the other; each task records a stage's rows under
the job's progress folder as soon as it has done the stage, so that the driver can commit the stage while
the job goes on (`StagesJob`).
"""
from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from threadpoolctl import threadpool_limits

from sparkcnn.pipeline import numerics
from sparkcnn.pipeline.errors import JobFailed
from sparkcnn.pipeline.runroot import layout
from sparkcnn.pipeline.runroot.layout import progress_record
from sparkcnn.pipeline.runroot.storage import Storage
from sparkcnn.pipeline.spark.executor import FusedTask, StageTask, Unit, run_fused_unit, run_unit

POLL_LOCAL_S = 0.01
POLL_REMOTE_S = 0.02


def partitions_for(task, partitions: int) -> int:
    """How many Spark partitions (tasks) a job of this task has: one unit each at most."""
    return max(1, min(partitions, len(task.units)))


def run_job(spark, description: str, task, partitions: int) -> list[dict]:
    """One Spark job over a task's units; the result rows of every unit."""
    context = spark.sparkContext
    context.setJobDescription(description)
    indices = context.parallelize(range(len(task.units)), partitions_for(task, partitions))
    return indices.mapPartitions(lambda part: execute(task, part)).collect()


# in the tasks

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


# on the driver

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
                self.rows = run_job(spark, description, task, partitions)
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


def clear_progress(storage: Storage, t: int, discard: Callable[[str], None]) -> None:
    """Hand a killed driver's multi-stage jobs' records of iteration t to `discard`."""
    for name in storage.listdir(layout.iteration_dir(t)):
        if name.startswith(layout.PROGRESS_PREFIX):
            discard(f"{layout.iteration_dir(t)}/{name}")


class StagesJob:
    """A multi-stage job of stage tasks (in stage order) as a context: `finished()` yields each stage's key
    and result rows, in stage order, as soon as every task has recorded the stage; leaving the context
    cancels the job if it still runs and hands its progress folder to `discard`. A failed job raises
    JobFailed naming the first stage not every task finished."""

    def __init__(self, spark, description: str, storage: Storage, stages: list[StageTask], progress: str,
                 partitions: int, discard: Callable[[str], None]):
        self.storage, self.stages, self.progress, self.discard = storage, stages, progress, discard
        task = MultiStageTask(storage, stages, progress)
        self.partitions = partitions_for(task, partitions)
        self.job = Job(spark, description, task, self.partitions)

    @property
    def submitted(self) -> float:
        return self.job.submitted

    def __enter__(self) -> "StagesJob":
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.job.stop()
        finally:
            self.discard(self.progress)

    def finished(self) -> Iterator[tuple[str, list[dict]]]:
        poll = POLL_LOCAL_S if self.storage.local else POLL_REMOTE_S
        keys = [s.key for s in self.stages]
        done = 0
        while done < len(keys):
            finished = self.job.wait(poll)
            key = keys[done]
            rows = self.job.rows_of(key) if finished and self.job.error is None else \
                recorded_rows(self.storage, self.progress, key, self.partitions)
            if rows is None:
                if finished:
                    raise JobFailed(failed_stage(self.storage, self.progress, keys[done:]) or key) from self.job.error
                continue
            yield key, rows
            done += 1


def recorded_rows(storage: Storage, progress: str, key: str, partitions: int) -> list[dict] | None:
    """A stage of a multi-stage job's result rows once every task of the job has recorded it (else None)."""
    names = [n for n in storage.listdir(progress) if n.startswith(f"{key}-") and n.endswith(".json")]
    if len(names) < partitions:
        return None
    return [row for n in names for row in json.loads(storage.read_bytes(f"{progress}/{n}"))]


def failed_stage(storage: Storage, progress: str, keys: list[str]) -> str | None:
    """The first of these stages that a task of the job failed in (and no attempt of it finished)."""
    names = set(storage.listdir(progress))
    return next((k for k in keys for n in names
                 if n.startswith(f"{k}-") and n.endswith(".failed") and n[:-len("failed")] + "json" not in names), None)
