"""What a data source holds, as a digest cheap to compute and independent of its path or URL: a run root
records it at ingest, so that it trains on one data source (the same data moved elsewhere is the same)."""
from __future__ import annotations

import hashlib
import os
import posixpath

from sparkcnn.pipeline.data.sources import locate
from sparkcnn.pipeline.runroot.storage import Storage

FINGERPRINT_ENDS = 1 << 20  # bytes read at each end of a single-file source


def fingerprint(path: str) -> str:
    """A digest of what `path` holds, cheap and independent of where it is: for a folder, the relative
    path and size of every file below it (but `.*` and `_*` ones, such as checksums and markers); for a
    file, its size and its first and last MiB (a .tar.gz ends with its content's CRC and length, a
    Parquet file with its metadata)."""
    storage, rel = locate(path)
    fs, full = storage.fs, storage.path(rel)
    digest = hashlib.sha256()
    if fs.isdir(full):
        for name, size in _listing(storage, rel):
            digest.update(f"{name}\0{size}\n".encode())
        return digest.hexdigest()
    size = int(fs.size(full))
    with fs.open(full, "rb") as f:
        digest.update(f"{size}\n".encode() + f.read(FINGERPRINT_ENDS))
        f.seek(max(size - FINGERPRINT_ENDS, 0))
        digest.update(f.read())
    return digest.hexdigest()


def _listing(storage: Storage, rel: str) -> list[tuple[str, int]]:
    """(path relative to the folder, size) of every file below it but hidden ones, sorted."""
    base = storage.path(rel).rstrip("/")
    if storage.local:
        sizes = {name: os.path.getsize(posixpath.join(base, name)) for name in storage.find(rel)}
    else:
        sizes = {f[len(base):].lstrip("/"): int(info["size"]) for f, info in storage.fs.find(base, detail=True).items()}
    return sorted((name, size) for name, size in sizes.items()
                  if not any(part.startswith((".", "_")) for part in name.split("/")))

