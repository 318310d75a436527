"""CNNClassifier: training on a DataFrame as a Spark ML Estimator. fit() writes the DataFrame as a Parquet
source with Spark under a base run root named by the data's digest, ingests it once, and trains in a
trial run root named by the settings (sparkcnn.pipeline.ml.trials); fitMultiple() trains many such trials over
one ingest."""
from __future__ import annotations

from pyspark import keyword_only
from pyspark.ml import Estimator
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable

from sparkcnn.pipeline.errors import ConfigError
from sparkcnn.pipeline.ml import frame, model, tracking, trials
from sparkcnn.pipeline.ml.params import CONFIG_KEYS, DATA_PARAMS, CNNParams, get_params_by_name
from sparkcnn.pipeline.runroot.storage import Storage
from sparkcnn.pipeline.training.run import Run

SOURCE = "source"  # the written DataFrame, under the base run root


class CNNClassifier(Estimator, CNNParams, DefaultParamsWritable, DefaultParamsReadable):
    """A convolutional network trained on a DataFrame of images and labels, every layer a Spark stage.

        clf = CNNClassifier(layers=[...], epochs=2, batchSize=50, runRoot="runs/ml")
        model = clf.fit(df)                  # one run root under runs/ml
        model.transform(df)                  # + prediction, probability, predictedLabel
    """

    @keyword_only
    def __init__(self, *, labelCol="label", predictionCol="prediction", probabilityCol="probability",
                 imageCol="image", heightCol="", widthCol="", channelsCol="", predictedLabelCol="predictedLabel",
                 layers=None, epochs=None, batchSize=None, shardSize=None, learningRate=None, lrSchedule=None,
                 momentum=None, weightDecay=None, seed=None, mode=None, testFraction=None, partitions=None,
                 runRoot=None, mlflowUri=None):
        super().__init__()
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, labelCol="label", predictionCol="prediction", probabilityCol="probability",
                  imageCol="image", heightCol="", widthCol="", channelsCol="", predictedLabelCol="predictedLabel",
                  layers=None, epochs=None, batchSize=None, shardSize=None, learningRate=None, lrSchedule=None,
                  momentum=None, weightDecay=None, seed=None, mode=None, testFraction=None, partitions=None,
                  runRoot=None, mlflowUri=None):
        """Set any of the params by keyword (None leaves a param as it is)."""
        return self._set(**{k: v for k, v in self._input_kwargs.items() if v is not None})

    def _fit(self, dataset):
        return next(self.fitMultiple(dataset, [{}]))[1]

    def fitMultiple(self, dataset, paramMaps):
        """Ingest `dataset` once and return a thread-safe iterator of (index, model), one trial per ParamMap."""
        maps = [get_params_by_name(self, m) for m in paramMaps]
        self._check_maps(maps)
        spark = dataset.sparkSession
        base, class_names = self._ingest(spark, dataset)
        tracker = tracking.tracker(self.getOrDefault(self.mlflowUri), base.storage.url, len(maps))

        def train(index: int):
            trial = trials.open_trial(base, self.to_config("", base.cfg.data.path, maps[index]), _settings(maps[index]))
            trials.train_trial(spark, trial)
            tracker.record(trial, _settings(maps[index]))
            return trial

        def make(index: int, trial):
            fitted = model.from_run(trial, class_names)
            self._copyValues(fitted, {self.getParam(k): v for k, v in maps[index].items()})
            return fitted

        return trials.Trials(len(maps), train, make)

    def _check_maps(self, maps: list[dict]) -> None:
        """A ParamMap may set training settings; data params must keep the estimator's values."""
        for m in maps:
            for name, value in m.items():
                if name in DATA_PARAMS and value != self.getOrDefault(name):
                    raise ConfigError(f"{name} cannot vary across trials: they share one ingest of the DataFrame")
        trials.check_grid([_settings(m) for m in maps])

    def _ingest(self, spark, dataset) -> tuple[Run, tuple[str, ...] | None]:
        """The base run root of this DataFrame (its data and the params that shape the ingest), ingested;
        and the class names the label column's metadata gives."""
        prepared = frame.prepare(dataset, self.getOrDefault(self.imageCol), self.getOrDefault(self.labelCol),
                                 self.raw_columns(), self.getOrDefault(self.seed), self.getOrDefault(self.testFraction))
        root = Storage(f"{self.getOrDefault(self.runRoot)}/data-{prepared.digest[:16]}")
        cfg = self.to_config(root.url, root.path(SOURCE))
        if not Run.exists(root.url) or not Run.open(root.url).manifest.committed("ingest"):
            frame.write(prepared, root.uri(SOURCE))
        return trials.ingest_base(spark, cfg), prepared.class_names


def _settings(param_map: dict) -> dict:
    """A ParamMap's training settings by config key (data params are the estimator's, checked apart)."""
    return {CONFIG_KEYS[name]: value for name, value in param_map.items()
            if name in CONFIG_KEYS and name not in DATA_PARAMS}
