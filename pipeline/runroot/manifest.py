"""The manifest of committed stages: one JSON entry per stage, created exclusively.

A stage is done exactly when its entry exists. The entry lists the files that make up
each of its outputs with their row counts and sizes; readers take files from entries,
never from folder listings, so files of a dead attempt are never read.
"""
from __future__ import annotations

import json
import time

from sparkcnn.pipeline.errors import DamagedEntry
from sparkcnn.pipeline.runroot import folder_index, layout
from sparkcnn.pipeline.runroot.storage import Storage


class StageAlreadyCommitted(RuntimeError):
    pass


class Manifest:
    def __init__(self, storage: Storage):
        self.storage = storage
        self._entries: dict[str, dict] = {}

    def _rel(self, key: str) -> str:
        return layout.manifest_entry(key)

    def get(self, key: str) -> dict | None:
        """A stage's entry, None when it is not committed; DamagedEntry when it cannot be read."""
        if key not in self._entries:
            try:
                data = self.storage.read_bytes(self._rel(key))
            except FileNotFoundError:
                return None
            self._entries[key] = self._parse(key, data)
        return self._entries[key]

    def _parse(self, key: str, data: bytes) -> dict:
        rel = self._rel(key)
        try:
            entry = json.loads(data)
        except ValueError as e:
            raise DamagedEntry(rel, f"{type(e).__name__}: {e}") from None
        if not isinstance(entry, dict) or entry.get("key") != key or not isinstance(entry.get("outputs"), dict):
            raise DamagedEntry(rel, "not the entry of this stage")
        return entry

    def refresh_index(self) -> None:
        """Write the manifest's index again if many entries are not in it (sparkcnn.pipeline.runroot.folder_index)."""
        folder_index.read_documents(self.storage, layout.MANIFEST, self._parse)

    def entries(self, keys=None, listing: folder_index.Stats | None = None) -> dict[str, dict]:
        """Every committed entry by key (or those of the given keys), from one listing of the manifest
        (or the given one) and its index (a run of a thousand iterations has ten thousand entries);
        DamagedEntry for one that cannot be read."""
        wanted = None if keys is None else set(keys).__contains__
        found = folder_index.read_documents(self.storage, layout.MANIFEST, self._parse, wanted, listing)
        if keys is None:
            self._entries = found
        else:
            self._entries.update(found)
        return dict(found)

    def readable(self, key: str) -> dict | None:
        """A stage's entry, or None when it is missing or damaged."""
        try:
            return self.get(key)
        except DamagedEntry:
            return None

    def committed(self, key: str) -> bool:
        return self.get(key) is not None

    def keys(self) -> list[str]:
        return [n[: -len(".json")] for n in self.storage.listdir(layout.MANIFEST) if n.endswith(".json")]

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
