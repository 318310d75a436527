"""The driver's memory while ingest reads an image folder and while `score` scores it, for growing
numbers of images.

    python scripts/driver_memory.py [--images 10000 50000 100000] [--work DIR]

For each size: an image folder of that many 32x32 PNGs in 10 classes (made once under --work), then two
fresh processes on local[2], as two commands would be: one runs the ingest stage (and init), the other
scores every image of the folder with the initial parameters (`sparkcnn score --split all`). Each reports
the seconds its step took, its own peak resident memory (the driver's Python process) and Spark's JVM heap
in use after it.
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


def measure(step: str, data: str, root: str) -> dict:
    """In this process, one step: ingest (and init), or scoring every image with the initial parameters;
    the seconds it took, this process's peak memory and the JVM's heap in use after it."""
    from sparkcnn.pipeline import config
    from sparkcnn.pipeline.deploy.score import score
    from sparkcnn.pipeline.spark.session import session
    from sparkcnn.pipeline.training.run import Run

    if step == "ingest":
        run = Run(config.load(overrides=[f'data.path="{data}"', f'run.root="{root}"']))
        run.save_config()
    else:
        run = Run.open(root)
    spark = session(run.cfg)
    start = time.perf_counter()
    if step == "ingest":
        run.run_stage(spark, "ingest")
        images = sum(run.manifest.get("ingest")["values"]["all"][s] for s in ("train", "test"))
        seconds = time.perf_counter() - start
        run.run_stage(spark, "init")
    else:
        images = score(run, spark, run.params_at(0), "initial parameters", data, "all", f"{root}-scores", True)["images"]
        seconds = time.perf_counter() - start
    heap = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getMemoryMXBean().getHeapMemoryUsage()
    return {"images": images, "seconds": round(seconds, 1), "peak_mib": peak_mib(),
            "jvm_heap_mib": round(heap.getUsed() / 2 ** 20, 1)}


def peak_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[10000, 50000, 100000])
    parser.add_argument("--work", default="/tmp/sparkcnn-driver-memory")
    parser.add_argument("--measure", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    work = Path(args.work)
    print(f"{'images':>8} | {'ingest s':>8} {'peak MiB':>9} {'JVM heap MiB':>12} | {'score s':>8} {'peak MiB':>9} "
          f"{'JVM heap MiB':>12}")
    for images in args.images:
        data = make_folder(work / f"folder-{images}", images)
        root = work / f"run-{images}"
        subprocess.run(["rm", "-rf", str(root), f"{root}-scores"], check=True)
        rows = []
        for step in ("ingest", "score"):
            done = subprocess.run([sys.executable, __file__, "--measure", step, str(data), str(root)],
                                  capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        cells = " | ".join(f"{r['seconds']:>8} {r['peak_mib']:>9} {r['jvm_heap_mib']:>12}" for r in rows)
        print(f"{rows[0]['images']:>8} | {cells}", flush=True)


if __name__ == "__main__":
    main()
