"""Parquet datasets: a Parquet file or folder of files with an image column and a label column."""
from __future__ import annotations

import contextlib
import hashlib
import posixpath

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sparkcnn.pipeline.data.images import decode_image
from sparkcnn.pipeline.data.sources.base import Description, Piece, Records, Source, split_rule
from sparkcnn.pipeline.errors import DataError

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
