"""Errors a person can act on: the message says what is wrong and, where it helps, what to do."""
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
