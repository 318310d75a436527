"""The declared layer list: each layer type's options and defaults, and the list resolved with every key
explicit (the form the config records and a Network is built from)."""
from __future__ import annotations

import math
import re

from sparkcnn.schemas.topology import INPUT_KEYS, NetworkError, declared_inputs, resolve_inputs

REQUIRED = object()
LAYER_OPTIONS = {
    "conv": {"filters": REQUIRED, "kernel": REQUIRED, "stride": 1, "padding": 0, "bias": True},
    "relu": {},
    "max_pool": {"size": 2, "stride": None},
    "avg_pool": {"size": 2, "stride": None},
    "fc": {"units": REQUIRED},
    "dropout": {"rate": 0.5},
    "batch_norm": {"eps": 1e-5, "momentum": 0.1, "sync": False},
    "add": {},
    "global_avg_pool": {},
}
NAME_PREFIX = {"conv": "conv", "relu": "relu", "max_pool": "pool", "avg_pool": "pool", "fc": "fc", "dropout": "drop",
               "batch_norm": "bn", "add": "add", "global_avg_pool": "gap"}
# keys added after run roots existed: left out of identities where they hold their default
NEW_DEFAULTS = {"bias": True}
MAX_POOL_WINDOW = 127
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
DEFAULT_LAYERS = (
    {"type": "conv", "filters": 32, "kernel": 5, "padding": 2},
    {"type": "relu"},
    {"type": "max_pool", "size": 2},
    {"type": "fc", "units": 10},
)


def _check_option(where: str, key: str, value, default):
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise NetworkError(f"{where}: {key} must be true or false, got {value!r}")
        return value
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
        unknown = sorted(set(layer) - {"type", "name", *INPUT_KEYS, *options})
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
        if kind == "batch_norm" and not (values["eps"] > 0 and 0 <= values["momentum"] <= 1):
            raise NetworkError(f"{where}: eps must be > 0 and momentum in [0, 1]")
        resolved.append({"name": name, "type": kind, **values, **declared_inputs(where, layer)})
    names = [layer["name"].lower() for layer in resolved]  # SQL views and some file systems ignore case
    repeated = sorted({layer["name"] for layer in resolved if names.count(layer["name"].lower()) > 1})
    if repeated:
        raise NetworkError(f"model.layers: layer names must be unique (ignoring case), repeated: {', '.join(repeated)}")
    return resolve_inputs(resolved)
