"""A cost model of one iteration per mode, fitted to a bench run (`bench.json`) and used to predict larger
clusters: `python -m pipeline.cost_model bench/bench.json`. What it prints for shapes that were not
measured is a prediction, with the model's error on what was measured printed first.

Per iteration, with P task slots (executors x cores) on E nodes:
    staged = S*F + C/P + (files_w*a_w + files_r*a_r)/P + max((W*r + R)/(E*disk), W*(r-1)/(E*net))
    memory = O_mem + C/P + 2*G*E/net                     (fused: the same with O_fused)
S stages, F the fixed cost of a stage (the loss stage, which computes next to nothing), C the stages'
compute in task seconds, W and R the bytes written and read, a_w and a_r the cost of a file on the storage,
r the replication, G the parameters' bytes (sent to and gathered from every executor), O the measured
non-compute time of the in-memory modes (driver-bound: it does not shrink with the cluster).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace

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
    fixed: float  # seconds per stage
    compute: float  # task seconds
    written: float
    read: float
    files_written: float
    files_read: float
    params: float  # bytes
    overhead: dict  # mode -> seconds not spent computing (memory, fused)
    file_s: dict  # storage -> (a_w, a_r) seconds per file
    byte_s: dict  # storage -> seconds per byte written and read through one slot, as measured here


def fit(bench: dict, slots: int) -> Fit:
    rows = {r["name"]: r for r in bench["rows"]}
    staged = rows["staged"]
    compute = sum(p["compute"] for p in staged["phases"].values())
    io = staged["storage"]
    file_s, byte_s = {}, {}
    for storage, name in (("local", "staged"), ("hdfs", "staged on hdfs")):
        row = rows.get(name)
        if not row or not row.get("storage"):
            continue
        moved = row["storage"]["bytes_written"] + row["storage"]["bytes_read"]
        busy = sum(p["read"] + p["write"] for p in row["phases"].values())
        per_file = bench.get("file_costs", {}).get(storage)
        a_w, a_r = (per_file["write_ms"] / 1000, per_file["read_ms"] / 1000) if per_file else (0.0, 0.0)
        files_s = a_w * row["storage"]["files_written"] + a_r * row["storage"]["files_read"]
        file_s[storage] = (a_w, a_r)
        byte_s[storage] = max(0.0, busy - files_s) / moved if moved else 0.0
    update = staged["phases"].get("update", {})
    overhead = {m: max(0.0, rows[m]["total"] - compute / slots) for m in ("memory", "fused") if m in rows}
    return Fit(len(staged["phases"]), staged["fixed_cost"] or 0.0, compute, io["bytes_written"], io["bytes_read"],
               io["files_written"], io["files_read"], update.get("mb_written", 0.0) * MB / 2, overhead, file_s, byte_s)


def staged_here(f: Fit, storage: str, slots: int) -> float:
    """Staged mode on this machine, its byte costs as measured here."""
    a_w, a_r = f.file_s[storage]
    busy = f.files_written * a_w + f.files_read * a_r + f.byte_s[storage] * (f.written + f.read)
    return f.stages * f.fixed + (f.compute + busy) / slots


def staged(f: Fit, storage: str, shape: Shape) -> float:
    a_w, a_r = f.file_s[storage]
    disk = (f.written * shape.replication + f.read) / (shape.executors * shape.disk_mb_s * MB)
    net = f.written * (shape.replication - 1) * 8 / (shape.executors * shape.net_gbit_s * 1e9)
    return (f.stages * f.fixed + (f.compute + f.files_written * a_w + f.files_read * a_r) / shape.slots
            + max(disk, net))


def in_memory(f: Fit, mode: str, shape: Shape) -> float:
    return f.overhead[mode] + f.compute / shape.slots + 2 * f.params * shape.executors * 8 / (shape.net_gbit_s * 1e9)


def check(bench: dict, f: Fit, slots: int) -> list[tuple[str, float, float]]:
    """(row, predicted, measured) for the measured rows the model did not take its constants from."""
    rows = {r["name"]: r for r in bench["rows"]}
    out = [(name, staged_here(f, storage, slots), rows[name]["total"])
           for storage, name in (("local", "staged"), ("hdfs", "staged on hdfs")) if storage in f.file_s]
    for name, row in rows.items():
        if " on spark://" in name and name.startswith("staged"):
            storage = "hdfs" if "hdfs" in name else "local"
            out.append((name, staged_here(f, storage, 2), row["total"]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="predict seconds per iteration per mode on larger clusters")
    parser.add_argument("bench_json")
    parser.add_argument("--slots", type=int, default=2, help="task slots of the bench's local rows (local[2]: 2)")
    parser.add_argument("--disk-mb-s", type=float, default=200.0, help="disk bandwidth of a node")
    parser.add_argument("--cores", type=int, default=4, help="cores per executor")
    args = parser.parse_args(argv)
    bench = json.loads(open(args.bench_json).read())
    f = fit(bench, args.slots)
    print("the model against what was measured (seconds per iteration):")
    for name, predicted, measured in check(bench, f, args.slots):
        print(f"  {name:<40} predicted {predicted:7.3f}  measured {measured:7.3f}  "
              f"error {predicted / measured - 1:+.0%}")
    storages = [s for s in ("local", "hdfs") if s in f.file_s]
    print(f"\nPREDICTION for larger clusters ({args.cores} cores per executor, {args.disk_mb_s:.0f} MB/s disks, "
          f"replication 3 on HDFS, {bench['images']} images an iteration; not measured):")
    head = f"{'executors':>10}{'Gbit/s':>8}" + "".join(f"{'staged ' + s:>15}" for s in storages) \
        + "".join(f"{m:>10}" for m in f.overhead) + f"{'staged/memory':>15}"
    print(head)
    for net in (10.0, 1.0):
        for executors in (2, 8, 32):
            shape = Shape(executors, args.cores, args.disk_mb_s, net, 3)
            times = {s: staged(f, s, shape if s == "hdfs" else replace(shape, replication=1)) for s in storages}
            memory = {m: in_memory(f, m, shape) for m in f.overhead}
            ratio = times[storages[-1]] / memory["memory"] if "memory" in memory else float("nan")
            print(f"{executors:>10}{net:>8.0f}" + "".join(f"{times[s]:>15.3f}" for s in storages)
                  + "".join(f"{memory[m]:>10.3f}" for m in memory) + f"{ratio:>15.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
