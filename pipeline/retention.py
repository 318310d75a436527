"""Bounded disk: retire old stage outputs and checkpoints, and remove files no manifest entry owns.

Retiring a stage's outputs writes `retired/<stage>.json` first, then removes the files, so a crash
in between leaves files that no live entry owns, which garbage collection removes.
"""
from __future__ import annotations

import json
import posixpath
import time

from pipeline import graph

RETIRED_DIR = "retired"
OWNED_ROOTS = ("data", "epochs", "iterations", "params", "metrics")


class Retention:
    def __init__(self, run):
        self.run = run
        self.storage = run.storage
        self._retired: dict[str, set[str]] | None = None

    def retired_outputs(self, key: str) -> set[str]:
        """Outputs of a stage that retention removed (empty when none)."""
        if self._retired is None:
            self._retired = {}
            for name in self.storage.listdir(RETIRED_DIR):
                if name.endswith(".json"):
                    doc = json.loads(self.storage.read_bytes(f"{RETIRED_DIR}/{name}"))
                    self._retired[name[: -len(".json")]] = set(doc["outputs"])
        return self._retired.get(key, set())

    def forget(self, key: str) -> None:
        """A stage about to be recomputed is no longer retired."""
        self.storage.remove(f"{RETIRED_DIR}/{key}.json")
        if self._retired is not None:
            self._retired.pop(key, None)

    def retire(self, key: str, outputs: tuple[str, ...]) -> None:
        entry = self.run.manifest.get(key)
        if entry is None or set(outputs) <= self.retired_outputs(key):
            return
        outputs = tuple(o for o in outputs if o in entry["outputs"])
        doc = {"key": key, "outputs": sorted(self.retired_outputs(key) | set(outputs)), "at": time.time()}
        self.storage.write_bytes(f"{RETIRED_DIR}/{key}.json", json.dumps(doc).encode())
        self.retired_outputs(key)
        self._retired[key] = set(doc["outputs"])
        folders = {posixpath.dirname(f["path"]) for o in outputs for f in entry["outputs"][o]}
        for folder in sorted(folders):
            self.storage.remove(folder)

    def apply(self, done: int) -> None:
        """Retention once `done` iterations are committed: stage outputs of iterations before
        done - keep_iterations, the batches of epochs wholly before that, and checkpoints
        outside the checkpoint policy."""
        cfg = self.run.cfg.run
        sched = self.run.schedule()
        horizon = done - cfg.keep_iterations
        for t in range(max(sched.start_iteration, horizon - 1), horizon):
            self._retire_iteration(t, sched)

    def sweep(self) -> None:
        """Apply retention to every committed iteration (what gc does)."""
        sched = self.run.schedule()
        done = self.run.iterations_done()
        for t in range(sched.start_iteration, done - self.run.cfg.run.keep_iterations):
            self._retire_iteration(t, sched)

    def _retire_iteration(self, t: int, sched: graph.Schedule) -> None:
        cfg = self.run.cfg.run
        if self.run.inspected(t):
            return
        for stage in graph.ITERATION_STAGES:
            if stage != "update":
                self.retire(graph.iteration_key(t, stage), ("out", "grads"))
        self.storage.remove(f"iterations/i{t:06d}")
        version = t + 1
        epoch_end = version % sched.iterations_per_epoch == 0
        checkpoint = cfg.checkpoint_every and version % cfg.checkpoint_every == 0
        if not (epoch_end or checkpoint or version == sched.total_iterations):
            self.retire(graph.iteration_key(t, "update"), ("params", "velocity"))
        if (t + 1) % sched.iterations_per_epoch == 0:
            self.retire(graph.batches_key(sched.epoch_of(t)), ("out",))

    def owned_files(self) -> set[str]:
        """Every file that a committed, unretired output lists."""
        owned = set()
        for key in self.run.manifest.keys():
            entry = self.run.manifest.get(key)
            gone = self.retired_outputs(key)
            owned.update(f["path"] for o, files in entry["outputs"].items() if o not in gone for f in files)
        return owned

    def orphans(self) -> list[str]:
        """Files under the run's data folders that no committed output owns: what dead attempts left."""
        owned = self.owned_files()
        base = self.storage.path("")
        found = []
        for root in OWNED_ROOTS:
            try:
                paths = self.storage.fs.find(self.storage.path(root))
            except FileNotFoundError:
                continue
            found.extend(p[len(base) + 1:] for p in paths)
        return sorted(p for p in found if p not in owned)

    def collect(self) -> dict:
        """gc: apply retention everywhere and remove orphan files. Returns what was removed."""
        self.sweep()
        orphans = self.orphans()
        freed = 0
        for path in orphans:
            try:
                freed += self.storage.size(path)
            except FileNotFoundError:
                continue
            self.storage.remove(path)
        return {"orphans": len(orphans), "bytes": freed}
