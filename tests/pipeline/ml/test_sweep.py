"""`sparkcnn sweep`: a grid's trials under one run root sharing its ingest, resumed when run again,
compared by `sparkcnn report`; a grid over a key that changes the ingest is refused."""
from __future__ import annotations

from pathlib import Path

import pytest

from sparkcnn.pipeline.cli import main as cli
from tests.conftest import SMALL_NET, image_folder

pytestmark = pytest.mark.spark


def test_sweep_trains_resumes_and_reports(spark, tmp_path, capsys):
    from sparkcnn.pipeline.ml.trials import trial_roots
    from sparkcnn.pipeline.training.run import Run

    data = image_folder(tmp_path / "images", per_class=20)
    root = tmp_path / "sweep"
    args = ["sweep", "--run-root", str(root), "--data", str(data), "--epochs", "1", "--batch-size", "18",
            "--mode", "fused", "--set", SMALL_NET[0], "--set", "train.shard_size=9",
            "--grid", "train.learning_rate=[0.01, 0.02]", "--grid", "train.momentum=[0.0, 0.9]", "--parallel", "2"]
    assert cli.main(args) == 0
    roots = trial_roots(str(root))
    assert len(roots) == 4 and all(Run.open(r).iterations_done() == 3 for r in roots)
    first = capsys.readouterr().out
    assert first.count("test accuracy") == 4
    assert cli.main(args) == 0  # again: every trial is finished, nothing is recomputed
    assert cli.main(["status", "--run-root", roots[0]]) == 0  # a trial is a run root like any other
    assert cli.main(["report", "--run-root", roots[0], "--out", str(tmp_path / "trial-report")]) == 0
    assert len(trial_roots(str(root))) == 4
    assert cli.main(["report", "--run-root", str(root), "--out", str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.count("train.learning_rate=") == 4 and (tmp_path / "report" / "trials.png").exists()
    from sparkcnn import open_run

    best = open_run(str(root), spark).sql("SELECT trial, settings, MAX(accuracy) AS accuracy FROM trial_metrics "
                                          "WHERE kind = 'eval' GROUP BY trial, settings").to_pylist()
    assert len(best) == 4 and all('"train.learning_rate"' in r["settings"] for r in best)
    scored = open_run(str(root), spark).sql("SELECT trial, COUNT(*) AS n FROM trial_evaluate GROUP BY trial").to_pylist()
    assert len(scored) == 4 and len({r["n"] for r in scored}) == 1
    bad = [*args[:-4], "--grid", "data.test_fraction=[0.1, 0.2]"]
    assert cli.main(bad) == 2
    assert "data.test_fraction cannot vary across trials" in capsys.readouterr().err
    assert cli.main([*args, "--set", "data.test_fraction=0.3"]) == 2
    assert "was ingested with other data.test_fraction" in capsys.readouterr().err


def test_ctrl_c_stops_every_trial_and_a_second_sweep_resumes(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from sparkcnn.pipeline.ml.trials import trial_roots
    from sparkcnn.pipeline.training.run import Run
    from tests.conftest import REPO, wait_until

    data = image_folder(tmp_path / "images", per_class=20)
    root = tmp_path / "sweep"
    args = [sys.executable, "-m", "sparkcnn", "sweep", "--run-root", str(root), "--data", str(data),
            "--epochs", "8", "--batch-size", "18", "--mode", "fused", "--set", SMALL_NET[0],
            "--set", "train.shard_size=9", "--grid", "train.learning_rate=[0.01, 0.02]", "--parallel", "2"]
    proc = subprocess.Popen(args, cwd=REPO, start_new_session=True, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    updates = lambda: sum(any(n.endswith(".update.json") for n in os.listdir(f"{r}/manifest"))
                          for r in trial_roots(str(root))) if (root / "trials").exists() else 0
    wait_until(proc, lambda: updates() == 2, "both trials training", timeout=240)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.startswith("error: interrupted by SIGINT"), err
    runs = [Run.open(r) for r in trial_roots(str(root))]
    assert all(not list(Path(r.storage.url, "lock").iterdir()) for r in runs)
    assert all(r.iterations_done() < r.schedule().total_iterations for r in runs)
    done = subprocess.run(args, cwd=REPO, text=True, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert all(Run.open(r.storage.url).iterations_done() == r.schedule().total_iterations for r in runs)
