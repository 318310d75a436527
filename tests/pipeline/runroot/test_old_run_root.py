"""A run root made by earlier code still opens, resumes to the very parameters a fresh run computes, and
answers SQL. The fixture `tests/fixtures/old_run.tar.gz` was made at commit 77f911d (before the packages
moved under `sparkcnn`): `image_folder(DIR, per_class=10)` of tests/conftest.py, SMALL_NET, batch 12,
shards of 6, 2 epochs, 2 of its 6 iterations trained."""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from tests.conftest import REPO, SMALL_NET, image_folder

pytestmark = pytest.mark.slow
FIXTURE = REPO / "tests" / "fixtures" / "old_run.tar.gz"
SETTINGS = ["train.batch_size=12", "train.shard_size=6", "train.epochs=2", *SMALL_NET]


def sparkcnn(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "sparkcnn", *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, done.stderr
    return done


def test_an_old_run_root_resumes_to_a_fresh_runs_parameters_and_answers_sql(tmp_path):
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tmp_path, filter="data")
    old = tmp_path / "run"
    assert "iterations done 2 of 6" in sparkcnn("status", "--run-root", str(old)).stdout
    sparkcnn("resume", "--run-root", str(old))
    query = sparkcnn("sql", "--run-root", str(old), "SELECT max(iteration) AS last FROM metrics", "--format", "csv")
    assert query.stdout.split() == ["last", "5"]
    images = image_folder(tmp_path / "images", per_class=10)
    fresh = tmp_path / "fresh"
    sparkcnn("train", "--run-root", str(fresh), "--data", str(images), *(a for s in SETTINGS for a in ("--set", s)))
    for name in ("old", "fresh"):
        sparkcnn("export", "--run-root", str(tmp_path / name if name == "fresh" else old),
                 "--out", str(tmp_path / f"{name}.npz"))
    old_params, fresh_params = np.load(tmp_path / "old.npz"), np.load(tmp_path / "fresh.npz")
    assert sorted(old_params) == sorted(fresh_params)
    for key in old_params:
        assert old_params[key].tobytes() == fresh_params[key].tobytes(), key
