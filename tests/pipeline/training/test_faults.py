"""Fault injection through real processes and real signals: kills, task retries, a full disk,
corrupt files, config changes and a second writer. Every recovered run ends bitwise equal to
an uninterrupted one."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sparkcnn.pipeline import config, stage_keys
from sparkcnn.pipeline.spark import faults
from sparkcnn.pipeline.training.run import Run, network_for
from tests.conftest import assert_bitwise_equal, kill_when_paused, wait_until

pytestmark = pytest.mark.slow

SETTINGS = ["train.batch_size=100", "train.shard_size=50", "train.epochs=1", "run.keep_iterations=3"]
ITERATIONS = 2
STAGES = network_for(config.Config()).iteration_stages


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "sparkcnn", *args]


def start(args: list[str], tmp: Path, failpoints: str = "") -> tuple[subprocess.Popen, Path]:
    marker = tmp / f"paused-{time.monotonic_ns()}"
    env = {**os.environ, faults.ENV: failpoints, faults.MARKER_ENV: str(marker), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command(*args), env=env, start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return proc, marker


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def train_args(root: Path, *extra: str) -> list[str]:
    sets = [a for s in SETTINGS for a in ("--set", s)]
    return ["train", "--run-root", str(root), "--iterations", str(ITERATIONS), *sets, *extra]


def run_ok(args: list[str], tmp: Path, failpoints: str = "") -> str:
    rc, out, err = finish(start(args, tmp, failpoints)[0])
    assert rc == 0, f"{args} failed ({rc}):\n{out}\n{err}"
    return out


def final_params(root: Path) -> dict:
    return Run.open(str(root)).params_at(ITERATIONS)


@pytest.fixture(scope="module")
def uninterrupted(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("faults") / "uninterrupted"
    run = Run(config.load(overrides=[*SETTINGS, f'run.root="{root}"']))
    run.save_config()
    run.train(spark, ITERATIONS)
    return run.params_at(ITERATIONS)


def test_sigkill_between_every_pair_of_stages_and_mid_stage(tmp_path, uninterrupted):
    root = tmp_path / "killed"
    boundaries = [stage_keys.iteration_key(0, "update")] + [stage_keys.iteration_key(1, s) for s in STAGES[:-1]]
    args = train_args(root)
    for i, key in enumerate(boundaries):
        proc, marker = start(args, tmp_path, f"after-commit:{key}=pause")
        kill_when_paused(proc, marker)
        run = Run.open(str(root))
        assert run.manifest.committed(key)
        following = STAGES[i] if i < len(STAGES) else None
        assert run.next_stage() == stage_keys.iteration_key(1, following)
        args = ["resume", "--run-root", str(root)]

    mid = stage_keys.iteration_key(1, "update")
    proc, marker = start(args, tmp_path, f"in-task:{mid}=pause")
    kill_when_paused(proc, marker)
    run = Run.open(str(root))
    assert not run.manifest.committed(mid)
    assert run.retention.orphans(), "the killed task should have left a half-finished attempt"

    out = run_ok(args, tmp_path)
    assert "uncommitted file(s) of dead attempts" in out
    assert_bitwise_equal(final_params(root), uninterrupted)
    assert Run.open(str(root)).retention.orphans() == []


def test_second_writer_is_refused_and_a_dead_holder_is_taken_over(tmp_path, uninterrupted):
    root = tmp_path / "locked"
    first, marker = start(train_args(root), tmp_path, "after-commit:init=pause")
    wait_until(first, marker.exists, "its failpoint", 120)
    assert marker.exists()
    rc, _, err = finish(start(["resume", "--run-root", str(root)], tmp_path)[0])
    assert rc == 3
    assert f"in use by process {first.pid}" in err
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    run_ok(["resume", "--run-root", str(root)], tmp_path)
    assert_bitwise_equal(final_params(root), uninterrupted)


def test_task_retry_gives_identical_results_without_duplicates(tmp_path, uninterrupted):
    root = tmp_path / "retried"
    key = stage_keys.iteration_key(1, "pool1_fwd")
    run_ok(train_args(root, "--set", 'spark.master="local[2,4]"'), tmp_path, f"in-task:{key}=fail-once")
    run = Run.open(str(root))
    files = run.manifest.files(key, "out")
    assert sorted(f["part"] for f in files) == ["0000", "0001"]
    assert sum(f["rows"] for f in files) == 100
    orphans = run.retention.orphans()
    written = [p for p in orphans if p.startswith("iterations/i000001/pool1_fwd/")]
    assert written, "the failed first attempts' files should be left as orphans, not committed"
    assert not [p for p in orphans if p.startswith(("iterations/i000001/conv1_fwd/", "iterations/i000001/relu1_fwd/"))], \
        "a retried task takes the stages it had finished from its record, it does not compute them again"
    assert_bitwise_equal(final_params(root), uninterrupted)


def test_disk_full_commits_nothing_of_the_failed_stage_and_resume_succeeds(tmp_path, uninterrupted):
    root = tmp_path / "full"
    key = stage_keys.iteration_key(1, "fc1_bwd")
    rc, out, err = finish(start(train_args(root), tmp_path, f"write:{key}=enospc")[0])
    assert rc != 0
    assert f"stage {key} failed" in err and "No space left on device" in err
    assert f"to continue: sparkcnn resume --run-root {Run.open(str(root)).storage.url}" in err
    run = Run.open(str(root))
    committed = [s for s in STAGES if run.manifest.committed(stage_keys.iteration_key(1, s))]
    assert committed == list(STAGES[:len(committed)]) and "fc1_bwd" not in committed
    run_ok(["resume", "--run-root", str(root)], tmp_path)
    assert_bitwise_equal(final_params(root), uninterrupted)


def test_a_chained_job_commits_each_stage_as_it_finishes(tmp_path, uninterrupted):
    """The shard stages of an iteration run as one Spark job; a stage is committed as soon as every task
    has finished it, while the job goes on: a driver killed with a task paused in fc1_bwd has committed
    every stage before it, and resume goes on from there."""
    root = tmp_path / "chained"
    key = stage_keys.iteration_key(1, "fc1_bwd")
    before = [stage_keys.iteration_key(1, s) for s in STAGES[:STAGES.index("fc1_bwd")]]
    proc, marker = start(train_args(root), tmp_path, f"in-task:{key}=pause")
    wait_until(proc, lambda: marker.exists() and (root / "manifest" / f"{before[-1]}.json").exists(),
               "the stages before fc1_bwd to commit")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    run = Run.open(str(root))
    assert all(run.manifest.committed(k) for k in before) and run.next_stage() == key
    run_ok(["resume", "--run-root", str(root)], tmp_path)
    assert_bitwise_equal(final_params(root), uninterrupted)


def test_corrupt_or_missing_files_are_found_and_recomputed(spark, tmp_path, uninterrupted):
    root = tmp_path / "corrupt"
    run = Run(config.load(overrides=[*SETTINGS, f'run.root="{root}"']))
    run.save_config()
    run.train(spark, ITERATIONS)
    truncated = run.manifest.files(stage_keys.iteration_key(1, "pool1_fwd"), "out")[0]
    path = Path(run.storage.path(truncated["path"]))
    path.write_bytes(path.read_bytes()[: truncated["bytes"] // 2])
    deleted = run.manifest.files(stage_keys.iteration_key(1, "relu1_fwd"), "out")[1]
    Path(run.storage.path(deleted["path"])).unlink()

    rc, out, _ = finish(start(["status", "--run-root", str(root), "--verify"], tmp_path)[0])
    assert rc == 1
    assert f"{truncated['path']}: {truncated['bytes'] // 2} bytes, recorded {truncated['bytes']}" in out
    assert f"{deleted['path']}: missing" in out

    out = run_ok(["resume", "--run-root", str(root), "--iterations", str(ITERATIONS)], tmp_path)
    assert "i000001.relu1_fwd" in out and "will be recomputed" in out
    assert_bitwise_equal(final_params(root), uninterrupted)
    rc, out, _ = finish(start(["status", "--run-root", str(root), "--verify"], tmp_path)[0])
    assert rc == 0 and "0 damaged" in out


def test_config_changes_on_resume(spark, tmp_path, uninterrupted):
    root = tmp_path / "changed"
    run = Run(config.load(overrides=[*SETTINGS, f'run.root="{root}"']))
    run.save_config()
    run.train(spark, ITERATIONS)

    rc, _, err = finish(start(["resume", "--run-root", str(root), "--set", "train.learning_rate=0.05",
                               "--set", "train.momentum=0.5"], tmp_path)[0])
    assert rc == 2
    assert "train.learning_rate, train.momentum" in err and "--branch" in err

    run_ok(["resume", "--run-root", str(root), "--partitions", "3", "--iterations", "3"], tmp_path)
    assert Run.open(str(root)).iterations_done() == 3

    branch = tmp_path / "branch"
    out = run_ok(["resume", "--run-root", str(root), "--set", "train.learning_rate=0.05",
                  "--branch", str(branch), "--iterations", "4"], tmp_path)
    assert "branched" in out
    new = Run.open(str(branch))
    assert new.cfg.train.learning_rate == 0.05 and new.schedule().start_iteration == 3
    assert_bitwise_equal(new.params_at(3), Run.open(str(root)).params_at(3))
    assert new.iterations_done() == 4
    assert not any(k.startswith("i000002") for k in new.manifest.keys())


@pytest.mark.parametrize("signum, whole_group", [(signal.SIGTERM, False), (signal.SIGINT, True)],
                         ids=["sigterm", "ctrl-c"])
def test_a_signal_mid_stage_ends_like_a_failure(tmp_path, uninterrupted, signum, whole_group):
    """SIGTERM to the driver, or Ctrl-C (SIGINT to the terminal's whole process group): one message, the
    lock released, nothing of the stage committed, and resume ends bitwise equal."""
    root = tmp_path / "signalled"
    key = stage_keys.iteration_key(1, "relu1_fwd")
    proc, marker = start(train_args(root), tmp_path, f"in-task:{key}=pause")
    wait_until(proc, lambda: marker.exists() and (root / "manifest" / f"{stage_keys.iteration_key(1, STAGES[0])}.json").exists(),
               "its failpoint, with the stage before it committed")
    if whole_group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    rc, out, err = finish(proc, timeout=120)
    assert rc == 128 + signum
    url = Run.open(str(root)).storage.url
    assert err.splitlines() == [f"error: interrupted by {signal.Signals(signum).name} during stage {key} (not committed)",
                                f"run root: {url}", f"to continue: sparkcnn resume --run-root {url}"], err
    assert list((root / "lock").iterdir()) == []
    assert not Run.open(str(root)).manifest.committed(key)
    run_ok(["resume", "--run-root", str(root)], tmp_path)
    assert_bitwise_equal(final_params(root), uninterrupted)
