"""One typed config object, built from a TOML file plus `section.key=value` overrides."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from sparkcnn.pipeline.errors import ConfigError
from sparkcnn.schemas.layers import DEFAULT_LAYERS, resolve_layers
from sparkcnn.schemas.network import NetworkError
from sparkcnn.schemas.tables import DEFAULT_CACHE, POOL_ARGMAXES, RELU_MASKS
from sparkcnn.schemas.topology import identity_layers

REPO_CONF = Path(__file__).resolve().parent.parent / "conf"
# the driver JVM's JIT compilers: C1 only (it starts, and answers a first query, sooner) or C1 then C2
# (faster code once warm); "auto" takes the first for sessions that query a run, the second for the rest
JIT_FLAGS = {"quick": "-XX:TieredStopAtLevel=1", "full": ""}
JITS = ("auto", *JIT_FLAGS)
DEFAULT_CONFIG = REPO_CONF / "default.toml"


NEW_TRAIN_DEFAULTS = {"nesterov": False, "lr_warmup_epochs": 0}  # left out of identities at their default
LEGACY_MODEL_KEYS = ("filters", "kernel", "stride", "padding", "pool_size", "pool_stride", "classes")


@dataclass(frozen=True)
class ModelConfig:
    layers: list = field(default_factory=lambda: [dict(layer) for layer in resolve_layers(DEFAULT_LAYERS)])


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 500
    shard_size: int = 125
    learning_rate: float = 0.02
    lr_schedule: str = "cosine"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    images: int = 0
    nesterov: bool = False
    lr_warmup_epochs: int = 0


@dataclass(frozen=True)
class CacheConfig:
    relu_mask: str = DEFAULT_CACHE["relu_mask"]
    pool_argmax: str = DEFAULT_CACHE["pool_argmax"]
    sparse_gradients: bool = DEFAULT_CACHE["sparse_gradients"]


@dataclass(frozen=True)
class AugmentConfig:
    crop_padding: int = 0
    flip: bool = False


@dataclass(frozen=True)
class DataConfig:
    path: str = ""
    test_fraction: float = 0.1
    image_column: str = "image"
    label_column: str = "label"
    resize: list = field(default_factory=list)
    coarse_labels: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass(frozen=True)
class SparkConfig:
    master: str = "local[2]"
    partitions: int = 2
    class_archive: bool = True
    jit: str = "auto"
    conf: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RunConfig:
    root: str = "runs/default"
    iterations: int = 0
    keep_iterations: int = 2
    checkpoint_every: int = 100
    mode: str = "staged"
    job_per_stage: bool = False
    inspect_every: int = 0
    inspect_iterations: list = field(default_factory=list)


@dataclass(frozen=True)
class TrackingConfig:
    mlflow_uri: str = ""  # MLflow tracking URI; empty = off (sparkcnn.pipeline.ml.tracking)


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)
    run: RunConfig = field(default_factory=RunConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    RESULT_SECTIONS = ("model", "train")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def result_settings(self) -> dict:
        """The settings that can change a run's numbers (and so enter every stage's identity): model.*,
        train.* and the data.* settings other than the path that differ from their defaults (so that the
        identities of runs made before those settings existed stay the same)."""
        full = self.to_dict()
        settings = {section: full[section] for section in self.RESULT_SECTIONS}
        settings["model"]["layers"] = identity_layers(settings["model"]["layers"])
        settings["train"] = {k: v for k, v in settings["train"].items()
                             if not (k in NEW_TRAIN_DEFAULTS and v == NEW_TRAIN_DEFAULTS[k])}
        defaults = dataclasses.asdict(DataConfig())
        data = {k: v for k, v in full["data"].items() if k != "path" and v != defaults[k]}
        if data:
            settings["data"] = data
        return settings

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.result_settings(), sort_keys=True).encode()).hexdigest()[:16]

    def validate(self) -> "Config":
        checks = [
            ("train.epochs", self.train.epochs >= 1),
            ("train.batch_size", self.train.batch_size >= 1),
            ("train.shard_size", self.train.shard_size >= 1),
            ("train.learning_rate", self.train.learning_rate > 0),
            ("train.lr_schedule", self.train.lr_schedule in ("constant", "cosine")),
            ("train.momentum", 0 <= self.train.momentum < 1),
            ("train.weight_decay", self.train.weight_decay >= 0),
            ("train.images", self.train.images >= 0),
            ("train.lr_warmup_epochs", 0 <= self.train.lr_warmup_epochs < self.train.epochs),
            ("spark.partitions", self.spark.partitions >= 1),
            ("run.iterations", self.run.iterations >= 0),
            ("run.keep_iterations", self.run.keep_iterations >= 1),
            ("run.checkpoint_every", self.run.checkpoint_every >= 0),
            ("cache.relu_mask", self.cache.relu_mask in RELU_MASKS),
            ("cache.pool_argmax", self.cache.pool_argmax in POOL_ARGMAXES),
            ("spark.jit", self.spark.jit in JITS),
            ("run.mode", self.run.mode in ("staged", "memory", "fused")),
            ("run.inspect_every", self.run.inspect_every >= 0),
            ("run.inspect_iterations", all(isinstance(i, int) and i >= 0 for i in self.run.inspect_iterations)),
            ("data.test_fraction", 0 < self.data.test_fraction < 1),
            ("data.resize", self.data.resize == [] or (len(self.data.resize) == 2 and all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in self.data.resize))),
            ("data.augment.crop_padding", self.data.augment.crop_padding >= 0),
        ]
        bad = [key for key, ok in checks if not ok]
        if bad:
            values = ", ".join(f"{k}={self.get(k)!r}" for k in bad)
            raise ConfigError(f"invalid config values: {values}")
        return self

    def warnings(self) -> list[str]:
        """Settings that work but may not do what their author meant."""
        t = self.train
        found = []
        if t.shard_size > t.batch_size:
            found.append(f"train.shard_size={t.shard_size} exceeds train.batch_size={t.batch_size}: each iteration is "
                         f"one shard, so one Spark task computes it")
        elif t.batch_size % t.shard_size:
            full, rest = divmod(t.batch_size, t.shard_size)
            found.append(f"train.shard_size={t.shard_size} does not divide train.batch_size={t.batch_size}: each "
                         f"iteration has {full} shard(s) of {t.shard_size} images and one of {rest}")
        return found

    def get(self, dotted: str):
        value = self
        for name in dotted.split("."):
            value = getattr(value, name)
        return value


def _parse_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `section.key=value` strings (values parsed as TOML, else taken as strings)."""
    merged = json.loads(json.dumps(raw))
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, text = item.split("=", 1)
        *tables, key = [name.strip() for name in dotted.split(".")]
        target = merged
        for name in tables:
            target = target.setdefault(name, {})
            if not isinstance(target, dict):
                raise ConfigError(f"override {item!r}: {name} is a value, not a table of settings")
        target[key] = _parse_value(text.strip())
    return merged


def _section(name: str, cls, raw) -> object:
    """A nested settings table (data.augment) as its dataclass."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config key {name} must be a table of settings, got {raw!r}")
    unknown = sorted(set(raw) - {x.name for x in dataclasses.fields(cls)})
    if unknown:
        raise ConfigError(f"unknown config keys: {', '.join(f'{name}.{k}' for k in unknown)}")
    return cls(**{k: _coerce(f"{name}.{k}", v, getattr(cls(), k)) for k, v in raw.items()})


def from_dict(raw: dict) -> Config:
    """Typed config from nested dicts; unknown sections or keys and wrong types are errors."""
    sections = {}
    for f in dataclasses.fields(Config):
        cls = f.default_factory
        values = dict(raw.get(f.name, {}))
        known = {x.name: x for x in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if f.name == "model" and set(unknown) & set(LEGACY_MODEL_KEYS):
            raise ConfigError(f"model.{', model.'.join(unknown)}: the model is now declared as a list of layers "
                              f"([[model.layers]] tables, see README); this config (or run root) was written for "
                              f"the single built-in network of an earlier sparkcnn")
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(f'{f.name}.{k}' for k in unknown)}")
        for key, value in values.items():
            default = getattr(cls(), key)
            values[key] = (_section(f"{f.name}.{key}", type(default), value) if dataclasses.is_dataclass(default)
                           else _coerce(f"{f.name}.{key}", value, default))
        if f.name == "model" and "layers" in values:
            try:
                values["layers"] = [dict(layer) for layer in resolve_layers(values["layers"])]
            except NetworkError as e:
                raise ConfigError(str(e)) from None
        sections[f.name] = cls(**values)
    unknown_sections = sorted(set(raw) - set(sections))
    if unknown_sections:
        raise ConfigError(f"unknown config sections: {', '.join(unknown_sections)}")
    return Config(**sections).validate()


def _coerce(key: str, value, default):
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(value, bool) and isinstance(default, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float))
        value = float(value) if ok else value
        if ok and not math.isfinite(value):
            raise ConfigError(f"config key {key} must be a finite number, got {value!r}")
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(f"config key {key} must be {type(default).__name__}, got {value!r}")
    return value


def load(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Read a TOML config (conf/default.toml when none is given) and apply overrides."""
    raw = {}
    source = Path(path) if path else DEFAULT_CONFIG
    if path or source.exists():
        try:
            raw = tomllib.loads(source.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {source} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {source} is not valid TOML: {e}") from None
    return from_dict(apply_overrides(raw, list(overrides)))
