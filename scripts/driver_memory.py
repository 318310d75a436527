"""The driver's memory while ingest reads an image folder and while `score` scores it, for growing
numbers of images.

    python scripts/driver_memory.py [--images 10000 50000 100000] [--work DIR]

For each size: an image folder of that many 32x32 PNGs in 10 classes (made once under --work), then
a fresh process on local[2] that runs the ingest stage, then init, then scores every image of the folder
with those parameters (`sparkcnn score --split all`), and reports its own peak resident memory after
each (the driver's Python process; Spark's JVM heap in use is reported apart) and the seconds each took.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def make_folder(root: Path, images: int) -> Path:
    """`images` random 32x32 RGB PNGs in 10 class folders (kept for the next measurement)."""
    import numpy as np
    from PIL import Image

    done = root / ".complete"
    if done.exists():
        return root
    rng = np.random.default_rng(0)
    for n in range(images):
        folder = root / f"class{n % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{n:06d}.png")
    done.write_text("")
    return root


def measure(data: str, root: str) -> dict:
    """In this process: ingest, init and scoring; peak memory of the driver after each, and the JVM's heap."""
    from pipeline import config
    from pipeline.run import Run
    from pipeline.score import score
    from pipeline.spark import session

    cfg = config.load(overrides=[f'data.path="{data}"', f'run.root="{root}"'])
    run = Run(cfg)
    run.save_config()
    spark = session(cfg)
    start = time.perf_counter()
    run.run_stage(spark, "ingest")
    ingested, ingest_peak = time.perf_counter() - start, peak_mib()
    run.run_stage(spark, "init")
    start = time.perf_counter()
    summary = score(run, spark, run.params_at(0), "initial parameters", data, "all", f"{root}-scores", True)
    scored = time.perf_counter() - start
    heap = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getMemoryMXBean().getHeapMemoryUsage()
    return {"images": summary["images"], "ingest_s": round(ingested, 1), "ingest_peak_mib": ingest_peak,
            "score_s": round(scored, 1), "score_peak_mib": peak_mib(), "jvm_heap_used_mib": round(heap.getUsed() / 2 ** 20, 1)}


def peak_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[10000, 50000, 100000])
    parser.add_argument("--work", default="/tmp/sparkcnn-driver-memory")
    parser.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    work = Path(args.work)
    columns = ("images", "ingest_s", "ingest_peak_mib", "score_s", "score_peak_mib", "jvm_heap_used_mib")
    print(" ".join(f"{c:>17}" for c in columns))
    for images in args.images:
        data = make_folder(work / f"folder-{images}", images)
        root = work / f"run-{images}"
        subprocess.run(["rm", "-rf", str(root)], check=True)
        done = subprocess.run([sys.executable, __file__, "--measure", str(data), str(root)],
                              capture_output=True, text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(" ".join(f"{row[c]:>17}" for c in columns), flush=True)


if __name__ == "__main__":
    main()
