"""The manifest of committed stages: one JSON entry per stage, created exclusively.

A stage is done exactly when its entry exists. The entry lists the files that make up
each of its outputs with their row counts and sizes; readers take files from entries,
never from folder listings, so files of a dead attempt are never read.
"""
from __future__ import annotations

import json
import time

from pipeline.storage import Storage

MANIFEST_DIR = "manifest"


class StageAlreadyCommitted(RuntimeError):
    pass


class Manifest:
    def __init__(self, storage: Storage):
        self.storage = storage
        self._entries: dict[str, dict] = {}

    def _rel(self, key: str) -> str:
        return f"{MANIFEST_DIR}/{key}.json"

    def get(self, key: str) -> dict | None:
        if key not in self._entries:
            try:
                self._entries[key] = json.loads(self.storage.read_bytes(self._rel(key)))
            except FileNotFoundError:
                return None
        return self._entries[key]

    def committed(self, key: str) -> bool:
        return self.get(key) is not None

    def keys(self) -> list[str]:
        return [n[: -len(".json")] for n in self.storage.listdir(MANIFEST_DIR) if n.endswith(".json")]

    def commit(self, entry: dict) -> dict:
        entry = {**entry, "committed_at": time.time()}
        if not self.storage.create_exclusive(self._rel(entry["key"]), json.dumps(entry, indent=1).encode()):
            raise StageAlreadyCommitted(f"stage {entry['key']} is already committed")
        self._entries[entry["key"]] = entry
        return entry

    def remove(self, key: str) -> None:
        """Uncommit a stage (its files become orphans for gc)."""
        self.storage.remove(self._rel(key))
        self._entries.pop(key, None)

    def files(self, key: str, output: str) -> list[dict]:
        """The committed files of one output of a stage, sorted by part."""
        entry = self.get(key)
        if entry is None:
            raise KeyError(f"stage {key} is not committed")
        return sorted(entry["outputs"][output], key=lambda f: f["part"])
