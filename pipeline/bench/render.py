"""What the bench prints and draws: the table of rows, the chart, the cache policies, the scaling, where a
stage's time goes, and the seconds per stage."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sparkcnn.pipeline.bench.row import Row
from sparkcnn.pipeline.bench.spark_rows import MODES
from sparkcnn.schemas.network import Network

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
