"""Bounded disk: retire old stage outputs and checkpoints, and remove files no manifest entry owns.

Retiring a stage's outputs writes `retired/<stage>.json` first, then removes the files, so a crash
in between leaves files that no live entry owns, which garbage collection removes. Once the record is
written nothing reads those files, so they are removed in the background while the next stages run;
`settle` waits for that (training does before it returns).
"""
from __future__ import annotations

import json
import posixpath
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from sparkcnn.pipeline import stage_keys
from sparkcnn.pipeline.runroot import folder_index, layout
from sparkcnn.pipeline.runroot.manifest import Manifest
from sparkcnn.pipeline.runroot.storage import Storage


@dataclass(frozen=True)
class Policy:
    """What retention keeps: the stage outputs of the last keep_iterations iterations and of inspected ones,
    and the parameters of every checkpoint_every-th iteration, epoch ends, the last and inspected ones."""

    keep_iterations: int
    checkpoint_every: int
    stages: tuple[str, ...]
    inspected: Callable[[int], bool]


class Retention:
    def __init__(self, storage: Storage, manifest: Manifest, policy: Policy):
        self.storage, self.manifest, self.policy = storage, manifest, policy
        self._retired: dict[str, set[str]] | None = None
        self._remover = ThreadPoolExecutor(max_workers=1, thread_name_prefix="retention")
        self._removals: list[Future] = []

    def remove_later(self, rel: str) -> None:
        self._removals.append(self._remover.submit(self.storage.remove, rel))

    def settle(self) -> None:
        """Wait for the removals under way; the first that failed raises its error."""
        removals, self._removals = self._removals, []
        for removal in removals:
            removal.result()

    def retired_outputs(self, key: str) -> set[str]:
        """Outputs of a stage that retention removed (empty when none)."""
        if self._retired is None:
            self._retired = self._read_records()
        return self._retired.get(key, set())

    def retired_of(self, keys, listing: folder_index.Stats | None = None) -> dict[str, set[str]]:
        """The outputs retention removed of the given stages, reading only their records (from the
        given listing of the records, when there is one) unless every record is read already."""
        found = self._retired if self._retired is not None else self._read_records(set(keys).__contains__, listing)
        return {k: found.get(k, set()) for k in keys}

    def _read_records(self, wanted=None, listing=None) -> dict[str, set[str]]:
        records = folder_index.read_documents(self.storage, layout.RETIRED, _parse_record, wanted, listing)
        return {k: set(r["outputs"]) if r else self._rebuild(k) for k, r in records.items()}

    def refresh_index(self) -> None:
        """Write the records' index again if many records are not in it (sparkcnn.pipeline.runroot.folder_index)."""
        folder_index.read_documents(self.storage, layout.RETIRED, _parse_record)

    def reload(self) -> None:
        """Read the retirement records again when next asked (another process may have retired more)."""
        self._retired = None

    def _rebuild(self, key: str) -> set[str]:
        """A damaged record of what retention removed, written again from what is gone: the outputs
        of which some file is missing."""
        entry = self.manifest.readable(key) or {"outputs": {}}
        gone = {o for o, files in entry["outputs"].items() if not all(self.storage.exists(f["path"]) for f in files)}
        doc = {"key": key, "outputs": sorted(gone), "at": time.time(), "rebuilt": True}
        self.storage.write_bytes(layout.retired_record(key), json.dumps(doc).encode())
        return gone

    def forget(self, key: str) -> None:
        """A stage about to be recomputed is no longer retired (and none of its old files is still being removed)."""
        self.settle()
        self.storage.remove(layout.retired_record(key))
        if self._retired is not None:
            self._retired.pop(key, None)

    def retire(self, key: str, outputs: tuple[str, ...]) -> None:
        entry = self.manifest.get(key)
        if entry is None or set(outputs) <= self.retired_outputs(key):
            return
        folders = folders_of(entry, outputs)
        doc = {"key": key, "outputs": sorted(self.retired_outputs(key) | removed_with(entry, outputs)), "at": time.time()}
        self.storage.write_bytes(layout.retired_record(key), json.dumps(doc).encode())
        self.retired_outputs(key)
        self._retired[key] = set(doc["outputs"])
        for folder in sorted(folders):
            self.remove_later(folder)

    def apply(self, done: int, sched: stage_keys.Schedule) -> None:
        """Retention once `done` iterations are committed: the stage outputs of iteration
        done - keep_iterations - 1 (and the batches of an epoch that ends there), and the parameters
        that iteration starts from unless the checkpoint policy keeps them."""
        horizon = done - self.policy.keep_iterations
        if horizon - 1 >= sched.start_iteration:
            self._retire_iteration(horizon - 1, sched)
            self._retire_params(horizon - 1, sched)

    def sweep(self, done: int, sched: stage_keys.Schedule) -> None:
        """Apply retention to every iteration of the `done` committed ones (what gc does)."""
        for t in range(sched.start_iteration, done - self.policy.keep_iterations):
            self._retire_iteration(t, sched)
            self._retire_params(t, sched)

    def keeps_params(self, version: int, sched: stage_keys.Schedule) -> bool:
        """Whether the checkpoint policy keeps the parameters after `version` iterations: every
        checkpoint_every-th, every epoch end, the last, and those an inspected iteration starts from or
        ends with. (The last keep_iterations iterations keep theirs until they leave the window.)"""
        every = self.policy.checkpoint_every
        return (version == sched.start_iteration or (every and version % every == 0)
                or version % sched.iterations_per_epoch == 0 or version == sched.total_iterations
                or self.policy.inspected(version) or self.policy.inspected(version - 1))

    def _retire_params(self, version: int, sched: stage_keys.Schedule) -> None:
        if not self.keeps_params(version, sched):
            self.retire(stage_keys.iteration_key(version - 1, "update"), ("params", "velocity"))

    def _retire_iteration(self, t: int, sched: stage_keys.Schedule) -> None:
        if self.policy.inspected(t):
            return
        for stage in self.policy.stages:
            if stage != "update":
                self.retire(stage_keys.iteration_key(t, stage), ("out", "grads"))
        self.remove_later(layout.iteration_dir(t))
        if (t + 1) % sched.iterations_per_epoch == 0:
            self.retire(stage_keys.batches_key(sched.epoch_of(t)), ("out",))

    def owned_files(self) -> set[str]:
        """Every file that a committed, unretired output lists."""
        owned = set()
        for key in self.manifest.keys():
            entry = self.manifest.get(key)
            gone = self.retired_outputs(key)
            owned.update(f["path"] for o, files in entry["outputs"].items() if o not in gone for f in files)
        return owned

    def orphans(self) -> list[str]:
        """Files under the run's data folders that no committed output owns: what dead attempts left."""
        owned = self.owned_files()
        base = self.storage.path("")
        found = []
        for root in layout.OWNED_ROOTS:
            try:
                paths = self.storage.fs.find(self.storage.path(root))
            except FileNotFoundError:
                continue
            found.extend(p[len(base) + 1:] for p in paths)
        return sorted(p for p in found if p not in owned)

    def collect(self, done: int, sched: stage_keys.Schedule) -> dict:
        """gc: apply retention everywhere and remove orphan files. Returns what was removed."""
        self.sweep(done, sched)
        self.settle()
        orphans = self.orphans()
        freed = 0
        for path in orphans:
            try:
                freed += self.storage.size(path)
            except FileNotFoundError:
                continue
            self.storage.remove(path)
        return {"orphans": len(orphans), "bytes": freed}


def folders_of(entry: dict, outputs) -> set[str]:
    """The folders that hold the files of a manifest entry's given outputs."""
    return {posixpath.dirname(f["path"]) for o in outputs for f in entry["outputs"].get(o, ())}


def removed_with(entry: dict, outputs) -> set[str]:
    """The outputs of a manifest entry that removing the given outputs' folders removes: those, and every
    output whose files all lie in those folders (a parameter version's running statistics, which records
    written before retirement named every output of a folder lack)."""
    folders = folders_of(entry, outputs)
    return {o for o, files in entry["outputs"].items()
            if o in outputs or files and all(posixpath.dirname(f["path"]) in folders for f in files)}


def _parse_record(key: str, data: bytes) -> dict | None:
    """A retirement record, or None when it is damaged (it is then written again from what is gone)."""
    try:
        record = json.loads(data)
        return {"outputs": sorted(str(o) for o in record["outputs"])}
    except (ValueError, KeyError, TypeError):
        return None
