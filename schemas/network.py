"""The network as data: one declared stack of layers, and everything derived from it.

A `Network` is built from the resolved layer list of the config plus the input shape and class
count of the data. It is the only place that knows the layers: the iteration's stages and their
inputs by role, every per-image table's tensor columns, and the parameter names and shapes.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from schemas.tables import DEFAULT_CACHE, KEY_COLUMNS
from schemas.tensors import SparseTensorSpec, TensorSpec

REQUIRED = object()
LAYER_OPTIONS = {
    "conv": {"filters": REQUIRED, "kernel": REQUIRED, "stride": 1, "padding": 0},
    "relu": {},
    "max_pool": {"size": 2, "stride": None},
    "avg_pool": {"size": 2, "stride": None},
    "fc": {"units": REQUIRED},
    "dropout": {"rate": 0.5},
}
NAME_PREFIX = {"conv": "conv", "relu": "relu", "max_pool": "pool", "avg_pool": "pool", "fc": "fc", "dropout": "drop"}
WITH_PARAMS = ("conv", "fc")
SPATIAL = ("conv", "max_pool", "avg_pool")
SPARSE_DX = ("relu", "max_pool")
MAX_POOL_WINDOW = 127
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
DEFAULT_LAYERS = (
    {"type": "conv", "filters": 32, "kernel": 5, "padding": 2},
    {"type": "relu"},
    {"type": "max_pool", "size": 2},
    {"type": "fc", "units": 10},
)
PER_IMAGE = "out"


class NetworkError(ValueError):
    """A layer stack that cannot be built; the message names the layer."""


def _check_option(where: str, key: str, value, default):
    if isinstance(default, float) or key == "rate":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise NetworkError(f"{where}: {key} must be a number, got {value!r}")
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise NetworkError(f"{where}: {key} must be an integer, got {value!r}")
    return value


MINIMUM = {"filters": 1, "kernel": 1, "stride": 1, "padding": 0, "size": 1, "units": 1}


def resolve_layers(declared) -> tuple[dict, ...]:
    """Declared layers -> the same with every key explicit: defaults filled in and each layer named by
    its type and count (conv1, relu1, pool1, fc1, drop1; max and avg pools share one count)."""
    if not isinstance(declared, (list, tuple)) or not declared:
        raise NetworkError("model.layers must be a non-empty list of layers ([[model.layers]] tables)")
    counts: dict[str, int] = {}
    resolved = []
    for i, layer in enumerate(declared):
        where = f"model.layers[{i}]"
        if not isinstance(layer, dict):
            raise NetworkError(f"{where}: expected a table with a type, got {layer!r}")
        kind = layer.get("type")
        if kind not in LAYER_OPTIONS:
            raise NetworkError(f"{where}: unknown layer type {kind!r} (one of {', '.join(LAYER_OPTIONS)})")
        prefix = NAME_PREFIX[kind]
        counts[prefix] = counts.get(prefix, 0) + 1
        name = layer.get("name", f"{prefix}{counts[prefix]}")
        if not isinstance(name, str) or not NAME.match(name):
            raise NetworkError(f"{where}: name {name!r} must be a letter followed by letters, digits or _")
        where = f"layer {name} ({where}, {kind})"
        options = LAYER_OPTIONS[kind]
        unknown = sorted(set(layer) - {"type", "name", *options})
        if unknown:
            raise NetworkError(f"{where}: unknown keys {', '.join(unknown)} (a {kind} layer takes "
                               f"{', '.join(options) or 'no keys'} besides type and name)")
        missing = [k for k, d in options.items() if d is REQUIRED and k not in layer]
        if missing:
            raise NetworkError(f"{where}: missing {', '.join(missing)}")
        values = {}
        for key, default in options.items():
            value = layer.get(key, default)
            if value is None:  # a pool's stride defaults to its size
                value = values["size"]
            values[key] = _check_option(where, key, value, default)
            if key in MINIMUM and values[key] < MINIMUM[key]:
                raise NetworkError(f"{where}: {key} must be at least {MINIMUM[key]}, got {values[key]}")
        if kind == "dropout" and not 0 <= values["rate"] < 1:
            raise NetworkError(f"{where}: rate must be in [0, 1), got {values['rate']}")
        if kind == "max_pool" and values["size"] ** 2 > MAX_POOL_WINDOW:
            raise NetworkError(f"{where}: a {values['size']}x{values['size']} window has more than "
                               f"{MAX_POOL_WINDOW} elements (its argmax is stored as int8)")
        resolved.append({"name": name, "type": kind, **values})
    names = [layer["name"].lower() for layer in resolved]  # SQL views and some file systems ignore case
    repeated = sorted({layer["name"] for layer in resolved if names.count(layer["name"].lower()) > 1})
    if repeated:
        raise NetworkError(f"model.layers: layer names must be unique (ignoring case), repeated: {', '.join(repeated)}")
    return tuple(resolved)


def window_output(size: int, window: int, stride: int, padding: int = 0) -> int | None:
    """Output length of a window sliding over `size` (None when it does not fit)."""
    span = size + 2 * padding - window
    return None if span < 0 else span // stride + 1


@dataclass(frozen=True)
class Input:
    """Where a stage input comes from: a source (an iteration stage, 'batches' or 'params'),
    which output of it, which columns, and whether all its parts are read at once."""

    source: str
    output: str
    columns: tuple[str, ...] | None
    many: bool = False


@dataclass(frozen=True)
class StageDef:
    function: str
    inputs: dict[str, Input]
    uses_params: bool = False


@dataclass(frozen=True)
class Layer:
    """One layer of the stack: its resolved options, position and tensor shapes (per image, NHWC)."""

    index: int
    name: str
    type: str
    options: dict = field(hash=False, compare=False)
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    def __getitem__(self, key: str):
        return self.options[key]

    @property
    def forward_stage(self) -> str:
        return f"{self.name}_fwd"

    @property
    def backward_stage(self) -> str:
        return f"{self.name}_bwd"

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        if self.type == "conv":
            k = self["kernel"]
            return {"w": (self["filters"], self.in_shape[2], k, k), "b": (self["filters"],)}
        if self.type == "fc":
            return {"w": (math.prod(self.in_shape), self["units"]), "b": (self["units"],)}
        return {}

    @property
    def fan_in(self) -> int:
        """Inputs per output unit (PyTorch's bound for its default initialisation)."""
        w = self.param_shapes["w"]
        return math.prod(w[1:]) if self.type == "conv" else w[0]


def _output_shape(where: str, kind: str, options: dict, shape: tuple[int, ...]) -> tuple[int, ...]:
    if kind in ("relu", "dropout"):
        return shape
    if kind == "fc":
        return (options["units"],)
    if len(shape) != 3:
        raise NetworkError(f"{where}: a {kind} layer needs an image-shaped input (height, width, channels), but "
                           f"the layer before it gives {shape}; fc layers belong after the last {kind}")
    h, w, c = shape
    if kind == "conv":
        window, stride, padding, channels = options["kernel"], options["stride"], options["padding"], options["filters"]
    else:
        window, stride, padding, channels = options["size"], options["stride"], 0, c
    ho, wo = window_output(h, window, stride, padding), window_output(w, window, stride, padding)
    if ho is None or wo is None:
        what = "kernel" if kind == "conv" else "window"
        raise NetworkError(f"{where}: a {window}x{window} {what} does not fit its {h}x{w} input"
                           + (f" with padding {padding}" if kind == "conv" else ""))
    return (ho, wo, channels)


class Network:
    """A stack of layers on images of one shape, ending in softmax cross-entropy over `classes`."""

    def __init__(self, layers, image: tuple[int, int, int], classes: int):
        self.image, self.classes = tuple(image), classes
        built, shape = [], self.image
        for i, spec in enumerate(resolve_layers(layers)):
            options = {k: v for k, v in spec.items() if k not in ("name", "type")}
            out = _output_shape(f"layer {spec['name']}", spec["type"], options, shape)
            built.append(Layer(i, spec["name"], spec["type"], options, shape, out))
            shape = out
        self.layers = tuple(built)
        last = self.layers[-1]
        if last.out_shape != (classes,):
            raise NetworkError(f"layer {last.name}: the last layer gives {last.out_shape} per image, but the loss "
                               f"needs {classes} scores, one per class of the data: end with an fc layer of "
                               f"{classes} units")
        self.first_trained = next(layer.index for layer in self.layers if layer.type in WITH_PARAMS)
        self._by_stage = {s: layer for layer in self.layers for s in (layer.forward_stage, layer.backward_stage)}

    # layers and parameters

    def layer(self, stage: str) -> Layer | None:
        """The layer a forward or backward stage belongs to (None for loss and update)."""
        return self._by_stage.get(stage)

    def trains(self, layer: Layer) -> bool:
        return layer.type in WITH_PARAMS

    def has_backward(self, layer: Layer) -> bool:
        """Layers before the first one with parameters need no backward pass."""
        return layer.index >= self.first_trained

    def input_grad(self, layer: Layer) -> bool:
        """Whether a layer's backward computes the gradient by its input (nobody uses the image's)."""
        return layer.index > self.first_trained

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {f"{layer.name}.{p}": shape for layer in self.layers for p, shape in layer.param_shapes.items()}

    @property
    def trained_layers(self) -> tuple[Layer, ...]:
        return tuple(layer for layer in self.layers if self.trains(layer))

    def describe(self) -> str:
        """The stack on one line: each layer's name, type and output shape per image."""
        return " -> ".join(f"{layer.name} ({layer.type}, {'x'.join(map(str, layer.out_shape))})"
                           for layer in self.layers)

    # stages

    @property
    def forward_stages(self) -> tuple[str, ...]:
        return tuple(layer.forward_stage for layer in self.layers)

    @property
    def backward_stages(self) -> tuple[str, ...]:
        return tuple(layer.backward_stage for layer in reversed(self.layers) if self.has_backward(layer))

    @property
    def iteration_stages(self) -> tuple[str, ...]:
        return (*self.forward_stages, "loss", *self.backward_stages, "update")

    @property
    def gradient_stages(self) -> tuple[str, ...]:
        """Backward stages that output parameter gradients (the update's inputs)."""
        return tuple(s for s in self.backward_stages if self.trains(self.layer(s)))

    @property
    def per_image_stages(self) -> tuple[str, ...]:
        """Iteration stages that write a per-image table."""
        return tuple(s for s in self.iteration_stages if s in self.forward_stages or s == "loss"
                     or (s in self.backward_stages and self.input_grad(self.layer(s))))

    # tables

    def tensor_specs(self, cache: dict | None = None) -> dict[str, tuple]:
        """Tensor columns of each per-image table under a cache policy: how each ReLU's mask is kept
        (bitmask, a byte per element, or not at all), whether each max-pool's argmax is kept, and
        whether the mostly-zero input gradients of ReLU and max-pool layers are stored sparse."""
        cache = {**DEFAULT_CACHE, **(cache or {})}
        f32 = "float32"
        classes = (self.classes,)
        pixels = (TensorSpec("pixels", "uint8", self.image),)
        specs = {"images": pixels, "batches": pixels, "loss": (TensorSpec("probs", f32, classes),
                                                              TensorSpec("dx", f32, classes)),
                 "evaluate": (TensorSpec("probs", f32, classes),)}
        for layer in self.layers:
            kept = ()
            if layer.type == "relu":
                kept = {"bitmask": (TensorSpec("mask", "uint8", ((math.prod(layer.out_shape) + 7) // 8,)),),
                        "bytes": (TensorSpec("mask", "uint8", layer.out_shape),), "recompute": ()}[cache["relu_mask"]]
            elif layer.type == "max_pool" and cache["pool_argmax"] == "int8":
                kept = (TensorSpec("argmax", "int8", layer.out_shape),)
            specs[layer.forward_stage] = (TensorSpec("out", f32, layer.out_shape), *kept)
            if self.input_grad(layer):
                sparse = cache["sparse_gradients"] and layer.type in SPARSE_DX
                specs[layer.backward_stage] = ((SparseTensorSpec if sparse else TensorSpec)("dx", f32, layer.in_shape),)
        return specs

    # stage inputs

    def _output_of(self, index: int) -> tuple[str, str]:
        """(stage, column) holding the input of layer `index`: the batch pixels or the layer before's output."""
        return ("batches", "pixels") if index == 0 else (self.layers[index - 1].forward_stage, "out")

    def stage_defs(self, cache: dict | None = None, written: dict[str, dict] | None = None) -> dict[str, StageDef]:
        """Every iteration stage's function and inputs by role, under a cache policy: each input is read as
        the policy its table was written with holds it (`written`, by source stage; else `cache`)."""
        def policy(source: str, key: str):
            return {**DEFAULT_CACHE, **(cache or {}), **((written or {}).get(source) or {})}[key]

        def image(source: str, *columns: str, keys: bool = True) -> Input:
            return Input(source, PER_IMAGE, (*(KEY_COLUMNS if keys else ()), *columns))

        def layer_input(layer: Layer, keys: bool) -> Input:
            return image(*self._output_of(layer.index), keys=keys)

        defs = {}
        for layer in self.layers:
            module = f"stages.{LAYER_MODULES[layer.type]}"
            defs[layer.forward_stage] = StageDef(f"{module}:forward_stage", {"x": layer_input(layer, True)},
                                                 self.trains(layer))
        defs["loss"] = StageDef("stages.loss:forward_stage", {"x": image(self.layers[-1].forward_stage, "out")})
        upstream = "loss"
        for stage in self.backward_stages:
            layer = self.layer(stage)
            sparse = upstream != "loss" and policy(upstream, "sparse_gradients") and \
                self.layer(upstream).type in SPARSE_DX
            inputs = {"dout": image(upstream, *(("dx_mask", "dx_values") if sparse else ("dx",)))}
            if self.trains(layer):
                inputs["x"] = layer_input(layer, False)
            elif layer.type == "relu":
                saved = "out" if policy(layer.forward_stage, "relu_mask") == "recompute" else "mask"
                inputs["saved"] = image(layer.forward_stage, saved, keys=False)
            elif layer.type == "max_pool":
                if policy(layer.forward_stage, "pool_argmax") == "recompute":
                    inputs["x"] = layer_input(layer, False)
                else:
                    inputs["saved"] = image(layer.forward_stage, "argmax", keys=False)
            module = f"stages.{LAYER_MODULES[layer.type]}"
            defs[stage] = StageDef(f"{module}:backward_stage", inputs, self.trains(layer))
            upstream = stage
        grads = {s: Input(s, "grads", None, many=True) for s in self.gradient_stages}
        defs["update"] = StageDef("stages.update:update_stage",
                                  {**grads, "velocity": Input("params", "velocity", None)}, True)
        return defs

    def stage_def(self, stage: str, cache: dict | None = None, written: dict[str, dict] | None = None) -> StageDef:
        return self.stage_defs(cache, written)[stage]

    @property
    def evaluate_def(self) -> StageDef:
        return StageDef("stages.network:evaluate_stage",
                        {"x": Input("batches", PER_IMAGE, (*KEY_COLUMNS, "pixels"))}, True)


LAYER_MODULES = {"conv": "conv", "relu": "relu", "max_pool": "pool", "avg_pool": "avg_pool", "fc": "fc",
                 "dropout": "dropout"}
