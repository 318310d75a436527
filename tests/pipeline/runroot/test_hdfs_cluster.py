"""Against a real HDFS (NameNode + 2 DataNodes) and a real Spark standalone cluster, both started by
the project's scripts: no mocks."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sparkcnn import open_run
from sparkcnn.pipeline import config, stage_keys
from sparkcnn.pipeline.query import sql, sql_server
from sparkcnn.pipeline.runroot import hdfs, layout
from sparkcnn.pipeline.runroot.storage import Storage
from sparkcnn.pipeline.spark import faults
from sparkcnn.pipeline.training.run import Run
from tests.conftest import REPO, SMALL_NET, image_folder, kill_when_paused, wait_until

pytestmark = pytest.mark.slow

HDFS_PORT = int(os.environ.get("SPARKCNN_TEST_HDFS_PORT", "19820"))
SPARK_PORT = int(os.environ.get("SPARKCNN_TEST_SPARK_PORT", "17077"))
HDFS = f"hdfs://127.0.0.1:{HDFS_PORT}"
CLUSTER = f"spark://127.0.0.1:{SPARK_PORT}"
SETTINGS = ["train.batch_size=200", "train.shard_size=50", "train.epochs=1", "run.keep_iterations=5"]
ITERATIONS = 2


def script(name: str, *args: str, env: dict) -> None:
    done = subprocess.run([str(REPO / "scripts" / name), *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{name} {args}: {done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    base = tmp_path_factory.mktemp("services")
    env = {**os.environ, "SPARKCNN_HDFS_PORT": str(HDFS_PORT), "SPARKCNN_SPARK_PORT": str(SPARK_PORT),
           "SPARKCNN_WORKER_MEMORY": "2g", "PYTHON": sys.executable}
    dirs = {"hdfs": str(base / "hdfs"), "spark": str(base / "spark")}
    script("hdfs.sh", "start", dirs["hdfs"], env=env)
    environ = pytest.MonkeyPatch()
    try:
        environ.setenv("HADOOP_CONF_DIR", f"{dirs['hdfs']}/conf/nn")  # names the NameNode's WebHDFS address
        environ.delenv(hdfs.WEBHDFS_ENV, raising=False)
        script("spark-cluster.sh", "start", dirs["spark"], env=env)
        yield {"env": env, **dirs}
    finally:
        environ.undo()
        subprocess.run([str(REPO / "scripts/spark-cluster.sh"), "stop", dirs["spark"]], env=env, capture_output=True)
        subprocess.run([str(REPO / "scripts/hdfs.sh"), "stop", dirs["hdfs"]], env=env, capture_output=True)


@pytest.fixture(scope="module")
def local_reference(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("local") / "run"
    run = Run(config.load(overrides=[*SETTINGS, f'run.root="{root}"']))
    run.save_config()
    run.train(spark, ITERATIONS + 1)
    return run


def sparkcnn(*args: str, failpoints: str = "", marker: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, faults.ENV: failpoints, faults.MARKER_ENV: str(marker or ""), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "sparkcnn", *args], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def ok(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"{out}\n{err}"
    return out


def train_args(root: str, *extra: str) -> list[str]:
    return ["train", "--run-root", root, "--iterations", str(ITERATIONS),
            *[a for s in SETTINGS for a in ("--set", s)], *extra]


def assert_same_params(run: Run, reference: Run, iteration: int = ITERATIONS) -> None:
    got, want = run.params_at(iteration), reference.params_at(iteration)
    assert set(got) == set(want)
    for name in want:
        assert got[name].tobytes() == want[name].tobytes(), name


def test_cluster_on_hdfs_equals_local(services, local_reference):
    root = f"{HDFS}/runs/cluster"
    ok(sparkcnn(*train_args(root, "--set", f'spark.master="{CLUSTER}"')))
    run = Run.open(root)
    assert run.storage.url == root and run.manifest.committed(stage_keys.iteration_key(1, "update"))
    assert_same_params(run, local_reference)
    assert not run.verify()


def test_sql_on_hdfs(services, spark, local_reference):
    root = f"{HDFS}/runs/cluster"
    run = Run.open(root)
    sql.register_views(spark, run)
    count = spark.sql("SELECT COUNT(*) FROM conv1_fwd WHERE iteration = 1").first()[0]
    assert count == 200
    proc = sparkcnn("sql", "--run-root", root, "--format", "csv",
                    "SELECT iteration, ROUND(AVG(loss), 6) AS loss FROM loss GROUP BY iteration ORDER BY iteration")
    lines = ok(proc).strip().splitlines()
    assert lines[0] == "iteration,loss" and [line.split(",")[0] for line in lines[1:]] == ["0", "1"]
    opened = open_run(root, spark)
    assert opened.sql("SELECT COUNT(*) AS n FROM conv1_fwd WHERE iteration = 1").column("n").to_pylist() == [200]
    assert opened.iterations("conv1_fwd") == [0, 1]
    expected = opened.sql("SELECT image_id, out FROM conv1_fwd WHERE iteration = 1 ORDER BY position")
    tensor = opened.tensor("conv1_fwd", "out", 1)
    assert tensor.shape == (200, *run.network.layer("conv1_fwd").out_shape)
    assert tensor[0].tobytes() == expected.column("out")[0].as_py()
    got = opened.params(ITERATIONS)
    assert all(got[name].tobytes() == value.tobytes() for name, value in local_reference.params_at(ITERATIONS).items())


def test_image_folder_on_hdfs_trains_as_the_same_folder_on_local_disk(services, spark, tmp_path):
    local = image_folder(tmp_path / "pets", per_class=10)
    data = Storage(f"{HDFS}/data/pets")
    for path in sorted(local.rglob("*.*")):
        data.write_bytes(path.relative_to(local).as_posix(), path.read_bytes())
    settings = [SMALL_NET[0], "train.batch_size=12", "train.shard_size=6"]
    root = f"{HDFS}/runs/pets"
    ok(sparkcnn("train", "--run-root", root, "--data", data.url, "--iterations", "2",
                *[a for s in settings for a in ("--set", s)]))
    run = Run.open(root)
    values = run.manifest.get("ingest")["values"]["all"]
    assert values["class_names"] == ["cat", "dog", "owl"] and values["source"] == data.url
    on_disk = Run(config.load(overrides=[*settings, f'data.path="{local}"', f'run.root="{tmp_path / "run"}"']))
    on_disk.save_config()
    on_disk.train(spark, 2)
    assert on_disk.manifest.get("ingest")["values"]["all"]["digest"] == values["digest"]
    assert_same_params(run, on_disk, 2)
    scored = Storage(f"{HDFS}/scored/pets")
    said = ok(sparkcnn("score", "--run-root", root, "--out", scored.url))
    assert f"scored {values['test']} images" in said and json.loads(scored.read_bytes("_SUCCESS"))["out"] == scored.url
    rows = sum(scored.read_parquet(name).num_rows for name in scored.listdir("") if name.endswith(".parquet"))
    assert rows == values["test"]


def test_driver_killed_mid_stage_on_hdfs_then_resume(services, local_reference, tmp_path):
    root = f"{HDFS}/runs/killed"
    marker = tmp_path / "paused"
    key = stage_keys.iteration_key(1, "pool1_bwd")
    proc = sparkcnn(*train_args(root), failpoints=f"in-task:{key}=pause", marker=marker)
    kill_when_paused(proc, marker, 300)
    run = Run.open(root)
    assert not run.manifest.committed(key) and run.retention.orphans()
    ok(sparkcnn("resume", "--run-root", root))
    assert_same_params(Run.open(root), local_reference)


def test_submit_script_trains_on_the_cluster(services, local_reference):
    root = f"{HDFS}/runs/submitted"
    sets = [a for s in SETTINGS for a in ("--set", s)]
    done = subprocess.run([str(REPO / "scripts/submit.sh"), CLUSTER, "--run-root", root, "--iterations", "1", *sets],
                          env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert_same_params(Run.open(root), local_reference, 1)


def test_commit_primitives_on_hdfs(services):
    storage = Storage(f"{HDFS}/primitives")
    storage.write_bytes("a/file", b"old")
    storage.write_bytes("a/file", b"new")
    assert storage.read_bytes("a/file") == b"new"
    assert storage.create_exclusive("a/entry", b"first") and not storage.create_exclusive("a/entry", b"second")
    assert storage.read_bytes("a/entry") == b"first"
    with pytest.raises(RuntimeError):
        with storage.fs.open(storage.path("a/broken"), "wb") as f:
            f.write(b"half")
            raise RuntimeError("the task died mid-write")
    assert storage.listdir("a") == ["entry", "file"]


def test_bench_rows_on_hdfs_and_the_cluster_train_what_local_staged_trains(services, tmp_path):
    out = tmp_path / "bench"
    ok(sparkcnn("bench", "--images", "100", "--scaling", "100", "--repeat", "1", "--no-torch", "--no-cache-policies",
                "--epoch-images", "", "--out", str(out), "--run-root", f"{HDFS}/bench", "--master", CLUSTER))
    result = json.loads((out / "bench.json").read_text())
    rows = {r["name"]: r for r in result["rows"]}
    on_cluster = [f"{name} on {CLUSTER}" for name in ("staged", "staged on hdfs", "memory", "fused")]
    assert list(rows) == ["numpy (1 process)", "staged", "staged on hdfs", "staged, job per stage", "memory", "fused",
                          *on_cluster]
    for name in ["staged on hdfs", *on_cluster]:
        assert rows[name]["same_params"] is True, name
    assert rows["staged on hdfs"]["root"].startswith(f"{HDFS}/bench/")
    # the bench's HDFS run roots (gigabytes at real sizes) are gone once it ends
    assert not any(Storage(rows[name]["root"]).exists("") for name in ("staged on hdfs", on_cluster[1]))
    # the shape each row ran on, for the cost model: local[2]'s threads, the cluster's 2 one-core workers
    assert {(r["slots"], r["replication"]) for n, r in rows.items() if n.startswith(("staged", "memory", "fused"))
            and "hdfs" not in n} == {(2, 1)}
    assert rows["staged on hdfs"]["replication"] == rows[on_cluster[1]]["replication"] == 2
    local, remote = rows["staged"]["storage"], rows["staged on hdfs"]["storage"]
    assert rows["staged on hdfs"]["bytes_written"] == rows["staged"]["bytes_written"] > 0
    assert remote["files_written"] == local["files_written"] > 0 and remote["files_read"] == local["files_read"] > 0
    assert remote["namenode_ops"]["CreateFileOps"] >= remote["files_written"] and not local["namenode_ops"]
    hdfs_total = rows["staged on hdfs"]["total"]
    assert result["ratios"]["hdfs_to_staged"] == pytest.approx(hdfs_total / rows["staged"]["total"])
    assert result["ratios"]["hdfs_to_memory"] == pytest.approx(hdfs_total / rows["memory"]["total"])


def test_run_completes_with_a_datanode_stopped_mid_run(services, local_reference):
    """Runs last: it stops DataNode 2 of the module's HDFS for good (replication 2, one DataNode left)."""
    root = f"{HDFS}/runs/datanode-lost"
    proc = sparkcnn(*train_args(root))
    storage, entry = Storage(root), layout.manifest_entry(stage_keys.iteration_key(1, 'relu1_fwd'))
    wait_until(proc, lambda: storage.exists(entry), "relu1_fwd of iteration 1 committed", 300)
    script("hdfs.sh", "stop-datanode", "2", services["hdfs"], env=services["env"])
    assert proc.poll() is None, "the run ended before the DataNode was stopped"
    ok(proc)
    run = Run.open(root)
    assert_same_params(run, local_reference)
    assert not run.verify()


def outward_address() -> str:
    """An address of this machine other than loopback, where it has one."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def test_jdbc_server_on_hdfs_sees_a_training_as_it_commits(services, tmp_path):
    import socket

    from tests.conftest import beeline, free_port, serve, stop_server

    root = f"{HDFS}/runs/served"
    marker = tmp_path / "paused"
    trainer = sparkcnn(*train_args(root), failpoints="after-commit:i000001.relu1_fwd=pause", marker=marker)
    wait_until(trainer, marker.exists, "the training's pause in iteration 1")
    host = outward_address()
    port = free_port(host)
    log = tmp_path / "server.log"
    secret = tmp_path / "password"
    secret.write_text("served-on-hdfs\n")
    server = serve(root, port, log, "--host", host, "--password-file", str(secret))
    try:
        url = f"jdbc:hive2://{host}:{port}/default"
        assert url in log.read_text()
        query = "SELECT (SELECT COUNT(DISTINCT iteration) FROM relu1_fwd) AS relu, " \
                "(SELECT COUNT(DISTINCT iteration) FROM loss) AS loss"
        # mid-iteration 1: its relu1_fwd is committed, loss not
        assert beeline(url, query, "served-on-hdfs") == ["relu,loss", "2,1"]
        if host != "127.0.0.1":
            with socket.socket() as probe:
                assert probe.connect_ex(("127.0.0.1", port)) != 0  # bound to --host only
        os.killpg(trainer.pid, 9)
        trainer.wait()
        ok(sparkcnn(*train_args(root)))
        time.sleep(3 * sql_server.REFRESH_S)
        assert beeline(url, query, "served-on-hdfs") == ["relu,loss", "2,2"]
    finally:
        if trainer.poll() is None:
            os.killpg(trainer.pid, 9)
        stop_server(server, log)
