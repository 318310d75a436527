"""What a stage function sees: its input tables and a context; what it returns: output tables."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa

from sparkcnn.schemas.network import Layer, Network
from sparkcnn.schemas.tables import DEFAULT_CACHE, KEY_COLUMNS, SCALAR_FIELDS, arrays_to_table, summarized, table_schema
from sparkcnn.schemas.tensors import SparseTensorSpec, TensorSpec, decode_column, summarize
from sparkcnn.stages.augment import augment


@dataclass
class StageContext:
    """Everything but the input tables that a stage function needs: the network, which stage of it runs,
    the parameters, the pixel statistics, the loss normaliser, hyperparameters, the cache policy,
    whether per-image tables carry summary columns (tables that are stored do; tables handed from stage
    to stage in memory and never stored need not) and the augmentation of training images."""

    network: Network
    params: dict[str, np.ndarray] = field(default_factory=dict)
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    normalizer: int = 1
    hyper: dict = field(default_factory=dict)
    cache: dict = field(default_factory=lambda: dict(DEFAULT_CACHE))
    stage: str = ""
    seed: int = 0
    summaries: bool = True
    augment: tuple[int, bool] = (0, False)  # data.augment's (crop_padding, flip), for training batches

    def at(self, stage: str) -> "StageContext":
        """The same context for another stage."""
        return replace(self, stage=stage)

    @property
    def layer(self) -> Layer:
        return self.network.layer(self.stage)

    def key_of(self, table: pa.Table, column: str) -> int | None:
        """The one value of a key column (iteration, shard) in a shard's table."""
        return table.column(column)[0].as_py() if table.num_rows else None

    def layer_params(self, layer: Layer) -> dict[str, np.ndarray]:
        return {p: self.params[f"{layer.name}.{p}"] for p in layer.param_shapes}


@dataclass
class StageResult:
    """Output tables by name, plus scalar values reported to the driver (loss sums, counts)."""

    tables: dict[str, pa.Table]
    values: dict[str, float] = field(default_factory=dict)


def tensor(table: pa.Table, column: str) -> np.ndarray:
    """Decode a tensor column (dense or sparse) as its field metadata declares it."""
    return decode_column(table, column)


STD_FLOOR = 1.0 / 255.0  # the least channel std divided by: one grey level of the [0, 1] scale


def floored_std(std: np.ndarray) -> np.ndarray:
    """Channel standard deviations as normalisation uses them: at least STD_FLOOR (a constant or nearly
    constant channel is divided by the floor, as an epsilon does in a normalisation layer)."""
    return np.maximum(std, STD_FLOOR)


def normalization(mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 (scale, shift) per channel: x = pixel * scale - shift (the ONNX export folds the same in)."""
    std = floored_std(std)
    return (1.0 / (255.0 * std)).astype(np.float32), (mean / std).astype(np.float32)


def normalize(pixels: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """uint8 pixels (N, H, W, C) -> float32 images scaled to [0, 1] and standardised per channel."""
    scale, shift = normalization(mean, std)
    return pixels.astype(np.float32) * scale - shift


def layer_input(table: pa.Table, ctx: StageContext, keys: pa.Table | None = None) -> np.ndarray:
    """A layer's input tensor: the output of the stage before, or the batch's pixels (augmented when
    they are a training batch's, epoch >= 0) normalised. `keys`: the table that holds the rows' key
    columns when `table` was read without them (a backward stage's x; its dout has them)."""
    if "pixels" not in table.column_names:
        return tensor(table, "out")
    pixels = tensor(table, "pixels")
    keys = table if keys is None else keys
    if any(ctx.augment) and keys.num_rows and keys.column("epoch")[0].as_py() >= 0:
        pixels = augment(pixels, keys.column("image_id").to_numpy(), keys.column("epoch").to_numpy(), ctx.seed,
                         *ctx.augment)
    return normalize(pixels, ctx.mean, ctx.std)


def per_image_table(ctx: StageContext, keys: pa.Table, name: str | None = None, **columns: np.ndarray) -> pa.Table:
    """Build the per-image table of the running stage (or `name`), laid out by ctx's cache policy, from
    the key columns of an input and the given tensors and scalars."""
    name = name or ctx.stage
    schema = table_schema(ctx.network, name, ctx.cache, ctx.summaries)
    arrays = {k: keys.column(k) for k in KEY_COLUMNS}
    for f in SCALAR_FIELDS.get(name, ()):
        arrays[f.name] = pa.array(columns[f.name], type=f.type)
    for s in ctx.network.tensor_specs(ctx.cache)[name]:
        if isinstance(s, SparseTensorSpec):
            arrays[f"{s.name}_mask"], arrays[f"{s.name}_values"] = s.encode(columns[s.name])
        else:
            arrays[s.name] = s.encode(columns[s.name])
        if ctx.summaries and summarized(s):
            arrays.update({f"{s.name}_{k}": pa.array(v) for k, v in summarize(columns[s.name]).items()})
    return pa.Table.from_arrays([arrays[f.name] for f in schema], schema=schema)


def backward_result(ctx: StageContext, keys: pa.Table, dx: np.ndarray | None, grads: dict) -> StageResult:
    """A backward stage's outputs: the input gradient when the network uses it, and the shard's
    parameter gradients named `<layer>.<param>`."""
    tables = {}
    if ctx.network.input_grad(ctx.layer):
        tables["out"] = per_image_table(ctx, keys, dx=dx)
    if grads:
        named = {f"{ctx.layer.name}.{k}": v for k, v in grads.items()}
        tables["grads"] = arrays_to_table(named, f"{ctx.stage}.grads", ctx.key_of(keys, "iteration"),
                                          ctx.key_of(keys, "shard"))
    return StageResult(tables)


def sum_gradients(arrays: list[np.ndarray]) -> np.ndarray:
    """The gradients a tensor's readers send it, summed in the order given (the readers' run order)."""
    total = arrays[0].copy()
    for other in arrays[1:]:
        total += other
    return total


def summed_dout(inputs: dict) -> dict:
    """A backward stage's inputs with the gradients of several readers (dout, dout_1, ...) summed into
    one dense `dout` table, keyed as the first; unchanged for a tensor with one reader."""
    roles = ["dout", *sorted((r for r in inputs if r.startswith("dout_")), key=lambda r: int(r[5:]))]
    if len(roles) == 1:
        return inputs
    first = inputs["dout"]
    total = sum_gradients([tensor(inputs[r], "dx") for r in roles])
    spec = TensorSpec("dx", "float32", total.shape[1:])
    keys = [first.column(k) for k in KEY_COLUMNS]
    table = pa.Table.from_arrays([*keys, spec.encode(total)],
                                 schema=pa.schema([*(first.schema.field(k) for k in KEY_COLUMNS), spec.field()]))
    return {**{r: t for r, t in inputs.items() if r not in roles}, "dout": table}
