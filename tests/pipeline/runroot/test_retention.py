"""Bounded disk: retention keeps the last K iterations (plus inspected ones and checkpoints); gc removes orphans."""
import pytest

from sparkcnn.pipeline import config, stage_keys
from sparkcnn.pipeline.cli.main import main
from sparkcnn.pipeline.training.run import Run, RunError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("retention") / "run"
    settings = ["train.batch_size=500", "train.shard_size=250", "run.keep_iterations=2",
                "run.checkpoint_every=5", "run.inspect_iterations=[1]", f'run.root="{root}"']
    run = Run(config.load(overrides=settings))
    run.save_config()
    run.train(spark, 6)
    return run


def test_only_recent_and_inspected_iterations_keep_their_stage_outputs(run):
    assert run.storage.listdir("iterations") == ["i000001", "i000004", "i000005"]
    assert not run.storage.exists("epochs/e0000/batches")
    assert run.storage.exists("epochs/e0001/batches")
    retired = run.retention.retired_outputs(stage_keys.iteration_key(2, "relu1_fwd"))
    assert retired == {"out"} and run.manifest.committed(stage_keys.iteration_key(2, "relu1_fwd"))


def test_checkpoint_policy(run):
    kept = run.storage.listdir("params")
    # init, the inspected iteration's start and result, an epoch end (4 per epoch), a checkpoint (every 5),
    # and the start and results of the last K iterations
    assert kept == ["v000000", "v000001", "v000002", "v000004", "v000005", "v000006"]
    assert run.kept_params() == [0, 1, 2, 4, 5, 6]
    run.params_at(1)
    with pytest.raises(RunError, match="removed by the checkpoint policy.*kept here: after 0, 1, 2, 4, 5, 6"):
        run.params_at(3)


def test_disk_use_is_bounded_by_the_window(run):
    def folder_bytes(folder):
        return sum(run.storage.size(p[len(run.storage.path("")) + 1:]) for p in run.storage.fs.find(run.storage.path(folder)))

    kept = sum(run.manifest.get(stage_keys.iteration_key(t, s))["bytes"] for t in (1, 4, 5)
               for s in run.network.iteration_stages if s != "update")
    assert folder_bytes("iterations") == kept


def test_gc_removes_orphans_only(run, capsys):
    orphan = "iterations/i000005/conv1_fwd/out-0000-deadbeef0000.parquet"
    run.storage.write_bytes(orphan, b"half written")
    run.storage.write_bytes("params/v000006/.tmp-123", b"x")
    assert orphan in run.retention.orphans()
    assert main(["gc", "--run-root", run.storage.url]) == 0
    assert "removed 2 file(s)" in capsys.readouterr().out
    assert not run.storage.exists(orphan) and run.retention.orphans() == []
    assert main(["status", "--run-root", run.storage.url, "--verify"]) == 0
