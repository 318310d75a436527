"""Progress display, the HTML report, evaluate and predict on a tiny run."""
from __future__ import annotations

import io
import re
import struct

import numpy as np
import pytest

from sparkcnn.pipeline import config, stage_keys
from sparkcnn.pipeline.cli.main import main
from sparkcnn.pipeline.cli.progress import Progress
from sparkcnn.pipeline.data.sources.cifar import CIFAR10_CLASSES as CLASSES
from sparkcnn.pipeline.deploy.predict import evaluate, read_test_split
from sparkcnn.pipeline.query.report import write_report
from sparkcnn.pipeline.training.run import Run

pytestmark = pytest.mark.slow


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(scope="module")
def trained(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("report") / "run"
    run = Run(config.load(overrides=["train.images=200", "train.batch_size=100", "train.shard_size=50",
                                     "train.epochs=2", "run.keep_iterations=10", f'run.root="{root}"']))
    run.save_config()
    screen = Terminal()
    progress = Progress(run, screen)
    run.train(spark, on_stage=progress.after, before_stage=progress.before)
    return run, screen.getvalue()


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_live_progress_on_a_terminal(trained):
    _, screen = trained
    assert "\r\x1b[2K" in screen
    live = screen.split("\r\x1b[2K")
    assert any(re.search(r"epoch 1/2 \| iteration \d/4 \| stage i00000\d\.\w+ \| loss \d\.\d{4} \| [\d,]+ img/s \| left",
                         part) for part in live)
    assert "epoch 2: test loss" in screen


def test_plain_log_lines_when_not_a_terminal(trained):
    run, _ = trained
    log = io.StringIO()
    progress = Progress(run, log)
    outcome = type("Outcome", (), {"key": stage_keys.iteration_key(3, "update"), "seconds": 1.0, "rows": 0, "bytes": 0})
    progress.after(run, outcome)
    assert "\r" not in log.getvalue() and "iteration 4/4" in log.getvalue()


def test_report_charts_and_numbers(trained, tmp_path):
    run, _ = trained
    figures = write_report(run, tmp_path)
    page = (tmp_path / "report.html").read_text()
    sizes = {"curves.png": (1000, 400), "stages.png": (1000, 400), "activations.png": (1200, 320),
             "confusion.png": (600, 550)}
    for name, size in sizes.items():
        assert png_size(tmp_path / name) == size
        assert f"src='{name}'" in page
    width, height = png_size(tmp_path / "misclassified.png")
    assert width == 1200 and height == 4 * 170
    evals = {m["epoch"] + 1: m for m in run.metrics().to_pylist() if m["kind"] == "eval"}
    assert figures["curves"]["test_accuracy"] == {e: m["accuracy"] for e, m in evals.items()}
    for e, m in evals.items():
        assert f"<td>{e}</td><td>{m['loss']:.4f}</td><td>{m['accuracy']:.4f}</td>" in page
    stage_rows = [m for m in run.metrics().to_pylist() if m["kind"] == "stage" and m["stage"] == "conv1_fwd"]
    assert figures["stages"]["staged"]["conv1_fwd"] == pytest.approx(np.mean([m["seconds"] for m in stage_rows]))
    matrix = np.array(figures["confusion"])
    result = evaluate(run, run.params_at(4))
    assert matrix.sum() == 1000 and np.trace(matrix) == round(evals[2]["accuracy"] * 1000)
    assert np.trace(matrix) == (result["predicted"] == result["label"]).sum()
    assert all(r["label"] != r["predicted"] for r in figures["misclassified"])
    assert figures["activations"]["relu1_fwd"]["iteration"] == 3


def test_predict_agrees_with_evaluate(trained, tmp_path, capsys):
    from PIL import Image

    run, _ = trained
    ids, labels, pixels = read_test_split(run)
    paths = []
    for i in range(12):
        path = tmp_path / f"test_{ids[i]}.png"
        Image.fromarray(pixels[i]).save(path)
        paths.append(str(path))
    big = tmp_path / "big.jpg"
    Image.fromarray(pixels[0]).resize((64, 64)).save(big, quality=95)
    assert main(["evaluate", "--run-root", run.storage.url]) == 0
    accuracy = float(re.search(r"test accuracy (\d\.\d+)", capsys.readouterr().out).group(1))
    result = evaluate(run, run.params_at(4))
    assert accuracy == pytest.approx(result["accuracy"], abs=1e-4)
    assert main(["predict", "--run-root", run.storage.url, *paths, str(big)]) == 0
    lines = capsys.readouterr().out.splitlines()
    predicted = [line.split(": ")[1].split()[0] for line in lines[:12]]
    assert predicted == [CLASSES[p] for p in result["predicted"][:12]]
    assert lines[12].startswith(f"{big}: ") and lines[12].split()[1] in CLASSES
    assert main(["export", "--run-root", run.storage.url, "--out", str(tmp_path / "p.npz")]) == 0
    assert main(["predict", "--run-root", run.storage.url, "--checkpoint", str(tmp_path / "p.npz"), paths[0]]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split(": ")[1].split()[0] == predicted[0]
    assert main(["predict", "--run-root", run.storage.url, str(tmp_path / "missing.png")]) == 2
    assert "missing.png: no such file" in capsys.readouterr().err
