"""CIFAR python archives and folders: CIFAR-10 and CIFAR-100, from the .tar.gz or its extracted folder."""
from __future__ import annotations

import hashlib
import pickle
import posixpath
import tarfile
import zlib

import numpy as np

from sparkcnn.pipeline.data.sources.base import Description, Piece, Records, Source
from sparkcnn.pipeline.errors import DataError

CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"
CIFAR10_BATCHES = (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_FILES = ("train", "test")
CIFAR100_META = "meta"


class Cifar(Source):
    """CIFAR-10 (`data_batch_1..5`, `test_batch`) or CIFAR-100 (`train`, `test`, fine labels, coarse with
    data.coarse_labels), from the python .tar.gz or its extracted folder. Each batch file is a piece."""

    def __init__(self, storage, rel, settings, kind: str):
        super().__init__(storage, rel, settings)
        self.kind = kind
        self.batches = CIFAR10_BATCHES if kind == "cifar-10" else CIFAR100_FILES

    @property
    def has_split(self) -> bool:
        return True

    def describe(self) -> Description:
        if self.kind == "cifar-10":
            names = list(CIFAR10_CLASSES)
        else:
            meta = self.members((CIFAR100_META,))[CIFAR100_META]
            key = b"coarse_label_names" if self.settings.get("coarse_labels") else b"fine_label_names"
            names = [n.decode() for n in _unpickle(f"{self.where}: {CIFAR100_META}", meta).get(key, [])]
        return Description(self.shape(np.zeros((32, 32, 3), np.uint8)), self.checked_classes(names, self.where))

    def pieces(self, description: Description) -> list[Piece]:
        missing = [name for name in self.batches if name not in self._names()]
        if missing:
            raise DataError(f"{self.where}: missing {self.kind.upper()} batch files: {', '.join(missing)}")
        return [Piece(name, (name,)) for name in self.batches]

    def read(self, piece: Piece, description: Description) -> Records:
        (name,) = piece.items
        payload = self.members((name,))[name]
        where = f"{self.where}: {name}"
        batch = _unpickle(where, payload)
        labels_key = b"labels" if self.kind == "cifar-10" else (
            b"coarse_labels" if self.settings.get("coarse_labels") else b"fine_labels")
        if b"data" not in batch or labels_key not in batch:
            raise DataError(f"{where}: not a {self.kind.upper()} batch (expected a dict with b'data' and {labels_key!r})")
        data, labels = np.asarray(batch[b"data"]), np.asarray(batch[labels_key])
        record = 32 * 32 * 3
        if data.size == 0 or labels.size == 0:
            raise DataError(f"{where}: empty data")
        if data.ndim != 2 or data.shape[1] != record or data.dtype != np.uint8:
            raise DataError(f"{where}: wrong record length: data has shape {data.shape} and dtype {data.dtype}, "
                            f"expected (N, {record}) uint8")
        if labels.shape != (data.shape[0],):
            raise DataError(f"{where}: {labels.size} labels for {data.shape[0]} images")
        classes = len(description.class_names)
        bad = labels[(labels < 0) | (labels >= classes)]
        if bad.size:
            raise DataError(f"{where}: label outside 0-{classes - 1}: {int(bad[0])}")
        pixels = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        n = labels.size
        split = "test" if name.startswith("test") else "train"
        return Records([f"{name}#{i}" for i in range(n)], labels.astype(np.int64).tolist(), [split] * n,
                       list(pixels), hashlib.sha256(payload).hexdigest())

    def _names(self) -> set[str]:
        """Base names of the files in the archive or folder (the archive's headers are read, not kept)."""
        return set(self._scan(lambda name: False))

    def members(self, names: tuple[str, ...]) -> dict[str, bytes]:
        """Named files of the archive or folder, by base name."""
        found = self._scan(lambda name: name in names, stop=len(names))
        missing = [n for n in names if n not in found]
        if missing:
            raise DataError(f"{self.where}: missing {self.kind.upper()} batch files: {', '.join(missing)}")
        return found

    def _scan(self, wanted, stop: int = 0) -> dict[str, bytes | None]:
        """Every file by base name, with its bytes when `wanted(name)`; ends once `stop` were read."""
        found, read = {}, 0
        fs, path = self.storage.fs, self.storage.path(self.rel)
        if fs.isdir(path):
            for file in self.storage.find(self.rel):
                base = posixpath.basename(file)
                found[base] = None
                if wanted(base):
                    found[base] = self.storage.read_bytes(posixpath.join(self.rel, file))
            return found
        try:
            with fs.open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r:*") as tar:
                for member in tar:
                    base = member.name.rsplit("/", 1)[-1]
                    if not member.isfile():
                        continue
                    found[base] = None
                    if wanted(base):
                        found[base], read = tar.extractfile(member).read(), read + 1
                        if read == stop:
                            break
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            raise DataError(f"{self.where}: not a readable {self.kind.upper()} archive ({type(e).__name__}: {e})") from None
        return found


def _unpickle(where: str, payload: bytes) -> dict:
    try:
        batch = pickle.loads(payload, encoding="bytes")
    except Exception as e:
        raise DataError(f"{where}: not a readable pickle ({type(e).__name__}: {e})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{where}: not a CIFAR batch (expected a dict)")
    return batch

