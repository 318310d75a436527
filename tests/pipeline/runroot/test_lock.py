import json
import os
import socket
import subprocess
import sys

import pytest

from sparkcnn.pipeline.errors import LockHeld
from sparkcnn.pipeline.runroot.lock import RunLock, this_process
from sparkcnn.pipeline.runroot.storage import Storage


def write_holder(storage, gen, holder):
    storage.write_bytes(f"lock/{gen:08d}.json", json.dumps(holder).encode())


def test_live_holder_is_named_and_refused(tmp_path):
    storage = Storage(str(tmp_path))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        holder = {**this_process(), "pid": sleeper.pid}
        from sparkcnn.pipeline.runroot.lock import _process_start
        holder["start"] = _process_start(sleeper.pid)
        write_holder(storage, 1, holder)
        with pytest.raises(LockHeld, match=f"in use by process {sleeper.pid} on {socket.gethostname()}"):
            RunLock(storage).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_dead_holder_is_taken_over(tmp_path):
    storage = Storage(str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_holder(storage, 4, {**this_process(), "pid": dead.pid, "start": "1"})
    lock = RunLock(storage)
    lock.acquire()
    assert lock.generation == 5
    assert storage.listdir("lock") == ["00000005.json"]
    assert json.loads(storage.read_bytes("lock/00000005.json"))["pid"] == os.getpid()
    lock.release()
    assert storage.listdir("lock") == []


def test_reused_pid_is_not_mistaken_for_the_holder(tmp_path):
    storage = Storage(str(tmp_path))
    write_holder(storage, 1, {**this_process(), "start": "not-my-start-time"})
    with RunLock(storage) as lock:
        assert lock.generation == 2


def test_holder_on_another_host_needs_force(tmp_path):
    storage = Storage(str(tmp_path))
    write_holder(storage, 1, {"host": "elsewhere", "pid": 1, "start": "1", "since": 0})
    with pytest.raises(LockHeld, match="on elsewhere"):
        RunLock(storage).acquire()
    lock = RunLock(storage)
    lock.acquire(force=True)
    assert lock.generation == 2


def test_only_one_of_two_racing_takers_wins(tmp_path, monkeypatch):
    storage = Storage(str(tmp_path))
    first, second = RunLock(storage), RunLock(storage)
    calls = []
    real_holder = second.holder
    monkeypatch.setattr(second, "holder", lambda: real_holder() if calls.append(1) or len(calls) > 1 else None)
    first.acquire()  # happens after `second` looked and found no holder
    with pytest.raises(LockHeld, match="was just taken by process"):
        second.acquire()
    assert first.generation == 1 and second.generation is None
