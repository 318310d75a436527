"""A failed command: one clean error on the console, the full trace in a log file, the resume command."""
from __future__ import annotations

import os
import shlex
import sys
import tempfile
import time
import traceback
from pathlib import Path

from sparkcnn.pipeline.errors import ConfigError, DataError
from sparkcnn.pipeline.runroot import layout
from sparkcnn.pipeline.spark import session as spark_mod, signals
from sparkcnn.pipeline.training.run import Run, RunError, StageFailed, failure_reason

WRITERS = ("train", "resume", "stage")
EXPECTED = (ConfigError, DataError, RunError)


def resume_command(run: Run) -> str:
    return f"sparkcnn resume --run-root {shlex.quote(run.storage.url)}"


def report_failure(args, run: Run | None, error: BaseException) -> int:
    """One clean error on the console, the full trace in a log file under the run root that it names,
    and the resume command where resuming can help. Returns the exit code."""
    interrupted = isinstance(error, signals.Interrupted)
    expected = isinstance(error, EXPECTED)
    if interrupted:
        stage = f" during stage {run.running} (not committed)" if run is not None and run.running else ""
        reason = f"{error}{stage}"
    else:
        reason = str(error) if expected else (spark_mod.jvm_ended(error) or failure_reason(error))
    print(f"error: {reason}", file=sys.stderr)
    known = run is not None and _holds_run(run)
    if not interrupted and not (expected and not isinstance(error, StageFailed)):
        print(f"details: {write_failure_log(args, run if known else None, error)}", file=sys.stderr)
    if known and args.command in WRITERS:
        print(f"run root: {run.storage.where('')}", file=sys.stderr)
        if interrupted or getattr(error, "resumable", not expected):
            print(f"to continue: {resume_command(run)}", file=sys.stderr)
    if interrupted:
        return error.exit_code
    return 2 if expected else 1


def _holds_run(run: Run) -> bool:
    try:
        return Run.exists(run.storage.url)
    except Exception:
        return False


def write_failure_log(args, run: Run | None, error: BaseException) -> str:
    """Write the full trace (and what Spark's JVM printed) to logs/ under the run root, or to a
    temporary file when there is no usable run root; returns where it went."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    path = layout.log_file(stamp, os.getpid(), args.command)
    text = "".join([f"sparkcnn {' '.join(map(shlex.quote, sys.argv[1:]))}\n\n",
                    *traceback.format_exception(type(error), error, error.__traceback__)])
    jvm = spark_mod.jvm_log_tail()
    if jvm:
        text += f"\n--- Spark's own output ---\n{jvm}"
    if run is not None:
        try:
            run.storage.write_bytes(path, text.encode())
            return run.storage.where(path)
        except Exception:
            pass
    fallback = Path(tempfile.gettempdir()) / f"sparkcnn-{path.rsplit('/', 1)[-1]}"
    fallback.write_text(text)
    return str(fallback)
