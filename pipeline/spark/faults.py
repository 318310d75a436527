"""Failpoints: faults injected at named places, for the fault-injection tests.

SPARKCNN_FAILPOINTS holds `place:stage-key=action` items separated by commas, for example
`after-commit:i000001.relu1_fwd=pause,in-task:i000001.pool1_bwd=fail-once`. Places: `after-commit`
(driver, once a stage is committed), `in-task` (executor, after a task wrote its first output file),
`write` (executor, before a file is written). Actions: `pause` (create the file named by
SPARKCNN_FAILPOINT_MARKER, then wait to be killed), `fail-once` (fail the first attempt of a task),
`enospc` (fail with 'No space left on device'). Unset, nothing happens.
"""
from __future__ import annotations

import errno
import os
import time

ENV = "SPARKCNN_FAILPOINTS"
MARKER_ENV = "SPARKCNN_FAILPOINT_MARKER"


def _actions() -> dict[str, str]:
    items = [i.strip() for i in os.environ.get(ENV, "").split(",") if i.strip()]
    return dict(i.rsplit("=", 1) for i in items)


def hit(place: str, key: str) -> None:
    action = _actions().get(f"{place}:{key}")
    if action is None:
        return
    if action == "pause":
        marker = os.environ.get(MARKER_ENV)
        if marker:
            with open(marker, "w") as f:
                f.write(f"{place}:{key} pid {os.getpid()}\n")
        while True:
            time.sleep(1)
    if action == "fail-once":
        from pyspark import TaskContext

        ctx = TaskContext.get()
        if ctx is None or ctx.attemptNumber() == 0:
            raise RuntimeError(f"injected failure at {place}:{key} (first attempt)")
        return
    if action == "enospc":
        raise OSError(errno.ENOSPC, f"No space left on device (injected at {place}:{key})")
    raise ValueError(f"unknown failpoint action {action!r} in {ENV}")
