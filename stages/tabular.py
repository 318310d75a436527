"""What a stage function sees: its input tables and a context; what it returns: output tables."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from schemas.tables import KEY_COLUMNS, SCALAR_FIELDS, spec, table_schema
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

    def layer_params(self, layer: str) -> dict[str, np.ndarray]:
        return {"w": self.params[f"{layer}.w"], "b": self.params[f"{layer}.b"]}


@dataclass
class StageResult:
    """Output tables by name, plus scalar values reported to the driver (loss sums, counts)."""

    tables: dict[str, pa.Table]
    values: dict[str, float] = field(default_factory=dict)


def tensor(table: pa.Table, g: Geometry, source: str, column: str) -> np.ndarray:
    """Decode a tensor column of a table written by stage `source`."""
    return spec(g, source, column).decode(table.column(column))


def per_image_table(g: Geometry, name: str, keys: pa.Table, **columns: np.ndarray) -> pa.Table:
    """Build table `name` from the key columns of an input and the given tensors and scalars."""
    schema = table_schema(g, name)
    scalars = {f.name for f in SCALAR_FIELDS.get(name, ())}
    arrays = []
    for f in schema:
        if f.name in KEY_COLUMNS:
            arrays.append(keys.column(f.name))
        elif f.name in scalars:
            arrays.append(pa.array(columns[f.name], type=f.type))
        else:
            arrays.append(spec(g, name, f.name).encode(columns[f.name]))
    return pa.Table.from_arrays(arrays, schema=schema)
