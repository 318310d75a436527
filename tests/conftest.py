"""Shared fixtures: one local[2] SparkSession per test session, CIFAR-10 archives made on the fly, and
waiting on a sparkcnn process. Before the tests, the machine's JVM class archive is made if it is
missing, so that the many Spark drivers the tests start each start in about half the time."""
from __future__ import annotations

import io
import os
import pickle
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sparkcnn.pipeline.data.sources.cifar import (CIFAR10_TEST_BATCH as TEST_BATCH,
                                                  CIFAR10_TRAIN_BATCHES as TRAIN_BATCHES)

REPO = Path(__file__).resolve().parent.parent
FORBID_JVM = "SPARKCNN_FORBID_JVM"


def pytest_collection_modifyitems(config, items) -> None:
    """A test that uses the session's Spark, or trains end to end (`slow`), is a Spark test."""
    for item in items:
        if "spark" in getattr(item, "fixturenames", ()) or item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.spark)


def pytest_collection_finish(session) -> None:
    """Before the first Spark test, the machine's JVM class archive (waiting for a maker that a command
    started just before); a selection without Spark tests starts no JVM."""
    if any(item.get_closest_marker("spark") for item in session.items):
        subprocess.run([sys.executable, "-m", "sparkcnn.pipeline.spark.archive_maker"], cwd=REPO, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture(autouse=True)
def jvm_only_in_spark_tests(request, monkeypatch) -> None:
    """A test not marked `spark` that starts a JVM (here or in a process it starts) fails, naming the
    marker: the fast path `pytest -m "not spark"` stays free of JVMs."""
    if request.node.get_closest_marker("spark") is None:
        monkeypatch.setenv(FORBID_JVM, "1")


def wait_until(proc: subprocess.Popen, condition, what: str, timeout: float = 180) -> None:
    """Poll until condition() holds while proc runs; otherwise kill proc's process group and fail."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"process ended before {what} (rc {proc.returncode}):\n{out}\n{err}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.2)


def free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def beeline(url: str, query: str, password: str | None = None) -> list[str]:
    """The CSV lines (header first) that beeline, from the pyspark wheel's jars, prints for a query."""
    done = beeline_run(url, query, password)
    assert done.returncode == 0, done.stderr[-3000:]
    prompt = f"0: {url.split(';')[0]}> "  # beeline echoes its prompt once (the URL without its options)
    return [line.removeprefix(prompt) for line in done.stdout.splitlines() if line.strip()]


def serve(root: str, port: int, log: Path, *extra: str) -> subprocess.Popen:
    """`sparkcnn sql --serve` in its own process group, once it says it serves."""
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "sparkcnn", "sql", "--run-root", root, "--serve",
                                   "--port", str(port), *extra], stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True, cwd=log.parent)
    wait_until(server, lambda: "serving run" in log.read_text(), "the server", timeout=240)
    return server


def stop_server(server: subprocess.Popen, log: Path) -> None:
    """SIGTERM ends the server cleanly."""
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=120)
    assert server.returncode == 0 and "stopping the server (SIGTERM)" in log.read_text()


def assert_bitwise_equal(p: dict, q: dict) -> None:
    """Two sets of named arrays are the same, bit for bit."""
    assert set(p) == set(q)
    for name in p:
        assert p[name].tobytes() == q[name].tobytes(), name


def kill_when_paused(proc: subprocess.Popen, marker: Path, timeout: float = 180) -> None:
    """Wait until the process pauses at its failpoint, then SIGKILL its whole process group."""
    wait_until(proc, marker.exists, "its failpoint", timeout)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="session")
def spark():
    from sparkcnn.pipeline import config
    from sparkcnn.pipeline.spark.session import session

    spark = session(config.from_dict({"spark": {"master": "local[2]"}}), app_name="sparkcnn-tests")
    yield spark
    spark.stop()


def cifar_batch(n: int, seed: int, labels=None, data=None) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"synthetic",
        b"labels": list(rng.integers(0, 10, n)) if labels is None else labels,
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8) if data is None else data,
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def write_archive(path: Path, batches: dict[str, object], raw: dict[str, bytes] | None = None) -> Path:
    """A .tar.gz in CIFAR-10's python layout holding the given batch dicts (and raw members)."""
    with tarfile.open(path, "w:gz") as tar:
        members = {name: pickle.dumps(b, protocol=2) for name, b in batches.items()}
        members.update(raw or {})
        for name, payload in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


@pytest.fixture
def synthetic_archive(tmp_path):
    """A valid tiny CIFAR-10 archive: 5 x 40 training images, 30 test images."""
    batches = {name: cifar_batch(40, i) for i, name in enumerate(TRAIN_BATCHES)}
    batches[TEST_BATCH] = cifar_batch(30, 99)
    return write_archive(tmp_path / "tiny.tar.gz", batches)


# a network small enough for tests on tiny images of 3 classes
SMALL_NET = ['model.layers=[{type="conv", filters=4, kernel=3, padding=1}, {type="relu"}, {type="max_pool"}, '
             '{type="fc", units=3}]']


def image(rng, shape) -> Image.Image:
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    return Image.fromarray(pixels[:, :, 0] if shape[2] == 1 else pixels)


def image_folder(root, classes=("cat", "dog", "owl"), per_class=8, shape=(8, 10, 3), seed=0):
    """DIR/<class>/<n>.png|jpg: PNGs and (lossy) JPEGs of random pixels."""
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            suffix = "jpg" if n % 4 == 3 else "png"
            image(rng, shape).save(root / c / f"{n:03d}.{suffix}")
    return root


def beeline_run(url: str, query: str, password: str | None = None) -> subprocess.CompletedProcess:
    """beeline, from the pyspark wheel's jars, run on a query (as user `analyst` when given a password)."""
    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    login = ["-n", "analyst", "-p", password] if password is not None else []
    return subprocess.run(["java", "-cp", f"{jars}/*", "org.apache.hive.beeline.BeeLine", "-u", url, *login,
                           "--outputformat=csv2", "--silent=true", "--showHeader=true", "-e", query],
                          capture_output=True, text=True, timeout=180)


def layers_override(layers) -> str:
    """The `model.layers=...` override of a declared layer list."""
    import json

    return "model.layers=" + json.dumps(layers).replace('": ', '" = ')


def start_run(settings: list[str], root, *extra: str):
    """A run root made with the given settings (and extra overrides), its config saved."""
    from sparkcnn.pipeline import config
    from sparkcnn.pipeline.training.run import Run

    run = Run(config.load(overrides=[*settings, f'run.root="{root}"', *extra]))
    run.save_config()
    return run
