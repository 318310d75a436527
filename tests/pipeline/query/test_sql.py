"""Spark SQL over a run: views, summary columns, tensor functions, and the README's queries checked
against numpy on the same data."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from sparkcnn.pipeline import config, stage_keys
from sparkcnn.pipeline.cli.main import main
from sparkcnn.pipeline.query import sql
from sparkcnn.pipeline.training.run import Run
from sparkcnn.schemas.tables import table_to_arrays
from sparkcnn.schemas.tensors import decode_column
from sparkcnn.stages import whole_network
from sparkcnn.stages.tabular import normalize
from tests.conftest import start_run

pytestmark = pytest.mark.slow

SETTINGS = ["train.images=200", "train.batch_size=100", "train.shard_size=50", "train.epochs=2",
            "run.keep_iterations=3", "run.checkpoint_every=1"]


@pytest.fixture(scope="module")
def run(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("sql") / "run"
    run = start_run(SETTINGS, root)
    run.train(spark)
    sql.register_views(spark, run)
    return run


def committed(run, stage, output="out"):
    """Decoded committed tables of a stage, by iteration."""
    tables = {}
    for key in run.manifest.keys():
        name, _, t = stage_keys.parse_key(key)
        if name == stage and output not in run.retention.retired_outputs(key):
            tables[t] = [pq.read_table(run.storage.path(f["path"])) for f in run.manifest.files(key, output)]
    return tables


def test_every_committed_table_is_a_view(spark, run):
    names = {t.name for t in spark.catalog.listTables()}
    assert {"images", "stats", "testset", "batches", "evaluate", "params", "velocity", "metrics", "manifest",
            "retired", *run.network.per_image_stages, *(f"{s}_grads" for s in run.network.gradient_stages)} <= names
    assert {"conv1_fwd", "relu1_bwd", "fc1_bwd_grads", "conv1_bwd_grads"} <= names and "conv1_bwd" not in names
    assert spark.sql("SELECT COUNT(*) FROM images").first()[0] == 3000
    assert spark.sql("SELECT COUNT(DISTINCT iteration) FROM conv1_fwd").first()[0] == 3
    keys = spark.sql("SELECT * FROM loss LIMIT 1").columns
    assert {"run_id", "stage", "iteration", "epoch", "shard", "image_id", "label"} <= set(keys)
    assert spark.sql("SELECT COUNT(*) FROM retired").first()[0] > 0
    assert spark.sql("SELECT COUNT(*) FROM manifest").first()[0] == len(run.manifest.keys())


def test_summary_columns_match_numpy(spark, run):
    rows = spark.sql("SELECT image_id, out_mean, out_std, out_min, out_max, out_l2, out_zeros FROM relu1_fwd "
                     "WHERE iteration = 3 ORDER BY shard, position").toArrow()
    out = np.concatenate([decode_column(t, "out") for t in committed(run, "relu1_fwd")[3]]).reshape(100, -1)
    np.testing.assert_allclose(rows.column("out_mean").to_numpy(), out.mean(axis=1, dtype=np.float64), rtol=1e-9)
    np.testing.assert_allclose(rows.column("out_std").to_numpy(), out.astype(np.float64).std(axis=1), rtol=1e-6)
    np.testing.assert_array_equal(rows.column("out_max").to_numpy(), out.max(axis=1))
    np.testing.assert_allclose(rows.column("out_l2").to_numpy(), np.linalg.norm(out.astype(np.float64), axis=1))
    np.testing.assert_array_equal(rows.column("out_zeros").to_numpy(), (out == 0).mean(axis=1))


def test_tensor_functions_decode(spark, run):
    row = spark.sql("SELECT pixels, tensor_array(pixels, 'uint8') a, tensor_element(pixels, 'uint8', 5) e, "
                    "tensor_channel_mean(pixels, 'uint8', 3, 2) m FROM images WHERE image_id = 7").first()
    pixels = np.frombuffer(row["pixels"], np.uint8)
    assert row["a"] == pixels.astype(float).tolist() and row["e"] == pixels[5]
    assert row["m"] == pytest.approx(pixels.reshape(-1, 3)[:, 2].mean())


def test_dead_relu_fraction_per_channel_per_iteration(spark, run):
    got = spark.sql("""
        SELECT iteration, c AS channel, AVG(tensor_channel_zeros(out, 'float32', 32, c)) AS dead
        FROM relu1_fwd LATERAL VIEW explode(sequence(0, 31)) channels AS c
        GROUP BY iteration, c ORDER BY iteration, c""").toArrow().to_pylist()
    for t, tables in committed(run, "relu1_fwd").items():
        out = np.concatenate([decode_column(tb, "out") for tb in tables])
        expected = (out == 0).mean(axis=(0, 1, 2))
        mine = [r["dead"] for r in got if r["iteration"] == t]
        np.testing.assert_allclose(mine, expected, rtol=1e-12)


def test_gradient_l2_norm_per_layer_over_iterations(spark, run):
    got = spark.sql("""
        SELECT iteration, split(name, '[.]')[0] AS layer, SQRT(SUM(g * g)) AS l2 FROM (
          SELECT iteration, name, i, SUM(x) AS g FROM (
            SELECT iteration, name, posexplode(tensor_array(value, 'float32')) AS (i, x) FROM fc1_bwd_grads
            UNION ALL
            SELECT iteration, name, posexplode(tensor_array(value, 'float32')) AS (i, x) FROM conv1_bwd_grads)
          GROUP BY iteration, name, i)
        GROUP BY iteration, layer ORDER BY iteration, layer""").toArrow().to_pylist()
    assert {r["iteration"] for r in got} == {1, 2, 3}
    for stage, layer in (("fc1_bwd", "fc1"), ("conv1_bwd", "conv1")):
        for t, tables in committed(run, stage, "grads").items():
            grads = [table_to_arrays(tb) for tb in tables]
            total = {n: sum(g[n] for g in grads) for n in grads[0]}
            expected = np.sqrt(sum(float((v.astype(np.float64) ** 2).sum()) for v in total.values()))
            (mine,) = [r["l2"] for r in got if r["iteration"] == t and r["layer"] == layer]
            assert mine == pytest.approx(expected, rel=1e-5)


def test_highest_loss_test_images(spark, run):
    got = spark.sql("""
        SELECT image_id, label, predicted, loss FROM evaluate
        WHERE eval_epoch = (SELECT MAX(eval_epoch) FROM evaluate)
        ORDER BY loss DESC, image_id LIMIT 10""").toArrow().to_pylist()
    test = pq.read_table(run.storage.path(run.manifest.files("ingest", "images")[-1]["path"]))
    ctx = run.context(run.params_at(4))
    x = normalize(decode_column(test, "pixels"), ctx.mean, ctx.std)
    labels = test.column("label").to_numpy()
    losses, caches = whole_network.forward(x, labels, ctx)
    order = np.lexsort((test.column("image_id").to_numpy(), -losses))[:10]
    assert [r["image_id"] for r in got] == test.column("image_id").to_numpy()[order].tolist()
    assert [r["predicted"] for r in got] == caches[-1]["probs"].argmax(axis=1)[order].tolist()
    np.testing.assert_allclose([r["loss"] for r in got], losses[order], rtol=1e-5)


def test_seconds_per_stage_by_iteration(spark, run):
    got = spark.sql("SELECT iteration, stage, seconds FROM metrics WHERE kind = 'stage' "
                    "ORDER BY iteration, stage").toArrow().to_pylist()
    assert len(got) == 4 * len(run.network.iteration_stages)
    for r in got:
        assert r["seconds"] == run.manifest.get(stage_keys.iteration_key(r["iteration"], r["stage"]))["seconds"]


def test_histogram_of_one_channel(spark, run):
    got = spark.sql("""
        SELECT bin, SUM(n) AS count FROM (
          SELECT posexplode(tensor_channel_histogram(out, 'float32', 32, 7, 16, 0.0, 2.0)) AS (bin, n)
          FROM relu1_fwd WHERE iteration = 2)
        GROUP BY bin ORDER BY bin""").toArrow()
    out = np.concatenate([decode_column(t, "out") for t in committed(run, "relu1_fwd")[2]])[..., 7].reshape(-1)
    index = np.clip(((out - 0.0) / 2.0 * 16).astype(np.int64), 0, 15)
    np.testing.assert_array_equal(got.column("count").to_numpy(), np.bincount(index, minlength=16))


def test_views_see_committed_files_only(spark, run, tmp_path):
    stray = "iterations/i000003/conv1_fwd/out-0000-0123456789ab.parquet"
    first = run.manifest.files(stage_keys.iteration_key(3, "conv1_fwd"), "out")[0]["path"]
    run.storage.write_bytes(stray, run.storage.read_bytes(first))
    try:
        sources = sql.register_views(spark, run)
        assert stray not in sources["conv1_fwd"].files
        assert spark.sql("SELECT COUNT(*) FROM conv1_fwd WHERE iteration = 3").first()[0] == 100
    finally:
        run.storage.remove(stray)


def test_cli_formats_notes_and_views_sql(spark, run, tmp_path, capsys):
    root = run.storage.url
    assert main(["sql", "--run-root", root, "SELECT iteration, COUNT(*) AS n FROM conv1_fwd GROUP BY iteration "
                 "ORDER BY iteration"]) == 0
    captured = capsys.readouterr()
    assert "iteration |   n" in captured.out and "(3 rows)" in captured.out
    assert "note: view conv1_fwd: the outputs of 1 stage(s) were removed by retention" in captured.err
    assert main(["sql", "--run-root", root, "--format", "json", "SELECT image_id FROM images WHERE image_id < 2"]) == 0
    assert [json.loads(l) for l in capsys.readouterr().out.splitlines()] == [{"image_id": 0}, {"image_id": 1}]
    out = tmp_path / "r.parquet"
    assert main(["sql", "--run-root", root, "--format", "parquet", "--out", str(out),
                 "SELECT * FROM stats"]) == 0
    assert pq.read_table(out).num_rows == 3
    assert main(["sql", "--run-root", root, "SELECT * FROM nowhere"]) == 2
    assert "nowhere" in capsys.readouterr().err

    views = tmp_path / "views.sql"
    assert main(["sql", "--run-root", root, "--views-sql", str(views)]) == 0
    text = views.read_text()
    spark.conf.set("spark.sql.runSQLOnFiles", "true")  # a plain spark-sql shell's default; sparkcnn sql refuses paths
    for statement in [s for s in text.split(";\n") if s.strip().startswith("CREATE")]:
        spark.sql(statement)
    assert spark.sql("SELECT COUNT(*) FROM relu1_bwd").first()[0] == 300
    sql.register_views(spark, run)


def test_cli_files_hold_arrays_in_full_and_existing_out_is_kept(run, tmp_path, capsys):
    import base64
    import csv

    root, out = run.storage.url, tmp_path / "v.csv"
    query = "SELECT image_id, tensor_array(out, 'float32') AS v, out FROM conv1_fwd WHERE iteration = 3 LIMIT 1"
    assert main(["sql", "--run-root", root, query, "--format", "csv", "--out", str(out)]) == 0
    csv.field_size_limit(1 << 24)
    (row,) = list(csv.DictReader(out.open()))
    stored = np.frombuffer(base64.b64decode(row["out"]), np.float32)
    assert stored.size == 32 * 32 * 32 and json.loads(row["v"]) == stored.astype(np.float64).tolist()
    assert main(["sql", "--run-root", root, "SELECT 1 AS x", "--format", "csv", "--out", str(out)]) == 2
    assert "exists; add --overwrite" in capsys.readouterr().err and "image_id" in out.read_text()
    assert main(["sql", "--run-root", root, "SELECT 1 AS x", "--format", "json", "--out", str(out),
                 "--overwrite"]) == 0
    assert out.read_text() == '{"x": 1}\n'


def test_interactive_prompt(run, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sparkcnn", "sql", "--run-root", run.storage.url],
                          input="SELECT COUNT(*) AS n\n FROM testset;\nSELECT 1 +;\n\\q\n", text=True,
                          capture_output=True, timeout=300, env={**os.environ, "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert "1000" in proc.stdout and "error:" in proc.stdout


def cli_json(capsys, root, query):
    assert main(["sql", "--run-root", root, "--format", "json", query]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_python_api_answers_as_the_cli_does(spark, run, capsys):
    from sparkcnn import open_run

    opened = open_run(run.storage.url)
    assert opened.spark is spark  # the active session is reused
    query = "SELECT iteration, AVG(out_zeros) AS dead, COUNT(*) AS n FROM relu1_fwd GROUP BY iteration ORDER BY iteration"
    result = opened.sql(query)
    assert result.to_pylist() == cli_json(capsys, run.storage.url, query)
    assert list(result.to_pandas()["n"]) == [100, 100, 100]
    assert b"removed by retention" in result.schema.metadata[b"notes"]

    views = opened.views()
    assert {"images", "metrics", "manifest", "retired", "relu1_fwd", "conv1_bwd_grads"} <= set(views)
    assert all(opened.sql(f"SELECT COUNT(*) AS n FROM {v}").column("n")[0].as_py() >= 0 for v in views)

    assert opened.iterations("relu1_fwd") == [1, 2, 3]
    image = cli_json(capsys, run.storage.url, "SELECT image_id, tensor_array(out, 'float32') AS a FROM relu1_fwd "
                                              "WHERE iteration = 2 ORDER BY shard, position")
    shape = run.network.layer("relu1_fwd").out_shape
    one = opened.tensor("relu1_fwd", "out", iteration=2, image_id=image[5]["image_id"])
    assert one.shape == shape and one.dtype == np.float32
    np.testing.assert_array_equal(one.reshape(-1), np.array(image[5]["a"], np.float32))
    every = opened.tensor("relu1_fwd", "out", iteration=2)
    assert every.shape == (100, *shape)
    np.testing.assert_array_equal(every, np.concatenate([decode_column(t, "out") for t in committed(run, "relu1_fwd")[2]]))
    assert opened.tensor("relu1_fwd", "mask").shape[0] == 100  # the last stored iteration, the bitmask as stored

    grads = cli_json(capsys, run.storage.url, "SELECT shard, shape, tensor_array(value, dtype) AS a FROM conv1_bwd_grads"
                                              " WHERE iteration = 3 AND name = 'conv1.w' ORDER BY shard")
    w = opened.tensor("conv1_bwd", "conv1.w", iteration=3)
    assert w.shape == (len(grads), *grads[0]["shape"])
    np.testing.assert_array_equal(w.reshape(len(grads), -1), np.array([g["a"] for g in grads], np.float32))

    export = run.storage.path("exported.npz")
    assert main(["export", "--run-root", run.storage.url, "--out", export]) == 0
    with np.load(export) as saved:
        params = opened.params()
        assert set(params) == set(saved.files) and all(params[n].tobytes() == saved[n].tobytes() for n in params)
    capsys.readouterr()


def test_python_api_names_what_is_wrong(run, tmp_path):
    from sparkcnn.pipeline.errors import RunError
    from sparkcnn.pipeline.query.api import QueryError, open_run

    opened = open_run(run.storage.url)
    for query, word in (("SELECT * FROM nowhere", "nowhere"), ("SELECT no_such_column FROM loss", "no_such_column")):
        with pytest.raises(QueryError) as caught:
            opened.sql(query)
        message = str(caught.value)
        assert word in message and "\n" not in message and "at org.apache" not in message
    with pytest.raises(RunError, match="not a stage with stored tensors; stages: conv1_fwd"):
        opened.tensor("conv9_fwd", "out")
    with pytest.raises(RunError, match=r"iteration 0 of relu1_fwd is not stored; stored: 1-3"):
        opened.tensor("relu1_fwd", "out", iteration=0)
    with pytest.raises(RunError, match="has no tensor nothing; it has: out, mask"):
        opened.tensor("relu1_fwd", "nothing")
    with pytest.raises(RunError, match="holds no run"):
        open_run(str(tmp_path / "empty"))


def test_a_query_reads_the_entries_of_the_views_it_names_only(spark, run, monkeypatch):
    from sparkcnn.pipeline.runroot import retention

    opened = Run.open(run.storage.url)
    parsed = []
    parse_entry, parse_record = opened.manifest._parse, retention._parse_record
    monkeypatch.setattr(opened.manifest, "_parse", lambda key, data: parsed.append(key) or parse_entry(key, data))
    monkeypatch.setattr(retention, "_parse_record", lambda key, data: parsed.append(key) or parse_record(key, data))
    views = sql.RunViews(spark, opened)
    views.prepare("SELECT 1")
    assert parsed == [] and "conv1_fwd" in views.names()
    views.prepare("SELECT COUNT(*) FROM conv1_fwd")
    assert parsed and {stage_keys.parse_key(k)[0] for k in parsed} == {"conv1_fwd"}
    everything = sql.view_sources(Run.open(run.storage.url))
    assert views.sources["conv1_fwd"].signature() == everything["conv1_fwd"].signature()
    assert views.sources["conv1_fwd"].retired == everything["conv1_fwd"].retired != []


def test_views_follow_the_stages_as_they_commit(spark, tmp_path):
    from sparkcnn import open_run

    run = Run(config.load(overrides=[*SETTINGS, f'run.root="{tmp_path / "growing"}"']))
    run.save_config()
    run.train(spark, 1)
    opened = open_run(run.storage.url, spark)
    count = "SELECT COUNT(DISTINCT iteration) AS n FROM conv1_fwd"
    assert opened.sql(count).column("n")[0].as_py() == 1
    served = sql.RunViews(spark, Run.open(run.storage.url))  # as the JDBC server registers them: all, again and again
    served.register()
    run.train(spark, 2)
    assert opened.sql(count).column("n")[0].as_py() == 2
    spark.catalog.dropTempView("conv1_fwd")
    served.register()
    assert spark.sql(count).first()["n"] == 2
    assert opened.sql("SELECT COUNT(*) AS n FROM manifest").column("n")[0].as_py() == len(run.manifest.keys())


def test_jdbc_server_answers_beeline_as_the_cli_does(run, capsys, tmp_path):
    from tests.conftest import beeline, free_port, serve, stop_server

    query = "SELECT iteration, COUNT(*) AS n, ROUND(AVG(out_zeros), 6) AS dead FROM relu1_fwd GROUP BY iteration " \
            "ORDER BY iteration"
    assert main(["sql", "--run-root", run.storage.url, "--format", "csv", query]) == 0
    want = capsys.readouterr().out.splitlines()

    port = free_port()
    log = tmp_path / "server.log"
    server = serve(run.storage.url, port, log)
    try:
        assert f"jdbc:hive2://127.0.0.1:{port}/default" in log.read_text()
        assert beeline(f"jdbc:hive2://127.0.0.1:{port}/default", query) == want

        # a second server on the same port is refused, the port named
        assert main(["sql", "--run-root", run.storage.url, "--serve", "--port", str(port)]) == 2
        assert f"port {port} on 127.0.0.1 is not free" in capsys.readouterr().err
    finally:
        stop_server(server, log)
    assert not (tmp_path / "metastore_db").exists()
