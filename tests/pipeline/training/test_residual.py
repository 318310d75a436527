"""A residual network with batch norm trains through every mode: modes, partition counts, cache policies
and a restart in the middle of an iteration agree bit for bit, and follow the numpy reference."""
from __future__ import annotations

import json

import numpy as np
import pytest

from sparkcnn.pipeline import stage_keys
from sparkcnn.pipeline.query import sql
from sparkcnn.pipeline.runroot import layout
from sparkcnn.pipeline.training import reference
from sparkcnn.pipeline.training.run import Run
from tests.conftest import assert_bitwise_equal, layers_override, start_run
from tests.schemas.test_network import RESIDUAL

pytestmark = pytest.mark.slow

SETTINGS = ["train.batch_size=60", "train.shard_size=20", "train.images=120", "train.epochs=1",
            "run.keep_iterations=5", layers_override(RESIDUAL)]
ITERATIONS = 2


@pytest.fixture(scope="module")
def runs(spark, tmp_path_factory):
    base = tmp_path_factory.mktemp("residual")
    found = {}
    for name, extra in {"staged": [], "memory": ["run.mode='memory'"], "fused": ["run.mode='fused'"],
                        "one partition, recomputed caches, sparse gradients":
                            ["spark.partitions=1", "cache.relu_mask='recompute'", "cache.sparse_gradients=true"]}.items():
        found[name] = start_run(SETTINGS, base / name.split(",")[0].replace(" ", "-"), *extra)
        found[name].train(spark, ITERATIONS)
    restarted = start_run(SETTINGS, base / "restarted", "spark.partitions=3")
    restarted.train(spark, 1)
    plan = restarted.plan()
    for key in plan[plan.index(stage_keys.iteration_key(1, "stem_fwd")):][:12]:
        Run.open(str(base / "restarted")).run_stage(spark, key)  # a new driver for every stage
    Run.open(str(base / "restarted")).train(spark, ITERATIONS)
    found["restarted, 3 partitions"] = Run.open(str(base / "restarted"))
    return found


@pytest.mark.parametrize("name", ["memory", "fused", "one partition, recomputed caches, sparse gradients",
                                  "restarted, 3 partitions"])
def test_modes_partitions_policies_and_restarts_are_bitwise_equal(runs, name):
    expected = runs["staged"].params_at(ITERATIONS)
    net = runs["staged"].network
    assert sorted(expected) == sorted([*net.param_shapes, *net.state_shapes])
    assert_bitwise_equal(runs[name].params_at(ITERATIONS), expected)


def test_running_statistics_move_and_follow_the_numpy_reference(runs):
    got = runs["staged"].params_at(ITERATIONS)
    assert not np.array_equal(got["stem_bn.running_mean"], np.zeros_like(got["stem_bn.running_mean"]))
    expected = reference.train(runs["staged"].cfg, ITERATIONS)
    for name in expected:
        assert np.linalg.norm(got[name] - expected[name]) <= 1e-5 * np.linalg.norm(expected[name]), name


def test_sql_sees_every_shards_batch_statistics_and_every_versions_running_statistics(runs, spark):
    run = runs["staged"]
    sql.register_views(spark, run)
    channels = sum(shape[0] for name, shape in run.network.state_shapes.items() if name.endswith("running_var"))
    assert spark.sql("SELECT count(*) FROM running_stats").collect()[0][0] == channels * (ITERATIONS + 1)
    shards = spark.sql("SELECT iteration, count(DISTINCT shard) AS n, min(count) AS images FROM batch_stats "
                       "WHERE layer = 'stem_bn' GROUP BY iteration ORDER BY iteration").collect()
    assert [(r.iteration, r.n) for r in shards] == [(0, 3), (1, 3)] and shards[0].images == 20 * 32 * 32
    collapsed = spark.sql(COLLAPSED).collect()
    assert collapsed == []  # two iterations at momentum 0.1 leave every variance near 1


COLLAPSED = """
SELECT layer, channel, running_var FROM running_stats
WHERE version = (SELECT max(version) FROM running_stats) AND running_var < 1e-3
ORDER BY layer, channel"""


def test_retired_parameter_versions_take_their_running_statistics_and_a_resume_finds_nothing_damaged(spark, tmp_path):
    """Retention removes a parameter version's folder, running statistics included; verify (which every resume
    runs first) must not take those for damage and uncommit the run."""
    root = tmp_path / "retired"
    run = start_run([*SETTINGS, "train.batch_size=20", "run.keep_iterations=1", "run.mode='fused'"], root)
    run.train(spark, 5)
    reopened = Run.open(str(root))
    retired = reopened.retention.retired_outputs(stage_keys.iteration_key(1, "update"))
    assert {"params", "velocity", "running"} <= retired
    assert reopened.verify() == {}
    key = stage_keys.iteration_key(1, "update")  # a record written before retirement named the whole folder
    reopened.storage.write_bytes(layout.retired_record(key), json.dumps(
        {"key": key, "outputs": ["params", "velocity"], "at": 0}).encode())
    old = Run.open(str(root))
    assert old.verify() == {}
    sql.register_views(spark, old)  # the running statistics view lists only the versions still kept
    versions = {r.iteration for r in spark.sql("SELECT DISTINCT iteration FROM params").collect()}
    assert {r.version for r in spark.sql("SELECT DISTINCT version FROM running_stats").collect()} == versions
    assert 2 not in versions
