"""What storage costs per file and per byte: the NameNode's operation counters (JMX over HTTP) and a
micro-benchmark of the write and read path of a run root (`python -m pipeline.bench_storage URL`)."""
from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from urllib.request import urlopen

import numpy as np
import pyarrow as pa

from pipeline.storage import Storage

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


def shard_table(size: int) -> pa.Table:
    """A table like a stage's output: an id column and one binary tensor column of about `size` bytes."""
    rows = max(1, size // 4096)
    blob = np.random.default_rng(0).bytes(max(1, size // rows))
    return pa.table({"image_id": pa.array(np.arange(rows, dtype=np.int64)), "out": pa.array([blob] * rows, pa.binary())})


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
        print(f"{'in place' if fresh else 'renamed':<9}{r['bytes'] / 1e6:9.3f} MB  write {r['write_ms']:7.2f} ms/file  read {r['read_ms']:7.2f} ms/file"
              f"  | per file written: {ops or '-'} | read: {rops or '-'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
