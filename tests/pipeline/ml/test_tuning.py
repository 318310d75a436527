"""Tuning: fitMultiple's trials share one ingest by reference, train in parallel under pyspark's tuners,
and are tracked in MLflow; bad input is one clear error before anything is written."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.pipeline.ml.test_estimator import SMALL, image_frame, images  # noqa: F401  (the module's image fixture)


def indexed(spark, folder):
    from pyspark.ml.feature import StringIndexer

    df = image_frame(spark, folder)
    return StringIndexer(inputCol="cls", outputCol="label").fit(df).transform(df)


def trials_share_their_ingest(runs) -> list[int]:
    """Check every base run root under `runs`: each of its trials is a run root of its own whose ingest
    names the base's files by reference, trained and verified, and whose gc leaves the shared files.
    Returns the number of trials of each base, sorted."""
    from sparkcnn.pipeline.ml.trials import trial_roots
    from sparkcnn.pipeline.training.run import Run

    counts = []
    for base in runs.iterdir():
        trials = trial_roots(str(base))
        assert len(set(trials)) == len(trials)
        shared = sorted(p.name for p in (base / "data" / "images").iterdir())
        for root in trials:
            run = Run.open(root)
            assert all(f["path"].startswith("../../data/") for f in run.manifest.files("ingest", "images"))
            assert run.iterations_done() > 0 and not run.verify()
            run.collect_garbage()
        assert sorted(p.name for p in (base / "data" / "images").iterdir()) == shared
        counts.append(len(trials))
    return sorted(counts)


def test_train_validation_split_trials_share_one_ingest(spark, images, tmp_path):
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    from pyspark.ml.tuning import ParamGridBuilder, TrainValidationSplit, TrainValidationSplitModel

    from sparkcnn.ml import CNNClassificationModel, CNNClassifier

    df = indexed(spark, images).cache()
    clf = CNNClassifier(runRoot=str(tmp_path / "runs"), **SMALL)
    grid = ParamGridBuilder().addGrid(clf.learningRate, [0.01, 0.05]).addGrid(clf.batchSize, [12, 18]).build()
    tvs = TrainValidationSplit(estimator=clf, estimatorParamMaps=grid, evaluator=MulticlassClassificationEvaluator(),
                               trainRatio=0.7, parallelism=2, seed=1)
    best = tvs.fit(df)
    assert isinstance(best.bestModel, CNNClassificationModel) and len(best.validationMetrics) == 4
    best.write().save(str(tmp_path / "tvs"))
    loaded = TrainValidationSplitModel.load(str(tmp_path / "tvs"))
    predictions = lambda m: [r["prediction"] for r in m.transform(df).orderBy("image.origin").collect()]
    assert predictions(loaded) == predictions(best)
    # the training split's ingest with its 4 trials, the whole frame's with the refit
    assert trials_share_their_ingest(tmp_path / "runs") == [1, 4]


def test_docs_notebook_cross_validator_in_a_pipeline(spark, images, tmp_path):
    """docs/ml.md's notebook, scaled down: Spark's image source -> Pipeline([StringIndexer,
    CrossValidator(CNNClassifier, 2-point grid, numFolds=2, parallelism=2)]) -> save -> load -> transform.
    Half of each fold's ~30 rows are held out: with the usual 0.2, about one run in 300 drew a fold whose rows
    held no test image (the origins, hence the split, change with the temporary folder), a clear DataError."""
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    from pyspark.ml.feature import StringIndexer
    from pyspark.ml.tuning import CrossValidator, CrossValidatorModel, ParamGridBuilder

    from sparkcnn.ml import CNNClassificationModel, CNNClassifier

    df = image_frame(spark, images)  # the notebook's two lines: format("image") and `cls` from the folder
    clf = CNNClassifier(runRoot=str(tmp_path / "runs"), **{**SMALL, "testFraction": 0.5})
    grid = ParamGridBuilder().addGrid(clf.learningRate, [0.01, 0.05]).build()
    cv = CrossValidator(estimator=clf, estimatorParamMaps=grid, evaluator=MulticlassClassificationEvaluator(),
                        numFolds=2, parallelism=2)
    model = Pipeline(stages=[StringIndexer(inputCol="cls", outputCol="label"), cv]).fit(df)
    model.write().overwrite().save(str(tmp_path / "models" / "photos"))

    indexer, tuned = model.stages
    assert isinstance(tuned, CrossValidatorModel) and len(tuned.avgMetrics) == len(grid) == 2
    assert all(0 <= m <= 1 for m in tuned.avgMetrics)
    assert isinstance(tuned.bestModel, CNNClassificationModel)
    # each fold's training rows are one ingest with one trial per grid point; the whole frame's, the refit
    assert trials_share_their_ingest(tmp_path / "runs") == [1, 2, 2]

    loaded = PipelineModel.load(str(tmp_path / "models" / "photos"))
    assert isinstance(loaded.stages[-1], CrossValidatorModel)
    assert loaded.stages[-1].avgMetrics == tuned.avgMetrics

    def predictions(m):
        rows = m.transform(df).select("image.origin", "cls", "prediction", "probability", "predictedLabel")
        return {r["origin"]: r for r in rows.collect()}

    before, after = predictions(model), predictions(loaded)
    assert len(before) == 60 and before == after
    assert {r["predictedLabel"] for r in after.values()} <= {"cat", "dog", "owl"}
    assert all(r["predictedLabel"] == indexer.labels[int(r["prediction"])] for r in after.values())


def test_fit_multiple_is_a_thread_safe_iterator_and_refits_reuse(spark, images, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from sparkcnn.ml import CNNClassifier

    df = indexed(spark, images)
    clf = CNNClassifier(runRoot=str(tmp_path / "runs"), **SMALL)
    maps = [{clf.learningRate: 0.01}, {clf.learningRate: 0.03}]
    models = clf.fitMultiple(df, maps)
    with ThreadPoolExecutor(2) as pool:
        got = sorted(pool.map(lambda _: next(models), range(2)), key=lambda pair: pair[0])
    assert [i for i, _ in got] == [0, 1] and got[0][1].trained_root != got[1][1].trained_root
    assert got[1][1].getOrDefault("learningRate") == 0.03
    again = clf.fit(df, maps[1])
    assert again.trained_root == got[1][1].trained_root  # same data and params: the same run root, reused


def test_bad_input_is_one_clear_error_and_writes_nothing(spark, images, tmp_path):
    from pyspark.sql import functions as F

    from sparkcnn.ml import CNNClassifier
    from sparkcnn.pipeline.errors import ConfigError, DataError

    df = indexed(spark, images)
    clf = CNNClassifier(runRoot=str(tmp_path / "runs"), **SMALL)
    cases = [
        (df.drop("label"), DataError, "no column label"),
        (df.withColumn("image", F.lit("x")), DataError, "image column image is string"),
        (df.withColumn("label", F.when(F.col("label") == 0, None).otherwise(F.col("label"))), DataError, "null"),
        (df.limit(0), DataError, "no rows"),
        (df.withColumn("label", F.col("label") + 0.5), DataError, "not whole numbers"),
    ]
    for frame, error, words in cases:
        with pytest.raises(error, match=words):
            clf.fit(frame)
    with pytest.raises(TypeError):
        CNNClassifier(epochs="many")
    with pytest.raises(ConfigError, match="seed cannot vary"):
        clf.fitMultiple(df, [{clf.seed: 1}, {clf.seed: 2}])
    assert not (tmp_path / "runs").exists()
    garbage = spark.createDataFrame([(b"not an image", i % 3) for i in range(30)], "image binary, label int")
    with pytest.raises(DataError, match="not a readable image"):
        clf.fit(garbage)
    assert not any(p.name == "manifest" for p in (tmp_path / "runs").rglob("*"))  # nothing committed


def test_estimator_save_and_load(spark, tmp_path):
    from sparkcnn.ml import CNNClassifier

    clf = CNNClassifier(runRoot=str(tmp_path / "runs"), **SMALL)
    clf.write().save(str(tmp_path / "clf"))
    loaded = CNNClassifier.load(str(tmp_path / "clf"))
    assert loaded.getOrDefault("layers") == SMALL["layers"] and loaded.getOrDefault("batchSize") == 18


def test_mlflow_nested_runs(spark, images, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from sparkcnn.ml import CNNClassifier

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    clf = CNNClassifier(runRoot=str(tmp_path / "runs"), mlflowUri=uri, **SMALL)
    models = list(clf.fitMultiple(indexed(spark, images), [{clf.learningRate: 0.01}, {clf.learningRate: 0.02}]))
    assert len(models) == 2
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("sparkcnn").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 2
    assert {r.data.params["train.learning_rate"] for r in children} == {"0.01", "0.02"}
    for child in children:
        assert "loss" in child.data.metrics and "test_accuracy" in child.data.metrics
        assert len(client.get_metric_history(child.info.run_id, "loss")) >= 2
        names = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"model.onnx", "report"} <= names
    assert (tmp_path / "mlartifacts").is_dir() and not (REPO / "mlruns").exists()


def test_nothing_imports_mlflow_without_tracking():
    code = ("import sys, sparkcnn.ml, sparkcnn.pipeline.cli.main, sparkcnn.pipeline.ml.trials, sparkcnn.pipeline.ml.tracking; "
            "assert 'mlflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_sparkcnn_train_logs_to_mlflow(spark, images, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from sparkcnn.pipeline.cli import main as cli
    from tests.conftest import SMALL_NET

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert cli.main(["train", "--run-root", str(tmp_path / "run"), "--data", str(images), "--epochs", "1",
                     "--batch-size", "18", "--mode", "fused", "--set", SMALL_NET[0], "--set", "train.shard_size=9",
                     "--set", f'tracking.mlflow_uri="{uri}"']) == 0
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("sparkcnn").experiment_id])
    assert run.data.params["train.batch_size"] == "18" and "test_accuracy" in run.data.metrics
    assert {"model.onnx", "report"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
