"""SIGINT and SIGTERM end a command like any other failure: Spark's jobs are cancelled and an Interrupted
exception is raised in the main thread as soon as it is outside a call to the JVM, so that locks are
released and the resume command is printed. A second signal while the first is handled ends the process."""
from __future__ import annotations

import os
import signal
import threading
import time

HANDLED = (signal.SIGINT, signal.SIGTERM)
RECHECK_S = 0.05
CANCEL_AGAIN_S = 0.25


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
    cancelling = False
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


def settle() -> Interrupted | None:
    """Stop waiting to raise (the interruption is being handled); returns it, if a signal came."""
    signal.setitimer(signal.ITIMER_REAL, 0)
    _State.cancelling = False
    return received()


def clear() -> None:
    """The interruption was dealt with (an interactive prompt goes on); the next signal interrupts again."""
    settle()
    _State.received = None


def _handle(signum, frame) -> None:
    if _State.received is not None:
        os._exit(128 + signum)
    _State.received = signum
    if _State.spark_context is not None:
        _State.cancelling = True
        threading.Thread(target=_cancel_jobs, args=(_State.spark_context,), daemon=True).start()
    _raise_outside_py4j(frame)


def _cancel_jobs(spark_context) -> None:
    """Cancel Spark's jobs until the interruption is handled (`settle`): a job that starts after the signal
    (planned then, or started by the JVM after Interrupted was raised, as toArrow's serving thread does)
    is cancelled too, so that code waiting for it on the way out does not wait forever."""
    while _State.cancelling:
        try:
            spark_context.cancelAllJobs()
        except Exception:
            pass
        time.sleep(CANCEL_AGAIN_S)


def _raise_outside_py4j(frame) -> None:
    """Raise Interrupted now, unless the main thread is inside a call to the JVM: raising there would
    leave the JVM connection half read. Then look again shortly; the cancelled jobs end such calls."""
    if _State.received is None:
        return
    if _in_py4j(frame):
        signal.signal(signal.SIGALRM, lambda _, later: _raise_outside_py4j(later))
        signal.setitimer(signal.ITIMER_REAL, RECHECK_S)
        return
    raise Interrupted(_State.received)


def _in_py4j(frame) -> bool:
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith("py4j."):
            return True
        frame = frame.f_back
    return False
