"""Reading a folder of JSON documents through its index: one listing, reads only for what changed."""
import json

from pipeline import folder_index, layout
from pipeline.storage import Storage


def docs(storage, reads):
    original = storage.read_bytes

    def counting(rel):
        reads.append(rel)
        return original(rel)

    storage.read_bytes = counting
    try:
        return folder_index.read_all(storage, "m", lambda name, data: json.loads(data))
    finally:
        storage.read_bytes = original


def test_documents_come_from_the_index_until_they_change(tmp_path):
    storage = Storage(str(tmp_path))
    for i in range(100):
        storage.write_bytes(f"m/k{i:03d}.json", json.dumps({"i": i}).encode())
    reads = []
    assert docs(storage, reads) == {f"k{i:03d}": {"i": i} for i in range(100)}
    assert len(reads) == 101 and storage.exists(layout.folder_index("m"))  # the missing index, then every document

    storage.write_bytes("m/k007.json", json.dumps({"i": "seven"}).encode())  # rewritten: another size
    storage.remove("m/k008.json")
    storage.write_bytes("m/new.json", b'{"i": -1}')
    storage.write_bytes("m/notes.txt", b"not a document")
    reads = []
    found = docs(storage, reads)
    assert sorted(reads) == ["m/_index", "m/k007.json", "m/new.json"]
    assert found["k007"] == {"i": "seven"} and "k008" not in found and found["new"] == {"i": -1}
    assert len(found) == 100 and "_index" not in found and "notes" not in found


def test_a_damaged_index_costs_reads_not_answers(tmp_path):
    storage = Storage(str(tmp_path))
    for i in range(70):
        storage.write_bytes(f"m/k{i}.json", json.dumps(i).encode())
    docs(storage, [])
    storage.write_bytes(layout.folder_index("m"), b'{"k1": [1, 2, "stale"]')
    reads = []
    assert docs(storage, reads) == {f"k{i}": i for i in range(70)} and len(reads) == 71
    storage.write_bytes(layout.folder_index("m"), json.dumps({"k1": [1, 2, "stale"]}).encode())
    assert docs(storage, [])["k1"] == 1  # an entry whose size and time do not match is read again


def test_a_read_only_folder_is_read_without_an_index(tmp_path):
    storage = Storage(str(tmp_path))
    for i in range(70):
        storage.write_bytes(f"m/k{i}.json", json.dumps(i).encode())
    storage.write_bytes = lambda rel, data: (_ for _ in ()).throw(PermissionError(13, "read-only", rel))
    assert docs(storage, []) == {f"k{i}": i for i in range(70)}
    assert not storage.exists(layout.folder_index("m"))
