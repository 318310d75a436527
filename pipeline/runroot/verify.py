"""Verification of committed stages, and the repair plan for what fails it."""
from __future__ import annotations

import posixpath

from sparkcnn.pipeline.errors import DamagedEntry
from sparkcnn.pipeline.runroot.manifest import Manifest
from sparkcnn.pipeline.runroot.storage import Storage


def check_file(storage: Storage, f: dict) -> str | None:
    """None when the file is as recorded, else what is wrong with it."""
    try:
        size = storage.size(f["path"])
    except FileNotFoundError:
        return f"{f['path']}: missing"
    if size != f["bytes"]:
        return f"{f['path']}: {size} bytes, recorded {f['bytes']}"
    try:
        rows = storage.parquet_rows(f["path"])
    except Exception as e:  # any unreadable footer is corruption, whatever pyarrow calls it
        return f"{f['path']}: not readable as Parquet ({type(e).__name__})"
    if rows != f["rows"]:
        return f"{f['path']}: {rows} rows, recorded {f['rows']}"
    return None


def verify(storage: Storage, manifest: Manifest, retention, keys) -> dict[str, list[str]]:
    """Problems of the files of each committed stage named (retired outputs, and files in the folders
    retention removed with them, are not checked: records written before retirement named every output of a
    folder lack a parameter version's running statistics); only stages with problems."""
    problems = {}
    for key in keys:
        try:
            entry = manifest.get(key)
        except DamagedEntry as e:
            problems[key] = [f"{e.rel}: unreadable manifest entry"]
            continue
        if entry is None:
            continue
        gone = retention.retired_outputs(key)
        removed = {posixpath.dirname(f["path"]) for o in gone for f in entry["outputs"].get(o, ())}
        found = [p for o, files in entry["outputs"].items() if o not in gone
                 for p in (check_file(storage, f) for f in files if posixpath.dirname(f["path"]) not in removed) if p]
        if found:
            problems[key] = found
    return problems


def dependents(manifest: Manifest, keys) -> set[str]:
    """The given stages and every committed stage that reads them, directly or not."""
    readers: dict[str, set[str]] = {}
    for key in manifest.keys():
        for dep in (manifest.readable(key) or {}).get("inputs", []):
            readers.setdefault(dep, set()).add(key)
    found, todo = set(), list(keys)
    while todo:
        key = todo.pop()
        if key not in found:
            found.add(key)
            todo.extend(readers.get(key, ()))
    return found
