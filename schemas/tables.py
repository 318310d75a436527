"""Schemas of every table in a run root.

Per-image tables share the key columns; tensors are binary columns declared by
TensorSpec. Shapes follow the network geometry, so schemas are built from it.
"""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from schemas.tensors import TABLE_KEY, TensorSpec
from stages.geometry import Geometry

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
    pa.field("source_batch", pa.string(), nullable=False),
)

STATS_SCHEMA = pa.schema(
    [pa.field("channel", pa.int32(), nullable=False), pa.field("mean", pa.float64(), nullable=False),
     pa.field("std", pa.float64(), nullable=False)],
    metadata={TABLE_KEY: b"stats"},
)

ARRAYS_FIELDS = (
    pa.field("name", pa.string(), nullable=False),
    pa.field("dtype", pa.string(), nullable=False),
    pa.field("shape", pa.list_(pa.int32()), nullable=False),
    pa.field("value", pa.binary(), nullable=False),
)

METRICS_SCHEMA = pa.schema(
    [
        pa.field("kind", pa.string(), nullable=False),
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


def tensor_specs(g: Geometry) -> dict[str, tuple[TensorSpec, ...]]:
    """Tensor columns of each per-image table, by table name."""
    f32 = "float32"
    mask_bytes = (int(np.prod(g.conv)) + 7) // 8
    classes = (g.classes,)
    return {
        "images": (TensorSpec("pixels", "uint8", g.image),),
        "batches": (TensorSpec("pixels", "uint8", g.image),),
        "conv_fwd": (TensorSpec("out", f32, g.conv),),
        "relu_fwd": (TensorSpec("out", f32, g.conv), TensorSpec("mask", "uint8", (mask_bytes,))),
        "pool_fwd": (TensorSpec("out", f32, g.pool), TensorSpec("argmax", "int8", g.pool)),
        "fc_fwd": (TensorSpec("scores", f32, classes),),
        "loss": (TensorSpec("probs", f32, classes), TensorSpec("dscores", f32, classes)),
        "fc_bwd": (TensorSpec("dx", f32, g.pool),),
        "pool_bwd": (TensorSpec("dx", f32, g.conv),),
        "relu_bwd": (TensorSpec("dx", f32, g.conv),),
        "evaluate": (TensorSpec("probs", f32, classes),),
    }


def spec(g: Geometry, table: str, column: str) -> TensorSpec:
    for s in tensor_specs(g)[table]:
        if s.name == column:
            return s
    raise KeyError(f"table {table} has no tensor column {column}")


def _with_table(fields, table: str, extra: dict | None = None) -> pa.Schema:
    meta = {TABLE_KEY: table.encode()}
    if extra:
        meta.update({k.encode(): json.dumps(v).encode() for k, v in extra.items()})
    return pa.schema(list(fields), metadata=meta)


def images_schema(g: Geometry) -> pa.Schema:
    return _with_table([*IMAGES_FIELDS, *(s.field() for s in tensor_specs(g)["images"])], "images")


def table_schema(g: Geometry, table: str) -> pa.Schema:
    """Schema of a per-image stage table: keys, scalar columns, tensor columns."""
    tensors = [s.field() for s in tensor_specs(g)[table]]
    return _with_table([*KEY_FIELDS, *SCALAR_FIELDS.get(table, ()), *tensors], table)


def arrays_schema(table: str) -> pa.Schema:
    """Named arrays (parameters, optimizer state, gradients): one row per array."""
    return _with_table(ARRAYS_FIELDS, table)


def arrays_to_table(arrays: dict[str, np.ndarray], table: str) -> pa.Table:
    names = sorted(arrays)
    values = [np.ascontiguousarray(arrays[n], dtype=np.dtype(arrays[n].dtype).newbyteorder("<")) for n in names]
    return pa.table(
        {
            "name": names,
            "dtype": [str(v.dtype.newbyteorder("=")) for v in values],
            "shape": [list(v.shape) for v in values],
            "value": [v.tobytes() for v in values],
        },
        schema=arrays_schema(table),
    )


def table_to_arrays(table: pa.Table) -> dict[str, np.ndarray]:
    rows = table.to_pydict()
    return {
        name: np.frombuffer(value, np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(shape)
        for name, dtype, shape, value in zip(rows["name"], rows["dtype"], rows["shape"], rows["value"])
    }
