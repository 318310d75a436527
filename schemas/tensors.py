"""Tensor columns: one row per image, raw little-endian bytes in a binary column.

A column's dtype and per-row shape are declared in its Arrow field metadata,
so they travel inside every Parquet file the pipeline writes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

DTYPE_KEY = b"sparkcnn.dtype"
SPARSE_KEY = b"sparkcnn.sparse"
SHAPE_KEY = b"sparkcnn.shape"
TABLE_KEY = b"sparkcnn.table"


@dataclass(frozen=True)
class TensorSpec:
    """A tensor column: its name, element dtype and per-row shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize

    def field(self) -> pa.Field:
        meta = {DTYPE_KEY: self.dtype.encode(), SHAPE_KEY: json.dumps(list(self.shape)).encode()}
        return pa.field(self.name, pa.binary(), nullable=False, metadata=meta)

    def encode(self, array: np.ndarray) -> pa.Array:
        """(N, *shape) array -> binary Arrow array of N rows, zero-copy where possible."""
        if tuple(array.shape[1:]) != self.shape:
            raise ValueError(f"column {self.name}: expected rows of shape {self.shape}, got {array.shape[1:]}")
        data = np.ascontiguousarray(array, dtype=np.dtype(self.dtype).newbyteorder("<"))
        n = data.shape[0]
        offsets = np.arange(n + 1, dtype=np.int32) * self.row_bytes
        return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])

    def decode(self, column: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Binary Arrow column -> (N, *shape) read-only numpy array."""
        chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
        parts = [self._decode_chunk(c) for c in chunks]
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return np.empty((0, *self.shape), self.dtype)
        return np.concatenate(parts)

    def _decode_chunk(self, chunk: pa.Array) -> np.ndarray:
        return decode_rows(chunk, self.dtype, self.row_bytes, self.name).reshape(len(chunk), *self.shape)


def decode_rows(chunk: pa.Array, dtype: str, row_bytes: int | None = None, name: str = "tensor") -> np.ndarray:
    """A binary Arrow array of equal-length raw values -> (N, values per row), zero-copy."""
    if chunk.type == pa.large_binary():
        offset_type = np.int64
    elif chunk.type == pa.binary():
        offset_type = np.int32
    else:
        raise TypeError(f"column {name}: expected binary, got {chunk.type}")
    if chunk.null_count:
        raise ValueError(f"column {name}: null tensor values")
    element = np.dtype(dtype).newbyteorder("<")
    if not len(chunk):
        return np.empty((0, (row_bytes or 0) // element.itemsize), element)
    _, offsets_buf, data_buf = chunk.buffers()
    offsets = np.frombuffer(offsets_buf, offset_type)[chunk.offset: chunk.offset + len(chunk) + 1]
    lengths = np.diff(offsets)
    expected = row_bytes if row_bytes is not None else int(lengths[0])
    if (lengths != expected).any() or expected % element.itemsize:
        raise ValueError(f"column {name}: rows must hold {expected} bytes of {dtype}, "
                         f"found {sorted(set(lengths.tolist()))[:5]}")
    raw = np.frombuffer(data_buf, np.uint8)[offsets[0]: offsets[-1]]
    return raw.view(element).reshape(len(chunk), expected // element.itemsize)


def spec_of(field: pa.Field) -> TensorSpec:
    """The TensorSpec declared in a field's metadata."""
    meta = field.metadata or {}
    if DTYPE_KEY not in meta:
        raise ValueError(f"field {field.name} is not a tensor column")
    return TensorSpec(field.name, meta[DTYPE_KEY].decode(), tuple(json.loads(meta[SHAPE_KEY])))


@dataclass(frozen=True)
class SparseTensorSpec:
    """A mostly-zero tensor as two binary columns: `<name>_mask`, a bitmask of the elements whose
    bits are not all zero, and `<name>_values`, those elements in row-major order (variable length).
    Exact: every element, -0.0 included, comes back bit for bit."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def fields(self) -> tuple[pa.Field, pa.Field]:
        meta = {DTYPE_KEY: self.dtype.encode(), SHAPE_KEY: json.dumps(list(self.shape)).encode(),
                SPARSE_KEY: self.name.encode()}
        return (pa.field(f"{self.name}_mask", pa.binary(), nullable=False, metadata=meta),
                pa.field(f"{self.name}_values", pa.binary(), nullable=False, metadata=meta))

    def encode(self, array: np.ndarray) -> tuple[pa.Array, pa.Array]:
        dtype = np.dtype(self.dtype).newbyteorder("<")
        flat = np.ascontiguousarray(array, dtype=dtype).reshape(array.shape[0], self.size)
        nonzero = flat.view(f"<u{dtype.itemsize}") != 0
        mask = TensorSpec(f"{self.name}_mask", "uint8", ((self.size + 7) // 8,)).encode(np.packbits(nonzero, axis=1))
        values = flat[nonzero]
        offsets = np.concatenate([[0], np.cumsum(nonzero.sum(axis=1))]).astype(np.int32) * dtype.itemsize
        data = pa.Array.from_buffers(pa.binary(), flat.shape[0], [None, pa.py_buffer(offsets), pa.py_buffer(values)])
        return mask, data

    def decode(self, mask_column, values_column) -> np.ndarray:
        bits = TensorSpec("mask", "uint8", ((self.size + 7) // 8,)).decode(mask_column)
        nonzero = np.unpackbits(bits, axis=1, count=self.size).view(bool)
        chunks = values_column.chunks if isinstance(values_column, pa.ChunkedArray) else [values_column]
        dtype = np.dtype(self.dtype).newbyteorder("<")
        parts = []
        for chunk in chunks:
            _, offsets_buf, data_buf = chunk.buffers()
            offsets = np.frombuffer(offsets_buf, np.int32)[chunk.offset: chunk.offset + len(chunk) + 1]
            if len(chunk):
                parts.append(np.frombuffer(data_buf, np.uint8)[offsets[0]: offsets[-1]].view(dtype))
        values = np.concatenate(parts) if parts else np.empty(0, dtype)
        if values.size != nonzero.sum():
            raise ValueError(f"column {self.name}: {values.size} stored values for {int(nonzero.sum())} mask bits")
        dense = np.zeros(nonzero.shape, dtype)
        dense[nonzero] = values
        return dense.reshape(-1, *self.shape)


def decode_column(table: pa.Table, name: str) -> np.ndarray:
    """Decode tensor column `name` of a table, dense or sparse, from the metadata its fields carry."""
    if name in table.column_names:
        return spec_of(table.schema.field(name)).decode(table.column(name))
    mask, values = f"{name}_mask", f"{name}_values"
    if mask in table.column_names and values in table.column_names:
        meta = table.schema.field(mask).metadata
        sparse = SparseTensorSpec(name, meta[DTYPE_KEY].decode(), tuple(json.loads(meta[SHAPE_KEY])))
        return sparse.decode(table.column(mask), table.column(values))
    raise KeyError(f"table has no tensor column {name} (columns: {', '.join(table.column_names)})")


SUMMARY_STATS = ("mean", "std", "min", "max", "l2", "zeros")


def summary_fields(name: str) -> list[pa.Field]:
    """Per-row summary columns of tensor column `name`: <name>_mean, _std, _min, _max, _l2, _zeros."""
    return [pa.field(f"{name}_{stat}", pa.float64(), nullable=False) for stat in SUMMARY_STATS]


SUMMARY_CHUNK_BYTES = 1 << 19


def summarize(array: np.ndarray) -> dict[str, np.ndarray]:
    """Summary statistics of each row (first axis) of a tensor; `zeros` is the fraction of zeros.

    Rows are taken a few at a time, so that every statistic reads them from the cache; each row's
    figures are computed from that row alone, the same whatever rows come with it."""
    rows, size = array.shape[0], int(np.prod(array.shape[1:]))
    flat = array.reshape(rows, size)
    if size == 0 or rows == 0:
        return {stat: np.zeros(rows) for stat in SUMMARY_STATS}
    step = max(1, SUMMARY_CHUNK_BYTES // (size * flat.itemsize))
    parts = [_row_sums(flat[start: start + step]) for start in range(0, rows, step)]
    mean, squares, low, high, zeros = (np.concatenate(p) for p in zip(*parts))
    return {
        "mean": mean,
        "std": np.sqrt(np.maximum(squares / size - mean ** 2, 0.0)),
        "min": low.astype(np.float64),
        "max": high.astype(np.float64),
        "l2": np.sqrt(squares),
        "zeros": zeros / size,
    }


def _row_sums(flat: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per row: mean, sum of squares (float64), min, max, number of zeros."""
    mean = flat.mean(axis=1, dtype=np.float64)
    if flat.dtype == np.float32:
        squares = np.einsum("ij,ij->i", flat, flat, dtype=np.float64)
    else:  # einsum's sums of float64 rows depend on how many rows it is given
        squares = (flat.astype(np.float64) ** 2).sum(axis=1)
    is_zero = flat == 0
    if is_zero.shape[1] % 8 == 0:
        zeros = np.bitwise_count(is_zero.view(np.uint64)).sum(axis=1)
    else:
        zeros = np.count_nonzero(is_zero, axis=1)
    return mean, squares, flat.min(axis=1), flat.max(axis=1), zeros
