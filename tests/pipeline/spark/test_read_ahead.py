"""A task's units off local disk: the next units' inputs are read while one computes, rows stay in unit order."""
import threading
from types import SimpleNamespace

from sparkcnn.pipeline.spark import executor


def fake_units(monkeypatch, local: bool):
    """Units p0..p5 whose reads record their thread; p0's read waits (up to 2 s) for p1's to start."""
    p1_started, threads = threading.Event(), {}

    def read(task, unit):
        threads[unit.part] = threading.current_thread()
        if unit.part == "p1":
            p1_started.set()
        if unit.part == "p0" and not p1_started.wait(2):
            return {"x": "p1 was not read while p0 was"}
        return {"x": unit.part}

    def run(task, unit, reading=None):
        got = reading.result() if reading is not None else executor.read_inputs(task, unit)
        return [{"part": unit.part, "x": got["x"]}]

    monkeypatch.setattr(executor, "read_inputs", read)
    monkeypatch.setattr(executor, "run_unit", run)
    units = [executor.Unit(f"p{i}", {}) for i in range(6)]
    return executor.run_units(SimpleNamespace(storage=SimpleNamespace(local=local)), units), threads


def test_off_local_disk_the_next_units_are_read_while_one_works(monkeypatch):
    rows, threads = fake_units(monkeypatch, local=False)
    assert rows == [{"part": f"p{i}", "x": f"p{i}"} for i in range(6)]
    assert threading.current_thread() not in threads.values()


def test_on_local_disk_a_task_reads_each_unit_itself(monkeypatch):
    rows, threads = fake_units(monkeypatch, local=True)
    assert rows[0]["x"] == "p1 was not read while p0 was" and set(threads.values()) == {threading.current_thread()}
