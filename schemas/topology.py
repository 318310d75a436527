"""The layer list as a graph: which layers each layer reads, in which order they run, who reads whom.

A layer reads the layer before it in the list (the first one the images) unless it names its
input(s): `input = "pool1"` or `inputs = ["block1_conv2", "pool1"]`. Resolved layers keep `inputs`
only where it differs from that default, so a plain stack resolves (and hashes) as it always did.
"""
from __future__ import annotations

INPUT_KEYS = ("input", "inputs")
MULTI_INPUT = ("add",)


class NetworkError(ValueError):
    """A layer stack that cannot be built; the message names the layer."""


def declared_inputs(where: str, layer: dict) -> dict:
    """A declared layer's `input`/`inputs` as {"inputs": [names]} (or {} when it declares none)."""
    if "input" in layer and "inputs" in layer:
        raise NetworkError(f"{where}: give input or inputs, not both")
    if "input" in layer:
        value = layer["input"]
        if not isinstance(value, str):
            raise NetworkError(f"{where}: input must be a layer name, got {value!r}")
        return {"inputs": [value]}
    if "inputs" in layer:
        value = layer["inputs"]
        if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
            raise NetworkError(f"{where}: inputs must be a non-empty list of layer names, got {value!r}")
        return {"inputs": list(value)}
    return {}


def inputs_of(resolved: tuple[dict, ...] | list[dict], i: int) -> list[str]:
    """The names of the layers layer i reads ([] for the images)."""
    return list(resolved[i].get("inputs") or ([resolved[i - 1]["name"]] if i else []))


def resolve_inputs(resolved: list[dict]) -> tuple[dict, ...]:
    """Check each layer's inputs (known layers, not itself, as many as its type takes, no cycle) and drop
    the declarations that name the default (the layer before)."""
    names = {layer["name"] for layer in resolved}
    for i, layer in enumerate(resolved):
        inputs, where = inputs_of(resolved, i), f"layer {layer['name']} ({layer['type']})"
        if layer["name"] in inputs:
            raise NetworkError(f"{where}: a layer cannot be its own input")
        unknown = [n for n in inputs if n not in names]
        if unknown:
            raise NetworkError(f"{where}: input {unknown[0]!r} is not a layer of model.layers")
        if len(set(inputs)) != len(inputs):
            raise NetworkError(f"{where}: an input is named twice")
        if layer["type"] in MULTI_INPUT and len(inputs) < 2:
            raise NetworkError(f"{where}: an add layer needs two or more inputs (inputs = [...])")
        if layer["type"] not in MULTI_INPUT and len(inputs) > 1:
            raise NetworkError(f"{where}: a {layer['type']} layer reads one input, got {len(inputs)}")
        if i and layer.get("inputs") == [resolved[i - 1]["name"]]:
            del layer["inputs"]
    topological(resolved)
    return tuple(resolved)


def topological(resolved) -> list[int]:
    """Indices of the layers in the order they run: each after its inputs, ties in list order.
    A cycle is refused naming a layer on it."""
    index = {layer["name"]: i for i, layer in enumerate(resolved)}
    pending = {i: {index[n] for n in inputs_of(resolved, i)} for i in range(len(resolved))}
    order: list[int] = []
    while pending:
        ready = [i for i, needs in pending.items() if not needs]
        if not ready:
            name = resolved[min(pending)]["name"]
            raise NetworkError(f"layer {name}: its inputs form a cycle (it depends on its own output)")
        first = min(ready)
        order.append(first)
        del pending[first]
        for needs in pending.values():
            needs.discard(first)
    return order


def identity_layers(layers) -> list[dict]:
    """Resolved layers as they enter identities: keys added since run roots existed left out where they
    hold their default, so the identities of runs made before them stay the same."""
    from sparkcnn.schemas.layers import NEW_DEFAULTS

    return [{k: v for k, v in layer.items() if not (k in NEW_DEFAULTS and v == NEW_DEFAULTS[k])} for layer in layers]
