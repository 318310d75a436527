"""Reading every JSON document of a folder (manifest entries, retirement records) in one go.

A folder of one small file per document costs one read per document; a run of a thousand iterations
has tens of thousands. The folder's index caches the documents by name with the size and modification
time the listing gave when each was read: a reader lists the folder once, takes every document whose
size and time still match from the index, reads only the others, and writes the index again when it
read many. The index is only a cache: a stale, damaged or missing one costs reads, never wrong answers,
and a reader that may not write (a read-only run root) goes on without it.
"""
from __future__ import annotations

import json
from collections.abc import Callable

from pipeline import layout
from pipeline.storage import Storage

REWRITE_AFTER = 64
SUFFIX = ".json"


def read_all(storage: Storage, folder: str, parse: Callable[[str, bytes], dict]) -> dict[str, dict]:
    """Every `<name>.json` document of a folder by name (without the suffix), each parsed by
    parse(name, data), which may raise for a damaged one."""
    stats = {n: s for n, s in storage.list_stats(folder).items() if n.endswith(SUFFIX)}
    index = _read_index(storage, folder)
    documents, fresh = {}, {}
    for file, stat in sorted(stats.items()):
        name = file[: -len(SUFFIX)]
        cached = index.get(name)
        if cached is not None and stat[1] is not None and tuple(cached[:2]) == stat:
            documents[name] = cached[2]
            continue
        try:
            documents[name] = parse(name, storage.read_bytes(f"{folder}/{file}"))
        except FileNotFoundError:  # removed since the listing
            continue
        fresh[name] = stat
    if len(fresh) >= REWRITE_AFTER:
        kept = {n: [*stats[n + SUFFIX], documents[n]] for n in documents if stats[n + SUFFIX][1] is not None}
        try:
            storage.write_bytes(layout.folder_index(folder), json.dumps(kept, separators=(",", ":")).encode())
        except OSError:
            pass
    return documents


def _read_index(storage: Storage, folder: str) -> dict:
    try:
        index = json.loads(storage.read_bytes(layout.folder_index(folder)))
    except (OSError, ValueError):
        return {}
    return index if isinstance(index, dict) else {}
