"""A declared network of three convolutions (with avg-pool and dropout) trains through every mode:
each stage equals its numpy layer, and modes, partitions, cache policies and restarts agree bit for bit."""
from __future__ import annotations

import json

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from sparkcnn.pipeline import stage_keys
from sparkcnn.pipeline.cli.main import main
from sparkcnn.pipeline.query import sql
from sparkcnn.pipeline.training import reference
from sparkcnn.pipeline.training.run import Run
from tests.conftest import assert_bitwise_equal, layers_override, start_run
from tests.pipeline.training.test_training import check_iteration_against_kernels
from tests.schemas.test_network import THREE_CONV

pytestmark = pytest.mark.slow

SETTINGS = ["train.batch_size=100", "train.shard_size=50", "train.images=200", "train.epochs=1",
            "run.keep_iterations=5", layers_override(THREE_CONV)]
ITERATIONS = 2


@pytest.fixture(scope="module")
def runs(spark, tmp_path_factory):
    base = tmp_path_factory.mktemp("three-conv")
    found = {}
    for name, extra in {"staged": [], "memory": ["run.mode='memory'"], "fused": ["run.mode='fused'"],
                        "one partition, recomputed caches, sparse gradients":
                            ["spark.partitions=1", "cache.relu_mask='recompute'", "cache.pool_argmax='recompute'",
                             "cache.sparse_gradients=true"]}.items():
        found[name] = start_run(SETTINGS, base / name.split(",")[0].replace(" ", "-"), *extra)
        found[name].train(spark, ITERATIONS)
    restarted = start_run(SETTINGS, base / "restarted", "cache.relu_mask='bytes'")
    restarted.train(spark, 1)
    for key in restarted.plan()[restarted.plan().index(stage_keys.iteration_key(1, "conv1_fwd")):][:17]:
        Run.open(str(base / "restarted")).run_stage(spark, key)  # a new driver for every stage
    Run.open(str(base / "restarted")).train(spark, ITERATIONS)
    found["restarted"] = Run.open(str(base / "restarted"))
    return found


def test_the_run_root_records_the_resolved_layers(runs):
    saved = json.loads(runs["staged"].storage.read_bytes("config.json"))["model"]["layers"]
    assert [layer["name"] for layer in saved][:4] == ["conv1", "relu1", "pool1", "middle"]
    assert saved[5] == {"name": "pool2", "type": "avg_pool", "size": 2, "stride": 2}


def test_every_stage_matches_its_numpy_layer(runs):
    with threadpool_limits(limits=1, user_api="blas"):
        check_iteration_against_kernels(runs["staged"], 1)


@pytest.mark.parametrize("name", ["memory", "fused", "one partition, recomputed caches, sparse gradients",
                                  "restarted"])
def test_modes_partitions_policies_and_restarts_are_bitwise_equal(runs, name):
    expected = runs["staged"].params_at(ITERATIONS)
    assert sorted(expected) == sorted(runs["staged"].network.param_shapes)
    assert_bitwise_equal(runs[name].params_at(ITERATIONS), expected)


def test_staged_training_follows_the_numpy_reference(runs):
    got = runs["staged"].params_at(ITERATIONS)
    expected = reference.train(runs["staged"].cfg, ITERATIONS)
    for name in expected:
        assert np.linalg.norm(got[name] - expected[name]) <= 1e-5 * np.linalg.norm(expected[name]), name


def test_views_and_export_follow_the_layers(runs, tmp_path, capsys):
    run = runs["staged"]
    views = sql.view_sources(run)
    assert {"middle_fwd", "drop1_bwd", "middle_bwd_grads", "fc2_bwd_grads"} <= set(views)
    assert "conv1_bwd" not in views and "conv1_bwd_grads" in views
    out = tmp_path / "params.npz"
    assert main(["export", "--run-root", run.storage.url, "--out", str(out)]) == 0
    with np.load(out) as exported:
        assert {n: exported[n].shape for n in exported.files} == run.network.param_shapes
