"""A cost model of one iteration per mode, fitted to a bench run (`bench.json`) and used to predict larger
clusters: `python -m sparkcnn.pipeline.bench.cost_model bench/bench.json`. What it prints for shapes that were not
measured is a prediction; its error on what was measured is printed first.

Per iteration, with P task slots (executors x cores) on E nodes:
    staged = S*F + (C + files_w*a_w + files_r*a_r)/P + max((W*r + R)/(E*disk), W*(r-1)/(E*net))
    memory = S*F_mem + (C + W*k_mem)/P + 2*G*E/net          fused = O_fused + C/P + 2*G*E/net
S stages, F the fixed cost of a stage on the storage (its loss stage, which computes next to nothing),
C the stages' compute in task seconds, W and R the bytes written and read, a_w and a_r what a small file
costs on the storage, r the replication, G the parameters' bytes (sent to and gathered from every
executor), k_mem memory mode's own cost per byte its stages hand on (serialization in the JVM), O_fused
fused mode's time beyond its compute. On the machine the bench ran on, the bytes cost what they cost
there (b per byte, fitted) instead of the bandwidth term.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

MB = 1e6


@dataclass(frozen=True)
class Shape:
    executors: int
    cores: int
    disk_mb_s: float
    net_gbit_s: float
    replication: int

    @property
    def slots(self) -> int:
        return self.executors * self.cores


@dataclass(frozen=True)
class Fit:
    """What one bench run measured, per iteration."""

    stages: int
    compute: float  # task seconds
    written: float
    read: float
    files_written: float
    files_read: float
    params: float  # bytes
    fixed: dict  # storage or mode -> seconds per stage
    file_s: dict  # storage -> (a_w, a_r) seconds per file
    byte_s: dict  # storage -> task seconds per byte moved, as measured here
    k_mem: float
    fused: float


def slots_of(row: dict, default: int) -> int:
    return row.get("slots") or default


def fit(bench: dict, slots: int) -> Fit:
    """The model's terms from a bench run whose local rows ran on `slots` task slots (unless the rows say)."""
    rows = {r["name"]: r for r in bench["rows"]}
    staged = rows["staged"]
    slots = slots_of(staged, slots)
    compute = sum(p["compute"] for p in staged["phases"].values())
    io = staged["storage"]
    fixed, file_s, byte_s = {}, {}, {}
    for storage, name in (("local", "staged"), ("hdfs", "staged on hdfs")):
        row = rows.get(name)
        if not row or not row.get("storage"):
            continue
        busy = sum(p["read"] + p["write"] for p in row["phases"].values())
        per_file = bench.get("file_costs", {}).get(storage)
        a_w, a_r = (per_file["write_ms"] / 1000, per_file["read_ms"] / 1000) if per_file else (0.0, 0.0)
        file_s[storage] = (a_w, a_r)
        copies = io["bytes_written"] * replication_of(row, storage) + io["bytes_read"]
        byte_s[storage] = max(0.0, busy - a_w * io["files_written"] - a_r * io["files_read"]) / copies
        fixed[storage] = row["fixed_cost"] or 0.0
    stages = len(staged["phases"])
    memory = rows["memory"]
    fixed["memory"] = memory["fixed_cost"] or 0.0
    k_mem = (max(0.0, (memory["total"] - stages * fixed["memory"]) * slots_of(memory, slots) - compute)
             / io["bytes_written"])
    return Fit(stages, compute, io["bytes_written"], io["bytes_read"], io["files_written"], io["files_read"],
               staged["phases"].get("update", {}).get("mb_written", 0.0) * MB / 2, fixed, file_s, byte_s, k_mem,
               max(0.0, rows["fused"]["total"] - compute / slots_of(rows["fused"], slots)))


def replication_of(row: dict, storage: str) -> int:
    """Copies of each written byte: HDFS's replication as the row recorded it (2 in bench.json files from
    before rows recorded it: scripts/hdfs.sh's), local disk 1."""
    return row.get("replication") or 2 if storage == "hdfs" else 1


def staged_here(f: Fit, storage: str, slots: int, replication: int = 1) -> float:
    """Staged mode on the machine the bench ran on, with `slots` task slots and `replication` copies."""
    a_w, a_r = f.file_s[storage]
    busy = f.files_written * a_w + f.files_read * a_r + f.byte_s[storage] * (f.written * replication + f.read)
    return f.stages * f.fixed[storage] + (f.compute + busy) / slots


def staged(f: Fit, storage: str, shape: Shape) -> float:
    a_w, a_r = f.file_s[storage]
    disk = (f.written * shape.replication + f.read) / (shape.executors * shape.disk_mb_s * MB)
    net = f.written * (shape.replication - 1) * 8 / (shape.executors * shape.net_gbit_s * 1e9)
    return (f.stages * f.fixed[storage] + (f.compute + f.files_written * a_w + f.files_read * a_r) / shape.slots
            + max(disk, net))


def in_memory(f: Fit, mode: str, shape: Shape) -> float:
    network = 2 * f.params * shape.executors * 8 / (shape.net_gbit_s * 1e9)
    if mode == "fused":
        return f.fused + f.compute / shape.slots + network
    return f.stages * f.fixed["memory"] + (f.compute + f.written * f.k_mem) / shape.slots + network


def check(bench: dict, f: Fit, slots: int, label: str = "") -> list[tuple[str, float, float]]:
    """(row, predicted, measured) for every Spark row of a bench run, predicted from the fit `f` (of this run
    or another) with the row's own task slots and replication: staged on local disk and on HDFS share only
    their compute and byte counts; the cluster rows and the rows of another run (another replication or
    worker count) are predictions from a fit on the local rows."""
    out = []
    for row in bench["rows"]:
        name, mode = row["name"], row["name"].split()[0].rstrip(",")
        fitted = not label and name in ("memory", "fused")
        if mode not in ("staged", "memory", "fused") or "job per stage" in name or fitted:
            continue
        on = slots_of(row, slots)
        storage = "hdfs" if "hdfs" in name else "local"
        copies = f", replication {replication_of(row, storage)}" if storage == "hdfs" else ""
        shown = f"{name} ({on} slot{'s' * (on > 1)}{copies}){label}"
        if mode == "staged" and storage in f.file_s:
            out.append((shown, staged_here(f, storage, on, replication_of(row, storage)), row["total"]))
        elif mode != "staged":
            out.append((shown, in_memory(f, mode, Shape(1, on, 0, float("inf"), 1)), row["total"]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="predict seconds per iteration per mode on larger clusters")
    parser.add_argument("bench_json")
    parser.add_argument("--slots", type=int, default=2, help="task slots of the bench's local rows (local[2]: 2)")
    parser.add_argument("--disk-mb-s", type=float, default=200.0, help="disk bandwidth of a node")
    parser.add_argument("--cores", type=int, default=4, help="cores per executor")
    parser.add_argument("--against", action="append", default=[], metavar="BENCH_JSON",
                        help="also predict the rows of another bench run (another replication or worker count) "
                             "from this one's fit")
    args = parser.parse_args(argv)
    bench = json.loads(open(args.bench_json).read())
    f = fit(bench, args.slots)
    checked = check(bench, f, args.slots)
    for other in args.against:
        checked += check(json.loads(open(other).read()), f, args.slots, f" [{other}]")
    width = max(len(name) for name, _, _ in checked)
    print("the model against what was measured (seconds per iteration):")
    for name, predicted, measured in checked:
        print(f"  {name:<{width}}  predicted {predicted:7.3f}  measured {measured:7.3f}  "
              f"error {predicted / measured - 1:+.0%}")
    print(f"\nPREDICTION, not measured: seconds per iteration of {bench['images']} images on clusters of executors "
          f"with {args.cores} cores, {args.disk_mb_s:.0f} MB/s disks, HDFS with replication 3:")
    print(f"{'executors':>10}{'Gbit/s':>8}{'staged hdfs':>13}{'memory':>9}{'fused':>8}{'staged/memory':>15}")
    for net in (10.0, 1.0):
        for executors in (2, 8, 32):
            shape = Shape(executors, args.cores, args.disk_mb_s, net, 3)
            hdfs, memory = staged(f, "hdfs", shape), in_memory(f, "memory", shape)
            print(f"{executors:>10}{net:>8.0f}{hdfs:>13.3f}{memory:>9.3f}{in_memory(f, 'fused', shape):>8.3f}"
                  f"{hdfs / memory:>15.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
