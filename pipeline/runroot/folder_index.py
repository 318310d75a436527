"""Reading the JSON documents of a folder (manifest entries, retirement records): all, or the ones wanted.

A folder of one small file per document costs one read per document; a run of a thousand iterations
has tens of thousands. The folder's index holds each document's bytes with the size and modification
time the listing gave when it was read: a reader lists the folder once, takes every document whose size
and time still match from the index, reads only the others, and writes the index again when it read
many. Documents are parsed only when wanted, so a reader that needs a tenth of them parses a tenth. The
index is only a cache: a stale, damaged, missing or older-format one costs reads, never wrong answers,
and a reader that may not write (a read-only run root) goes on without it.
"""
from __future__ import annotations

from collections.abc import Callable

from sparkcnn.pipeline.runroot import layout
from sparkcnn.pipeline.runroot.storage import Storage

REWRITE_AFTER = 64
SUFFIX = ".json"
HEADER = b"sparkcnn folder index 2\n"

Stats = dict[str, tuple[int, float | None]]


def document_names(stats: Stats) -> list[str]:
    """The documents of a folder listing (`Storage.list_stats`), by name without the suffix."""
    return sorted(n[: -len(SUFFIX)] for n in stats if n.endswith(SUFFIX))


def read_documents(storage: Storage, folder: str, parse: Callable[[str, bytes], dict],
                   wanted: Callable[[str], bool] | None = None, listing: Stats | None = None) -> dict[str, dict]:
    """The `<name>.json` documents of a folder by name (without the suffix), every one or those
    wanted(name) accepts, each parsed by parse(name, data), which may raise for a damaged one. `listing`
    is the folder's (`Storage.list_stats`) when the caller has it."""
    stats = storage.list_stats(folder) if listing is None else listing
    index = _Index(storage, folder)
    names = document_names(stats)
    taken = {name: index.get(name, stats[name + SUFFIX])
             for name in (names if wanted is None else filter(wanted, names))}
    fresh = _read_many(storage, folder, [name for name, data in taken.items() if data is None])
    documents = {}
    for name, data in taken.items():
        data = fresh.get(name) if data is None else data
        if data is not None:  # else removed since the listing
            documents[name] = parse(name, data)
    if len(fresh) >= REWRITE_AFTER:
        kept = {}
        for name in names:
            stat = stats[name + SUFFIX]
            data = fresh.get(name) or index.get(name, stat)
            if data is not None and stat[1] is not None and len(data) == stat[0]:
                kept[name] = (stat[1], data)
        _write_index(storage, folder, kept)
    return documents


def _read_many(storage: Storage, folder: str, names: list[str]) -> dict[str, bytes]:
    """The bytes of the named documents that still exist."""
    found = {}
    for name in names:
        try:
            found[name] = storage.read_bytes(f"{folder}/{name}{SUFFIX}")
        except FileNotFoundError:
            pass
    return found


def _write_index(storage: Storage, folder: str, kept: dict[str, tuple[float, bytes]]) -> None:
    parts = [HEADER]
    for name, (mtime, data) in kept.items():
        parts += [f"{name} {len(data)} {mtime!r}\n".encode(), data, b"\n"]
    try:
        storage.write_bytes(layout.folder_index(folder), b"".join(parts))
    except OSError:
        pass


class _Index:
    """A folder's index: records of a line `name size mtime`, the document's bytes and a newline. A damaged
    record and those after it (all, in an index of another format) are left out."""

    def __init__(self, storage: Storage, folder: str):
        self.records: dict[str, tuple[int, bytes, int]] = {}  # name: size, mtime as written, where the bytes start
        try:
            self.data = storage.read_bytes(layout.folder_index(folder))
        except OSError:
            return
        data, at = self.data, len(HEADER)
        if not data.startswith(HEADER):
            return
        while at < len(data):
            end = data.find(b"\n", at)
            try:
                name, size, mtime = data[at:end].rsplit(b" ", 2)
                size = int(size)
            except ValueError:
                break
            at = end + 1 + size
            if end < 0 or data[at: at + 1] != b"\n":
                break
            self.records[name.decode(errors="replace")] = (size, mtime, end + 1)
            at += 1

    def get(self, name: str, stat: tuple[int, float | None]) -> bytes | None:
        """A document's bytes, when the index has them for this size and modification time."""
        record = self.records.get(name)
        if record is None or stat[1] is None or record[0] != stat[0] or record[1] != repr(stat[1]).encode():
            return None
        return self.data[record[2]: record[2] + record[0]]
