"""Schemas of every table in a run root.

Per-image tables share the key columns; tensors are binary columns declared by
TensorSpec. Shapes follow the network (sparkcnn.schemas.network), so schemas are built from it.
"""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from sparkcnn.schemas.tensors import TABLE_KEY, SparseTensorSpec, summarize, summary_fields

KEY_FIELDS = (
    pa.field("image_id", pa.int64(), nullable=False),
    pa.field("label", pa.int8(), nullable=False),
    pa.field("epoch", pa.int32(), nullable=False),
    pa.field("iteration", pa.int32(), nullable=False),
    pa.field("shard", pa.int32(), nullable=False),
    pa.field("position", pa.int32(), nullable=False),
)
KEY_COLUMNS = tuple(f.name for f in KEY_FIELDS)

SCALAR_FIELDS = {
    "loss": (pa.field("loss", pa.float32(), nullable=False), pa.field("predicted", pa.int8(), nullable=False)),
    "evaluate": (pa.field("loss", pa.float32(), nullable=False), pa.field("predicted", pa.int8(), nullable=False)),
}

IMAGES_FIELDS = (
    pa.field("image_id", pa.int64(), nullable=False),
    pa.field("label", pa.int8(), nullable=False),
    pa.field("split", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
)

# What `sparkcnn score` writes per image: its id (as ingest numbers the source), where it came from, its
# label when the source has one (as the run's class index when the names match), the predicted class and
# the probability of every class.
SCORES_SCHEMA = pa.schema([
    pa.field("image_id", pa.int64(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("split", pa.string(), nullable=False),
    pa.field("label", pa.int32()),
    pa.field("label_name", pa.string()),
    pa.field("predicted", pa.int32(), nullable=False),
    pa.field("predicted_name", pa.string(), nullable=False),
    pa.field("probability", pa.float32(), nullable=False),
    pa.field("probabilities", pa.list_(pa.float32()), nullable=False),
], metadata={TABLE_KEY: b"scores"})


STATS_SCHEMA = pa.schema(
    [pa.field("channel", pa.int32(), nullable=False), pa.field("mean", pa.float64(), nullable=False),
     pa.field("std", pa.float64(), nullable=False)],
    metadata={TABLE_KEY: b"stats"},
)

ARRAYS_FIELDS = (
    pa.field("iteration", pa.int32()),
    pa.field("shard", pa.int32()),
    pa.field("name", pa.string(), nullable=False),
    pa.field("dtype", pa.string(), nullable=False),
    pa.field("shape", pa.list_(pa.int32()), nullable=False),
    pa.field("value", pa.binary(), nullable=False),
    *summary_fields("value"),
)

METRICS_SCHEMA = pa.schema(
    [
        pa.field("kind", pa.string(), nullable=False),
        pa.field("mode", pa.string()),
        pa.field("stage", pa.string()),
        pa.field("epoch", pa.int32()),
        pa.field("iteration", pa.int32()),
        pa.field("seconds", pa.float64()),
        pa.field("rows", pa.int64()),
        pa.field("bytes", pa.int64()),
        pa.field("loss", pa.float64()),
        pa.field("accuracy", pa.float64()),
    ],
    metadata={TABLE_KEY: b"metrics"},
)

TASK_RESULT_SCHEMA = pa.schema(
    [
        pa.field("part", pa.string()),
        pa.field("output", pa.string()),
        pa.field("path", pa.string()),
        pa.field("rows", pa.int64()),
        pa.field("bytes", pa.int64()),
        pa.field("values", pa.string()),
        pa.field("data", pa.binary()),
    ]
)


DEFAULT_CACHE = {"relu_mask": "bitmask", "pool_argmax": "int8", "sparse_gradients": False}
RELU_MASKS = ("bitmask", "bytes", "recompute")
POOL_ARGMAXES = ("int8", "recompute")


def spec(net, table: str, column: str, cache: dict | None = None):
    for s in net.tensor_specs(cache)[table]:
        if s.name == column:
            return s
    raise KeyError(f"table {table} has no tensor column {column}")


def summarized(tensor) -> bool:
    """Float tensors and pixels carry summary columns; masks and argmaxes are caches, not tensors."""
    return tensor.dtype.startswith("float") or tensor.name == "pixels"


def _fields(tensor, summaries: bool = True) -> tuple[pa.Field, ...]:
    own = tensor.fields() if isinstance(tensor, SparseTensorSpec) else (tensor.field(),)
    return (*own, *(summary_fields(tensor.name) if summaries and summarized(tensor) else ()))


def _with_table(fields, table: str, extra: dict | None = None) -> pa.Schema:
    meta = {TABLE_KEY: table.encode()}
    if extra:
        meta.update({k.encode(): json.dumps(v).encode() for k, v in extra.items()})
    return pa.schema(list(fields), metadata=meta)


def images_schema(net) -> pa.Schema:
    return _with_table([*IMAGES_FIELDS, *(f for s in net.tensor_specs()["images"] for f in _fields(s))], "images")


def table_schema(net, table: str, cache: dict | None = None, summaries: bool = True) -> pa.Schema:
    """Schema of a per-image stage table: keys, scalar columns, tensor columns (with their summary
    columns unless `summaries` is off)."""
    tensors = [f for s in net.tensor_specs(cache)[table] for f in _fields(s, summaries)]
    return _with_table([*KEY_FIELDS, *SCALAR_FIELDS.get(table, ()), *tensors], table)


def arrays_schema(table: str) -> pa.Schema:
    """Named arrays (parameters, optimizer state, gradients): one row per array."""
    return _with_table(ARRAYS_FIELDS, table)


def arrays_to_table(arrays: dict[str, np.ndarray], table: str, iteration: int | None = None,
                    shard: int | None = None) -> pa.Table:
    """Named arrays as rows, tagged with the iteration (and shard) they belong to."""
    names = sorted(arrays)
    values = [np.ascontiguousarray(arrays[n], dtype=np.dtype(arrays[n].dtype).newbyteorder("<")) for n in names]
    stats = [summarize(v.reshape(1, -1)) for v in values]
    columns = {
        "iteration": [iteration] * len(names),
        "shard": [shard] * len(names),
        "name": names,
        "dtype": [str(v.dtype.newbyteorder("=")) for v in values],
        "shape": [list(v.shape) for v in values],
        "value": [v.tobytes() for v in values],
    }
    columns.update({f.name: [float(st[f.name.split("_", 1)[1]][0]) for st in stats] for f in summary_fields("value")})
    return pa.table(columns, schema=arrays_schema(table))


def table_to_arrays(table: pa.Table) -> dict[str, np.ndarray]:
    rows = table.to_pydict()
    return {
        name: np.frombuffer(value, np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(shape)
        for name, dtype, shape, value in zip(rows["name"], rows["dtype"], rows["shape"], rows["value"])
    }
