"""What storage costs per file and per byte: the NameNode's operation counters (JMX over HTTP) and a
micro-benchmark of the write and read path of a run root (`python -m sparkcnn.pipeline.bench.storage URL`)."""
from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
import uuid
from urllib.request import urlopen

import numpy as np
import pyarrow as pa

from sparkcnn.pipeline.runroot.storage import Storage

ACTIVITY = "Hadoop:service=NameNode,name=NameNodeActivity"
COUNTERS = ("TotalFileOps", "CreateFileOps", "FilesRenamed", "DeleteFileOps", "GetBlockLocations", "FileInfoOps",
            "GetListingOps", "AddBlockOps", "SyncsNumOps")
REFRESH_S = 1.2  # scripts/hdfs.sh has the NameNode refresh its JMX counters every second


def namenode_counters(http_address: str) -> dict[str, int]:
    """The NameNode's cumulative operation counters, plus the RPC calls of its client port ("rpc")."""
    with urlopen(f"http://{http_address}/jmx?qry=Hadoop:service=NameNode,name=*", timeout=30) as response:
        beans = json.load(response)["beans"]
    activity = next(b for b in beans if b["name"] == ACTIVITY)
    counts = {name: int(activity.get(name, 0)) for name in COUNTERS}
    rpc = [b for b in beans if "RpcActivityForPort" in b["name"]]
    counts["rpc"] = int(min((b.get("RpcProcessingTimeNumOps", 0) for b in rpc), default=0))
    return counts


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in before}


class Counted:
    """NameNode operations over a block, for storage on HDFS (nothing elsewhere)."""

    def __init__(self, storage: Storage):
        self.address = storage.options.get("dfs.namenode.http-address") if storage.url.startswith("hdfs://") else None
        self.ops: dict[str, int] = {}

    def __enter__(self):
        if self.address:
            time.sleep(REFRESH_S)
        self._before = namenode_counters(self.address) if self.address else None
        return self

    def __exit__(self, *exc):
        if self._before is not None:
            time.sleep(REFRESH_S)
            self.ops = delta(self._before, namenode_counters(self.address))


def stage_io(entries: list[dict], ops: dict[str, int], iterations: int) -> dict:
    """Per iteration of a staged row: bytes and files its stages read and wrote, NameNode operations (on
    HDFS), and the tasks' reading and writing time per MB and per file."""
    if not entries:
        return {}
    read_s = sum(e["phases"]["read"] + e["phases"]["write"] for e in entries)
    moved = sum(e["read_bytes"] + e["bytes"] for e in entries)
    files_written = sum(len(fs) for e in entries for fs in e["outputs"].values())
    files = files_written + sum(e.get("read_files", 0) for e in entries)
    return {"bytes_written": sum(e["bytes"] for e in entries) / iterations,
            "bytes_read": sum(e["read_bytes"] for e in entries) / iterations,
            "files_written": files_written / iterations, "files_read": (files - files_written) / iterations,
            "namenode_ops": {k: v / iterations for k, v in ops.items()},
            "ms_per_mb": 1000 * read_s / (moved / 1e6) if moved else None,
            "ms_per_file": 1000 * read_s / files if files else None}


def params_digest(run, iteration: int) -> str:
    """A digest of the parameters an iteration starts from: equal digests, bitwise equal parameters."""
    params = run.params_at(iteration)
    digest = hashlib.sha256()
    for name in sorted(params):
        digest.update(name.encode() + params[name].tobytes())
    return digest.hexdigest()[:16]


def storage_table(rows) -> str:
    """One line per row that stored its stages: what an iteration moves and what that costs."""
    head = (f"{'row':<34}{'MB written':>11}{'MB read':>9}{'files':>7}{'NN ops':>8}{'NN rpc':>8}{'ms/MB':>7}"
            f"{'ms/file':>8}{'fixed s':>8}{'same params':>12}")
    lines = [head]
    for r in rows:
        io = r.storage
        if not io:
            continue
        ops = io["namenode_ops"]
        lines.append(f"{r.name:<34}{io['bytes_written'] / 1e6:>11.1f}{io['bytes_read'] / 1e6:>9.1f}"
                     f"{io['files_written'] + io['files_read']:>7.0f}"
                     + (f"{ops['TotalFileOps']:>8.0f}{ops['rpc']:>8.0f}" if ops else f"{'':>16}")
                     + f"{io['ms_per_mb'] or 0:>7.2f}{io['ms_per_file'] or 0:>8.2f}"
                     + (f"{r.fixed_cost:>8.3f}" if r.fixed_cost is not None else f"{'':>8}")
                     + f"{'' if r.same_params is None else ('yes' if r.same_params else 'NO'):>12}")
    return "\n".join(lines)


def shard_table(size: int) -> pa.Table:
    """A table like a stage's output: an id column and one binary tensor column of about `size` bytes."""
    rows = max(1, size // 4096)
    blob = np.random.default_rng(0).bytes(max(1, size // rows))
    return pa.table({"image_id": pa.array(np.arange(rows, dtype=np.int64)),
                     "out": pa.array([blob] * rows, pa.binary())})


def file_costs(storage: Storage, files: int, size: int, fresh: bool = True) -> dict:
    """Write then read `files` Parquet files of about `size` bytes as a stage's tasks do (`fresh`: in place,
    else under a temporary name renamed into place): ms per file each way (median), and the NameNode
    operations per file."""
    folder = f"bench-storage/{uuid.uuid4().hex[:8]}"
    table = shard_table(size)
    writes, reads, paths = [], [], []
    with Counted(storage) as wrote:
        for n in range(files):
            path = f"{folder}/out-{n:04d}-{uuid.uuid4().hex[:12]}.parquet"
            t0 = time.perf_counter()
            written = storage.write_parquet(table, path, fresh)
            writes.append(time.perf_counter() - t0)
            paths.append(path)
    with Counted(storage) as read:
        for path in paths:
            t0 = time.perf_counter()
            storage.read_parquet(path)
            reads.append(time.perf_counter() - t0)
    storage.remove(folder)
    return {"fresh": fresh, "files": files, "bytes": written, "write_ms": 1000 * statistics.median(writes),
            "read_ms": 1000 * statistics.median(reads),
            "write_ops": {k: v / files for k, v in wrote.ops.items()},
            "read_ops": {k: v / files for k, v in read.ops.items()}}


def per_file_costs(roots: dict[str, str], files: int = 20, size: int = 4096) -> dict[str, dict]:
    """file_costs of small files (what a file costs beyond its bytes) on each named root."""
    return {name: file_costs(Storage(root), files, size) for name, root in roots.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="a run root URL or path (a scratch folder bench-storage/ is made and removed)")
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--sizes", default="4096,1000000,8000000", help="file sizes in bytes")
    args = parser.parse_args(argv)
    storage = Storage(args.root)
    file_costs(storage, 3, 4096)  # warm-up: connections, folders
    for size, fresh in ((int(s), fresh) for s in args.sizes.split(",") for fresh in (True, False)):
        r = file_costs(storage, args.files, size, fresh)
        ops = " ".join(f"{k}={v:g}" for k, v in r["write_ops"].items() if v)
        rops = " ".join(f"{k}={v:g}" for k, v in r["read_ops"].items() if v)
        print(f"{'in place' if fresh else 'renamed':<9}{r['bytes'] / 1e6:9.3f} MB  write {r['write_ms']:7.2f} ms/file"
              f"  read {r['read_ms']:7.2f} ms/file"
              f"  | per file written: {ops or '-'} | read: {rops or '-'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
