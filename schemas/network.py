"""The network as data: one declared stack of layers, and everything derived from it.

A `Network` is built from the resolved layer list of the config plus the input shape and class
count of the data. It is the only place that knows the layers: the iteration's stages and their
inputs by role, every per-image table's tensor columns, and the parameter names and shapes.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from sparkcnn.schemas.columns import SPARSE_DX, tensor_specs
from sparkcnn.schemas.layers import resolve_layers
from sparkcnn.schemas.shapes import output_shape
from sparkcnn.schemas.tables import DEFAULT_CACHE, KEY_COLUMNS
from sparkcnn.schemas.topology import MULTI_INPUT, NetworkError, inputs_of, topological

WITH_PARAMS = ("conv", "fc", "batch_norm")
PER_IMAGE = "out"


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
    """A stage: its function as (what it computes, role), looked up in sparkcnn.stages.registry, and its inputs."""

    function: tuple[str, str]
    inputs: dict[str, Input]
    uses_params: bool = False


@dataclass(frozen=True)
class Layer:
    """One layer of the graph: its resolved options, position in run order, tensor shapes (per image,
    NHWC) and the names of the layers it reads (none: the images)."""

    index: int
    name: str
    type: str
    options: dict = field(hash=False, compare=False)
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    inputs: tuple[str, ...] = ()

    def __getitem__(self, key: str):
        return self.options[key]

    @property
    def forward_stage(self) -> str:
        return f"{self.name}_fwd"

    @property
    def backward_stage(self) -> str:
        return f"{self.name}_bwd"

    @property
    def synced(self) -> bool:
        """A batch_norm layer normalising by the whole batch's statistics (statistics stages around it)."""
        return self.type == "batch_norm" and self["sync"]

    @property
    def sync_stages(self) -> tuple[str, str]:
        """A synced layer's statistics stages, before its forward and before its backward (docs/network.md)."""
        return f"{self.name}_stats", f"{self.name}_grads"

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        if self.type == "conv":
            k = self["kernel"]
            return {"w": (self["filters"], self.in_shape[2], k, k), **({"b": (self["filters"],)} if self["bias"] else {})}
        if self.type == "fc":
            return {"w": (math.prod(self.in_shape), self["units"]), "b": (self["units"],)}
        if self.type == "batch_norm":
            return {"gamma": self.in_shape[-1:], "beta": self.in_shape[-1:]}
        return {}

    @property
    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """Arrays kept with the parameters that are no parameters (no gradient, momentum or decay)."""
        if self.type == "batch_norm":
            return {"running_mean": self.in_shape[-1:], "running_var": self.in_shape[-1:]}
        return {}

    @property
    def fan_in(self) -> int:
        """Inputs per output unit (PyTorch's bound for its default initialisation)."""
        w = self.param_shapes["w"]
        return math.prod(w[1:]) if self.type == "conv" else w[0]


class Network:
    """A graph of layers on images of one shape, the last declared one ending in softmax cross-entropy
    over `classes`; `layers` in the order they run."""

    def __init__(self, layers, image: tuple[int, int, int], classes: int):
        self.image, self.classes = tuple(image), classes
        resolved = resolve_layers(layers)
        shapes, built = {}, []
        for i in topological(resolved):
            spec = resolved[i]
            options = {k: v for k, v in spec.items() if k not in ("name", "type", "inputs")}
            inputs = tuple(inputs_of(resolved, i))
            where = f"layer {spec['name']}"
            in_shapes = [shapes[n] for n in inputs] or [self.image]
            if len(set(in_shapes)) > 1:
                raise NetworkError(f"{where}: an add needs inputs of one shape, got "
                                   + ", ".join(f"{n} {s}" for n, s in zip(inputs, in_shapes)))
            out = output_shape(where, spec["type"], options, in_shapes[0])
            shapes[spec["name"]] = out
            built.append(Layer(len(built), spec["name"], spec["type"], options, in_shapes[0], out, inputs))
        self.layers = tuple(built)
        self._by_name = {layer.name: layer for layer in self.layers}
        self.output = self._by_name[resolved[-1]["name"]]
        self._readers = {layer.name: tuple(r for r in self.layers if layer.name in r.inputs) for layer in self.layers}
        unread = [layer.name for layer in self.layers if layer is not self.output and not self._readers[layer.name]]
        if unread:
            raise NetworkError(f"layer {unread[0]}: no layer reads its output (only the last layer, "
                               f"{self.output.name}, feeds the loss)")
        last = self.output
        if last.out_shape != (classes,):
            raise NetworkError(f"layer {last.name}: the last layer gives {last.out_shape} per image, but the loss "
                               f"needs {classes} scores, one per class of the data: end with an fc layer of "
                               f"{classes} units")
        self._upstream_trained = {}
        for layer in self.layers:
            self._upstream_trained[layer.name] = self.trains(layer) or any(self._upstream_trained[n] for n in layer.inputs)
        self._by_stage = {s: layer for layer in self.layers
                          for s in (layer.forward_stage, layer.backward_stage, *layer.sync_stages)}
        self.graph = any("inputs" in spec for spec in resolved)
        self._derived = {}

    def _memo(self, kind: str, build, *policies):
        """What `build` derives from the (immutable) network under the given cache policies, built once."""
        key = json.dumps([kind, *(p or {} for p in policies)], sort_keys=True, default=str)
        if key not in self._derived:
            self._derived[key] = build()
        return self._derived[key]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_derived": {}}

    # layers and parameters

    def layer(self, stage: str) -> Layer | None:
        """The layer a forward or backward stage belongs to (None for loss and update)."""
        return self._by_stage.get(stage)

    def readers(self, layer: Layer) -> tuple[Layer, ...]:
        """The layers that read a layer's output, in run order (the order their gradients are summed)."""
        return self._readers[layer.name]

    def trains(self, layer: Layer) -> bool:
        return layer.type in WITH_PARAMS

    def has_backward(self, layer: Layer) -> bool:
        """Layers with no trained layer at or before them need no backward pass."""
        return self._upstream_trained[layer.name]

    def input_grad(self, layer: Layer) -> bool:
        """Whether a layer's backward computes the gradient by its input(s) (nobody uses the image's)."""
        return any(self._upstream_trained[n] for n in layer.inputs)

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {f"{layer.name}.{p}": shape for layer in self.layers for p, shape in layer.param_shapes.items()}

    @property
    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """Running statistics: stored with every parameter version, never trained."""
        return {f"{layer.name}.{p}": shape for layer in self.layers for p, shape in layer.state_shapes.items()}

    @property
    def trained_layers(self) -> tuple[Layer, ...]:
        return tuple(layer for layer in self.layers if self.trains(layer))

    @property
    def batch_norm_layers(self) -> tuple[Layer, ...]:
        return tuple(layer for layer in self.layers if layer.type == "batch_norm")

    def describe(self) -> str:
        """Each layer's name, type and output shape per image, on one line for a stack; a graph's a layer
        a line, with the layers each reads."""
        def inputs(layer):
            return f" <- {'+'.join(layer.inputs) or 'images'}" if self.graph else ""
        return ("\n  " if self.graph else " -> ").join(
            f"{layer.name} ({layer.type}, {'x'.join(map(str, layer.out_shape))}{inputs(layer)})" for layer in self.layers)

    # stages

    @property
    def forward_stages(self) -> tuple[str, ...]:
        return tuple(layer.forward_stage for layer in self.layers)

    @property
    def backward_stages(self) -> tuple[str, ...]:
        return tuple(layer.backward_stage for layer in reversed(self.layers) if self.has_backward(layer))

    @property
    def iteration_stages(self) -> tuple[str, ...]:
        forward = [s for layer in self.layers for s in (layer.sync_stages[:1] if layer.synced else ()) +
                   (layer.forward_stage,)]
        backward = [s for stage in self.backward_stages for s in
                    (self.layer(stage).sync_stages[1:] if self.layer(stage).synced else ()) + (stage,)]
        return (*forward, "loss", *backward, "update")

    @property
    def gradient_stages(self) -> tuple[str, ...]:
        """Stages that output parameter gradients (the update's inputs): backward stages, a synced layer's
        gradients stage."""
        return tuple(self.layer(s).sync_stages[1] if self.layer(s).synced else s
                     for s in self.backward_stages if self.trains(self.layer(s)))

    @property
    def statistics_stages(self) -> tuple[str, ...]:
        """Stages that output a shard's batch statistics (the update steps the running ones from them)."""
        return tuple(layer.sync_stages[0] if layer.synced else layer.forward_stage for layer in self.batch_norm_layers)

    @property
    def per_image_stages(self) -> tuple[str, ...]:
        """Iteration stages that write a per-image table."""
        return tuple(s for s in self.iteration_stages if s in self.forward_stages or s == "loss"
                     or (s in self.backward_stages and self.input_grad(self.layer(s))))

    # tables

    def tensor_specs(self, cache: dict | None = None) -> dict[str, tuple]:
        """Tensor columns of each per-image table under a cache policy (see schemas.columns)."""
        return self._memo("tensor_specs", lambda: tensor_specs(self, cache), cache)

    # stage inputs

    def _output_of(self, name: str | None) -> tuple[str, str]:
        """(stage, column) holding a layer's output, or the batch pixels for None (the images)."""
        return ("batches", "pixels") if name is None else (self._by_name[name].forward_stage, "out")

    def stage_defs(self, cache: dict | None = None, written: dict[str, dict] | None = None) -> dict[str, StageDef]:
        """Every iteration stage's function and inputs by role (see _stage_defs), derived once per policy."""
        return self._memo("stage_defs", lambda: self._stage_defs(cache, written), cache, written)

    def _stage_defs(self, cache: dict | None, written: dict[str, dict] | None) -> dict[str, StageDef]:
        """Every iteration stage's function and inputs by role, under a cache policy: each input is read as
        the policy its table was written with holds it (`written`, by source stage; else `cache`).
        Roles: x (x0, x1, ... for an add), dout (dout_1, dout_2, ... from further readers, summed in
        that order), saved, and the update's gradient and statistics stages by name."""
        def policy(source: str, key: str):
            return {**DEFAULT_CACHE, **(cache or {}), **((written or {}).get(source) or {})}[key]

        def image(source: str, *columns: str, keys: bool = True) -> Input:
            return Input(source, PER_IMAGE, (*(KEY_COLUMNS if keys else ()), *columns))

        def layer_input(layer: Layer, keys: bool) -> Input:
            return image(*self._output_of(layer.inputs[0] if layer.inputs else None), keys=keys)

        def gradient(source: str) -> Input:
            sparse = source != "loss" and policy(source, "sparse_gradients") and self.layer(source).type in SPARSE_DX
            return image(source, *(("dx_mask", "dx_values") if sparse else ("dx",)))

        defs = {}
        for layer in self.layers:
            if layer.type in MULTI_INPUT:
                inputs = {f"x{k}": image(*self._output_of(n)) for k, n in enumerate(layer.inputs)}
            else:
                inputs = {"x": layer_input(layer, True)}
            if layer.synced:
                defs[layer.sync_stages[0]] = StageDef((layer.type, "stats"), dict(inputs))
                inputs["stats"] = Input(layer.sync_stages[0], "stats", None, many=True)
            defs[layer.forward_stage] = StageDef((layer.type, "forward"), inputs, self.trains(layer))
        defs["loss"] = StageDef(("loss", "forward"), {"x": image(self.output.forward_stage, "out")})
        for stage in self.backward_stages:
            layer = self.layer(stage)
            sources = ["loss"] if layer is self.output else [r.backward_stage for r in self.readers(layer)]
            inputs = {("dout" if k == 0 else f"dout_{k}"): gradient(s) for k, s in enumerate(sources)}
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
            if layer.synced:
                stats, grads = layer.sync_stages
                inputs["stats"] = Input(stats, "stats", None, many=True)
                defs[grads] = StageDef((layer.type, "grads"), dict(inputs), True)
                inputs["sums"] = Input(grads, "sums", None, many=True)
            defs[stage] = StageDef((layer.type, "backward"), inputs, self.trains(layer))
        grads = {s: Input(s, "grads", None, many=True) for s in self.gradient_stages}
        stats = {s: Input(s, "stats", None, many=True) for s in self.statistics_stages}
        defs["update"] = StageDef(("update", "update"),
                                  {**grads, **stats, "velocity": Input("params", "velocity", None)}, True)
        return defs

    def stage_def(self, stage: str, cache: dict | None = None, written: dict[str, dict] | None = None) -> StageDef:
        return self.stage_defs(cache, written)[stage]

    @property
    def update_reads(self) -> dict[str, str]:
        """The per-shard outputs the update sums or steps through: output name by stage."""
        return {**{s: "grads" for s in self.gradient_stages}, **{s: "stats" for s in self.statistics_stages}}

    @property
    def evaluate_def(self) -> StageDef:
        return StageDef(("network", "evaluate"),
                        {"x": Input("batches", PER_IMAGE, (*KEY_COLUMNS, "pixels"))}, True)

