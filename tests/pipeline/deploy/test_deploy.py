"""Deployment: ONNX export checked with onnxruntime against sparkcnn's own forward pass, and batch scoring
as a Spark job (its table, the `scores` view, bad input)."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from sparkcnn.pipeline import config
from sparkcnn.pipeline.cli.main import main
from sparkcnn.pipeline.deploy.predict import predict_arrays, read_test_split
from sparkcnn.pipeline.training.run import Run
from tests.conftest import image_folder

pytestmark = pytest.mark.slow

SAMPLE = ["train.batch_size=100", "train.shard_size=50", "run.keep_iterations=1", "run.checkpoint_every=0",
          "train.epochs=1"]
DEEP = ('model.layers=[{type="conv", filters=6, kernel=3, stride=2, padding=1}, {type="relu"}, '
        '{type="avg_pool", size=2}, {type="conv", filters=5, kernel=3, padding=1}, {type="relu"}, '
        '{type="max_pool", size=2, stride=1}, {type="dropout", rate=0.3}, {type="fc", units=7}, {type="relu"}, '
        '{type="fc", units=3}]')


def trained_run(spark, root, iterations, *settings) -> Run:
    run = Run(config.load(overrides=[*settings, f'run.root="{root}"']))
    run.save_config()
    run.train(spark, iterations)
    return run


@pytest.fixture(scope="module")
def sample_run(spark, tmp_path_factory):
    return trained_run(spark, tmp_path_factory.mktemp("deploy") / "run", 4, *SAMPLE)


@pytest.fixture(scope="module")
def gray_run(spark, tmp_path_factory):
    base = tmp_path_factory.mktemp("gray")
    data = image_folder(base / "gray", shape=(10, 12, 1), per_class=10)
    return trained_run(spark, base / "run", 2, DEEP, f'data.path="{data}"', "train.batch_size=12",
                       "train.shard_size=6"), data


def onnx_probabilities(path, pixels):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (name,) = [i.name for i in session.get_inputs()]
    return session.run(None, {name: pixels})[0]


@pytest.mark.parametrize("which", ["sample", "gray"])
def test_onnx_export_gives_sparkcnns_probabilities(sample_run, gray_run, tmp_path, capsys, which):
    import onnx

    run = sample_run if which == "sample" else gray_run[0]
    out = tmp_path / "model.onnx"
    assert main(["export", "--run-root", run.storage.url, "--format", "onnx", "--out", str(out)]) == 0
    assert "ONNX graph after" in capsys.readouterr().out
    model = onnx.load(str(out))
    assert json.loads({p.key: p.value for p in model.metadata_props}["class_names"]) == run.class_names()
    _, _, pixels = read_test_split(run)
    expected = predict_arrays(run, run.latest_params()[1], pixels)
    got = onnx_probabilities(out, pixels)
    assert got.shape == expected.shape and np.abs(got - expected).max() <= 1e-5
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).mean() > 0.99


def test_export_refuses_an_unknown_format_and_removed_parameters(sample_run, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--run-root", sample_run.storage.url, "--format", "tflite", "--out", str(tmp_path / "m")])
    assert exit_.value.code == 2 and "invalid choice: 'tflite'" in capsys.readouterr().err
    removed = next(i for i in range(5) if i not in sample_run.kept_params())
    assert main(["export", "--run-root", sample_run.storage.url, "--format", "onnx", "--iteration", str(removed),
                 "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    kept = ", ".join(map(str, sample_run.kept_params()))
    assert "were removed by the checkpoint policy" in err and f"kept here: after {kept} iterations" in err
    assert main(["score", "--run-root", sample_run.storage.url, "--iteration", str(removed),
                 "--out", str(tmp_path / "scores")]) == 2
    assert f"kept here: after {kept} iterations" in capsys.readouterr().err and not (tmp_path / "scores").exists()


def test_score_the_runs_test_split_and_query_it(sample_run, tmp_path, capsys):
    out = tmp_path / "scores"
    root = sample_run.storage.url
    assert main(["score", "--run-root", root, "--out", str(out)]) == 0
    said = capsys.readouterr().out
    ids, labels, pixels = read_test_split(sample_run)
    expected = predict_arrays(sample_run, sample_run.latest_params()[1], pixels)
    accuracy = (expected.argmax(axis=1) == labels).mean()
    assert f"scored {ids.size} images" in said and f"accuracy {accuracy:.4f} on {ids.size} labelled images" in said
    table = pq.read_table(out).sort_by("image_id")
    assert table.column("image_id").to_numpy().tolist() == ids.tolist()
    assert table.column("label").to_pylist() == labels.tolist()
    assert table.column("predicted").to_pylist() == expected.argmax(axis=1).tolist()
    probabilities = np.array(table.column("probabilities").to_pylist(), np.float32)
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-6)
    names = sample_run.class_names()
    assert table.column("predicted_name").to_pylist() == [names[p] for p in expected.argmax(axis=1)]
    assert json.loads((out / "_SUCCESS").read_text())["images"] == ids.size
    query = ("SELECT COUNT(*) AS n, SUM(CAST(s.label = t.label AS INT)) AS same FROM scores s "
             "JOIN testset t ON s.image_id = t.image_id")
    assert main(["sql", "--run-root", root, "--format", "csv", query]) == 0
    assert capsys.readouterr().out.splitlines()[1] == f"{ids.size},{ids.size}"

    assert main(["score", "--run-root", root, "--out", str(out)]) == 2
    assert f"output {out} exists; pass --overwrite" in capsys.readouterr().err
    assert main(["score", "--run-root", root, "--out", str(out), "--overwrite", "--split", "train",
                 "--iteration", str(sample_run.kept_params()[0])]) == 0
    train_images = sample_run.manifest.get("ingest")["values"]["all"]["train"]
    assert "split train" in capsys.readouterr().out and pq.read_table(out).num_rows == train_images


def test_score_an_unlabelled_folder_with_unreadable_images(gray_run, tmp_path, capsys):
    run, data = gray_run
    flat = tmp_path / "incoming"
    flat.mkdir()
    files = sorted(data.rglob("*.png"))[:7]
    for n, path in enumerate(files):
        (flat / f"{n}.png").write_bytes(path.read_bytes())
    (flat / "7.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "scored"
    assert main(["score", "--run-root", run.storage.url, "--data", str(flat), "--split", "all", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert "scored 7 images" in captured.out and "no labels comparable" in captured.out
    assert f"1 image(s) could not be read and were not scored: {flat / '7.png'}: not a readable image" in captured.err
    table = pq.read_table(out)
    assert table.num_rows == 7 and table.column("label").null_count == 7
    from sparkcnn.pipeline.deploy.predict import load_image

    pixels = np.stack([load_image(flat / f"{n}.png", run.network.image) for n in range(7)])
    by_source = dict(zip(table.column("source").to_pylist(), table.column("predicted").to_pylist()))
    expected = predict_arrays(run, run.latest_params()[1], pixels).argmax(axis=1)
    assert [by_source[str(flat / f"{n}.png")] for n in range(7)] == expected.tolist()


def test_scoring_shows_its_progress(spark):
    import io
    import time

    from sparkcnn.pipeline.cli.progress import TaskProgress

    stream = io.StringIO()
    job = spark.sparkContext.parallelize(range(4), 4).map(lambda i: time.sleep(0.6) or i)
    assert sorted(TaskProgress(spark, "scoring", stream, every=0.2)(4, job.collect)) == [0, 1, 2, 3]
    lines = stream.getvalue().splitlines()
    assert lines and all(line.startswith("scoring: ") and " of 4 pieces done, " in line for line in lines)
