"""`sparkcnn bench --master spark://...`: the Spark rows again on a cluster, in a subprocess (a process holds
one SparkContext): staged on local disk (a folder every worker reaches), staged on HDFS, memory, fused."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from sparkcnn.pipeline import config


def cluster_rows(cfg, master: str, images: int, repeat: int, hdfs_root: str | None, work: Path) -> list:
    """Rows measured on the cluster at `master`, named "<row> on <master>"."""
    from sparkcnn.pipeline.bench.row import Row

    benched = [("staged", "staged", str(work / f"cluster-staged-{images}")),
               *([("staged on hdfs", "staged", f"{hdfs_root.rstrip('/')}/cluster-{images}-{time.time_ns()}")]
                 if hdfs_root else []),
               ("memory", "memory", str(work / f"cluster-memory-{images}")),
               ("fused", "fused", str(work / f"cluster-fused-{images}"))]
    spec, result = work / "cluster-spec.json", work / "cluster-rows.json"
    work.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps({"config": cfg.to_dict(), "master": master, "images": images, "repeat": repeat,
                                "rows": benched}))
    done = subprocess.run([sys.executable, "-m", "sparkcnn.pipeline.bench.cluster", str(spec), str(result)])
    if done.returncode != 0:
        raise RuntimeError(f"the cluster rows on {master} failed (exit {done.returncode}); see the output above")
    return [Row(**{**row, "name": f"{row['name']} on {master}"}) for row in json.loads(result.read_text())]


def main(spec_path: str, result_path: str) -> int:
    from sparkcnn.pipeline.bench.render import table
    from sparkcnn.pipeline.bench.spark_rows import bench_mode
    from sparkcnn.pipeline.spark.session import session

    spec = json.loads(Path(spec_path).read_text())
    cfg = config.from_dict(config.apply_overrides(spec["config"], [f'spark.master="{spec["master"]}"']))
    spark = session(cfg)
    rows = []
    for name, mode, root in spec["rows"]:
        row = bench_mode(spark, cfg, mode, spec["images"], spec["repeat"], root if "://" in root else Path(root))
        row.name = name
        rows.append(row)
        print(table([row], None).splitlines()[-1].replace("n/a", "   ") + f"   (on {spec['master']})", flush=True)
    Path(result_path).write_text(json.dumps([r.__dict__ for r in rows]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
