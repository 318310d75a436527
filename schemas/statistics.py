"""Batch normalisation's statistics as tables, one row per channel: what SQL queries see."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

BATCH_STATS_SCHEMA = pa.schema([
    pa.field("iteration", pa.int32()), pa.field("shard", pa.int32()), pa.field("layer", pa.string()),
    pa.field("channel", pa.int32()), pa.field("count", pa.int64()), pa.field("mean", pa.float64()),
    pa.field("m2", pa.float64()), pa.field("var", pa.float64()),
], metadata={b"sparkcnn.table": b"batch_stats"})
RUNNING_STATS_SCHEMA = pa.schema([
    pa.field("version", pa.int32()), pa.field("layer", pa.string()), pa.field("channel", pa.int32()),
    pa.field("running_mean", pa.float32()), pa.field("running_var", pa.float32()),
], metadata={b"sparkcnn.table": b"running_stats"})


def batch_stats_table(layer: str, count: int, mean: np.ndarray, m2: np.ndarray, iteration=None, shard=None) -> pa.Table:
    """A shard's batch statistics of one layer: count, mean, sum of squared deviations M2 and biased variance."""
    c = mean.shape[0]
    return pa.table({"iteration": [iteration] * c, "shard": [shard] * c, "layer": [layer] * c,
                     "channel": np.arange(c, dtype=np.int32), "count": np.full(c, count, np.int64), "mean": mean,
                     "m2": m2, "var": m2 / count}, schema=BATCH_STATS_SCHEMA)


def batch_stats_of(table: pa.Table) -> tuple[int, np.ndarray, np.ndarray]:
    """(count, mean, M2) back from a batch-statistics table."""
    return int(table.column("count")[0].as_py()), table.column("mean").to_numpy(), table.column("m2").to_numpy()


def running_stats_table(network, params: dict[str, np.ndarray], version: int | None) -> pa.Table:
    """Every batch_norm layer's running statistics in a parameter version, a row per channel."""
    rows = {name: [] for name in RUNNING_STATS_SCHEMA.names}
    for layer in network.batch_norm_layers:
        mean, var = params[f"{layer.name}.running_mean"], params[f"{layer.name}.running_var"]
        rows["version"] += [version] * mean.size
        rows["layer"] += [layer.name] * mean.size
        rows["channel"] += list(range(mean.size))
        rows["running_mean"] += mean.tolist()
        rows["running_var"] += var.tolist()
    return pa.table(rows, schema=RUNNING_STATS_SCHEMA)
