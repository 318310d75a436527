"""One row of the bench's table: the seconds per iteration of one mode or baseline at one size, with what it
moved and held."""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass
class Row:
    name: str
    images: int
    forward: float
    backward: float
    update: float
    bytes_written: int = 0
    driver_peak_mb: float | None = None
    jvm_peak_mb: float | None = None
    stages: dict = field(default_factory=dict)
    fixed_cost: float | None = None
    io_ms_per_mb: float | None = None
    phases: dict = field(default_factory=dict)
    storage: dict = field(default_factory=dict)
    root: str = ""
    params_digest: str = ""
    same_params: bool | None = None
    threads: str = ""
    low: float | None = None
    high: float | None = None
    slots: int | None = None  # the task slots a Spark row ran on (local[N]: N; a cluster: its executors' cores)
    replication: int | None = None  # copies of every byte a staged row wrote (HDFS: dfs.replication; else 1)

    @property
    def total(self) -> float:
        return self.forward + self.backward + self.update


def timed_row(name: str, images: int, timings: list[tuple], threads: str) -> Row:
    """A row of the medians of (forward, backward, update) seconds, with the fastest and slowest total."""
    f, b, u = (statistics.median(col) for col in zip(*timings))
    totals = [sum(t) for t in timings]
    return Row(name, images, f, b, u, threads=threads, low=min(totals), high=max(totals))
