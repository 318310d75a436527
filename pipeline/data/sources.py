"""Data sources a run ingests, detected from what `data.path` points to (a local path or any URL the
run root may take): the CIFAR-10 and CIFAR-100 python archives (or their folders), an image folder
(`DIR/<class>/*.png|jpg|jpeg`, or a `train/` and `test/` pair of them) and a Parquet dataset with an
image column and a label column.

A source describes itself on the driver from its listing and a first image (image shape, class
names) and cuts itself into pieces; executors read the pieces (`read`). Nothing here holds the
whole data set."""
from __future__ import annotations

import contextlib
import copy
import hashlib
import pickle
import posixpath
import tarfile
import zlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sparkcnn.pipeline.data.images import decode_image
from sparkcnn.pipeline.runroot.storage import Storage

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"
CIFAR10_BATCHES = (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_FILES = ("train", "test")
CIFAR100_META = "meta"
MAX_CLASSES = 127  # labels are int8
PIECE_BYTES, PIECE_IMAGES = 32 << 20, 4096  # at most per piece (one Spark task, one part of the image table)


class DataError(ValueError):
    """Input data that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Description:
    """What the network and the schedule need to know of a source before it is read."""

    image: tuple[int, int, int]
    class_names: tuple[str, ...]
    notes: tuple[str, ...] = ()  # warnings about what the source holds (images it does not use)


@dataclass(frozen=True)
class Piece:
    """One unit of ingest work: a part of the image table. `items` says what to read (by source kind)."""

    part: str
    items: tuple


@dataclass
class Records:
    """A piece as read: per row its origin (a path or `file#row`), label index, split and pixels
    (H, W, C) uint8 or, for an image that cannot be decoded, the reason; and a digest of the bytes read."""

    origins: list[str]
    labels: list[int]
    splits: list[str]
    images: list
    digest: str


def split_rule(key: str, seed: int, test_fraction: float) -> str:
    """"test" for a stable, seeded fraction of keys (a file's path within the source, or a row's origin)."""
    draw = int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2.0 ** 64
    return "test" if draw < test_fraction else "train"


class Source:
    """The interface of every source kind."""

    kind = ""

    def __init__(self, storage: Storage, rel: str, settings: dict):
        self.storage, self.rel, self.settings = storage, rel, settings

    @property
    def where(self) -> str:
        return self.storage.where(self.rel)

    def describe(self) -> Description:
        raise NotImplementedError

    def for_tasks(self) -> "Source":
        """This source as tasks get it: without the listing that only planning needs."""
        light = copy.copy(self)
        if hasattr(light, "files"):
            light.files = []
        return light

    def pieces(self, description: Description) -> list[Piece]:
        raise NotImplementedError

    def read(self, piece: Piece, description: Description) -> Records:
        raise NotImplementedError

    def splits(self, piece: Piece, description: Description) -> list[str]:
        """Each row's split, as `read` gives them (sources that can tell without decoding say so cheaper)."""
        return self.read(piece, description).splits

    def shape(self, first: np.ndarray) -> tuple[int, int, int]:
        """The data set's image shape: `data.resize` when set, else the first image's."""
        resize = self.settings.get("resize") or []
        return (int(resize[0]), int(resize[1]), first.shape[2]) if resize else tuple(first.shape)

    @property
    def has_split(self) -> bool:
        """Whether the source says which images are test images (else a seeded hash of each image decides)."""
        return False

    @property
    def scoring(self) -> bool:
        """Read to be scored, not trained on: labels may be missing (images straight in the folder, a
        Parquet dataset without the label column), and any number of classes will do."""
        return bool(self.settings.get("scoring"))

    def checked_classes(self, names: list[str], where: str) -> tuple[str, ...]:
        if self.scoring:
            return tuple(names)
        if len(names) < 2:
            raise DataError(f"{where}: {len(names)} class(es) ({', '.join(names) or 'none'}); a classifier needs two or more")
        if len(names) > MAX_CLASSES:
            raise DataError(f"{where}: {len(names)} classes; at most {MAX_CLASSES} are supported")
        return tuple(names)


# CIFAR python archives and folders

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


def _cifar_kind(names: set[str]) -> str | None:
    if names & set(CIFAR10_BATCHES):
        return "cifar-10"
    if names & {*CIFAR100_FILES, CIFAR100_META} == {*CIFAR100_FILES, CIFAR100_META}:
        return "cifar-100"
    return None


# image folders

class ImageFolder(Source):
    """`DIR/<class>/<image>` (classes sorted by name), or `DIR/train/<class>/...` with `DIR/test/<class>/...`;
    without the pair, a seeded fraction of each folder's files (data.test_fraction) is the test split.
    An image in a subfolder of a class folder belongs to that class; images outside any class folder
    are not used for training (one warning counts them), and are scored unlabelled."""

    kind = "image folder"

    def __init__(self, storage, rel, settings, files: list[str]):
        super().__init__(storage, rel, settings)
        self.files = files  # image paths relative to the source, sorted
        self.paired = {f.split("/", 1)[0] for f in files if "/" in f} == {"train", "test"}

    @property
    def has_split(self) -> bool:
        return self.paired

    def _place(self, path: str) -> tuple[str, str | None]:
        """(class folder, or "" outside any; split of a train/test pair, else None) of an image."""
        parts = path.split("/")
        split = parts.pop(0) if self.paired and len(parts) > 1 else None
        return (parts[0] if len(parts) >= 2 else ""), split

    def _labelled(self) -> list[tuple[str, str, str]]:
        """(path, class name, split) of every image used, in path order."""
        rows = []
        for path in self.files:
            name, split = self._place(path)
            if name or self.scoring:
                rows.append((path, name, split or split_rule(path, self.settings.get("seed", 0),
                                                             self.settings.get("test_fraction", 0.1))))
        return rows

    def _unused(self) -> tuple[str, ...]:
        """A warning counting the images outside any class folder, which training does not use."""
        outside = [path for path in self.files if not self._place(path)[0]]
        if not outside or self.scoring:
            return ()
        return (f"{self.where}: {len(outside)} image(s) outside any class folder are not used (the first: "
                f"{outside[0]}); images are taken from DIR/<class>/ and its subfolders",)

    def class_folders(self) -> list[str]:
        found = set()
        base = self.storage.path(self.rel)
        for top in (("train", "test") if self.paired else ("",)):
            for entry in self.storage.fs.ls(posixpath.join(base, top) if top else base, detail=True):
                if entry.get("type") == "directory":
                    found.add(entry["name"].rstrip("/").rsplit("/", 1)[-1])
        return sorted(found)

    def describe(self) -> Description:
        labelled = self._labelled()
        with_images = {name for _, name, _ in labelled if name}
        empty = [c for c in self.class_folders() if c not in with_images]
        if empty:
            raise DataError(f"{self.where}: class folder {empty[0]} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        if not labelled:
            raise DataError(f"{self.where}: no images in class folders (expected DIR/<class>/*.png|jpg|jpeg)")
        first = labelled[0][0]
        pixels = decode_image(self._read(first), self.storage.where(posixpath.join(self.rel, first)))
        if isinstance(pixels, str):
            raise DataError(pixels)
        return Description(self.shape(pixels), self.checked_classes(sorted(with_images), self.where), self._unused())

    def pieces(self, description: Description) -> list[Piece]:
        index = {name: i for i, name in enumerate(description.class_names)}
        per_piece = max(1, min(PIECE_IMAGES, PIECE_BYTES // int(np.prod(description.image))))
        rows = [(path, index.get(name, -1), split) for path, name, split in self._labelled()]
        return [Piece(f"part-{n:05d}", tuple(rows[start: start + per_piece]))
                for n, start in enumerate(range(0, len(rows), per_piece))]

    def splits(self, piece: Piece, description: Description) -> list[str]:
        return [split for _, _, split in piece.items]

    def read(self, piece: Piece, description: Description) -> Records:
        digest = hashlib.sha256()
        origins, labels, splits, images = [], [], [], []
        for path, label, split in piece.items:
            data = self._read(path)
            digest.update(hashlib.sha256(path.encode() + b"\0" + data).digest())
            origin = self.storage.where(posixpath.join(self.rel, path))
            origins.append(origin)
            labels.append(label)
            splits.append(split)
            images.append(decode_image(data, origin))
        return Records(origins, labels, splits, images, digest.hexdigest())

    def _read(self, path: str) -> bytes:
        try:
            return self.storage.read_bytes(posixpath.join(self.rel, path))
        except OSError as e:
            raise DataError(f"{self.storage.where(posixpath.join(self.rel, path))}: cannot be read ({e})") from None


# Parquet datasets

class ParquetImages(Source):
    """A Parquet file or folder of files with an image column (encoded PNG/JPEG bytes; raw uint8 HWC bytes
    with height, width and channels columns; or the struct of Spark's `image` source, BGR) and a label
    column (integers, or strings mapped to their sorted order). A `split` column ("train"/"test") is used
    when present, else a seeded fraction of rows (data.test_fraction) is the test split. Each row group
    is a piece."""

    kind = "parquet"
    RAW_SHAPE = ("height", "width", "channels")

    def __init__(self, storage, rel, settings, files: list[str]):
        super().__init__(storage, rel, settings)
        self.files = files
        self.image_column = settings.get("image_column", "image")
        self.label_column = settings.get("label_column", "label")

    @property
    def has_split(self) -> bool:
        with self._file(self.files[0]) as first:
            return "split" in first.schema_arrow.names

    @contextlib.contextmanager
    def _file(self, name: str):
        """One Parquet file of the dataset, open while the block runs."""
        path = posixpath.join(self.rel, name) if name else self.rel
        with self.storage.fs.open(self.storage.path(path), "rb") as handle:
            try:
                parquet = pq.ParquetFile(handle)
            except Exception as e:
                empty = self.storage.size(path) == 0
                raise DataError(f"{self.storage.where(path)}: not a Parquet file ("
                                f"{'empty: 0 bytes' if empty else e})") from None
            yield parquet

    def describe(self) -> Description:
        with self._file(self.files[0]) as first:
            names = first.schema_arrow.names
            missing = [c for c in (self.image_column, self.label_column) if c not in names]
            if missing and not (self.scoring and missing == [self.label_column]):
                raise DataError(f"{self.where}: no column {', '.join(missing)} (columns: {', '.join(names)}); name "
                                f"the columns with data.image_column and data.label_column")
            if missing:
                return Description(self._first_shape(first), ())
            label_type = first.schema_arrow.field(self.label_column).type
        labels = []
        for name in self.files:
            with self._file(name) as parquet:
                column = parquet.read(columns=[self.label_column]).column(0)
            if column.null_count:
                raise DataError(f"{self._where(name)}: label column {self.label_column} has {column.null_count} null(s)")
            labels.append(pc.unique(column))
        distinct = pa.chunked_array(labels).unique() if labels else pa.array([])
        if pa.types.is_integer(label_type):
            values = sorted(distinct.to_pylist())
            if values and values[0] < 0:
                raise DataError(f"{self.where}: negative label {values[0]} in column {self.label_column}")
            class_names = [str(i) for i in range(values[-1] + 1)] if values else []
        elif pa.types.is_string(label_type) or pa.types.is_large_string(label_type):
            class_names = sorted(distinct.to_pylist())
        else:
            raise DataError(f"{self.where}: label column {self.label_column} is {label_type}; integers or strings needed")
        with self._file(self.files[0]) as first:
            return Description(self._first_shape(first), self.checked_classes(class_names, self.where))

    def _first_shape(self, first) -> tuple[int, int, int]:
        table = first.read_row_group(0) if first.metadata.num_row_groups else None
        if table is None or table.num_rows == 0:
            raise DataError(f"{self.where}: no rows")
        pixels = self._decode(table.slice(0, 1), self._where(self.files[0]))[0][1]
        if isinstance(pixels, str):
            raise DataError(pixels)
        return self.shape(pixels)

    def pieces(self, description: Description) -> list[Piece]:
        groups = []
        for name in self.files:
            with self._file(name) as parquet:
                groups.extend((name, g) for g in range(parquet.metadata.num_row_groups))
        return [Piece(f"part-{n:05d}", item) for n, item in enumerate(groups)]

    def splits(self, piece: Piece, description: Description) -> list[str]:
        name, group = piece.items
        with self._file(name) as parquet:
            if "split" in parquet.schema_arrow.names:
                return self._checked_splits(parquet.read_row_group(group, columns=["split"]).column(0).to_pylist(), name)
            offset = sum(parquet.metadata.row_group(g).num_rows for g in range(group))
            rows = parquet.metadata.row_group(group).num_rows
            origins = [f"{self._where(name)}#{offset + i}" for i in range(rows)]
            if pa.types.is_struct(parquet.schema_arrow.field(self.image_column).type):
                images = parquet.read_row_group(group, columns=[f"{self.image_column}.origin"]).column(0)
                origins = [o or default for o, default in zip(images.combine_chunks().field("origin").to_pylist(), origins)]
        return [self._split(origin) for origin in origins]

    def _split(self, origin: str) -> str:
        return split_rule(origin, self.settings.get("seed", 0), self.settings.get("test_fraction", 0.1))

    def _checked_splits(self, splits: list, name: str) -> list[str]:
        bad = [s for s in splits if s not in ("train", "test")]
        if bad:
            raise DataError(f"{self._where(name)}: split column holds {bad[0]!r}; expected train or test")
        return splits

    def read(self, piece: Piece, description: Description) -> Records:
        name, group = piece.items
        with self._file(name) as parquet:
            columns = [c for c in parquet.schema_arrow.names
                       if c in (self.image_column, self.label_column, "split", *self.RAW_SHAPE)]
            table = parquet.read_row_group(group, columns=columns)
            offset = sum(parquet.metadata.row_group(g).num_rows for g in range(group))
        where = self._where(name)
        if self.label_column not in table.column_names and not self.scoring:
            raise DataError(f"{where}: no column {self.label_column}; name the label column with data.label_column")
        decoded = self._decode(table, where, offset)
        raw = (table.column(self.label_column).to_pylist() if self.label_column in table.column_names
               else [-1] * table.num_rows)
        if None in raw:
            raise DataError(f"{where}: label column {self.label_column} has null(s)")
        index = {n: i for i, n in enumerate(description.class_names)}
        labels = [int(v) if isinstance(v, int) else index[v] for v in raw]
        if "split" in table.column_names:
            splits = self._checked_splits(table.column("split").to_pylist(), name)
        else:
            splits = [self._split(origin) for origin, _ in decoded]
        digest = hashlib.sha256()
        for column in table.columns:
            for chunk in column.chunks:
                for buffer in chunk.buffers():
                    if buffer is not None:
                        digest.update(buffer)
        return Records([o for o, _ in decoded], labels, splits, [p for _, p in decoded], digest.hexdigest())

    def _where(self, name: str) -> str:
        return self.storage.where(posixpath.join(self.rel, name) if name else self.rel)

    def _decode(self, table, where: str, offset: int = 0) -> list[tuple[str, object]]:
        """(origin, pixels or the reason they cannot be read) of every row."""
        column = table.column(self.image_column)
        kind = column.type
        rows = []
        if pa.types.is_struct(kind):
            fields = {f.name for f in kind}
            if not {"height", "width", "nChannels", "data"} <= fields:
                raise DataError(f"{where}: image column {self.image_column} is a struct without the fields of Spark's "
                                f"image source (origin, height, width, nChannels, mode, data)")
            for i, value in enumerate(column.to_pylist()):
                origin = value.get("origin") or f"{where}#{offset + i}"
                rows.append((origin, _spark_image(value, origin)))
        elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
            raw_shape = all(c in table.column_names for c in self.RAW_SHAPE)
            shapes = list(zip(*(table.column(c).to_pylist() for c in self.RAW_SHAPE))) if raw_shape else []
            for i, value in enumerate(column.to_pylist()):
                origin = f"{where}#{offset + i}"
                if value is None:
                    rows.append((origin, f"{origin}: the image is null"))
                elif raw_shape:
                    rows.append((origin, _raw_image(value, shapes[i], origin)))
                else:
                    rows.append((origin, decode_image(value, origin)))
        else:
            raise DataError(f"{where}: image column {self.image_column} is {kind}; encoded image bytes, raw uint8 bytes "
                            f"with height, width and channels columns, or Spark's image struct needed")
        return rows


def _raw_image(data: bytes, shape: tuple, origin: str):
    h, w, c = shape
    if None in shape or len(data) != h * w * c or c not in (1, 3):
        return f"{origin}: {len(data)} raw bytes do not make an image of height {h}, width {w}, channels {c}"
    return np.frombuffer(data, np.uint8).reshape(h, w, c)


def _spark_image(value: dict, origin: str):
    """Spark's image struct (BGR or BGRA, or one channel) -> RGB or grayscale uint8 (H, W, C)."""
    h, w, c, data = value["height"], value["width"], value["nChannels"], value["data"]
    if data is None or c not in (1, 3, 4) or len(data) != h * w * c:
        return f"{origin}: not a readable image of Spark's image source (height {h}, width {w}, nChannels {c})"
    pixels = np.frombuffer(data, np.uint8).reshape(h, w, c)
    return pixels if c == 1 else np.ascontiguousarray(pixels[:, :, 2::-1])


# detection

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
