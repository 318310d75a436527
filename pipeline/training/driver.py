"""Running stages on the driver: one stage, or consecutive shard stages of an iteration as one Spark job,
each computed from a StageEnvironment (by the execution mode, or by a setup runner) and committed as it
finishes. An error while computing a stage names the stage; nothing of it is committed."""
from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable

from sparkcnn.pipeline import stage_keys
from sparkcnn.pipeline.errors import DataError, JobFailed, RunError, StageFailed
from sparkcnn.pipeline.spark import signals
from sparkcnn.pipeline.spark.session import executor_lost, jvm_ended
from sparkcnn.pipeline.training import runners
from sparkcnn.pipeline.training.committer import StageOutcome
from sparkcnn.pipeline.training.environment import StageEnvironment


class _CallerError(Exception):
    """An error of a caller's callback while a job runs: its cause is raised as it is, not as the stage's."""


ERROR_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Invalid|Interrupt|Exit)(?::|$)")
NOT_A_CAUSE = ("org.apache.", "java.", "scala.", "py4j.", "pyspark.errors.")


def failure_reason(error: BaseException) -> str:
    """The root cause of an error, also when it comes back from a Spark task as a long trace:
    the last line that names a Python exception, not the Java or py4j wrappers around it, or the executor
    that died under the task."""
    text = str(error)
    if lost := executor_lost(text):
        return lost
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    causes = [ln for ln in lines if ERROR_LINE.match(ln) and not ln.startswith(NOT_A_CAUSE)]
    if causes:
        return causes[-1].split(" SQLSTATE:", 1)[0]
    reason = lines[0] if lines else type(error).__name__
    return reason if ERROR_LINE.match(reason) else f"{type(error).__name__}: {reason}"


class StageDriver:
    """Runs a run's stages with the environment `environment()` gives and the run's execution mode;
    `running` is the stage under way (or the one that failed)."""

    def __init__(self, environment: Callable[[], StageEnvironment], mode):
        self.environment, self.mode = environment, mode
        self.running: str | None = None

    def job_stages(self, key: str) -> list[str]:
        """The stages that run with `key` in one Spark job: in a mode with multi-stage jobs (staged, unless
        run.job_per_stage), the uncommitted shard stages of its iteration from it on; else `key` alone."""
        env = self.environment()
        stage, _, t = stage_keys.parse_key(key)
        shard_stages = env.network.iteration_stages[:-1]
        if env.cfg.run.job_per_stage or not self.mode.multi_stage_jobs or t is None or stage not in shard_stages:
            return [key]
        keys, group = [], set()
        for s in shard_stages[shard_stages.index(stage):]:
            k = stage_keys.iteration_key(t, s)
            reads_all = {i.source for i in env.network.stage_def(s).inputs.values() if i.many}
            if env.catalog.committed(k) or (keys and reads_all & group):  # a synced layer's barrier
                break
            keys.append(k)
            group.add(s)
        return keys

    def run_stage(self, spark, key: str) -> StageOutcome:
        env = self.environment()
        if env.catalog.committed(key):
            raise RunError(f"stage {key} is already committed")
        stage, epoch, iteration = stage_keys.parse_key(key)
        start = time.perf_counter()
        self.running = key
        with self._failures():
            entry = self._compute(env, spark, key, stage, epoch, iteration)
        entry.setdefault("seconds", time.perf_counter() - start)
        return self._commit(env, entry)

    def run_many(self, spark, keys: list[str], committed) -> None:
        """Consecutive shard stages of one iteration as one Spark job (see job_stages), each committed as it
        finishes; committed(outcome, next key or None) is called after each commit."""
        env = self.environment()
        self.running = keys[0]
        outcomes = []

        def commit(entry: dict) -> None:
            outcomes.append(self._commit(env, entry))
            self.running = keys[len(outcomes)] if len(outcomes) < len(keys) else None
            try:
                committed(outcomes[-1], self.running)
            except Exception as e:
                raise _CallerError() from e

        try:
            with self._failures():
                self.mode.run_many(env, spark, keys, commit)
        except _CallerError as e:
            raise e.__cause__ from None

    def _commit(self, env: StageEnvironment, entry: dict) -> StageOutcome:
        outcome = env.committer.commit(entry)
        self.running = None
        env.committer.follow_up(entry["key"])
        return outcome

    @contextlib.contextmanager
    def _failures(self):
        """An error while computing a stage as one line naming the stage (none of it is committed)."""
        try:
            yield
        except (RunError, DataError, _CallerError):
            raise
        except Exception as e:
            key, cause = (e.key, e.__cause__) if isinstance(e, JobFailed) else (self.running, e)
            self.running = key
            raise (signals.received() or StageFailed(key, jvm_ended(cause) or failure_reason(cause))) from cause

    def _compute(self, env: StageEnvironment, spark, key: str, stage: str, epoch: int | None,
                 iteration: int | None) -> dict:
        if iteration is not None and stage in env.network.iteration_stages:
            return self.mode.run(env, spark, key, stage, iteration)
        if stage in runners.SETUP and iteration is None:
            return runners.SETUP[stage](env, spark, key, epoch)
        raise RunError(f"unknown stage {key!r}")
