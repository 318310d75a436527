"""Detection: which source `data.path` names, by what it holds (CIFAR batches, Parquet files, images in
class folders; a single file by its first bytes)."""
from __future__ import annotations

import posixpath
import tarfile
import zlib

from sparkcnn.pipeline.data.sources.base import Source
from sparkcnn.pipeline.data.sources.cifar import CIFAR10_BATCHES, CIFAR100_FILES, CIFAR100_META, Cifar
from sparkcnn.pipeline.data.sources.image_folder import IMAGE_SUFFIXES, ImageFolder
from sparkcnn.pipeline.data.sources.parquet_images import ParquetImages
from sparkcnn.pipeline.errors import DataError
from sparkcnn.pipeline.runroot.storage import Storage

def locate(path: str) -> tuple[Storage, str]:
    """The storage of the folder that holds `path`, and its name there."""
    return Storage(posixpath.dirname(path.rstrip("/")) or "."), posixpath.basename(path.rstrip("/"))


def open_source(path: str, settings: dict) -> Source:
    """The source `path` names, by what it holds."""
    storage, rel = locate(path)
    fs, full = storage.fs, storage.path(rel)
    if not fs.exists(full):
        raise DataError(f"{path}: no such file or folder")
    if fs.isdir(full):
        files = storage.find(rel)
        kind = _cifar_kind({posixpath.basename(f) for f in files})
        if kind:
            return Cifar(storage, rel, settings, kind)
        parquet = [f for f in files if f.endswith(".parquet") and not posixpath.basename(f).startswith(("_", "."))]
        if parquet:
            return ParquetImages(storage, rel, settings, parquet)
        images = [f for f in files if f.lower().endswith(IMAGE_SUFFIXES)
                  and not any(p.startswith(".") for p in f.split("/"))]
        if not images:
            raise DataError(f"{path}: holds no CIFAR batches, Parquet files or images in class folders")
        return ImageFolder(storage, rel, settings, images)
    with fs.open(full, "rb") as f:
        head = f.read(4)
    if not head:
        raise DataError(f"{path}: empty (0 bytes), not a data source")
    if head == b"PAR1":
        return ParquetImages(storage, rel, settings, [""])
    if rel.lower().endswith(".parquet"):
        raise DataError(f"{path}: not a Parquet file (it does not begin with PAR1)")
    return Cifar(storage, rel, settings, _archive_kind(fs, full))


def _archive_kind(fs, path: str) -> str:
    """CIFAR-100 when the first file of the archive is one of its files, else CIFAR-10 (whose checks
    then name what is missing or unreadable)."""
    try:
        with fs.open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r:*") as tar:
            for member in tar:
                if member.isfile():
                    return "cifar-100" if member.name.rsplit("/", 1)[-1] in (*CIFAR100_FILES, CIFAR100_META) else "cifar-10"
    except (tarfile.TarError, EOFError, OSError, zlib.error):
        pass
    return "cifar-10"


def _cifar_kind(names: set[str]) -> str | None:
    if names & set(CIFAR10_BATCHES):
        return "cifar-10"
    if names & {*CIFAR100_FILES, CIFAR100_META} == {*CIFAR100_FILES, CIFAR100_META}:
        return "cifar-100"
    return None
