"""How fast a run opens for SQL and answers, as ratios to a bare SparkSession start in the same process.

    python scripts/sql_speed.py RUN_ROOT [RUN_ROOT ...] [--json FILE]

For each run root, two fresh processes: the first opens the run with no manifest index (as the first
reader of a run does; it writes the index), the second with it. Each times, in order: a bare session
start plus `SELECT 1`; opening the run (the listings of its manifest and records) plus `SELECT 1`; a
summary-column query (with the reading of the entries of the stage it names); the README's dead-ReLU
query (a tensor function over every stored ReLU output); registering every view (what `sparkcnn sql
--serve` does at start).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SUMMARY = "SELECT iteration, AVG(out_zeros) AS dead FROM {relu} GROUP BY iteration ORDER BY iteration"
DEAD_RELU = ("SELECT iteration, c AS channel, AVG(tensor_channel_zeros(out, 'float32', {channels}, c)) AS dead "
             "FROM {relu} LATERAL VIEW explode(sequence(0, {last})) channels AS c GROUP BY iteration, c "
             "ORDER BY iteration, c")


def measure(root: str) -> dict:
    """One process's timings (seconds) on a run root."""
    from sparkcnn.pipeline.query import sql
    from sparkcnn.pipeline.spark.session import session
    from sparkcnn.pipeline.training.run import Run

    run = Run.open(root)
    relu = next(s for s in run.network.forward_stages if run.network.layer(s).type == "relu")
    channels = run.network.layer(relu).out_shape[-1]
    timings = {}
    start = time.perf_counter()
    spark = session(run.cfg, querying=True)
    spark.sql("SELECT 1").collect()
    timings["session"] = time.perf_counter() - start
    start = time.perf_counter()
    views = sql.RunViews(spark, Run.open(root))
    views.prepare("SELECT 1")
    spark.sql("SELECT 1").collect()
    timings["open"] = time.perf_counter() - start
    for name, query in (("summary query", SUMMARY), ("dead-ReLU query", DEAD_RELU)):
        query = query.format(relu=relu, channels=channels, last=channels - 1)
        start = time.perf_counter()
        views.prepare(query)
        rows = spark.sql(query).toArrow().num_rows
        timings[name] = time.perf_counter() - start
        timings[f"{name} rows"] = rows
    start = time.perf_counter()
    views.register()
    timings["every view"] = time.perf_counter() - start
    entries = views.entries
    timings["iterations"] = 1 + max(e["iteration"] for e in entries.values() if e.get("iteration") is not None)
    timings["entries"] = len(entries)
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="+")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.roots[0])))
        return 0
    from sparkcnn.pipeline.runroot import layout
    from sparkcnn.pipeline.runroot.storage import Storage

    results = []
    for root in args.roots:
        storage = Storage(root)
        for folder in (layout.MANIFEST, layout.RETIRED):
            storage.remove(layout.folder_index(folder))
        for index in ("none (first reader)", "present"):
            out = subprocess.run([sys.executable, __file__, "--measure", root], capture_output=True, text=True,
                                 check=True).stdout
            results.append({"root": root, "index": index, **json.loads(out.strip().splitlines()[-1])})
    print(f"{'run':<28} {'iterations':>10} {'entries':>8} {'index':<20} {'session s':>9} "
          f"{'open s':>7} {'x':>5} {'summary s':>9} {'x':>5} {'dead-ReLU s':>11} {'x':>5} {'all views s':>11}")
    for r in results:
        ratio = lambda k: r[k] / r["session"]
        print(f"{r['root'][-28:]:<28} {r['iterations']:>10} {r['entries']:>8} {r['index']:<20} {r['session']:9.2f} "
              f"{r['open']:7.2f} {ratio('open'):5.2f} {r['summary query']:9.2f} {ratio('summary query'):5.2f} "
              f"{r['dead-ReLU query']:11.2f} {ratio('dead-ReLU query'):5.2f} {r['every view']:11.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
