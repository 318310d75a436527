"""Time a 4-point `sparkcnn sweep` run 2 at a time against the same 4 trials one after the other, on the
embedded CIFAR-10 sample (each on a fresh run root whose ingest is timed apart). Prints one JSON line.

    .venv/bin/python scripts/sweep_timing.py [--out DIR] [--epochs N] [--images N] [--order 2,1]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

GRID = ["--grid", "train.learning_rate=[0.01, 0.02]", "--grid", "train.momentum=[0.0, 0.9]"]


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sparkcnn", *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def trial_seconds(root: Path) -> dict[str, float]:
    """Seconds each trial's stages took, as its metrics recorded them."""
    from sparkcnn.pipeline.ml.trials import trial_roots
    from sparkcnn.pipeline.training.run import Run

    return {r.rsplit("/", 1)[-1]: round(sum(m["seconds"] for m in Run.open(r).metrics().to_pylist()
                                            if m["kind"] in ("train", "eval")), 2) for r in trial_roots(str(root))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="sweep-timing")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--order", default="2,1", help="the --parallel values, in the order they run")
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    settings = ["--epochs", str(args.epochs), "--mode", "fused", "--set", f"train.images={args.images}"]
    result = {"load_before": os.getloadavg()[0], "cores": os.cpu_count()}
    for parallel in [int(n) for n in args.order.split(",")]:
        root = out / f"parallel-{parallel}"
        result[f"ingest_{parallel}"] = round(timed(["stage", "ingest", "--run-root", str(root), *settings[2:]]), 1)
        result[f"sweep_{parallel}"] = round(timed(["sweep", "--run-root", str(root), *settings, *GRID,
                                                   "--parallel", str(parallel)]), 1)
        result[f"trials_{parallel}"] = trial_seconds(root)
    result["load_after"] = os.getloadavg()[0]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
