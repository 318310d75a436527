"""`sparkcnn bench`: the same training iteration in PyTorch, in plain numpy, and in the three Spark modes.

Everything runs in one process, on one batch of real CIFAR-10, in that order. Per mode it reports
forward, backward, update and total seconds per iteration (medians, with the fastest and slowest
iteration), the BLAS threads it computes with, bytes written per iteration, the ratio to PyTorch on the
CPU, peak memory of the driver, the scaling over batch sizes, and each layer kernel's GFLOP/s next to the
matrix-product peak.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from sparkcnn.pipeline.bench import cluster as bench_cluster, kernel_speed, storage as bench_storage
from sparkcnn.pipeline.bench.baselines import bench_numpy, bench_torch, load_batch
from sparkcnn.pipeline.bench.render import anatomy_table, cache_table, chart, scaling_table, stage_profile, table
from sparkcnn.pipeline.bench.row import Row
from sparkcnn.pipeline.bench.spark_rows import MODES, bench_mode, epoch_memory
from sparkcnn.pipeline.config import Config
from sparkcnn.pipeline.data import ingest
from sparkcnn.pipeline.runroot.storage import Storage

CACHE_VARIANTS = {
    "default (bitmask, int8)": [],
    "relu mask as bytes": ["cache.relu_mask='bytes'"],
    "relu mask recomputed": ["cache.relu_mask='recompute'"],
    "pool argmax recomputed": ["cache.pool_argmax='recompute'"],
    "sparse gradients": ["cache.sparse_gradients=true"],
    "all recomputed + sparse": ["cache.relu_mask='recompute'", "cache.pool_argmax='recompute'",
                                "cache.sparse_gradients=true"],
}


def ingest_count(cfg: Config) -> int:
    source, description = ingest.configured_source(cfg)
    return sum(ingest.count_piece(source, description, piece).get("train", 0) for piece in source.pieces(description))


def run_bench(cfg: Config, images: int, scaling: list[int], repeat: int, out: Path, torch: bool = True,
              hdfs_root: str | None = None, cache_variants: bool = True, epoch_sizes: list[int] = (),
              master: str | None = None) -> dict:
    """The bench (see the module's docstring). Its run roots on HDFS (staged on HDFS, on `local[2]` and on
    the cluster: gigabytes each) are removed when it ends; those on local disk stay in `out`/runs until the
    next bench."""
    scratch = [f"{hdfs_root.rstrip('/')}/{kind}-{images}-{time.time_ns()}" for kind in ("bench", "cluster")
               ] if hdfs_root else [None, None]
    try:
        return _run_bench(cfg, images, scaling, repeat, out, torch, hdfs_root, scratch, cache_variants, epoch_sizes,
                          master)
    finally:
        for root in filter(None, scratch):
            Storage(root).remove("")


def _run_bench(cfg: Config, images: int, scaling: list[int], repeat: int, out: Path, torch: bool,
               hdfs_root: str | None, scratch: list[str | None], cache_variants: bool, epoch_sizes: list[int],
               master: str | None) -> dict:
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
        benched.insert(1, ("staged on hdfs", "staged", scratch[0], []))
    for name, mode, root, extra in benched:
        row = bench_mode(spark, cfg, mode, images, repeat, Path(root) if "://" not in str(root) else root, extra)
        row.name = name
        rows.append(row)
        print(table([row], torch_cpu).splitlines()[-1], flush=True)
    if master:
        rows += bench_cluster.cluster_rows(cfg, master, images, repeat, scratch[1], work)
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
