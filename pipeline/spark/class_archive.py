"""A class-data archive (Java's AppCDS) of the classes a Spark driver loads, which halves its JVM's start.

Every driver maps the archive for its Java and Spark when there is one (`-XX:SharedArchiveFile`). When
there is none, the command, once it has ended, starts a maker in the background at the lowest priority
(`python -m sparkcnn.pipeline.spark.archive_maker`): a small Spark workload whose JVM writes the archive as it exits
(`-XX:ArchiveClassesAtExit`, under a lock, to a partial file renamed into place once the JVM has ended).
A JVM that cannot use an archive (another Java, another class path) ignores it and loads its classes as
usual, so results never depend on it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from sparkcnn.pipeline.runroot.lock import holder_alive, this_process

EXIT_WAIT_S = 120.0
UNUSED_DAYS = 30
KEPT = 3
MAKER_WAIT_S = 600.0
MAKER_ENV = "SPARKCNN_MAKING_CLASS_ARCHIVE"


def cache_folder() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sparkcnn"


def java_binary() -> Path | None:
    """The java that Spark's launcher runs: $JAVA_HOME/bin/java, else the one on the PATH."""
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    return Path(os.path.realpath(found)) if found and Path(found).exists() else None


def archive_key(java: Path) -> str:
    """What an archive is valid for: this java binary and this install of Spark's jars (the JVM refuses
    an archive whose jars are other files, even at the same paths, as a reinstall makes them)."""
    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    folder = jars.stat()
    facts = [str(java), java.stat().st_mtime_ns, pyspark.__version__, str(jars), folder.st_ino, folder.st_mtime_ns]
    return hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:16]


class ClassArchive:
    """The archive for this machine's Java and Spark: the JVM option that maps it, or that makes it."""

    def __init__(self, folder: Path | None = None):
        java = java_binary()
        self.path = (folder or cache_folder()) / f"spark-driver-{archive_key(java)}.jsa" if java else None
        self.partial: Path | None = None

    @property
    def lock(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    @property
    def failed(self) -> Path:
        """Left by a maker whose JVM wrote no archive, so that later commands do not try again and again."""
        return self.path.with_name(self.path.name + ".failed")

    def java_option(self) -> str:
        """`-XX:SharedArchiveFile=...` when the archive exists; in the maker process, when no other live
        process is making it, `-XX:ArchiveClassesAtExit=...` (the maker then calls `complete` after its
        JVM); '' otherwise."""
        if self.path is None:
            return ""
        if self.path.exists():
            try:
                os.utime(self.path)  # in use: see `remove_unused`
            except OSError:
                pass
            return f"-XX:SharedArchiveFile={self.path}"
        if os.environ.get(MAKER_ENV) != "1" or not self._take_lock():
            return ""
        self.partial = self.path.with_name(f"{self.path.name}.{os.getpid()}.partial")
        return f"-XX:ArchiveClassesAtExit={self.partial}"

    def make_later(self) -> None:
        """Start the maker, detached and at the lowest priority, unless the archive exists, is being made
        or could not be made."""
        if self.path is None or self.path.exists() or self.failed.exists():
            return
        holder = self._holder()
        if holder and holder_alive(holder):
            return
        nice = ["nice", "-n", "19"] if shutil.which("nice") else []
        try:
            subprocess.Popen([*nice, sys.executable, "-m", "sparkcnn.pipeline.spark.archive_maker"], start_new_session=True,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError:
            pass

    def _take_lock(self) -> bool:
        """Whether this process may make the archive: it created the lock, after removing a dead maker's."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            for _ in range(2):
                try:
                    fd = os.open(self.lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    holder = self._holder()
                    if holder and holder_alive(holder):
                        return holder.get("pid") == os.getpid()
                    self._remove_leftovers(holder.get("pid"))
                    continue
                with os.fdopen(fd, "w") as f:
                    json.dump(this_process(), f)
                return True
        except OSError:
            pass
        return False

    def wait_for_maker(self, timeout_s: float = MAKER_WAIT_S) -> None:
        """Wait while another live process makes the archive (a command that just ended may have started
        one), so that what starts next maps it."""
        deadline = time.monotonic() + timeout_s
        while not self.path.exists() and time.monotonic() < deadline:
            holder = self._holder()
            if not (holder and holder_alive(holder)):
                return
            time.sleep(0.5)

    def _holder(self) -> dict:
        try:
            return json.loads(self.lock.read_text())
        except (OSError, ValueError):
            return {}

    def _remove_leftovers(self, pid) -> None:
        """What a maker that died left behind: its lock and its partial archive."""
        if pid is not None:
            self.path.with_name(f"{self.path.name}.{pid}.partial").unlink(missing_ok=True)
        self.lock.unlink(missing_ok=True)

    def remove_unused(self) -> None:
        """Remove the archives of other Java and Spark installs that no driver mapped for UNUSED_DAYS, and
        all but the KEPT - 1 most recently mapped of the others."""
        cutoff = time.time() - UNUSED_DAYS * 86400
        others = []
        for other in self.path.parent.glob("spark-driver-*.jsa"):
            try:
                if other != self.path:
                    others.append((other.stat().st_mtime, other))
            except OSError:
                pass
        others.sort(reverse=True)
        for rank, (mtime, other) in enumerate(others):
            if rank >= KEPT - 1 or mtime < cutoff:
                other.unlink(missing_ok=True)

    def complete(self, jvm: subprocess.Popen | None) -> None:
        """End the JVM that was making the archive (it exits when its stdin closes), wait for it to write
        the archive, and put the archive in place; a JVM that failed leaves none."""
        try:
            if jvm is not None and jvm.stdin is not None:
                jvm.stdin.close()
            code = jvm.wait(EXIT_WAIT_S) if jvm is not None else None
            if code == 0 and self.partial.exists() and self.partial.stat().st_size > 0:
                os.replace(self.partial, self.path)
                self.remove_unused()
            else:
                self.failed.write_text(f"the JVM exited with code {code} and wrote no archive\n")
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:
            self._remove_leftovers(os.getpid())
