"""The JVM class archive: who makes it, what a dead maker leaves, and that Spark's driver maps it."""
from __future__ import annotations

import json
import os
import subprocess
import time
import types

import pytest

from sparkcnn.pipeline.runroot.lock import _process_start, this_process
from sparkcnn.pipeline.spark import archive_maker, class_archive
from sparkcnn.pipeline.spark.class_archive import MAKER_ENV, ClassArchive


@pytest.fixture
def archive(tmp_path) -> ClassArchive:
    archive = ClassArchive(tmp_path)
    if archive.path is None:
        pytest.fail("no java binary found")
    return archive


@pytest.fixture
def spawned(monkeypatch) -> list:
    calls = []
    fake = types.SimpleNamespace(Popen=lambda args, **kw: calls.append(args), DEVNULL=subprocess.DEVNULL,
                                 TimeoutExpired=subprocess.TimeoutExpired)
    monkeypatch.setattr(class_archive, "subprocess", fake)  # the module's processes only
    return calls


def test_the_maker_makes_the_archive_and_every_driver_maps_it(archive, tmp_path, monkeypatch):
    assert archive.java_option() == ""  # a driver does not make it
    monkeypatch.setenv(MAKER_ENV, "1")
    option = archive.java_option()
    assert option == f"-XX:ArchiveClassesAtExit={archive.partial}"
    assert ClassArchive(tmp_path).java_option() == f"-XX:ArchiveClassesAtExit={archive.partial}"  # this process
    archive.partial.write_bytes(b"classes")
    others = {tmp_path / f"spark-driver-{i:016d}.jsa": days
              for i, days in enumerate((class_archive.UNUSED_DAYS + 1, 1, 2, class_archive.UNUSED_DAYS - 1))}
    for other, days in others.items():
        other.write_bytes(b"another java's")
        os.utime(other, (time.time() - days * 86400,) * 2)
    jvm = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    archive.complete(jvm)
    assert archive.path.read_bytes() == b"classes"
    kept = sorted(others, key=others.get)[: class_archive.KEPT - 1]  # the most recently mapped, not too old
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([archive.path.name, *(p.name for p in kept)])
    monkeypatch.delenv(MAKER_ENV)
    os.utime(archive.path, (0, 0))
    assert ClassArchive(tmp_path).java_option() == f"-XX:SharedArchiveFile={archive.path}"
    assert archive.path.stat().st_mtime > time.time() - 60  # marked as in use


def test_a_jvm_that_fails_leaves_no_archive_and_no_maker_tries_again(archive, tmp_path, monkeypatch, spawned):
    monkeypatch.setenv(MAKER_ENV, "1")
    archive.java_option()
    archive.partial.write_bytes(b"half")
    archive.complete(subprocess.Popen(["false"], stdin=subprocess.PIPE))
    assert [p.name for p in tmp_path.iterdir()] == [archive.failed.name]
    archive.make_later()
    assert spawned == []


def test_a_missing_archive_is_made_in_the_background_once(archive, spawned):
    archive.make_later()
    (args,) = spawned
    assert args[-2:] == ["-m", "sparkcnn.pipeline.spark.archive_maker"] and args[:3] == ["nice", "-n", "19"]
    archive.lock.write_text(json.dumps(this_process()))  # a live maker
    archive.make_later()
    assert len(spawned) == 1


def test_a_dead_makers_lock_and_partial_archive_are_removed(archive, monkeypatch):
    dead = subprocess.Popen(["true"])
    dead.wait()
    archive.lock.write_text(json.dumps(this_process() | {"pid": dead.pid, "start": "gone"}))
    left = archive.path.with_name(f"{archive.path.name}.{dead.pid}.partial")
    left.write_bytes(b"half")
    monkeypatch.setenv(MAKER_ENV, "1")
    assert archive.java_option().startswith("-XX:ArchiveClassesAtExit=")
    assert not left.exists()
    assert json.loads(archive.lock.read_text())["pid"] == this_process()["pid"]


def test_the_driver_jvm_maps_the_machines_archive(spark):
    path = ClassArchive().path
    assert path is not None and path.exists(), "the tests' session start did not make the archive"
    maps = open(f"/proc/{spark.sparkContext._gateway.proc.pid}/maps").read()
    assert str(path) in maps


def test_making_waits_for_a_live_maker_that_a_command_started_just_before(archive, monkeypatch):
    """The README's second command (the tests) right after its first: the session start waits for the
    background maker instead of starting the tests' JVMs without the archive."""
    maker = subprocess.Popen(["sh", "-c", f"sleep 2 && printf classes > {archive.path}"])
    archive.lock.write_text(json.dumps(this_process() | {"pid": maker.pid, "start": _process_start(maker.pid)}))
    monkeypatch.setattr(class_archive, "cache_folder", lambda: archive.path.parent)
    started = time.monotonic()
    assert archive_maker.make() == 0
    assert archive.path.read_bytes() == b"classes" and time.monotonic() - started >= 1.5
    maker.wait()
