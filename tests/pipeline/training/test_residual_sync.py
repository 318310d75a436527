"""The residual network with every batch_norm synced (whole-batch statistics across shards): statistics
stages split the iteration, and modes, partition counts and a restart mid-iteration still agree bit for bit
and follow the numpy reference (the whole batch at once)."""
from __future__ import annotations

import numpy as np
import pytest

from sparkcnn.pipeline import stage_keys
from sparkcnn.pipeline.query import sql
from sparkcnn.pipeline.training import reference
from sparkcnn.pipeline.training.run import Run
from tests.conftest import assert_bitwise_equal, layers_override, start_run
from tests.schemas.test_network import RESIDUAL

pytestmark = pytest.mark.slow

SYNCED = [dict(layer, sync=True) if layer["type"] == "batch_norm" else layer for layer in RESIDUAL]
SETTINGS = ["train.batch_size=60", "train.shard_size=20", "train.images=120", "train.epochs=1",
            "run.keep_iterations=5", layers_override(SYNCED)]
ITERATIONS = 2


@pytest.fixture(scope="module")
def runs(spark, tmp_path_factory):
    base = tmp_path_factory.mktemp("residual-sync")
    found = {}
    for name, extra in {"staged": [], "memory": ["run.mode='memory'"], "fused": ["run.mode='fused'"]}.items():
        found[name] = start_run(SETTINGS, base / name, *extra)
        found[name].train(spark, ITERATIONS)
    restarted = start_run(SETTINGS, base / "restarted", "spark.partitions=3")
    restarted.train(spark, 1)
    plan = restarted.plan()
    for key in plan[plan.index(stage_keys.iteration_key(1, "stem_fwd")):][:6]:
        Run.open(str(base / "restarted")).run_stage(spark, key)  # a new driver for every stage
    Run.open(str(base / "restarted")).train(spark, ITERATIONS)
    found["restarted, 3 partitions"] = Run.open(str(base / "restarted"))
    return found


@pytest.mark.parametrize("name", ["memory", "fused", "restarted, 3 partitions"])
def test_synced_modes_partitions_and_restarts_are_bitwise_equal(runs, name):
    assert_bitwise_equal(runs[name].params_at(ITERATIONS), runs["staged"].params_at(ITERATIONS))


def test_synced_training_follows_the_whole_batch_and_sql_sees_the_statistics_stages(runs, spark):
    run = runs["staged"]
    assert stage_keys.iteration_key(1, "stem_bn_stats") in run.manifest.keys()
    got = run.params_at(ITERATIONS)
    expected = reference.train(run.cfg, ITERATIONS)
    for name in expected:
        assert np.linalg.norm(got[name] - expected[name]) <= 1e-5 * np.linalg.norm(expected[name]), name
    sql.register_views(spark, run)
    rows = spark.sql("SELECT count(DISTINCT shard) FROM batch_stats WHERE layer = 'stem_bn' AND iteration = 1")
    assert rows.collect()[0][0] == 3
