"""`sparkcnn bench --master spark://...`: the Spark rows again on a cluster, in a subprocess (a process holds
one SparkContext): staged on local disk (a folder every worker reaches), staged on HDFS, memory, fused."""
from __future__ import annotations

import json
import subprocess
import sys
import traceback
from pathlib import Path

from sparkcnn.pipeline import config
from sparkcnn.pipeline.errors import DataError, RunError


def cluster_rows(cfg, master: str, images: int, repeat: int, hdfs_run_root: str | None, work: Path) -> list:
    """Rows measured on the cluster at `master`, named "<row> on <master>" (staged on HDFS in `hdfs_run_root`)."""
    from sparkcnn.pipeline.bench.row import Row

    benched = [("staged", "staged", str(work / f"cluster-staged-{images}")),
               *([("staged on hdfs", "staged", hdfs_run_root)] if hdfs_run_root else []),
               ("memory", "memory", str(work / f"cluster-memory-{images}")),
               ("fused", "fused", str(work / f"cluster-fused-{images}"))]
    spec, result = work / "cluster-spec.json", work / "cluster-rows.json"
    work.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps({"config": cfg.to_dict(), "master": master, "images": images, "repeat": repeat,
                                "rows": benched}))
    result.unlink(missing_ok=True)
    done = subprocess.run([sys.executable, "-m", "sparkcnn.pipeline.bench.cluster", str(spec), str(result)])
    measured = json.loads(result.read_text()) if result.exists() else {"error": f"exit code {done.returncode}"}
    if "error" in measured:
        raise RunError(f"the cluster rows on {master} failed: {measured['error']}"
                       + (f" (details: {measured['details']})" if measured.get("details") else ""))
    return [Row(**{**row, "name": f"{row['name']} on {master}"}) for row in measured["rows"]]


def main(spec_path: str, result_path: str) -> int:
    """Measure the spec's rows and write them to `result_path`, or the error that stopped them (one line, the
    trace in a log file) for the parent to report."""
    from sparkcnn.pipeline.bench.render import table
    from sparkcnn.pipeline.bench.spark_rows import bench_mode
    from sparkcnn.pipeline.spark.session import jvm_ended, jvm_log_tail, session
    from sparkcnn.pipeline.training.driver import failure_reason

    spec = json.loads(Path(spec_path).read_text())
    cfg = config.from_dict(config.apply_overrides(spec["config"], [f'spark.master="{spec["master"]}"']))
    rows = []
    try:
        spark = session(cfg)
        for name, mode, root in spec["rows"]:
            row = bench_mode(spark, cfg, mode, spec["images"], spec["repeat"], root if "://" in root else Path(root))
            row.name = name
            rows.append(row)
            print(table([row], None).splitlines()[-1].replace("n/a", "   ") + f"   (on {spec['master']})",
                  flush=True)
    except Exception as e:
        reason = str(e) if isinstance(e, (RunError, DataError)) else jvm_ended(e) or failure_reason(e)
        details = Path(result_path).with_name("cluster-failure.log")
        details.write_text("".join(traceback.format_exception(type(e), e, e.__traceback__)) + jvm_log_tail())
        Path(result_path).write_text(json.dumps({"error": reason, "details": str(details)}))
        return 1
    Path(result_path).write_text(json.dumps({"rows": [r.__dict__ for r in rows]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
