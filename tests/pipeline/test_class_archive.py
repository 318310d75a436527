"""The JVM class archive: who makes it, what a dead maker leaves, and that Spark's driver maps it."""
from __future__ import annotations

import json
import subprocess

import pytest

from pipeline.class_archive import ClassArchive
from pipeline.lock import this_process


@pytest.fixture
def archive(tmp_path) -> ClassArchive:
    archive = ClassArchive(tmp_path)
    if archive.path is None:
        pytest.fail("no java binary found")
    return archive


def test_the_first_process_makes_the_archive_and_later_ones_map_it(archive, tmp_path):
    option = archive.java_option()
    assert option == f"-XX:ArchiveClassesAtExit={archive.partial}"
    assert ClassArchive(tmp_path).java_option() == ""  # a live maker holds the lock
    archive.partial.write_bytes(b"classes")
    jvm = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    archive.complete(jvm)
    assert archive.path.read_bytes() == b"classes"
    assert sorted(p.name for p in tmp_path.iterdir()) == [archive.path.name]
    assert ClassArchive(tmp_path).java_option() == f"-XX:SharedArchiveFile={archive.path}"


def test_a_jvm_that_fails_leaves_no_archive(archive, tmp_path):
    archive.java_option()
    archive.partial.write_bytes(b"half")
    archive.complete(subprocess.Popen(["false"], stdin=subprocess.PIPE))
    assert list(tmp_path.iterdir()) == []


def test_a_dead_makers_lock_and_partial_archive_are_removed(archive, tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    holder = this_process() | {"pid": dead.pid, "start": "gone"}
    archive.lock.write_text(json.dumps(holder))
    left = archive.path.with_name(f"{archive.path.name}.{dead.pid}.partial")
    left.write_bytes(b"half")
    assert archive.java_option().startswith("-XX:ArchiveClassesAtExit=")
    assert not left.exists()
    assert json.loads(archive.lock.read_text())["pid"] == this_process()["pid"]


def test_the_driver_jvm_maps_the_machines_archive(spark):
    path = ClassArchive().path
    assert path is not None and path.exists(), "the tests' session start did not make the archive"
    maps = open(f"/proc/{spark.sparkContext._gateway.proc.pid}/maps").read()
    assert str(path) in maps
