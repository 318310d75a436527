"""SIGINT and SIGTERM end a command like any other failure: an Interrupted exception in the main thread,
Spark's jobs cancelled, so that locks are released and the resume command is printed. A second signal
while the first is being handled ends the process at once."""
from __future__ import annotations

import os
import signal
import threading

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """The process received SIGINT or SIGTERM."""

    def __init__(self, signum: int):
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(f"interrupted by {self.name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _State:
    installed = False
    received: int | None = None
    spark_context = None


def install() -> None:
    """Handle SIGINT and SIGTERM from now on (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in HANDLED:
        signal.signal(signum, _handle)
    _State.installed = True


def attach(spark_context) -> None:
    """Cancel this context's jobs on a signal; takes SIGINT back from pyspark's own handler."""
    _State.spark_context = spark_context
    if _State.installed:
        install()


def received() -> Interrupted | None:
    """The interruption under way, if a signal came."""
    return Interrupted(_State.received) if _State.received is not None else None


def clear() -> None:
    """The interruption was dealt with (an interactive prompt goes on); the next signal interrupts again."""
    _State.received = None


def _handle(signum, frame) -> None:
    if _State.received is not None:
        os._exit(128 + signum)
    _State.received = signum
    if _State.spark_context is not None:
        try:
            _State.spark_context.cancelAllJobs()
        except Exception:
            pass
    raise Interrupted(signum)
