"""The bench's Spark rows: an iteration trained in each mode, timed per stage from the manifest, with the
bytes written, the storage operations, the phases of each stage and the driver's peak memory."""
from __future__ import annotations

import os
import statistics
import threading
from pathlib import Path

from sparkcnn.pipeline import config, stage_keys
from sparkcnn.pipeline.bench import storage as bench_storage
from sparkcnn.pipeline.bench.row import Row
from sparkcnn.pipeline.config import Config
from sparkcnn.pipeline.runroot import hdfs
from sparkcnn.pipeline.training import modes
from sparkcnn.pipeline.training.run import Run

MODES = tuple(modes.MODES)
HDFS_DEFAULT_REPLICATION = 3  # a NameNode's dfs.replication unless its hdfs-site.xml says otherwise


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


class PeakMemory:
    """Samples the resident memory of processes while a block runs."""

    def __init__(self, *pids: int, every: float = 0.05):
        self.pids, self.every = pids, every
        self.peaks = [0.0] * len(pids)
        self._stop = threading.Event()

    def _sample(self):
        while not self._stop.is_set():
            self.peaks = [max(p, rss_mb(pid)) for p, pid in zip(self.peaks, self.pids)]
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def bench_mode(spark, cfg: Config, mode: str, images: int, repeat: int, root: Path, extra: list[str] = ()) -> Row:
    """Train warm-up plus `repeat` iterations of `images` images in one mode; per-iteration medians."""
    overrides = [f"run.mode='{mode}'", f"train.batch_size={images}", f"train.images={images}",
                 f'run.root="{root}"', "run.keep_iterations=1", *extra]
    run = Run(config.from_dict(config.apply_overrides(cfg.to_dict(), overrides)))
    run.save_config()
    jvm = spark.sparkContext._gateway.proc.pid if spark.sparkContext._gateway.proc else os.getpid()
    run.train(spark, 1)
    os.sync()  # the measured iterations do not wait for the disk to take what earlier rows wrote
    with PeakMemory(os.getpid(), jvm) as peak, bench_storage.Counted(run.storage) as ops:
        run.train(spark, 1 + repeat)
    rows = [m for m in run.metrics().to_pylist() if m["kind"] == "stage" and m["iteration"] >= 1]
    per_stage = {s: statistics.median(m["seconds"] for m in rows if m["stage"] == s)
                 for s in {m["stage"] for m in rows}}
    written = statistics.median(sum(m["bytes"] for m in rows if m["iteration"] == t) for t in range(1, 1 + repeat))
    totals = [sum(m["seconds"] for m in rows if m["iteration"] == t) for t in range(1, 1 + repeat)]
    forward = (*run.network.forward_stages, "loss")
    entries = [e for t in range(1, 1 + repeat) for s in run.network.iteration_stages
               if (e := run.manifest.get(stage_keys.iteration_key(t, s))) and "phases" in e]
    return Row(mode, images, sum(per_stage.get(s, 0.0) for s in forward),
               sum(per_stage.get(s, 0.0) for s in run.network.backward_stages),
               per_stage.get("update", 0.0), int(written), peak.peaks[0], peak.peaks[1], per_stage,
               per_stage.get("loss") if modes.MODES[mode].times_stages else None, io_cost(entries),
               stage_phases(entries), bench_storage.stage_io(entries, ops.ops, repeat), run.storage.url,
               bench_storage.params_digest(run, 1 + repeat), threads=f"1 each, {cfg.spark.partitions} tasks",
               low=min(totals), high=max(totals), slots=task_slots(spark.sparkContext),
               replication=int(run.storage.options.get(hdfs.REPLICATION) or HDFS_DEFAULT_REPLICATION)
               if run.storage.hdfs else 1)


def task_slots(sc) -> int:
    """Tasks that can run at once: a local master's threads, or the executors' cores (spark.executor.cores
    each, 1 unless set: a standalone executor without it takes its worker's cores, 1 on scripts/spark-cluster.sh)."""
    if sc.master.startswith("local"):
        return sc.defaultParallelism
    executors = len(sc._jsc.sc().statusTracker().getExecutorInfos()) - 1  # the driver is listed too
    return max(1, executors) * int(sc.getConf().get("spark.executor.cores", "1"))


def io_cost(entries: list[dict]) -> float | None:
    """Milliseconds per MB that the stages' tasks spent reading and writing Parquet (None without stages)."""
    moved = sum(e["read_bytes"] + e["bytes"] for e in entries) / 1e6
    busy = sum(e["phases"]["read"] + e["phases"]["write"] for e in entries)
    return 1000 * busy / moved if moved else None


def stage_phases(entries: list[dict]) -> dict[str, dict[str, float]]:
    """Per stage, the median of each phase over iterations, with its seconds and MB read and written."""
    by_stage: dict[str, list[dict]] = {}
    for e in entries:
        by_stage.setdefault(e["stage"], []).append({**e["phases"], "seconds": e["seconds"],
                                                     "mb_read": e["read_bytes"] / 1e6, "mb_written": e["bytes"] / 1e6})
    return {stage: {k: statistics.median(x[k] for x in xs) for k in xs[0]} for stage, xs in by_stage.items()}


def epoch_memory(spark, cfg: Config, sizes: list[int], work: Path) -> list[dict]:
    """Peak memory of the driver (Python and JVM) over a whole epoch of each size, in fused mode."""
    jvm = spark.sparkContext._gateway.proc.pid if spark.sparkContext._gateway.proc else os.getpid()
    results = []
    for images in sizes:
        overrides = ["run.mode='fused'", f"train.images={images}", "train.epochs=1", f'run.root="{work / f"epoch-{images}"}"']
        run = Run(config.from_dict(config.apply_overrides(cfg.to_dict(), overrides)))
        run.save_config()
        run.train(spark, 1)
        with PeakMemory(os.getpid(), jvm) as peak:
            run.train(spark)
        results.append({"images": images, "iterations": run.iterations_done(),
                        "driver_peak_mb": peak.peaks[0], "jvm_peak_mb": peak.peaks[1]})
        print(f"epoch of {images} images: driver peak {peak.peaks[0]:.0f} MB (Python), {peak.peaks[1]:.0f} MB (JVM)",
              flush=True)
    return results
