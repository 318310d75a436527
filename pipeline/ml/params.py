"""The typed Params of CNNClassifier and its model, and how they become a run's config."""
from __future__ import annotations

import json

from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasLabelCol, HasPredictionCol, HasProbabilityCol

from sparkcnn.pipeline import config
from sparkcnn.pipeline.config import TrainConfig
from sparkcnn.pipeline.errors import ConfigError

DEFAULTS = TrainConfig()
# Param name -> config key; the keys a grid may vary are those outside the ingest (train.*, model.*, run.mode)
CONFIG_KEYS = {
    "layers": "model.layers", "epochs": "train.epochs", "batchSize": "train.batch_size",
    "shardSize": "train.shard_size", "learningRate": "train.learning_rate", "lrSchedule": "train.lr_schedule",
    "momentum": "train.momentum", "weightDecay": "train.weight_decay", "seed": "train.seed",
    "mode": "run.mode", "testFraction": "data.test_fraction", "partitions": "spark.partitions",
    "mlflowUri": "tracking.mlflow_uri",
}
# params that shape what is ingested (the data written, its split) or where: one value per ingest
DATA_PARAMS = ("imageCol", "labelCol", "heightCol", "widthCol", "channelsCol", "seed", "testFraction", "runRoot")


def _to_layers(value):
    """A list of layer tables, or its JSON text."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise TypeError(f"layers must be a list of layer tables (or its JSON), got {value!r}") from None
    if not isinstance(value, list) or not all(isinstance(layer, dict) for layer in value):
        raise TypeError(f"layers must be a list of layer tables like {{'type': 'conv', 'filters': 8}}, got {value!r}")
    return [dict(layer) for layer in value]


def _param(name: str, doc: str, converter) -> Param:
    return Param(Params._dummy(), name, doc, typeConverter=converter)


class CNNParams(HasLabelCol, HasPredictionCol, HasProbabilityCol):
    """Columns, training settings and where runs go; shared by the estimator and its model."""

    imageCol = _param("imageCol", "image column: encoded PNG/JPEG bytes, raw HWC uint8 bytes (with heightCol, "
                      "widthCol, channelsCol) or Spark's image struct", TypeConverters.toString)
    heightCol = _param("heightCol", "height column of raw image bytes ('' when not raw)", TypeConverters.toString)
    widthCol = _param("widthCol", "width column of raw image bytes ('' when not raw)", TypeConverters.toString)
    channelsCol = _param("channelsCol", "channels column of raw image bytes ('' when not raw)", TypeConverters.toString)
    predictedLabelCol = _param("predictedLabelCol", "column of the predicted class name", TypeConverters.toString)
    layers = _param("layers", "the network: a list of layer tables as in [[model.layers]]", _to_layers)
    epochs = _param("epochs", "training epochs", TypeConverters.toInt)
    batchSize = _param("batchSize", "images per iteration", TypeConverters.toInt)
    shardSize = _param("shardSize", "images per Spark task of an iteration", TypeConverters.toInt)
    learningRate = _param("learningRate", "SGD learning rate", TypeConverters.toFloat)
    lrSchedule = _param("lrSchedule", "constant or cosine", TypeConverters.toString)
    momentum = _param("momentum", "SGD momentum", TypeConverters.toFloat)
    weightDecay = _param("weightDecay", "L2 weight decay", TypeConverters.toFloat)
    seed = _param("seed", "seed of the initialisation, the shuffles and the test split", TypeConverters.toInt)
    mode = _param("mode", "execution mode: staged, memory or fused (results do not change)", TypeConverters.toString)
    testFraction = _param("testFraction", "fraction of rows held out as the run's test split", TypeConverters.toFloat)
    partitions = _param("partitions", "Spark partitions of a training job", TypeConverters.toInt)
    runRoot = _param("runRoot", "folder or URL under which every fit makes its run root", TypeConverters.toString)
    mlflowUri = _param("mlflowUri", "MLflow tracking URI ('' = no tracking)", TypeConverters.toString)

    def __init__(self):
        super().__init__()
        self._setDefault(labelCol="label", predictionCol="prediction", probabilityCol="probability",
                         imageCol="image", heightCol="", widthCol="", channelsCol="",
                         predictedLabelCol="predictedLabel", layers=config.ModelConfig().layers,
                         epochs=DEFAULTS.epochs, batchSize=DEFAULTS.batch_size, shardSize=DEFAULTS.shard_size,
                         learningRate=DEFAULTS.learning_rate, lrSchedule=DEFAULTS.lr_schedule,
                         momentum=DEFAULTS.momentum, weightDecay=DEFAULTS.weight_decay, seed=DEFAULTS.seed,
                         mode="fused", testFraction=config.DataConfig().test_fraction, partitions=2,
                         runRoot="runs/ml", mlflowUri="")

    def raw_columns(self) -> tuple[str, str, str] | None:
        """(height, width, channels) columns of raw image bytes, None for encoded bytes or the image struct."""
        named = (self.getOrDefault(self.heightCol), self.getOrDefault(self.widthCol),
                 self.getOrDefault(self.channelsCol))
        if any(named) and not all(named):
            raise ConfigError("raw image bytes need all of heightCol, widthCol and channelsCol")
        return named if all(named) else None

    def raw_config(self, extra: dict | None = None) -> dict:
        """These params (with `extra` Param values over them) as a nested config dict."""
        values = {p.name: self.getOrDefault(p) for p in self.params if p.name in CONFIG_KEYS}
        values.update(extra or {})
        raw: dict = {}
        for name, value in values.items():
            section, key = CONFIG_KEYS[name].split(".")
            raw.setdefault(section, {})[key] = value
        return raw

    def to_config(self, root: str, data: str, extra: dict | None = None) -> config.Config:
        """The config of a run at `root` training on the Parquet source `data` with these params."""
        raw = self.raw_config(extra)
        raw.setdefault("run", {})["root"] = root
        raw.setdefault("data", {})["path"] = data
        return config.from_dict(raw)


def get_params_by_name(instance: Params, param_map: dict) -> dict:
    """A ParamMap (Param -> value) as {name: value}, converted by each Param's type converter."""
    return {(p.name if isinstance(p, Param) else p): instance.getParam(p.name if isinstance(p, Param) else p)
            .typeConverter(v) for p, v in param_map.items()}
