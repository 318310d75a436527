"""What a person sees while training: a live status line on a terminal, plain log lines otherwise."""
from __future__ import annotations

import sys
import threading
import time

from sparkcnn.pipeline import stage_keys


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Stage callbacks for Run.train: a live line (epoch, iteration, stage, loss, images/s, time left)
    redrawn in place on a terminal; one log line per iteration and evaluation when output is not one."""

    def __init__(self, run, stream=None, live: bool | None = None):
        self.run, self.stream = run, stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.started = time.monotonic()
        self.iteration_times: list[float] = []
        self.last_iteration_end = self.started
        self.loss = None
        self.images = 0

    def _schedule(self):
        return self.run.schedule() if self.run.manifest.committed("ingest") else None

    def status(self, key: str) -> str:
        sched = self._schedule()
        stage, epoch, iteration = stage_keys.parse_key(key)
        parts = []
        if sched:
            done = self.run.iterations_done()
            parts.append(f"epoch {sched.epoch_of(min(done, sched.total_iterations - 1)) + 1}/{sched.epochs}")
            parts.append(f"iteration {done}/{sched.total_iterations}")
        parts.append(f"stage {key}")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.iteration_times:
            recent = self.iteration_times[-20:]
            per_iteration = sum(recent) / len(recent)
            if sched:
                parts.append(f"{sched.batch_size / per_iteration:,.0f} img/s")
                left = (sched.total_iterations - self.run.iterations_done()) * per_iteration
                parts.append(f"left {_clock(left)}")
        return " | ".join(parts)

    def before(self, run, key: str) -> None:
        if stage_keys.parse_key(key)[0] == run.mode.committed_stages(run.network)[0]:
            self.last_iteration_end = time.monotonic()
        if self.live:
            self.stream.write("\r\x1b[2K" + self.status(key))
            self.stream.flush()

    def after(self, run, outcome) -> None:
        stage, epoch, iteration = stage_keys.parse_key(outcome.key)
        values = run.manifest.get(outcome.key)["values"]
        if stage in ("loss", "update") and values and all("loss_sum" in v for v in values.values()):
            parts = [values[p] for p in sorted(values)]
            self.loss = sum(v["loss_sum"] for v in parts) / sum(v["count"] for v in parts)
        if stage == "update":
            now = time.monotonic()
            self.iteration_times.append(now - self.last_iteration_end)
            self.last_iteration_end = now
        line = self._line(outcome, stage, epoch, iteration, values)
        if line:
            self.stream.write(("\r\x1b[2K" if self.live else "") + line + "\n")
            self.stream.flush()

    def _line(self, outcome, stage, epoch, iteration, values) -> str | None:
        stamp = time.strftime("%H:%M:%S")
        if stage == "evaluate":
            parts = [values[p] for p in sorted(values)]
            count = sum(v["count"] for v in parts)
            return (f"{stamp} epoch {epoch + 1}: test loss {sum(v['loss_sum'] for v in parts) / count:.4f}, "
                    f"test accuracy {sum(v['correct'] for v in parts) / count:.4f}")
        if stage == "update" and not self.live:
            return f"{stamp} {self.status(outcome.key).replace(' | stage ' + outcome.key, '')}"
        if stage in stage_keys.SETUP_STAGES or stage == "batches":
            return f"{stamp} {outcome.key} committed ({outcome.seconds:.1f} s, {outcome.bytes / 1e6:.1f} MB)"
        return None

    def close(self) -> None:
        if self.live:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()


class TaskProgress:
    """`(tasks, collect) -> collect()` for one Spark job, showing its finished tasks while it runs: a line
    redrawn in place on a terminal, a log line every `every` seconds otherwise."""

    def __init__(self, spark, what: str, stream=None, every: float = 10.0):
        self.tracker, self.what = spark.sparkContext.statusTracker(), what
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty()
        self.every = 0.5 if self.live else every

    def _done(self) -> int:
        stages = [self.tracker.getStageInfo(s) for s in self.tracker.getActiveStageIds()]
        return sum(s.numCompletedTasks for s in stages if s is not None)

    def __call__(self, tasks: int, collect):
        stop = threading.Event()
        started = time.monotonic()

        def show():
            while not stop.wait(self.every):
                line = f"{self.what}: {self._done()} of {tasks} pieces done, {_clock(time.monotonic() - started)}"
                print(f"\r{line}\033[K" if self.live else line, end="" if self.live else "\n", file=self.stream,
                      flush=True)

        thread = threading.Thread(target=show, daemon=True)
        thread.start()
        try:
            return collect()
        finally:
            stop.set()
            thread.join()
            if self.live:
                print("\r\033[K", end="", file=self.stream, flush=True)
