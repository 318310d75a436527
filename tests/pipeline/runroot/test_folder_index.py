"""Reading a folder of JSON documents through its index: one listing, reads only for what changed."""
import json

from sparkcnn.pipeline.runroot import folder_index, layout
from sparkcnn.pipeline.runroot.storage import Storage


def docs(storage, reads, wanted=None, parsed=None):
    original = storage.read_bytes

    def counting(rel):
        reads.append(rel)
        return original(rel)

    def parse(name, data):
        (parsed if parsed is not None else []).append(name)
        return json.loads(data)

    storage.read_bytes = counting
    try:
        return folder_index.read_documents(storage, "m", parse, wanted)
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
    index = storage.read_bytes(layout.folder_index("m"))
    storage.write_bytes(layout.folder_index("m"), json.dumps({"k1": [1, 2, "stale"]}).encode())  # another format
    reads = []
    assert docs(storage, reads) == {f"k{i}": i for i in range(70)} and len(reads) == 71
    storage.write_bytes(layout.folder_index("m"), index[: len(index) // 2])  # cut short
    reads = []
    assert docs(storage, reads) == {f"k{i}": i for i in range(70)} and 2 < len(reads) < 71
    lines = index.split(b"\n")
    stale = [line if not line.startswith(b"k1 ") else line.replace(b" 1 ", b" 1 1") for line in lines]
    storage.write_bytes(layout.folder_index("m"), b"\n".join(stale))  # k1's time no longer matches
    reads = []
    assert docs(storage, reads) == {f"k{i}": i for i in range(70)} and reads == ["m/_index", "m/k1.json"]


def test_a_read_only_folder_is_read_without_an_index(tmp_path):
    storage = Storage(str(tmp_path))
    for i in range(70):
        storage.write_bytes(f"m/k{i}.json", json.dumps(i).encode())
    storage.write_bytes = lambda rel, data: (_ for _ in ()).throw(PermissionError(13, "read-only", rel))
    assert docs(storage, []) == {f"k{i}": i for i in range(70)}
    assert not storage.exists(layout.folder_index("m"))


def test_only_wanted_documents_are_read_and_parsed_and_the_index_keeps_the_others(tmp_path):
    storage = Storage(str(tmp_path))
    for i in range(200):
        storage.write_bytes(f"m/k{i:03d}.json", json.dumps({"i": i}).encode())
    reads, parsed = [], []
    odd = lambda name: int(name[1:]) % 2 == 1
    assert docs(storage, reads, odd, parsed) == {f"k{i:03d}": {"i": i} for i in range(1, 200, 2)}
    assert len(reads) == 101 and sorted(parsed) == [f"k{i:03d}" for i in range(1, 200, 2)]  # the index, then 100
    reads, parsed = [], []
    assert docs(storage, reads, None, parsed) == {f"k{i:03d}": {"i": i} for i in range(200)}
    assert len(reads) == 101 and len(parsed) == 200  # the odd ones from the index; it is written again
    reads, parsed = [], []
    assert docs(storage, reads, lambda name: name == "k004", parsed) == {"k004": {"i": 4}}
    assert reads == ["m/_index"] and parsed == ["k004"]
