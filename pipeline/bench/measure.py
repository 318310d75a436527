"""`sparkcnn bench`: the same training iteration in PyTorch, in plain numpy, and in the three Spark modes.

Everything runs in one process, on one batch of real CIFAR-10, in that order. Per mode it reports
forward, backward, update and total seconds per iteration (medians, with the fastest and slowest
iteration), the BLAS threads it computes with, bytes written per iteration, the ratio to PyTorch on the
CPU, peak memory of the driver, the scaling over batch sizes, and each layer kernel's GFLOP/s next to the
matrix-product peak.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sparkcnn.pipeline import config, stage_keys
from sparkcnn.pipeline.bench import cluster as bench_cluster, kernel_speed, storage as bench_storage
from sparkcnn.pipeline.bench.torch_graph import torch_model
from sparkcnn.pipeline.config import Config
from sparkcnn.pipeline.data import ingest
from sparkcnn.pipeline.training import modes
from sparkcnn.pipeline.training.run import Run, network_for
from sparkcnn.schemas.network import Network
from sparkcnn.stages import update, whole_network
from sparkcnn.stages.tabular import StageContext, normalize

MODES = tuple(modes.MODES)
CACHE_VARIANTS = {
    "default (bitmask, int8)": [],
    "relu mask as bytes": ["cache.relu_mask='bytes'"],
    "relu mask recomputed": ["cache.relu_mask='recompute'"],
    "pool argmax recomputed": ["cache.pool_argmax='recompute'"],
    "sparse gradients": ["cache.sparse_gradients=true"],
    "all recomputed + sparse": ["cache.relu_mask='recompute'", "cache.pool_argmax='recompute'",
                                "cache.sparse_gradients=true"],
}


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

    @property
    def total(self) -> float:
        return self.forward + self.backward + self.update


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


def load_batch(cfg: Config, images: int):
    """The first `images` training images, normalised, with labels, and the channel stats."""
    net = network_for(cfg)
    loaded = ingest.load(cfg, net)
    pixels, labels = loaded.split("train", net)
    pixels, labels, stats = pixels[:images], labels[:images], loaded.stats
    if labels.size < images:
        raise ValueError(f"the data has {labels.size} training images, fewer than the {images} asked for")
    mean, std = stats.column("mean").to_numpy(), stats.column("std").to_numpy()
    return normalize(pixels, mean, std), labels, net


def ingest_count(cfg: Config) -> int:
    source, description = ingest.configured_source(cfg)
    return sum(ingest.count_piece(source, description, piece).get("train", 0) for piece in source.pieces(description))


def bench_numpy(cfg: Config, x, labels, net: Network, repeat: int) -> Row:
    """The numpy kernels in this process with one BLAS thread, as a Spark task runs them (the same bits as the
    Spark modes; two threads were 5-8x slower on a shared 2-core machine, 2026-12-03)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        return _bench_numpy(cfg, x, labels, net, repeat)


def _bench_numpy(cfg: Config, x, labels, net: Network, repeat: int) -> Row:
    params = update.init_params(net, cfg.train.seed)
    velocity = update.zero_velocity(net)
    timings = []
    ids = np.arange(labels.size)
    for t in range(repeat + 1):
        ctx = StageContext(net, params, normalizer=labels.size, seed=cfg.train.seed)
        t0 = time.perf_counter()
        _, caches = whole_network.forward(x, labels, ctx, (t, ids))
        t1 = time.perf_counter()
        grads = whole_network.backward(caches, ctx)
        t2 = time.perf_counter()
        params, velocity = update.sgd_step(params, velocity, grads, cfg.train.learning_rate,
                                           cfg.train.momentum, cfg.train.weight_decay)
        timings.append((t1 - t0, t2 - t1, time.perf_counter() - t2))
    return timed_row("numpy (1 process)", labels.size, timings[1:], f"{blas_threads()} (1 process)")


def timed_row(name: str, images: int, timings: list[tuple], threads: str) -> Row:
    """A row of the medians of (forward, backward, update) seconds, with the fastest and slowest total."""
    f, b, u = (statistics.median(col) for col in zip(*timings))
    totals = [sum(t) for t in timings]
    return Row(name, images, f, b, u, threads=threads, low=min(totals), high=max(totals))


def blas_threads() -> int:
    """The threads of the BLAS that numpy uses, as now limited."""
    from threadpoolctl import threadpool_info

    return max((i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"), default=1)


def bench_torch(cfg: Config, x, labels, net: Network, repeat: int, device: str) -> Row | None:
    try:
        import torch
    except ImportError:
        return None
    if device == "cuda" and not torch.cuda.is_available():
        return None
    net = torch_model(net, update.init_params(net, cfg.train.seed)).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.train.learning_rate, momentum=cfg.train.momentum,
                          weight_decay=cfg.train.weight_decay, nesterov=cfg.train.nesterov)
    xb = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)
    yb = torch.from_numpy(labels.astype(np.int64)).to(device)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    timings = []
    for _ in range(repeat + 1):
        opt.zero_grad()
        sync()
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(net(xb), yb)
        sync()
        t1 = time.perf_counter()
        loss.backward()
        sync()
        t2 = time.perf_counter()
        opt.step()
        sync()
        timings.append((t1 - t0, t2 - t1, time.perf_counter() - t2))
    threads = torch.get_num_threads()
    return timed_row(f"pytorch {device} ({threads} threads)" if device == "cpu" else "pytorch cuda", labels.size,
                     timings[1:], f"{threads} (1 process)" if device == "cpu" else "")


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
               low=min(totals), high=max(totals))


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


PHASES = ("plan", "launch", "read", "compute", "write", "collect")


def anatomy_table(row: Row) -> str:
    """Where each stage's time goes in one staged row: the phases of `sparkcnn.pipeline.training.modes.phases`, and the
    seconds between the job's results and the commit. read, compute and write are summed over the units
    of a stage, which run on all cores at once."""
    head = f"{'stage':<14}{'seconds':>8}" + "".join(f"{p:>9}" for p in PHASES) + f"{'MB read':>9}{'MB written':>11}"
    lines = [head]
    for stage, ph in row.phases.items():
        lines.append(f"{stage:<14}{ph['seconds']:>8.3f}" + "".join(f"{ph[p]:>9.3f}" for p in PHASES)
                     + f"{ph['mb_read']:>9.1f}{ph['mb_written']:>11.1f}")
    return "\n".join(lines)


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


def table(rows: list[Row], reference: Row | None) -> str:
    head = f"{'mode':<28}{'images':>7}{'forward s':>11}{'backward s':>11}{'update s':>10}{'total s':>9}" \
           f"{'min-max s':>14}{'BLAS threads':>17}{'x pytorch':>10}{'MB written':>11}{'driver MB':>10}{'fixed s':>9}" \
           f"{'ms/MB':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        ratio = f"{r.total / reference.total:.2f}" if reference else "n/a"
        driver = f"{r.driver_peak_mb:.0f}" if r.driver_peak_mb else ""
        fixed = f"{r.fixed_cost:.3f}" if r.fixed_cost is not None else ""
        per_mb = f"{r.io_ms_per_mb:.2f}" if r.io_ms_per_mb is not None else ""
        spread = f"{r.low:.3f}-{r.high:.3f}" if r.low is not None else ""
        lines.append(f"{r.name:<28}{r.images:>7}{r.forward:>11.3f}{r.backward:>11.3f}{r.update:>10.3f}"
                     f"{r.total:>9.3f}{spread:>14}{r.threads:>17}{ratio:>10}{r.bytes_written / 1e6:>11.1f}{driver:>10}"
                     f"{fixed:>9}{per_mb:>7}")
    return "\n".join(lines)


def chart(rows: list[Row], scaling: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = [r.name for r in rows]
    bottom = np.zeros(len(rows))
    for part, color in (("forward", "#4c72b0"), ("backward", "#dd8452"), ("update", "#55a868")):
        values = np.array([getattr(r, part) for r in rows])
        left.barh(names, values, left=bottom, color=color, label=part)
        bottom += values
    left.set_xlabel("seconds per iteration")
    left.set_title(f"one iteration of {rows[0].images} images")
    left.invert_yaxis()
    left.legend()
    for mode in MODES:
        points = sorted((r.images, r.total) for r in scaling if r.name == mode)
        if points:
            right.plot(*zip(*points), marker="o", label=mode)
    right.set_xlabel("images per iteration")
    right.set_ylabel("seconds per iteration")
    right.set_title("scaling")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cache_table(variants: list[Row], net: Network) -> str:
    cols = [s for s in net.iteration_stages if net.layer(s) and net.layer(s).type in ("relu", "max_pool")]
    lines = [f"{'policy':<28}{'total s':>9}{'MB written':>12}" + "".join(f"{c + ' s':>12}" for c in cols)]
    for r in variants:
        lines.append(f"{r.name:<28}{r.total:>9.3f}{r.bytes_written / 1e6:>12.1f}"
                     + "".join(f"{r.stages.get(c, 0.0):>12.3f}" for c in cols))
    return "\n".join(lines)


def run_bench(cfg: Config, images: int, scaling: list[int], repeat: int, out: Path, torch: bool = True,
              hdfs_root: str | None = None, cache_variants: bool = True, epoch_sizes: list[int] = (),
              master: str | None = None) -> dict:
    from sparkcnn.pipeline.spark.session import session

    out.mkdir(parents=True, exist_ok=True)
    work = out / "runs"
    shutil.rmtree(work, ignore_errors=True)  # a finished run left from an earlier bench would not train again
    available = ingest_count(cfg)
    skipped = [n for n in [*scaling, *epoch_sizes] if n > available]
    scaling = [n for n in scaling if n <= available]
    epoch_sizes = [n for n in epoch_sizes if n <= available]
    x, labels, net = load_batch(cfg, max([images, *scaling]))
    rows = []
    torch_cpu = bench_torch(cfg, x[:images], labels[:images], net, repeat, "cpu") if torch else None
    torch_scaled = [r for n in scaling if n != images and torch
                    for r in [bench_torch(cfg, x[:n], labels[:n], net, scaled_repeat(repeat, images, n), "cpu")] if r]
    for r in (torch_cpu, bench_torch(cfg, x[:images], labels[:images], net, repeat, "cuda") if torch else None):
        if r:
            rows.append(r)
            print(table([r], torch_cpu).splitlines()[-1], flush=True)
    rows.append(bench_numpy(cfg, x[:images], labels[:images], net, repeat))
    print(table(rows[-1:], torch_cpu).splitlines()[-1], flush=True)
    kernels = kernel_speed.measure(net, images, max(3, repeat), cfg.train.seed, threads=1)
    del x
    spark = session(cfg)
    benched = [(m, m, work / f"{m}-{images}", []) for m in MODES]
    benched.insert(1, ("staged, job per stage", "staged", work / f"staged-jobs-{images}", ["run.job_per_stage=true"]))
    if hdfs_root:
        benched.insert(1, ("staged on hdfs", "staged", f"{hdfs_root.rstrip('/')}/bench-{images}-{time.time_ns()}", []))
    for name, mode, root, extra in benched:
        row = bench_mode(spark, cfg, mode, images, repeat, Path(root) if "://" not in str(root) else root, extra)
        row.name = name
        rows.append(row)
        print(table([row], torch_cpu).splitlines()[-1], flush=True)
    if master:
        rows += bench_cluster.cluster_rows(cfg, master, images, repeat, hdfs_root, work)
    staged = next(r for r in rows if r.name == "staged")
    for r in rows:
        r.same_params = r.params_digest == staged.params_digest if r.params_digest else None
    scaled = [r for r in rows if r.name in MODES or r is torch_cpu] + torch_scaled
    for size in scaling:
        if size == images:
            continue
        for mode in MODES:
            scaled.append(bench_mode(spark, cfg, mode, size, scaled_repeat(repeat, images, size), work / f"{mode}-{size}"))
            print(table(scaled[-1:], None).splitlines()[-1].replace("n/a", "   "), flush=True)
    variants = []
    if cache_variants:
        for name, extra in CACHE_VARIANTS.items():
            row = bench_mode(spark, cfg, "staged", images, 1, work / f"cache-{len(variants)}", extra)
            row.name = name
            variants.append(row)
            print(f"cache policy {name:<26} {row.total:8.3f} s {row.bytes_written / 1e6:9.1f} MB written", flush=True)
    epochs = epoch_memory(spark, cfg, epoch_sizes, work) if epoch_sizes else []
    by_name = {r.name: r for r in rows}
    result = {
        "images": images, "repeat": repeat, "rows": [r.__dict__ | {"total": r.total} for r in rows],
        "scaling": [r.__dict__ | {"total": r.total} for r in scaled],
        "cache_policies": [r.__dict__ | {"total": r.total} for r in variants],
        "epoch_memory": epochs, "kernels": kernels,
        "ratios": {
            "to_pytorch_cpu": {r.name: r.total / torch_cpu.total for r in rows} if torch_cpu else None,
            "staged_to_memory": by_name["staged"].total / by_name["memory"].total,
            "fixed_cost_to_pytorch_cpu": {r.name: r.fixed_cost / torch_cpu.total for r in rows
                                          if r.fixed_cost is not None} if torch_cpu else None,
            "scaling": scaling_ratios(scaled, images),
        },
    }
    if "staged on hdfs" in by_name:
        hdfs_total = by_name["staged on hdfs"].total
        result["ratios"] |= {"hdfs_to_staged": hdfs_total / by_name["staged"].total,
                             "hdfs_to_memory": hdfs_total / by_name["memory"].total}
    roots = {"local": str(work), **({"hdfs": hdfs_root} if hdfs_root else {})}
    result["file_costs"] = bench_storage.per_file_costs(roots)
    (out / "bench.json").write_text(json.dumps(result, indent=1))
    chart(rows, scaled, out / "bench.png")
    print()
    print(table(rows, torch_cpu))
    print("\nper iteration, what each stored row moves (files read and written; NN ops and rpc: the NameNode's file "
          "operations and RPC calls, on HDFS) and what that costs; same params: bitwise equal to staged\n"
          + bench_storage.storage_table(rows))
    print("".join(f"a small file on {name}: write {c['write_ms']:.2f} ms, read {c['read_ms']:.2f} ms\n"
                  for name, c in result["file_costs"].items()), end="")
    print(f"\nstaged / memory: {result['ratios']['staged_to_memory']:.2f}")
    print("fixed cost of a stage (fixed s: the loss stage, which computes next to nothing); ms/MB: the tasks' "
          "reading and writing time per MB read and written"
          + "".join(f"; {name} {share:.1%} of PyTorch's iteration"
                    for name, share in (result["ratios"]["fixed_cost_to_pytorch_cpu"] or {}).items()))
    if "hdfs_to_staged" in result["ratios"]:
        print(f"staged on hdfs / staged: {result['ratios']['hdfs_to_staged']:.2f}, "
              f"staged on hdfs / memory: {result['ratios']['hdfs_to_memory']:.2f}")
    print("\nscaling (seconds per iteration; x PyTorch at the same size; cost per image / cost per image at "
          f"{images}):\n" + scaling_table(result["ratios"]["scaling"], scaled))
    print("\nseconds per stage and iteration:\n" + stage_profile(rows, net))
    print(f"\nkernels ({images} images, {kernels['threads']} BLAS thread as in a task, CPU seconds, median "
          f"[min-max] of {kernels['repeat']} calls):\n"
          + kernel_speed.kernel_table(kernels["layers"], kernels["peak_gflops"]))
    for r in rows + [r for r in scaled if r.images != images]:
        if r.phases:
            print(f"\nwhere a stage's time goes ({r.name}, {r.images} images, seconds, median over iterations):\n"
                  + anatomy_table(r))
    if variants:
        print("\ncache policies (staged mode):\n" + cache_table(variants, net))
    if skipped:
        print(f"sizes {skipped} skipped: the data has only {available} training images")
    if not torch_cpu:
        print("PyTorch is not installed (pip install 'sparkcnn[torch]'), so there are no ratios to it")
    print(f"wrote {out / 'bench.json'} and {out / 'bench.png'}")
    return result


def scaled_repeat(repeat: int, images: int, size: int) -> int:
    """Iterations measured at a scaling size: at least as many images as at the bench's size."""
    return repeat * max(1, images // size)


def scaling_ratios(scaled: list[Row], images: int) -> dict[str, dict[int, dict]]:
    """Per mode and size: seconds, the ratio to PyTorch on the CPU at that size (when measured), and the
    cost per image relative to that at the bench's size."""
    torch = {r.images: r.total for r in scaled if r.name.startswith("pytorch cpu")}
    result = {}
    for mode in MODES:
        totals = {r.images: r.total for r in scaled if r.name == mode}
        io = {r.images: r.io_ms_per_mb for r in scaled if r.name == mode}
        result[mode] = {n: {"seconds": t, "x_pytorch": t / torch[n] if n in torch else None,
                            "per_image_vs_bench_size": (t / n) / (totals[images] / images) if images in totals else None,
                            "io_ms_per_mb": io[n]}
                        for n, t in sorted(totals.items())}
    return result


def scaling_table(ratios: dict, scaled: list[Row]) -> str:
    """Seconds, x PyTorch and cost per image by size and mode, and for modes that store their stages the
    tasks' reading and writing time per MB at that size."""
    torch = {r.images: r.total for r in scaled if r.name.startswith("pytorch cpu")}
    sizes = sorted({n for by_size in ratios.values() for n in by_size})
    stores = {m for m, by_size in ratios.items() if any(r["io_ms_per_mb"] is not None for r in by_size.values())}
    lines = [f"{'images':>7}{'pytorch s':>11}" + "".join(f"{m + ' s':>12}{'x':>7}{'/image':>8}"
                                                         + (f"{'ms/MB':>7}" if m in stores else "") for m in ratios)]
    for n in sizes:
        line = f"{n:>7}" + (f"{torch[n]:>11.3f}" if n in torch else f"{'':>11}")
        for mode, by_size in ratios.items():
            r = by_size.get(n)
            x = f"{r['x_pytorch']:.2f}" if r and r["x_pytorch"] is not None else ""
            per = f"{r['per_image_vs_bench_size']:.2f}" if r and r["per_image_vs_bench_size"] is not None else ""
            line += (f"{r['seconds']:>12.3f}" if r else f"{'':>12}") + f"{x:>7}{per:>8}"
            if mode in stores:
                line += f"{r['io_ms_per_mb']:>7.2f}" if r and r["io_ms_per_mb"] is not None else f"{'':>7}"
        lines.append(line)
    return "\n".join(lines)


def stage_profile(rows: list[Row], net: Network) -> str:
    """Seconds per stage for each Spark mode, for the README's per-stage profile."""
    spark_rows = [r for r in rows if r.stages]
    stages = [s for s in net.iteration_stages if any(s in r.stages for r in spark_rows)]
    width = max(10, *(len(s) + 2 for s in stages))
    lines = [f"{'stage':<{width}}" + "".join(f"{r.name:>16}" for r in spark_rows)]
    for s in stages:
        lines.append(f"{s:<{width}}" + "".join(f"{r.stages.get(s, 0.0):>16.3f}" for r in spark_rows))
    return "\n".join(lines)
