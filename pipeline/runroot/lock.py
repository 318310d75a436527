"""One writer per run root (or per output folder, such as a scoring's).

The lock is a sequence of generation files `lock/NNNNNNNN.json`; the newest one names the holder.
Taking the lock means creating the next generation exclusively, so of two processes that both find
a dead holder only one wins. A holder on this host is alive while its process (pid and start time)
exists; a holder on another host is taken to be alive until someone breaks the lock explicitly.
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass

from sparkcnn.pipeline.errors import LockHeld
from sparkcnn.pipeline.runroot import layout
from sparkcnn.pipeline.runroot.storage import Storage


def _process_start(pid: int) -> str | None:
    """The kernel's start time of a process (tells a live process from a reused pid), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return None
    except OSError:
        return "unknown"


def this_process() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _process_start(os.getpid()),
            "since": time.time()}


def holder_alive(holder: dict) -> bool:
    if holder.get("host") != socket.gethostname():
        return True
    start = _process_start(int(holder["pid"]))
    return start is not None and (start == holder.get("start") or start == "unknown")


def describe(holder: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    return f"process {holder.get('pid')} on {holder.get('host')} (since {since})"


@dataclass
class RunLock:
    storage: Storage
    generation: int | None = None
    folder: str = layout.LOCK  # where the generation files are, under the storage
    what: str = "run root"  # what the lock guards, as messages name it

    def _file(self, generation: int) -> str:
        return f"{self.folder}/{generation:08d}.json"

    def _generations(self) -> list[int]:
        return sorted(int(n.split(".")[0]) for n in self.storage.listdir(self.folder) if n.endswith(".json"))

    def holder(self) -> tuple[int, dict] | None:
        gens = self._generations()
        while gens:
            gen = gens.pop()
            rel = self._file(gen)
            try:
                return gen, json.loads(self.storage.read_bytes(rel))
            except FileNotFoundError:
                continue
            except ValueError:
                raise LockHeld(f"the lock of {self.what} {self.storage.url} is unreadable "
                               f"({self.storage.where(rel)}); if no sparkcnn process uses this {self.what}, "
                               f"remove that file") from None
        return None

    def acquire(self, force: bool = False) -> None:
        """Take the lock, or raise LockHeld naming the live holder. force breaks a lock held elsewhere."""
        current = self.holder()
        if current is not None:
            gen, holder = current
            if holder_alive(holder) and not force:
                raise LockHeld(f"{self.what} {self.storage.url} is in use by {describe(holder)}; "
                               f"only one process may write it at a time")
        next_gen = current[0] + 1 if current else 1
        if not self.storage.create_exclusive(self._file(next_gen), json.dumps(this_process()).encode()):
            taken = self.holder()
            raise LockHeld(f"{self.what} {self.storage.url} was just taken by "
                           f"{describe(taken[1]) if taken else 'another process'}")
        self.generation = next_gen
        for gen in self._generations():
            if gen < next_gen:
                self.storage.remove(self._file(gen))

    def release(self) -> None:
        if self.generation is not None:
            self.storage.remove(self._file(self.generation))
            self.generation = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
