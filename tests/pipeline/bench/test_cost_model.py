"""The cost model on a bench result built by hand: it reproduces the rows it was fitted to, and its
predictions move the way its formulas say."""
from __future__ import annotations

import json

import pytest

from sparkcnn.pipeline.bench import cost_model


def phases(compute: float, io: float) -> dict:
    return {f"s{n}": {"compute": compute, "read": io / 2, "write": io / 2, "mb_written": 2.0} for n in range(4)} | \
        {"update": {"compute": 0.0, "read": 0.0, "write": 0.0, "mb_written": 2.0}}


def bench() -> dict:
    io = {"bytes_written": 1e9, "bytes_read": 1e9, "files_written": 50.0, "files_read": 50.0}
    rows = [{"name": "staged", "total": 5 * 0.05 + (4 + 2) / 2, "fixed_cost": 0.05, "phases": phases(1.0, 0.5),
             "storage": io},
            {"name": "staged on hdfs", "total": 5 * 0.3 + (4 + 8) / 2, "fixed_cost": 0.3, "phases": phases(1.0, 2.0),
             "storage": io},
            {"name": "memory", "total": 10.0, "fixed_cost": 0.2, "phases": {}, "storage": {}},
            {"name": "fused", "total": 3.0, "fixed_cost": None, "phases": {}, "storage": {}}]
    costs = {"local": {"write_ms": 0.1, "read_ms": 0.1}, "hdfs": {"write_ms": 20.0, "read_ms": 5.0}}
    return {"images": 2000, "rows": rows, "file_costs": costs}


def test_the_fit_reproduces_the_staged_rows_it_was_fitted_to():
    b = bench()
    f = cost_model.fit(b, slots=2)
    assert f.compute == 4.0 and f.fixed == {"local": 0.05, "hdfs": 0.3, "memory": 0.2}
    checked = cost_model.check(b, f, slots=2)
    assert [name.split(" (")[0] for name, _, _ in checked] == ["staged", "staged on hdfs"]  # memory, fused: fitted
    for name, predicted, measured in checked:
        assert predicted == pytest.approx(measured), name


def test_another_runs_replication_and_task_slots_move_the_prediction_as_the_formula_says():
    f = cost_model.fit(bench(), slots=2)  # its HDFS row without a recorded replication: scripts/hdfs.sh's 2
    other = bench()
    hdfs = other["rows"][1]
    # 10 stages x 0.3 fixed + (4 s compute + 50 x 20 ms + 50 x 5 ms for files + 2.25 ns a byte copy x 2 GB) / 1 slot
    hdfs.update(replication=1, slots=1, total=5 * 0.3 + (4 + 1.25 + 2.25e-9 * 2e9) / 1)
    (name, predicted, measured), = [c for c in cost_model.check(other, f, slots=2, label=" [other]")
                                    if "hdfs" in c[0]]
    assert name == "staged on hdfs (1 slot, replication 1) [other]" and predicted == pytest.approx(measured)
    assert cost_model.staged_here(f, "hdfs", 1, 2) > predicted  # a second copy of every byte costs


def test_predictions_shrink_with_executors_and_replication_costs_bytes():
    f = cost_model.fit(bench(), slots=2)
    shape = cost_model.Shape(2, 4, 200.0, 10.0, 3)
    small = cost_model.staged(f, "hdfs", shape)
    large = cost_model.staged(f, "hdfs", cost_model.Shape(32, 4, 200.0, 10.0, 3))
    assert large < small and large > f.stages * f.fixed["hdfs"]  # the fixed cost of a stage does not shrink
    assert cost_model.staged(f, "hdfs", cost_model.Shape(2, 4, 200.0, 10.0, 1)) < small
    assert cost_model.in_memory(f, "fused", shape) < cost_model.in_memory(f, "memory", shape)


def test_main_labels_what_it_predicts(tmp_path, capsys):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(bench()))
    assert cost_model.main([str(path), "--against", str(path)]) == 0
    out = capsys.readouterr().out
    assert "error" in out and "PREDICTION, not measured" in out and f"fused (2 slots) [{path}]" in out
