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
        if chunk.type == pa.large_binary():
            offset_type = np.int64
        elif chunk.type == pa.binary():
            offset_type = np.int32
        else:
            raise TypeError(f"column {self.name}: expected binary, got {chunk.type}")
        if chunk.null_count:
            raise ValueError(f"column {self.name}: null tensor values")
        _, offsets_buf, data_buf = chunk.buffers()
        offsets = np.frombuffer(offsets_buf, offset_type)[chunk.offset: chunk.offset + len(chunk) + 1]
        lengths = np.diff(offsets)
        if lengths.size and (lengths != self.row_bytes).any():
            raise ValueError(f"column {self.name}: rows must hold {self.row_bytes} bytes, found {sorted(set(lengths.tolist()))[:5]}")
        raw = np.frombuffer(data_buf, np.uint8)[offsets[0]: offsets[-1]] if len(chunk) else np.empty(0, np.uint8)
        return raw.view(np.dtype(self.dtype).newbyteorder("<")).reshape(len(chunk), *self.shape)


def spec_of(field: pa.Field) -> TensorSpec:
    """The TensorSpec declared in a field's metadata."""
    meta = field.metadata or {}
    if DTYPE_KEY not in meta:
        raise ValueError(f"field {field.name} is not a tensor column")
    return TensorSpec(field.name, meta[DTYPE_KEY].decode(), tuple(json.loads(meta[SHAPE_KEY])))
