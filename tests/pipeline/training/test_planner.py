"""The planner without Spark or storage: plans, next stages and what each stage reads."""
from __future__ import annotations

from sparkcnn.pipeline import stage_keys
from sparkcnn.pipeline.training import planner
from sparkcnn.schemas.network import Network
from tests.schemas.test_network import CIFAR, THREE_CONV

SCHED = stage_keys.Schedule(train_images=250, test_images=100, batch_size=100, shard_size=50, epochs=2)
NET = Network(THREE_CONV, *CIFAR)


def test_before_ingest_only_the_setup_stages_are_planned():
    assert planner.plan(None, (), ()) == ["ingest", "init", "testset"]


def test_a_plan_lists_every_stage_of_every_iteration_in_order():
    plan = planner.plan(SCHED, NET.iteration_stages, [])
    assert plan[:4] == ["ingest", "init", "testset", "batches.e0000"]
    assert plan[4:4 + len(NET.iteration_stages)] == [stage_keys.iteration_key(0, s) for s in NET.iteration_stages]
    assert len(plan) == 3 + 2 * 2 + SCHED.total_iterations * len(NET.iteration_stages)
    assert plan.index("eval.e0000") == plan.index(stage_keys.iteration_key(2, "update")) + 1
    assert plan[-1] == "eval.e0001"


def test_an_iteration_committed_whole_needs_none_of_its_other_stages():
    committed = ["ingest", "init", "testset", "batches.e0000", stage_keys.iteration_key(0, "update")]
    plan = planner.plan(SCHED, NET.iteration_stages, committed)
    assert stage_keys.iteration_key(0, "conv1_fwd") not in plan and stage_keys.iteration_key(0, "update") in plan
    assert planner.next_stage(plan, committed) == stage_keys.iteration_key(1, "conv1_fwd")
    whole = planner.plan(SCHED, ("update",), committed)
    assert planner.next_stage(whole, committed) == stage_keys.iteration_key(1, "update")
    assert planner.next_stage(["a", "b"], ["a", "b"]) is None


def test_dependencies_follow_the_network_and_the_schedule():
    defs = NET.stage_defs()
    assert planner.dependencies(defs["conv1_fwd"], SCHED, 3) == ["batches.e0001", stage_keys.iteration_key(2, "update")]
    assert planner.dependencies(defs["relu2_bwd"], SCHED, 3) == [stage_keys.iteration_key(3, s)
                                                                for s in ("pool2_bwd", "relu2_fwd")]
    assert planner.dependencies(defs["update"], SCHED, 0) == sorted(
        ["init", *(stage_keys.iteration_key(0, s) for s in NET.gradient_stages)])
    branched = stage_keys.Schedule(250, 100, 100, 50, 2, start_iteration=2)
    assert planner.sources(branched, 2)["params"] == "init"
    assert planner.whole_iteration_dependencies(SCHED, 1) == ["batches.e0000", stage_keys.iteration_key(0, "update")]


def test_backward_stages_read_caches_as_they_were_written():
    entries = {stage_keys.iteration_key(0, "relu2_fwd"): {"cache": {"relu_mask": "recompute"}},
               stage_keys.iteration_key(0, "pool2_bwd"): {"cache": {"sparse_gradients": True}}}
    written = planner.written_policies(NET, "relu2_bwd", 0, entries)
    assert set(written) == {"relu2_fwd", "pool2_bwd"}
    inputs = NET.stage_def("relu2_bwd", {}, written).inputs
    assert inputs["saved"].columns == ("out",)
    assert inputs["dout"].columns[-1] == "dx"  # pool2 is an average pool: its gradient is never stored sparse
    inputs = NET.stage_def("relu1_bwd", {"sparse_gradients": True}).inputs
    assert inputs["dout"].columns[-2:] == ("dx_mask", "dx_values")
