"""End-to-end training through Spark on the shipped sample: determinism, the numpy reference,
and every stage's output against the numpy kernel it wraps."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from threadpoolctl import threadpool_limits

from sparkcnn.pipeline import config, stage_keys
from sparkcnn.pipeline.cli.main import main
from sparkcnn.pipeline.runroot import layout
from sparkcnn.pipeline.training import reference
from sparkcnn.pipeline.training.run import Run
from sparkcnn.schemas.tables import spec
from sparkcnn.stages import loss, relu, update, whole_network
from sparkcnn.stages.tabular import normalize
from tests.conftest import assert_bitwise_equal

pytestmark = pytest.mark.slow

SMALL = ["train.batch_size=100", "train.shard_size=25", "train.epochs=2", "run.keep_iterations=5"]
ITERATIONS = 3


def train(spark, root, *extra):
    cfg = config.load(overrides=[*SMALL, f'run.root="{root}"', *extra])
    run = Run(cfg)
    run.save_config()
    run.train(spark, ITERATIONS)
    return run


@pytest.fixture(scope="module")
def runs(spark, tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    return {
        "a": train(spark, base / "a"),
        "b": train(spark, base / "b"),
        "four": train(spark, base / "four", "spark.partitions=4"),
    }


def params_after(run, iteration=ITERATIONS):
    return run.latest_params(iteration)[1]


def test_same_config_and_seed_give_bitwise_identical_parameters(runs):
    assert_bitwise_equal(params_after(runs["a"]), params_after(runs["b"]))


def test_partition_count_does_not_change_parameters(runs):
    assert_bitwise_equal(params_after(runs["a"]), params_after(runs["four"]))


def test_parameters_change_every_iteration(runs):
    before, after = params_after(runs["a"], ITERATIONS - 1), params_after(runs["a"])
    assert all(not np.array_equal(before[n], after[n]) for n in before)


def test_matches_single_process_numpy_loop(runs):
    got = params_after(runs["a"])
    expected = reference.train(runs["a"].cfg, ITERATIONS)
    for name in expected:
        error = np.linalg.norm(got[name] - expected[name]) / np.linalg.norm(expected[name])
        assert error <= 1e-6, (name, error)


def test_different_seed_differs(spark, tmp_path):
    other = train(spark, tmp_path / "seed1", "train.seed=1")
    assert not np.array_equal(params_after(other, 1)["fc1.w"], Run.open(str(tmp_path / "seed1")).params_at(0)["fc1.w"])
    init_a = update.init_params(other.network, 0)
    assert not np.array_equal(other.params_at(0)["conv1.w"], init_a["conv1.w"])


class Tables:
    """Decoded stage tables of one iteration, read from the committed files."""

    def __init__(self, run: Run, iteration: int):
        self.run, self.t = run, iteration

    def read(self, key: str, output: str = "out"):
        files = self.run.manifest.files(key, output)
        return [pq.read_table(self.run.storage.path(f["path"])) for f in files]

    def tensor(self, stage: str, column: str, key: str | None = None) -> list[np.ndarray]:
        key = key or stage_keys.iteration_key(self.t, stage)
        source = "batches" if key.startswith("batches") else stage
        return [spec(self.run.network, source, column).decode(t.column(column)) for t in self.read(key)]


def test_every_stage_matches_its_numpy_kernel(runs):
    with threadpool_limits(limits=1, user_api="blas"):
        check_iteration_against_kernels(runs["a"], 1)


def check_iteration_against_kernels(run, t):
    """Every stage table of iteration t equals what the layer's numpy function gives on the same inputs."""
    tab = Tables(run, t)
    net = run.network
    ctx = run.context(run.params_at(t), run.schedule().batch_images(t))
    batches = [b for b in tab.read(stage_keys.batches_key(run.schedule().epoch_of(t)))
               if b.column("iteration")[0].as_py() == t]
    assert len(batches) == run.schedule().shards(run.schedule().batch_images(t))
    for s, batch in enumerate(batches):
        x = normalize(spec(net, "batches", "pixels").decode(batch.column("pixels")), ctx.mean, ctx.std)
        keys = (t, batch.column("image_id").to_numpy())
        caches = []
        for layer in net.layers:
            x, cache = whole_network.LAYERS[layer.type].forward(x, whole_network.layer_params(layer, ctx, keys))
            caches.append(cache)
            np.testing.assert_array_equal(tab.tensor(layer.forward_stage, "out")[s], x)
            if layer.type == "relu":
                np.testing.assert_array_equal(relu.unpack_mask(tab.tensor(layer.forward_stage, "mask")[s],
                                                               layer.out_shape), cache)
            if layer.type == "max_pool":
                np.testing.assert_array_equal(tab.tensor(layer.forward_stage, "argmax")[s], cache["argmax"])
        labels = batch.column("label").to_numpy()
        losses, l_cache = loss.forward(x, {"labels": labels})
        np.testing.assert_array_equal(tab.read(stage_keys.iteration_key(t, "loss"))[s].column("loss").to_numpy(), losses)
        dout, _ = loss.backward(np.full(losses.shape, 1 / ctx.normalizer, np.float32), l_cache)
        np.testing.assert_array_equal(tab.tensor("loss", "dx")[s], dout)
        for layer in reversed(net.layers):
            if not net.has_backward(layer):
                break
            dout, grads = whole_network.LAYERS[layer.type].backward(dout, caches[layer.index])
            if net.input_grad(layer):
                np.testing.assert_array_equal(tab.tensor(layer.backward_stage, "dx")[s], dout)
            if grads:
                stored = update.table_to_arrays(tab.read(stage_keys.iteration_key(t, layer.backward_stage), "grads")[s])
                assert sorted(stored) == sorted(f"{layer.name}.{k}" for k in grads)
                for k, v in grads.items():
                    np.testing.assert_array_equal(stored[f"{layer.name}.{k}"], v)


def test_keys_and_order_are_carried_through(runs):
    run = runs["a"]
    tab = Tables(run, 0)
    batch_ids = [b.column("image_id").to_pylist() for b in tab.read(stage_keys.batches_key(0))
                 if b.column("iteration")[0].as_py() == 0]
    for stage in run.network.per_image_stages:
        tables = tab.read(stage_keys.iteration_key(0, stage))
        assert [t.column("image_id").to_pylist() for t in tables] == batch_ids, stage
        assert all(t.column("iteration").to_pylist() == [0] * t.num_rows for t in tables)
    order = stage_keys.epoch_permutation(0, 0, 2000)[:100]
    assert sum(batch_ids, []) == order.tolist()


def test_cli_trains_evaluates_reports_and_exports(spark, tmp_path, capsys):
    root = tmp_path / "cli"
    flags = ["--run-root", str(root), "--set", "train.shard_size=250", "--partitions", "2", "--set", "run.checkpoint_every=1"]
    assert main(["train", *flags, "--epochs", "1", "--batch-size", "500"]) == 0
    out = capsys.readouterr().out
    assert "epoch 1: test loss" in out and "complete: every planned stage is committed" in out
    run = Run.open(str(root))
    metrics = run.metrics().to_pylist()
    evals = [m for m in metrics if m["kind"] == "eval"]
    assert len(evals) == 1 and evals[0]["rows"] == 1000 and 0.0 <= evals[0]["accuracy"] <= 1.0
    assert evals[0]["accuracy"] > 0.15
    stage_rows = [m for m in metrics if m["kind"] == "stage"]
    assert {m["stage"] for m in stage_rows} == set(run.network.iteration_stages)
    assert len(stage_rows) == 4 * len(run.network.iteration_stages)
    assert all(m["seconds"] > 0 and m["bytes"] > 0 for m in stage_rows)
    assert {m["rows"] for m in stage_rows if m["stage"] == "conv1_fwd"} == {500}
    train_rows = sorted((m for m in metrics if m["kind"] == "train"), key=lambda m: m["iteration"])
    assert [m["iteration"] for m in train_rows] == [0, 1, 2, 3] and all(np.isfinite(m["loss"]) for m in train_rows)

    assert main(["export", "--run-root", str(root), "--out", str(tmp_path / "p.npz")]) == 0
    exported = np.load(tmp_path / "p.npz")
    assert_bitwise_equal(dict(exported), run.params_at(4))
    assert main(["export", "--run-root", str(root), "--out", str(tmp_path / "p1.npz"), "--iteration", "1"]) == 0
    assert_bitwise_equal(dict(np.load(tmp_path / "p1.npz")), run.params_at(1))
    assert exported["conv1.w"].shape == (32, 3, 5, 5) and exported["fc1.w"].shape == (8192, 10)


def test_stage_command_runs_one_stage_and_refuses_missing_inputs(spark, tmp_path, capsys):
    root = tmp_path / "stages"
    flags = ["--run-root", str(root), "--set", "train.batch_size=200", "--set", "train.shard_size=100"]
    assert main(["train", *flags, "--iterations", "1"]) == 0
    assert main(["stage", "relu1_fwd", "--iteration", "1", "--run-root", str(root)]) == 2
    assert "i000001.conv1_fwd is not committed" in capsys.readouterr().err
    assert main(["stage", "conv1_fwd", "--iteration", "1", "--run-root", str(root)]) == 0
    assert main(["stage", "conv1_fwd", "--iteration", "1", "--run-root", str(root)]) == 2
    assert "already committed" in capsys.readouterr().err
    assert main(["status", "--run-root", str(root)]) == 0
    assert "next stage: i000001.relu1_fwd" in capsys.readouterr().out
    assert main(["resume", "--run-root", str(root), "--iterations", "2"]) == 0
    run = Run.open(str(root))
    assert run.next_stage() == stage_keys.iteration_key(2, "conv1_fwd")
    reference_params = reference.train(run.cfg, 2)
    for name, value in run.params_at(2).items():
        assert np.linalg.norm(value - reference_params[name]) <= 1e-6 * np.linalg.norm(reference_params[name])


def test_resume_refuses_a_run_root_with_other_settings(spark, tmp_path, capsys):
    root = tmp_path / "other"
    assert main(["train", "--run-root", str(root), "--iterations", "1", "--batch-size", "200"]) == 0
    assert main(["train", "--run-root", str(root), "--iterations", "1", "--batch-size", "100"]) == 2
    assert "train.batch_size" in capsys.readouterr().err


@pytest.fixture(scope="module")
def mode_runs(spark, tmp_path_factory):
    base = tmp_path_factory.mktemp("modes")
    return {
        "memory": train(spark, base / "memory", "run.mode='memory'"),
        "fused": train(spark, base / "fused", "run.mode='fused'", "run.inspect_every=2"),
        "job per stage": train(spark, base / "jobs", "run.job_per_stage=true"),
    }


@pytest.mark.parametrize("mode", ["memory", "fused", "job per stage"])
def test_modes_give_bitwise_identical_parameters(runs, mode_runs, mode):
    assert_bitwise_equal(params_after(mode_runs[mode]), params_after(runs["a"]))


def test_memory_mode_writes_only_checkpoints_and_metrics(mode_runs):
    run = mode_runs["memory"]
    assert not run.storage.exists("iterations")
    assert all(k.endswith(".update") for k in run.manifest.keys() if k.startswith("i0"))
    stages = {m["stage"] for m in run.metrics().to_pylist() if m["kind"] == "stage"}
    assert stages == set(run.network.iteration_stages)


def test_fused_mode_inspects_every_nth_iteration(runs, mode_runs):
    fused, staged = mode_runs["fused"], runs["a"]
    assert fused.storage.listdir("iterations") == ["i000000", "i000002"]
    for t in (0, 2):
        for stage in fused.network.iteration_stages[:-1]:
            key = stage_keys.iteration_key(t, stage)
            output = "grads" if stage == "conv1_bwd" else "out"
            got = [pq.read_table(fused.storage.path(f["path"])) for f in fused.manifest.files(key, output)]
            want = [pq.read_table(staged.storage.path(f["path"])) for f in staged.manifest.files(key, output)]
            assert got == want, key
    assert not fused.manifest.committed(stage_keys.iteration_key(1, "conv1_fwd"))


def test_chained_stages_commit_what_a_job_per_stage_commits(runs, mode_runs):
    """Staged mode runs an iteration's shard stages as one Spark job (the default) or one job per stage:
    the same tables, each stage its own manifest entry; the job's planning and launch count for its
    first stage only."""
    chained, jobs = runs["a"], mode_runs["job per stage"]
    for stage in chained.network.iteration_stages:
        key = stage_keys.iteration_key(1, stage)
        mine, theirs = chained.manifest.get(key), jobs.manifest.get(key)
        assert mine["inputs"] == theirs["inputs"] and mine["identity"] == theirs["identity"], key
        assert mine["read_bytes"] == theirs["read_bytes"] and mine["values"] == theirs["values"], key
        for output, files in theirs["outputs"].items():
            if output == "metrics":
                continue
            got = [pq.read_table(chained.storage.path(f["path"])) for f in mine["outputs"][output]]
            assert got == [pq.read_table(jobs.storage.path(f["path"])) for f in files], (key, output)
        launched = mine["phases"]["launch"] > 0
        assert launched == (stage in ("conv1_fwd", "update")), key
        assert theirs["phases"]["launch"] > 0 and mine["seconds"] > 0
    assert not [n for n in chained.storage.listdir(layout.iteration_dir(1)) if n.startswith("_progress")]


def test_switching_modes_between_iterations(spark, tmp_path, runs):
    root = tmp_path / "switch"
    run = train(spark, root)  # staged, 3 iterations
    cfg = config.load(overrides=[*SMALL, f'run.root="{root}"', "run.mode='fused'"])
    fused = Run(cfg)
    fused.train(spark, 4)
    memory = Run(config.load(overrides=[*SMALL, f'run.root="{root}"', "run.mode='memory'"]))
    memory.train(spark, 5)
    reference_params = reference.train(run.cfg, 5)
    for name, value in memory.params_at(5).items():
        assert np.linalg.norm(value - reference_params[name]) <= 1e-6 * np.linalg.norm(reference_params[name])
    assert memory.iterations_done() == 5


@pytest.mark.parametrize("policy", [
    ["cache.relu_mask='bytes'"],
    ["cache.relu_mask='recompute'", "cache.pool_argmax='recompute'", "cache.sparse_gradients=true"],
])
def test_cache_policies_change_bytes_not_results(spark, tmp_path, runs, policy):
    run = train(spark, tmp_path / "cache", *policy)
    assert_bitwise_equal(params_after(run), params_after(runs["a"]))

    def stage_bytes(r, stage):
        return r.manifest.get(stage_keys.iteration_key(1, stage))["bytes"]

    base = runs["a"]
    if "cache.relu_mask='bytes'" in policy:
        assert stage_bytes(run, "relu1_fwd") > stage_bytes(base, "relu1_fwd")
    else:
        for stage in ("relu1_fwd", "pool1_fwd", "pool1_bwd", "relu1_bwd"):
            assert stage_bytes(run, stage) < stage_bytes(base, stage), stage


DEFAULT_DIGEST = "fc8baf2210ff7a49846a52f91ee6cf4777df22ab9643270dc7316fb46c9e3e7b"


def test_default_config_gives_the_recorded_parameters(spark, tmp_path):
    """The reference network's parameters after 3 iterations of the default config on the embedded sample,
    as a digest recorded from the code before any refactor (values and shapes in the order of their sorted
    names, so that renaming the layers keeps it): a refactor must keep them bit for bit."""
    import hashlib

    run = Run(config.load(overrides=[f'run.root="{tmp_path / "default"}"']))
    run.save_config()
    run.train(spark, 3)
    params = run.params_at(3)
    digest = hashlib.sha256()
    for name in sorted(params):
        digest.update(repr(params[name].shape).encode())
        digest.update(params[name].tobytes())
    assert digest.hexdigest() == DEFAULT_DIGEST


def test_tasks_carry_the_parameters_by_reference(runs):
    """A task's closure names the committed params file; each worker reads it once (read-only arrays)."""
    import pickle

    from sparkcnn.pipeline.spark.executor import FusedTask, Params, Unit

    run = runs["a"]
    ref = run.params_ref(ITERATIONS)
    params = ref.load()
    assert_bitwise_equal(params, params_after(run))
    assert ref.load() is params and not any(a.flags.writeable for a in params.values())
    task = FusedTask(run.storage, run.context({}, 100), [Unit("0000", {})], "key", ref)
    assert len(pickle.dumps(task)) < sum(a.nbytes for a in params.values()) / 4
    restored = pickle.loads(pickle.dumps(task)).params
    assert isinstance(restored, Params) and restored.path == ref.path
