"""CNNClassifier and its model by pyspark.ml's conventions: Pipeline, evaluator, save/load, and the same
predictions as `sparkcnn score`."""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from tests.conftest import image_folder

LAYERS = [{"type": "conv", "filters": 4, "kernel": 3, "padding": 1}, {"type": "relu"}, {"type": "max_pool"},
          {"type": "fc", "units": 3}]
SMALL = dict(layers=LAYERS, epochs=1, batchSize=18, shardSize=9, mode="fused", testFraction=0.2)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """60 small images of 3 classes as DIR/<class>/*.png|jpg."""
    return image_folder(tmp_path_factory.mktemp("ml") / "images", per_class=20)


def image_frame(spark, folder):
    from pyspark.sql import functions as F

    df = spark.read.format("image").load(str(folder / "*" / "*"))
    return df.withColumn("cls", F.element_at(F.split(F.col("image.origin"), "/"), -2))


def test_pipeline_fit_save_load_and_score(spark, images, tmp_path):
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    from pyspark.ml.feature import StringIndexer

    from sparkcnn.ml import CNNClassificationModel, CNNClassifier
    from sparkcnn.pipeline.deploy.score import score
    from sparkcnn.pipeline.training.run import Run

    df = image_frame(spark, images)
    clf = CNNClassifier(runRoot=str(tmp_path / "runs"), **SMALL)
    fitted = Pipeline(stages=[StringIndexer(inputCol="cls", outputCol="label"), clf]).fit(df)
    cnn = fitted.stages[-1]
    assert isinstance(cnn, CNNClassificationModel) and cnn.getOrDefault("epochs") == 1
    out = fitted.transform(df)
    assert {"prediction", "probability", "predictedLabel"} <= set(out.columns)
    accuracy = MulticlassClassificationEvaluator(metricName="accuracy").evaluate(out)
    assert 0 <= accuracy <= 1
    rows = {r["image"]["origin"]: r for r in out.select("image", "prediction", "probability", "predictedLabel").collect()}
    assert {r["predictedLabel"] for r in rows.values()} <= {"cat", "dog", "owl"}

    fitted.write().save(str(tmp_path / "saved"))
    loaded = PipelineModel.load(str(tmp_path / "saved"))
    assert loaded.stages[-1].classNames == cnn.classNames and loaded.stages[-1].trained_root == cnn.trained_root
    again = {r["image"]["origin"]: r for r in loaded.transform(df).select("image", "prediction", "probability").collect()}
    assert all(again[o]["prediction"] == rows[o]["prediction"] and again[o]["probability"] == rows[o]["probability"]
               for o in rows)

    run = Run.open(cnn.trained_root)
    assert run.iterations_done() > 0 and not run.verify()
    summary = score(run, spark, run.latest_params()[1], "test", str(images), "all", str(tmp_path / "scores"), False)
    table = pq.read_table(summary["out"]).to_pylist()
    assert len(table) == 60
    for r in table:
        mine = rows[f"file://{r['source']}" if not r["source"].startswith("file:") else r["source"]]
        assert list(mine["probability"]) == pytest.approx(list(r["probabilities"]), abs=1e-6)
        assert mine["probability"].argmax() == r["predicted"]


def test_raw_bytes_with_integer_labels_and_encoded_bytes_with_string_labels(spark, images, tmp_path):
    import numpy as np
    from pyspark.sql import functions as F

    from sparkcnn.ml import CNNClassifier

    rng = np.random.default_rng(3)
    rows = [(rng.integers(0, 256, 8 * 10 * 3, dtype=np.uint8).tobytes(), 8, 10, 3, i % 3) for i in range(60)]
    raw = spark.createDataFrame(rows, "pixels binary, h int, w int, c int, label int")
    clf = CNNClassifier(imageCol="pixels", heightCol="h", widthCol="w", channelsCol="c",
                        runRoot=str(tmp_path / "raw"), **SMALL)
    out = clf.fit(raw).transform(raw).select("prediction", "predictedLabel").collect()
    assert {r["predictedLabel"] for r in out} <= {"0", "1", "2"}
    assert all(r["predictedLabel"] == str(int(r["prediction"])) for r in out)

    files = spark.read.format("binaryFile").load(str(images / "*" / "*"))
    encoded = files.withColumn("cls", F.element_at(F.split("path", "/"), -2))
    model = CNNClassifier(imageCol="content", labelCol="cls", runRoot=str(tmp_path / "encoded"), **SMALL).fit(encoded)
    assert model.classNames == ["cat", "dog", "owl"]
    out = model.transform(encoded).select("prediction", "predictedLabel").collect()
    assert all(model.classNames[int(r["prediction"])] == r["predictedLabel"] for r in out)
