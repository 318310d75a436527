"""The driver's memory while ingest reads an image folder, for growing numbers of images.

    python scripts/ingest_memory.py [--images 10000 100000] [--work DIR]

For each size: an image folder of that many 32x32 PNGs in 10 classes (made once under --work), then
a fresh process that runs the ingest stage alone on local[2] and reports its own peak resident memory
(the driver's Python process; Spark's JVM is reported apart) and the seconds the stage took.
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
    """In this process: the ingest stage alone; peak memory of the driver and of Spark's JVM."""
    from pipeline import config
    from pipeline.run import Run
    from pipeline.spark import session

    cfg = config.load(overrides=[f'data.path="{data}"', f'run.root="{root}"'])
    run = Run(cfg)
    run.save_config()
    spark = session(cfg)
    start = time.perf_counter()
    run.run_stage(spark, "ingest")
    seconds = time.perf_counter() - start
    jvm = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getMemoryMXBean().getHeapMemoryUsage()
    values = run.manifest.get("ingest")["values"]["all"]
    return {"images": values["train"] + values["test"], "seconds": round(seconds, 1),
            "driver_peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "jvm_heap_used_mib": round(jvm.getUsed() / 2 ** 20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--work", default="/tmp/sparkcnn-ingest-memory")
    parser.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    work = Path(args.work)
    print(f"{'images':>8} {'ingest s':>9} {'driver peak MiB':>16} {'JVM heap used MiB':>18}")
    for images in args.images:
        data = make_folder(work / f"folder-{images}", images)
        root = work / f"run-{images}"
        subprocess.run(["rm", "-rf", str(root)], check=True)
        done = subprocess.run([sys.executable, __file__, "--measure", str(data), str(root)],
                              capture_output=True, text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{row['images']:>8} {row['seconds']:>9} {row['driver_peak_mib']:>16} {row['jvm_heap_used_mib']:>18}")


if __name__ == "__main__":
    main()
