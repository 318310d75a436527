"""Ordinary mistakes a user makes: each gets a clear error or does what it says, never a silently wrong
answer, a wedged run or a hang."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sparkcnn.pipeline import config, stage_keys
from sparkcnn.pipeline.cli.main import main
from sparkcnn.pipeline.errors import ConfigError
from sparkcnn.pipeline.training.run import Run
from tests.conftest import assert_bitwise_equal, cifar_batch, start_run, write_archive

pytestmark = pytest.mark.slow

SMALL = ["train.images=200", "train.batch_size=100", "train.shard_size=50", "train.epochs=2",
         "run.keep_iterations=2"]


def new_run(root: Path, *extra: str) -> Run:
    return start_run(SMALL, root, *extra)


def sparkcnn(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sparkcnn", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.fixture(scope="module")
def trained(spark, tmp_path_factory):
    run = new_run(tmp_path_factory.mktemp("mistakes") / "run")
    run.train(spark, 3)
    return run


# 1. checkpoints


class Unpickled:
    """Creates a file when unpickled: proof that a checkpoint was unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_a_checkpoint_that_is_not_this_networks_is_refused_naming_the_file(trained, tmp_path, capsys):
    root = trained.storage.url
    good = tmp_path / "good.npz"
    assert main(["export", "--run-root", root, "--out", str(good)]) == 0
    params = dict(np.load(good))
    marker = tmp_path / "unpickled"
    cases = {
        "ckpt.bin": (lambda p: p.write_bytes(b"not a checkpoint"), "not an .npz archive"),
        "absent.npz": (lambda p: None, "no such file"),
        "shape.npz": (lambda p: np.savez(p, **{**params, "fc1.w": params["fc1.w"][:5]}),
                      f"fc1.w has shape (5, 10), expected {params['fc1.w'].shape}"),
        "names.npz": (lambda p: np.savez(p, **{k: v for k, v in params.items() if k != "conv1.b"}, extra=params["conv1.b"]),
                      "missing conv1.b; unexpected array extra"),
        "dtype.npz": (lambda p: np.savez(p, **{**params, "conv1.b": params["conv1.b"].astype(np.float64)}),
                      "conv1.b is float64, expected float32"),
        "pickled.npz": (lambda p: np.savez(p, **{**params, "conv1.w": np.array([Unpickled(marker)], dtype=object)}),
                        "holds pickled objects"),
    }
    for name, (make, message) in cases.items():
        path = tmp_path / name
        make(path)
        for command in (["evaluate"], ["predict", str(tmp_path / "any.png")]):
            assert main([*command, "--run-root", root, "--checkpoint", str(path)]) == 2, name
            err = capsys.readouterr().err
            assert f"checkpoint {path}" in err and message in err, (name, err)
    assert not marker.exists(), "a checkpoint was unpickled"
    assert main(["evaluate", "--run-root", root, "--checkpoint", str(good)]) == 0
    assert f"{good}: test accuracy" in capsys.readouterr().out


# 2. cache policies changed between the stage that writes a cache and the stage that reads it

POLICY_CHANGES = [
    *[("relu1_fwd", "relu_mask", a, b) for a in ("bitmask", "bytes", "recompute")
      for b in ("bitmask", "bytes", "recompute") if a != b],
    ("pool1_fwd", "pool_argmax", "int8", "recompute"),
    ("pool1_fwd", "pool_argmax", "recompute", "int8"),
    ("pool1_bwd", "sparse_gradients", "false", "true"),
    ("pool1_bwd", "sparse_gradients", "true", "false"),
    ("relu1_bwd", "sparse_gradients", "false", "true"),
    ("relu1_bwd", "sparse_gradients", "true", "false"),
]


def policy(key: str, value: str) -> str:
    return f"cache.{key}={value}" if value in ("true", "false") else f'cache.{key}="{value}"'


def test_every_cache_policy_change_at_the_boundary_between_writer_and_reader(spark, tmp_path):
    """Iteration i switches policy POLICY_CHANGES[i] right after its writing stage commits; the run ends
    bitwise equal to one that never changed policy."""
    iterations = len(POLICY_CHANGES)
    settings = ["train.images=200", "train.batch_size=100", "train.shard_size=50", f"train.epochs={iterations // 2}"]
    plain = Run(config.load(overrides=[*settings, f'run.root="{tmp_path / "plain"}"']))
    plain.save_config()
    plain.train(spark, iterations)

    root = str(tmp_path / "changed")
    Run(config.load(overrides=[*settings, f'run.root="{root}"'])).save_config()
    for t, (writer, key, before, after) in enumerate(POLICY_CHANGES):
        run = Run.open(root, [policy(key, before)])
        run.save_config()
        while (next_key := run.next_stage()) != stage_keys.iteration_key(t, writer):
            run.run_stage(spark, next_key)
        run.run_stage(spark, next_key)
        run = Run.open(root, [policy(key, after)])
        run.save_config()
        run.train(spark, t + 1)
        assert run.iterations_done() == t + 1
    assert_bitwise_equal(Run.open(root).params_at(iterations), plain.params_at(iterations))


# 3. a damaged manifest entry


def test_a_damaged_manifest_entry_is_reported_and_recomputed(spark, tmp_path, capsys):
    plain = new_run(tmp_path / "plain")
    plain.train(spark, 2)
    run = new_run(tmp_path / "damaged")
    run.train(spark, 2)
    rel = f"manifest/{stage_keys.iteration_key(1, 'fc1_bwd')}.json"
    run.storage.write_bytes(rel, b"\x00garbage{")
    stale = f"manifest/{stage_keys.iteration_key(1, 'relu1_fwd')}.json"  # an entry that is not what its inputs give
    run.storage.write_bytes(stale, json.dumps({**json.loads(run.storage.read_bytes(stale)), "identity": "0" * 64}).encode())
    root = run.storage.url

    assert main(["status", "--run-root", root, "--verify"]) == 1
    out = capsys.readouterr().out
    assert f"{rel}: unreadable manifest entry" in out and "2 damaged" in out
    assert f"{stale}: computed with other settings or inputs than this run's" in out
    assert main(["status", "--run-root", root]) == 2
    assert "unreadable manifest entry" in capsys.readouterr().err

    assert main(["resume", "--run-root", root, "--iterations", "2"]) == 0
    out = capsys.readouterr().out
    assert "i000001.fc1_bwd" in out and "i000001.relu1_fwd" in out and "i000001.update" in out
    assert "will be recomputed" in out
    assert_bitwise_equal(Run.open(root).params_at(2), plain.params_at(2))
    assert main(["status", "--run-root", root, "--verify"]) == 0


# 4. values that pass validation but cannot train


def test_settings_that_cannot_train_are_refused_before_anything_is_created(tmp_path, capsys):
    for bad in ("train.learning_rate=inf", "train.momentum=nan", "train.weight_decay=-inf"):
        with pytest.raises(ConfigError, match=f"{bad.split('=')[0]} must be a finite number"):
            config.load(overrides=[bad])
    root = tmp_path / "never"
    assert main(["train", "--run-root", str(root), "--set", "train.learning_rate=inf"]) == 2
    assert main(["train", "--run-root", str(root), "--set",
                 'model.layers=[{type="conv", filters=8, kernel=40, padding=2}, {type="fc", units=10}]']) == 2
    err = capsys.readouterr().err
    assert "train.learning_rate must be a finite number" in err
    assert "layer conv1: a 40x40 kernel does not fit its 32x32 input with padding 2" in err
    assert "to continue" not in err and not root.exists()


def test_shard_sizes_that_do_not_divide_the_batch_are_announced():
    assert config.load(overrides=["train.batch_size=500", "train.shard_size=125"]).warnings() == []
    (uneven,) = config.load(overrides=["train.batch_size=500", "train.shard_size=150"]).warnings()
    assert "3 shard(s) of 150 images and one of 50" in uneven
    (large,) = config.load(overrides=["train.batch_size=100", "train.shard_size=150"]).warnings()
    assert "exceeds train.batch_size=100" in large


@pytest.mark.parametrize("mode", ["staged", "fused", "memory"])
def test_a_diverging_run_stops_at_that_iteration_and_a_branch_goes_on(spark, tmp_path, capsys, mode):
    root = new_run(tmp_path / "diverged", "train.learning_rate=1e30", f"run.mode={mode!r}").storage.url
    assert main(["resume", "--run-root", root, "--iterations", "3"]) == 2
    err = capsys.readouterr().err
    assert "iteration 1: the training loss is not a finite number" in err
    assert "from the parameters after 0 iterations" in err and "--branch NEW_ROOT" in err
    assert "to continue" not in err
    run = Run.open(root)
    assert run.iterations_done() == 1 and not run.manifest.committed(stage_keys.iteration_key(1, "update"))
    assert not run.manifest.committed(stage_keys.iteration_key(1, "loss"))
    assert main(["resume", "--run-root", root]) == 2, "a diverged run is not recomputed"
    assert "iteration 1: the training loss is not a finite number" in capsys.readouterr().err

    branch = str(tmp_path / "branch")
    assert main(["resume", "--run-root", root, "--branch", branch, "--set", "train.learning_rate=0.01",
                 "--iterations", "2"]) == 0
    new = Run.open(branch)
    assert new.schedule().start_iteration == 0 and new.iterations_done() == 2
    assert all(np.isfinite(p).all() for p in new.params_at(2).values())
    with open(Path(branch) / "config.json") as f:
        json.load(f, parse_constant=lambda c: pytest.fail(f"config.json holds {c}"))


# 5. a NameNode that is not there


@pytest.mark.parametrize("command", [["status"], ["train", "--iterations", "1"]])
def test_an_unreachable_hdfs_fails_within_seconds(command):
    start = time.monotonic()
    proc = sparkcnn(*command, "--run-root", "hdfs://127.0.0.1:1/x", timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert time.monotonic() - start < 60
    assert "cannot reach the HDFS NameNode at 127.0.0.1:1" in proc.stderr
    assert "Traceback" not in proc.stderr and "to continue" not in proc.stderr


# 6. local paths as given


def test_a_local_run_root_with_spaces_and_hash_is_used_as_given(spark, tmp_path, capsys):
    root = tmp_path / "with space" / "r #1"
    assert main(["train", "--run-root", str(root), "--iterations", "1", *[a for s in SMALL for a in ("--set", s)]]) == 0
    assert (root / "config.json").exists() and (root / "manifest" / "init.json").exists()
    assert not list(tmp_path.glob("with%20space*"))
    assert f"run root {root}" in capsys.readouterr().out
    run = Run.open(str(root))
    assert run.storage.url == str(root) and run.iterations_done() == 1
    assert Run.open(root.as_uri()).storage.url == str(root)
    assert main(["resume", "--run-root", str(root), "--iterations", "2"]) == 0
    assert Run.open(str(root)).iterations_done() == 2


# 8. what users see of a failure and of SQL errors


def test_a_failed_stage_shows_one_clean_error_and_logs_the_trace(tmp_path):
    root = tmp_path / "full"
    env = {**os.environ, "SPARKCNN_FAILPOINTS": f"write:{stage_keys.iteration_key(0, 'fc1_bwd')}=enospc"}
    sets = [a for s in SMALL for a in ("--set", s)]
    proc = subprocess.run([sys.executable, "-m", "sparkcnn", "train", "--run-root", str(root), *sets],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert lines[0] == "error: stage i000000.fc1_bwd failed: OSError: [Errno 28] No space left on device " \
                       "(injected at write:i000000.fc1_bwd)", proc.stderr
    assert lines[1].startswith(f"details: {root}/logs/") and lines[2:] == [
        f"run root: {root}", f"to continue: sparkcnn resume --run-root {root}"], proc.stderr
    log = Path(lines[1].split(": ", 1)[1]).read_text()
    assert "Traceback" in log and "No space left on device" in log and "at org.apache.spark" in log
    assert "Setting default log level" not in proc.stdout + proc.stderr
    assert "WARNING: Using incubator modules" not in proc.stdout + proc.stderr


def test_sql_on_an_unknown_view_gives_one_line(trained):
    proc = sparkcnn("sql", "--run-root", trained.storage.url, "SELECT * FROM nope")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: [TABLE_OR_VIEW_NOT_FOUND] The table or view `nope` cannot be found")
    assert len(proc.stderr.splitlines()) == 1, proc.stderr


# 9. messages that say what is wrong


def test_a_file_as_run_root_is_named_as_such(tmp_path, capsys):
    path = tmp_path / "a-file"
    path.write_text("x")
    for command in (["train", "--iterations", "1"], ["status"]):
        assert main([*command, "--run-root", str(path)]) == 2
        assert f"run root {path} is a file, not a folder" in capsys.readouterr().err


def test_a_missing_config_is_named_and_can_be_restored_from_the_original(spark, tmp_path, capsys):
    run = new_run(tmp_path / "run")
    run.train(spark, 1)
    (tmp_path / "run" / "config.json").unlink()
    root = run.storage.url
    assert main(["status", "--run-root", root]) == 2
    err = capsys.readouterr().err
    assert "has committed stages but its config.json is missing" in err and "--config FILE" in err
    assert main(["train", "--run-root", root, "--iterations", "2"]) == 2
    assert "does not match the one run root" in capsys.readouterr().err

    original = tmp_path / "original.toml"
    original.write_text("[train]\nimages = 200\nbatch_size = 100\nshard_size = 50\nepochs = 2\n"
                        "[run]\nkeep_iterations = 2\n")
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(original.read_text().replace("images = 200", "images = 300"))
    assert main(["resume", "--run-root", root, "--config", str(wrong)]) == 2
    assert "does not match the one run root" in capsys.readouterr().err
    assert main(["resume", "--run-root", root, "--config", str(original), "--iterations", "2"]) == 0
    assert Run.open(root).iterations_done() == 2


def test_a_data_error_does_not_offer_a_resume(tmp_path, capsys):
    archive = write_archive(tmp_path / "bad.tar.gz", {"data_batch_1": cifar_batch(10, 0)})
    assert main(["train", "--run-root", str(tmp_path / "run"), "--data", str(archive)]) == 2
    err = capsys.readouterr().err
    assert "missing CIFAR-10 batch files" in err and "to continue" not in err


def test_the_checkpoint_policy_keeps_what_it_says(trained, tmp_path, capsys):
    root = trained.storage.url
    # 3 iterations, keep_iterations=2: the last two iterations' starting and final parameters are kept
    assert trained.kept_params() == [0, 1, 2, 3]
    assert main(["export", "--run-root", root, "--iteration", "1", "--out", str(tmp_path / "p1.npz")]) == 0
    run = Run.open(root, ["run.keep_iterations=1", "run.checkpoint_every=0"])
    run.collect_garbage()
    assert run.kept_params() == [0, 2, 3]
    assert main(["export", "--run-root", root, "--iteration", "1", "--out", str(tmp_path / "p.npz")]) == 2
    assert "kept here: after 0, 2, 3 iterations" in capsys.readouterr().err


def test_predict_reports_an_unreadable_image_and_goes_on(trained, tmp_path, capsys):
    from PIL import Image

    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert main(["predict", "--run-root", trained.storage.url, str(bad), str(good)]) == 2
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{good}: ")
    assert f"{bad}: not a readable image" in captured.err and "1 of 2 image(s) could not be read" in captured.err


def test_damaged_lock_and_retention_records_are_named_or_rebuilt(trained, capsys):
    root = trained.storage.url
    lock = Path(root) / "lock" / "00000009.json"
    lock.parent.mkdir(exist_ok=True)
    lock.write_bytes(b"{garbage")
    assert main(["gc", "--run-root", root]) == 3
    assert f"the lock of run root {root} is unreadable ({lock})" in capsys.readouterr().err
    lock.unlink()

    record = Path(root) / "retired" / f"{stage_keys.iteration_key(0, 'relu1_fwd')}.json"
    assert json.loads(record.read_text())["outputs"] == ["out"]
    record.write_bytes(b"\x00")
    assert main(["status", "--run-root", root, "--verify"]) == 0
    assert json.loads(record.read_text())["outputs"] == ["out"]
