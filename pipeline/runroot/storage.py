"""File access under a run root given as a path or URL (file://, hdfs://, any fsspec scheme)."""
from __future__ import annotations

import contextlib
import os
import uuid
from urllib.parse import unquote, urlsplit

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from sparkcnn.pipeline.runroot import hdfs


def normalize_url(url: str) -> str:
    """A local path is kept as given, made absolute (a file:// URL becomes its path, %-escapes decoded);
    other URLs are kept, without a trailing slash."""
    parts = urlsplit(url)
    if "://" not in url or parts.scheme == "file":
        path = unquote(parts.path) if "://" in url else url
        return os.path.abspath(os.path.expanduser(path))
    return url.rstrip("/")


class Storage:
    """Reads and writes files by paths relative to a root URL."""

    def __init__(self, url: str, options: dict | None = None):
        self.url = normalize_url(url)
        parts = urlsplit(self.url)
        if parts.scheme == "hdfs":
            self.fs, self.base = hdfs.HdfsFileSystem(parts.hostname, parts.port, **(options or {})), parts.path
            self.options = {hdfs.HTTP_ADDRESS: self.fs.http_address,
                            **({hdfs.REPLICATION: self.fs.replication} if self.fs.replication else {})}
        elif self.url.startswith("/"):
            self.fs, self.base, self.options = LocalFileSystem(), self.url, {}
        else:
            self.fs, self.base = fsspec.core.url_to_fs(self.url, **(options or {}))
            self.options = options or {}
        self.local = isinstance(self.fs, LocalFileSystem)
        self.hdfs = isinstance(self.fs, hdfs.HdfsFileSystem)
        self._deferred = False

    def __getstate__(self):
        return {"url": self.url, "options": self.options}

    def __setstate__(self, state):
        self.__init__(state["url"], state["options"])

    def path(self, rel: str) -> str:
        return f"{self.base}/{rel}" if rel else self.base

    def uri(self, rel: str) -> str:
        """Full URL of a relative path, as Spark wants it (Hadoop's paths take local names unescaped)."""
        return f"file://{self.path(rel)}" if self.local else (f"{self.url}/{rel}" if rel else self.url)

    def where(self, rel: str) -> str:
        """A relative path as a person would name it: a local path, or a URL."""
        return self.path(rel) if self.local else self.uri(rel)

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.path(rel))

    def listdir(self, rel: str) -> list[str]:
        """Names directly under a folder; empty when it does not exist."""
        try:
            if self.local:
                return sorted(os.listdir(self.path(rel)))
            entries = self.fs.ls(self.path(rel), detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def find(self, rel: str) -> list[str]:
        """Paths of every file below a folder, relative to it, sorted (locally without a stat per file)."""
        if self.local:
            base = self.path(rel)
            found = [os.path.relpath(os.path.join(top, name), base)
                     for top, _, names in os.walk(base) for name in names]
        else:
            base = self.path(rel).rstrip("/")
            found = [f[len(base):].lstrip("/") for f in self.fs.find(base)]
        return sorted(found)

    def list_stats(self, rel: str) -> dict[str, tuple[int, float | None]]:
        """Files directly under a folder by name: (size, modification time or None), from one listing;
        empty when the folder does not exist."""
        try:
            if self.local:
                with os.scandir(self.path(rel)) as entries:
                    return {e.name: (s.st_size, s.st_mtime_ns) for e in entries if e.is_file() for s in [e.stat()]}
            entries = self.fs.ls(self.path(rel), detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return {}
        return {e["name"].rstrip("/").rsplit("/", 1)[-1]: (int(e.get("size") or 0), _timestamp(e.get("mtime")))
                for e in entries if e.get("type") == "file"}

    def size(self, rel: str) -> int:
        return int(self.fs.size(self.path(rel)))

    def remove(self, rel: str) -> None:
        if self.exists(rel):
            self.fs.rm(self.path(rel), recursive=True)

    def read_bytes(self, rel: str) -> bytes:
        if self.local:
            with open(self.path(rel), "rb") as f:
                return f.read()
        with self.fs.open(self.path(rel), "rb") as f:
            return f.read()

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a whole file, replacing any old one only once the new content is complete."""
        tmp = self._write_temp(rel, data)
        if self.local:
            os.replace(tmp, self.path(rel))
        else:
            self.fs.mv(tmp, self.path(rel), overwrite=True)

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        """Create a file with this content unless it exists; True when this call created it."""
        tmp = self._write_temp(rel, data)
        if self.local:
            try:
                os.link(tmp, self.path(rel))
                return True
            except FileExistsError:
                return False
            finally:
                os.remove(tmp)
        try:
            self.fs.mv(tmp, self.path(rel))  # HDFS renames refuse an existing target: atomic
            return True
        except Exception:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)
            if self.exists(rel):
                return False
            raise

    def _write_temp(self, rel: str, data: bytes) -> str:
        parent = rel.rsplit("/", 1)[0] if "/" in rel else ""
        tmp = self.path(f"{parent}/.tmp-{uuid.uuid4().hex}" if parent else f".tmp-{uuid.uuid4().hex}")
        self._put(tmp, data)
        return tmp

    @contextlib.contextmanager
    def deferred_writes(self):
        """Within the block, fresh files on HDFS are sent in the background, overlapping what follows;
        the block ends once all are written, raising if one failed (elsewhere: no change)."""
        self._deferred = self.hdfs
        try:
            yield
        finally:
            self._deferred = False
            if self.hdfs:
                self.fs.webhdfs.wait()

    def _put(self, path: str, data: bytes, later: bool = False) -> None:
        """Write a file in place (its folder made first where the file system does not make it)."""
        if later and self._deferred:
            self.fs.webhdfs.write_later(path, data)
            return
        if not self.hdfs:
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with self.fs.open(path, "wb") as f:
            f.write(data)

    def write_parquet(self, table: pa.Table, rel: str, fresh: bool = False) -> int:
        """Write a table as one Parquet file; returns its size in bytes. Elsewhere than on local disk the
        file replaces any old one only once complete, unless `fresh`: a name no other attempt writes,
        committed only through the manifest (a write cut off leaves an orphan, never a half file that a
        reader trusts), written in place.

        Tensor (binary) columns are written plain: no dictionary, no compression, no statistics.
        """
        plain = [f.name for f in table.schema if pa.types.is_binary(f.type)]
        others = [f.name for f in table.schema if f.name not in plain]
        options = dict(compression="none", use_dictionary=others, write_statistics=others,
                       row_group_size=max(1, table.num_rows))
        if self.local:
            self.fs.makedirs(self.path(rel.rsplit("/", 1)[0] if "/" in rel else ""), exist_ok=True)
            pq.write_table(table, self.path(rel), **options)
            return self.size(rel)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, **options)
        data = sink.getvalue().to_pybytes()
        if fresh:
            self._put(self.path(rel), data, later=True)
        else:
            self.write_bytes(rel, data)
        return len(data)

    def parquet_rows(self, rel: str) -> int:
        """Row count from a Parquet file's footer (raises if the footer is unreadable)."""
        with self.fs.open(self.path(rel), "rb") as f:
            return pq.read_metadata(f).num_rows

    def read_parquet(self, rel: str, columns: list[str] | None = None) -> pa.Table:
        """One Parquet file (as a file, not a dataset: a third of the cost for the small files of a shard)."""
        if self.local:
            return pq.ParquetFile(self.path(rel)).read(columns=columns)
        with self.fs.open(self.path(rel), "rb") as f:
            return pq.ParquetFile(f).read(columns=columns)


def _timestamp(value) -> float | None:
    """A listing's modification time as a number (fsspec gives numbers or datetimes)."""
    if value is None:
        return None
    return value.timestamp() if hasattr(value, "timestamp") else float(value)
