"""The tensor functions of `sparkcnn sql`: SQL functions that decode the binary tensor columns
(`schemas/tensors.py`), vectorised over Arrow batches; `RunViews` registers them in its session."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from sparkcnn.schemas.tensors import decode_rows


def _constant(arr: pa.Array):
    return arr[0].as_py() if len(arr) else None


def _rows(col: pa.Array, dtype: pa.Array) -> np.ndarray:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    return decode_rows(col, _constant(dtype) or "float32")


def _lists(values: np.ndarray, value_type) -> pa.Array:
    n, width = values.shape
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * width)
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1), type=value_type))


def _ragged_lists(col: pa.Array, dtype: str) -> pa.Array:
    """Binary values of any lengths -> list<double> arrays, one per row, without a Python loop."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    element = np.dtype(dtype).newbyteorder("<")
    offset_type = np.int64 if col.type == pa.large_binary() else np.int32
    _, offsets_buf, data_buf = col.buffers()
    offsets = np.frombuffer(offsets_buf, offset_type)[col.offset: col.offset + len(col) + 1]
    values = np.frombuffer(data_buf, np.uint8)[offsets[0]: offsets[-1]].view(element).astype(np.float64)
    starts = ((offsets - offsets[0]) // element.itemsize).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(starts), pa.array(values))


def _channel(rows: np.ndarray, channels: pa.Array, channel: pa.Array) -> np.ndarray:
    """Each row's values of its own channel (the channel may differ per row)."""
    per_row = rows.reshape(rows.shape[0], -1, int(_constant(channels)))
    index = np.asarray(channel.to_numpy(zero_copy_only=False), dtype=np.int64)
    return per_row[np.arange(rows.shape[0])[:, None], np.arange(per_row.shape[1])[None, :], index[:, None]]


def _histogram(values: np.ndarray, bins: pa.Array, lo: pa.Array, hi: pa.Array) -> np.ndarray:
    n_bins, low, high = int(_constant(bins)), float(_constant(lo)), float(_constant(hi))
    index = np.clip(((values - low) / (high - low) * n_bins).astype(np.int64), 0, n_bins - 1)
    index += np.arange(values.shape[0])[:, None] * n_bins
    return np.bincount(index.reshape(-1), minlength=values.shape[0] * n_bins).reshape(values.shape[0], n_bins)


def register_functions(spark) -> None:
    """SQL functions that decode stored tensors, vectorised over Arrow batches:
    tensor_array(col, dtype), tensor_element(col, dtype, index), tensor_channel_mean(col, dtype, channels, c),
    tensor_channel_zeros(col, dtype, channels, c), tensor_histogram(col, dtype, bins, lo, hi),
    tensor_channel_histogram(col, dtype, channels, c, bins, lo, hi). Channels are the last axis (NHWC)."""
    from pyspark.sql.functions import arrow_udf

    @arrow_udf("array<double>")
    def tensor_array(col: pa.Array, dtype: pa.Array) -> pa.Array:
        return _ragged_lists(col, _constant(dtype) or "float32")

    @arrow_udf("double")
    def tensor_element(col: pa.Array, dtype: pa.Array, index: pa.Array) -> pa.Array:
        rows = _rows(col, dtype)
        at = np.asarray(index.to_numpy(zero_copy_only=False), dtype=np.int64)
        return pa.array(rows[np.arange(rows.shape[0]), at].astype(np.float64))

    @arrow_udf("double")
    def tensor_channel_mean(col: pa.Array, dtype: pa.Array, channels: pa.Array, channel: pa.Array) -> pa.Array:
        return pa.array(_channel(_rows(col, dtype), channels, channel).mean(axis=1, dtype=np.float64))

    @arrow_udf("double")
    def tensor_channel_zeros(col: pa.Array, dtype: pa.Array, channels: pa.Array, channel: pa.Array) -> pa.Array:
        return pa.array((_channel(_rows(col, dtype), channels, channel) == 0).mean(axis=1))

    @arrow_udf("array<bigint>")
    def tensor_histogram(col: pa.Array, dtype: pa.Array, bins: pa.Array, lo: pa.Array, hi: pa.Array) -> pa.Array:
        return _lists(_histogram(_rows(col, dtype), bins, lo, hi), pa.int64())

    @arrow_udf("array<bigint>")
    def tensor_channel_histogram(col: pa.Array, dtype: pa.Array, channels: pa.Array, channel: pa.Array,
                                 bins: pa.Array, lo: pa.Array, hi: pa.Array) -> pa.Array:
        values = _channel(_rows(col, dtype), channels, channel)
        return _lists(_histogram(values, bins, lo, hi), pa.int64())

    for fn in (tensor_array, tensor_element, tensor_channel_mean, tensor_channel_zeros, tensor_histogram,
               tensor_channel_histogram):
        spark.udf.register(fn.__name__, fn)

