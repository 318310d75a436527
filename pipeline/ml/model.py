"""CNNClassificationModel: a trained network as a Spark ML Model. transform() scores a DataFrame's
partitions by a pandas UDF with the forward pass `sparkcnn score` uses; save/load keep params,
parameters, class names and the channel statistics (loading starts no training)."""
from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.ml import Model
from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter, MLReadable, MLReader, MLWritable, MLWriter

from sparkcnn.pipeline.ml.params import CNNParams
from sparkcnn.pipeline.runroot.storage import Storage

PARAMETERS = "data/parameters.npz"


@dataclass
class Trained:
    """What scoring needs: the network's layers, input shape and classes, parameters, statistics, names."""

    layers: list
    image: tuple[int, int, int]
    class_names: tuple[str, ...]
    params: dict
    mean: np.ndarray
    std: np.ndarray

    def context(self):
        from sparkcnn.schemas.network import Network
        from sparkcnn.stages.tabular import StageContext

        return StageContext(Network(self.layers, self.image, len(self.class_names)), self.params, self.mean, self.std)

    def describe(self) -> dict:
        return {"layers": self.layers, "image": list(self.image), "classNames": list(self.class_names),
                "mean": self.mean.tolist(), "std": self.std.tolist()}


def score_rows(trained: Trained, table, context) -> tuple[list, list, list]:
    """(prediction, probabilities, class name) of each row of an Arrow table with an `image` column (and
    `height`, `width`, `channels` for raw bytes); None for an image that cannot be read."""
    from sparkcnn.pipeline.data.images import fit
    from sparkcnn.pipeline.data.sources.parquet_images import ParquetImages
    from sparkcnn.pipeline.deploy.predict import probabilities

    decoded = ParquetImages(None, "", {"image_column": "image"}, [])._decode(table, "row")
    readable = [i for i, (_, pixels) in enumerate(decoded) if not isinstance(pixels, str)]
    predictions, probs, names = [None] * len(decoded), [None] * len(decoded), [None] * len(decoded)
    if readable:
        pixels = np.stack([fit(decoded[i][1], trained.image, resize=True) for i in readable])
        p = probabilities(context, pixels)
        for i, row in zip(readable, p):
            best = int(row.argmax())
            predictions[i], probs[i], names[i] = float(best), row.astype(np.float64).tolist(), trained.class_names[best]
    return predictions, probs, names


def scorer(trained: Trained):
    """The pandas UDF: a struct of the image columns -> struct(prediction, probability, predictedLabel)."""
    from pyspark.sql import functions as F

    state = {}

    @F.pandas_udf("prediction double, probability array<double>, predictedLabel string")
    def score(images: pd.DataFrame) -> pd.DataFrame:
        import pyarrow as pa

        if "context" not in state:
            state["context"] = trained.context()
        predictions, probs, names = score_rows(trained, pa.Table.from_pandas(images, preserve_index=False),
                                               state["context"])
        return pd.DataFrame({"prediction": predictions, "probability": probs, "predictedLabel": names})

    return score


class CNNClassificationModel(Model, CNNParams, MLWritable, MLReadable):
    """A network trained by CNNClassifier (or loaded): adds prediction, probability and predictedLabel."""

    def __init__(self, trained: Trained | None = None, trained_root: str = ""):
        super().__init__()
        self.trained = trained
        self.trained_root = trained_root  # the run root it was trained in (status, sql, report, resume)

    @property
    def classNames(self) -> list[str]:
        return list(self.trained.class_names)

    @property
    def numClasses(self) -> int:
        return len(self.trained.class_names)

    def _transform(self, dataset):
        from pyspark.ml.functions import array_to_vector
        from pyspark.sql import functions as F

        from sparkcnn.pipeline.ml import frame

        image = self.getOrDefault(self.imageCol)
        raw = self.raw_columns()
        missing = [c for c in (image, *(raw or ())) if c not in dataset.columns]
        if missing:
            raise frame.DataError(f"the DataFrame has no column {', '.join(missing)} (columns: "
                                  f"{', '.join(dataset.columns)})")
        frame._image_kind(dataset, image, raw)
        parts = [F.col(image).alias("image"),
                 *(F.col(c).alias(n) for c, n in zip(raw or (), ("height", "width", "channels")))]
        scored = "__sparkcnn_scored"
        out = dataset.withColumn(scored, scorer(self.trained)(F.struct(*parts)))
        return (out.withColumn(self.getOrDefault(self.predictionCol), F.col(f"{scored}.prediction"))
                .withColumn(self.getOrDefault(self.probabilityCol), array_to_vector(F.col(f"{scored}.probability")))
                .withColumn(self.getOrDefault(self.predictedLabelCol), F.col(f"{scored}.predictedLabel"))
                .drop(scored))

    def write(self) -> MLWriter:
        return ModelWriter(self)

    @classmethod
    def read(cls) -> MLReader:
        return ModelReader(cls)


class ModelWriter(MLWriter):
    """metadata/ as every pyspark.ml stage writes it (params, plus the network as extra metadata) and the
    parameters as an .npz of float32 arrays."""

    def __init__(self, instance: CNNClassificationModel):
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:
        trained = self.instance.trained
        extra = {"network": trained.describe(), "trainedRunRoot": self.instance.trained_root}
        DefaultParamsWriter.saveMetadata(self.instance, path, self.sparkSession, extraMetadata=extra)
        buffer = io.BytesIO()
        np.savez(buffer, **trained.params)
        Storage(path).write_bytes(PARAMETERS, buffer.getvalue())


class ModelReader(MLReader):
    def __init__(self, cls):
        super().__init__()
        self.cls = cls

    def load(self, path: str) -> CNNClassificationModel:
        metadata = DefaultParamsReader.loadMetadata(path, self.sparkSession)
        network = metadata["network"]
        with np.load(io.BytesIO(Storage(path).read_bytes(PARAMETERS)), allow_pickle=False) as data:
            params = {name: data[name] for name in data.files}
        trained = Trained(network["layers"], tuple(network["image"]), tuple(network["classNames"]), params,
                          np.array(network["mean"]), np.array(network["std"]))
        model = self.cls(trained, metadata.get("trainedRunRoot", ""))
        model._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(model, metadata)
        return model


def from_run(run, class_names: tuple[str, ...] | None = None) -> CNNClassificationModel:
    """The model of a trained run root (its latest parameters); `class_names` (a label column's metadata)
    name the classes of integer labels."""
    mean, std = run.channel_stats()
    names = tuple(run.class_names())
    if class_names and len(class_names) >= len(names):
        names = tuple(class_names[: len(names)])
    trained = Trained(json.loads(json.dumps(run.cfg.model.layers)), tuple(run.network.image), names,
                      dict(run.latest_params()[1]), mean, std)
    return CNNClassificationModel(trained, run.storage.url)
