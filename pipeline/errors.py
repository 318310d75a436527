"""Errors a person can act on: the message says what is wrong and, where it helps, what to do.

Every error type a user can see is here, except `NetworkError` (an impossible layer graph), which lives with the
network's schema in `sparkcnn.schemas.topology`, below the pipeline.
"""
from __future__ import annotations


class RunError(RuntimeError):
    """A run that cannot go on as asked; the message says why. `resumable`: whether
    `sparkcnn resume` can continue it once the cause is gone."""

    resumable = False


class JobFailed(Exception):
    """A Spark job over several stages failed in stage `key` (the cause is the job's error)."""

    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


class DataError(ValueError):
    """Input data that cannot be used; the message names the file and the problem."""


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the key."""


class LockHeld(RuntimeError):
    """Another live process holds the run root's lock; the message names it."""


class NameNodeUnreachable(RunError):
    """No NameNode answers at the address a run root names."""

    resumable = True


class DamagedEntry(RunError):
    """A manifest entry that cannot be read: damage, like a truncated file."""

    resumable = True

    def __init__(self, rel: str, reason: str):
        super().__init__(f"{rel}: unreadable manifest entry ({reason}); `sparkcnn status --verify` lists the damage "
                         f"and `sparkcnn resume` recomputes the stage and what depends on it")
        self.rel = rel


class QueryError(RunError):
    """A query Spark refused (a view or column that does not exist, a syntax error): Spark's one-line message."""


class QueryRefused(QueryError):
    """A statement that would write, or reach outside the run and the session."""


class ArithmeticMismatch(RunError):
    """A process computes with other kernels than the run (or its driver) does."""


class MissingInput(RunError):
    """A stage asked for before the stages it reads are committed; the message names the missing one."""


class Diverged(RunError):
    """Training produced a loss or parameters that are not finite numbers."""


class StageFailed(RunError):
    """A stage that raised; nothing of it is committed."""

    resumable = True

    def __init__(self, key: str, reason: str):
        super().__init__(f"stage {key} failed: {reason}")
        self.key = key
