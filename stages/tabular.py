"""What a stage function sees: its input tables and a context; what it returns: output tables."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from schemas.tables import DEFAULT_CACHE, KEY_COLUMNS, SCALAR_FIELDS, summarized, tensor_specs, table_schema
from schemas.tensors import SparseTensorSpec, decode_column, summarize
from stages.geometry import Geometry


@dataclass
class StageContext:
    """Everything but the input tables that a stage function needs."""

    geometry: Geometry
    params: dict[str, np.ndarray] = field(default_factory=dict)
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    normalizer: int = 1
    hyper: dict = field(default_factory=dict)
    cache: dict = field(default_factory=lambda: dict(DEFAULT_CACHE))

    def key_of(self, table: pa.Table, column: str) -> int | None:
        """The one value of a key column (iteration, shard) in a shard's table."""
        return table.column(column)[0].as_py() if table.num_rows else None

    def layer_params(self, layer: str) -> dict[str, np.ndarray]:
        return {"w": self.params[f"{layer}.w"], "b": self.params[f"{layer}.b"]}


@dataclass
class StageResult:
    """Output tables by name, plus scalar values reported to the driver (loss sums, counts)."""

    tables: dict[str, pa.Table]
    values: dict[str, float] = field(default_factory=dict)


def tensor(table: pa.Table, column: str) -> np.ndarray:
    """Decode a tensor column (dense or sparse) as its field metadata declares it."""
    return decode_column(table, column)


def per_image_table(ctx: StageContext, name: str, keys: pa.Table, **columns: np.ndarray) -> pa.Table:
    """Build table `name` (laid out by ctx's cache policy) from the key columns of an input and
    the given tensors and scalars."""
    schema = table_schema(ctx.geometry, name, ctx.cache)
    arrays = {k: keys.column(k) for k in KEY_COLUMNS}
    for f in SCALAR_FIELDS.get(name, ()):
        arrays[f.name] = pa.array(columns[f.name], type=f.type)
    for s in tensor_specs(ctx.geometry, ctx.cache)[name]:
        if isinstance(s, SparseTensorSpec):
            arrays[f"{s.name}_mask"], arrays[f"{s.name}_values"] = s.encode(columns[s.name])
        else:
            arrays[s.name] = s.encode(columns[s.name])
        if summarized(s):
            arrays.update({f"{s.name}_{k}": pa.array(v) for k, v in summarize(columns[s.name]).items()})
    return pa.Table.from_arrays([arrays[f.name] for f in schema], schema=schema)
