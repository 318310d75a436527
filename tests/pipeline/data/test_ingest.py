"""Ingest: valid archives and folders become the image table; malformed input is refused cleanly."""
import pickle
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest

from sparkcnn.pipeline import config
from sparkcnn.pipeline.data import ingest
from sparkcnn.pipeline.data.ingest import SAMPLE_DATA
from sparkcnn.pipeline.data.sources.cifar import (CIFAR10_TEST_BATCH as TEST_BATCH,
                                                  CIFAR10_TRAIN_BATCHES as TRAIN_BATCHES)
from sparkcnn.pipeline.errors import DataError
from sparkcnn.pipeline.runroot.manifest import Manifest
from sparkcnn.pipeline.runroot.storage import Storage
from sparkcnn.pipeline.training.run import Run, network_for
from sparkcnn.schemas.tables import spec
from tests.conftest import cifar_batch, write_archive


def make_run(tmp_path, data) -> Run:
    return Run(config.load(overrides=[f'data.path="{data}"', f'run.root="{tmp_path / "run"}"']))


def test_ingest_writes_image_table_and_stats(tmp_path, synthetic_archive, spark):
    run = make_run(tmp_path, synthetic_archive)
    run.run_stage(spark, "ingest")
    entry = run.manifest.get("ingest")
    assert entry["values"]["all"]["train"] == 200 and entry["values"]["all"]["test"] == 30
    files = run.manifest.files("ingest", "images")
    table = pq.read_table(run.storage.path(files[0]["path"]))
    source = pickle.loads(tarfile.open(synthetic_archive).extractfile(f"cifar-10-batches-py/{TRAIN_BATCHES[0]}").read())
    pixels = spec(run.network, "images", "pixels").decode(table.column("pixels"))
    np.testing.assert_array_equal(pixels, source[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    assert table.column("label").to_pylist() == list(source[b"labels"])
    assert set(table.column("split").to_pylist()) == {"train"}
    assert table.column("image_id").to_pylist() == list(range(40))
    stats = pq.read_table(run.storage.path(run.manifest.files("ingest", "stats")[0]["path"]))
    all_train = np.concatenate([pickle.loads(tarfile.open(synthetic_archive).extractfile(
        f"cifar-10-batches-py/{n}").read())[b"data"].reshape(-1, 3, 1024) for n in TRAIN_BATCHES])
    np.testing.assert_allclose(stats.column("mean").to_numpy(), all_train.mean(axis=(0, 2)) / 255, rtol=1e-12)
    np.testing.assert_allclose(stats.column("std").to_numpy(), all_train.std(axis=(0, 2)) / 255, rtol=1e-9)


def test_extracted_folder_gives_the_same_images(tmp_path, synthetic_archive):
    with tarfile.open(synthetic_archive) as tar:
        tar.extractall(tmp_path / "extracted", filter="data")
    folder, archive = (config.load(overrides=[f'data.path="{p}"']) for p in (tmp_path / "extracted", synthetic_archive))
    from_folder = ingest.load(folder, network_for(folder))
    from_archive = ingest.load(archive, network_for(archive))
    assert from_folder.digest == from_archive.digest
    assert len(from_folder.tables) == len(from_archive.tables) == 6
    assert all(a.drop(["source"]).equals(b.drop(["source"])) for a, b in zip(from_folder.tables, from_archive.tables))


def test_shipped_sample_is_real_cifar_layout():
    assert SAMPLE_DATA.stat().st_size <= 10 * 1024 * 1024
    cfg = config.Config()
    loaded = ingest.load(cfg, network_for(cfg))
    _, labels = loaded.split("train", network_for(cfg))
    assert labels.size >= 2000 and set(np.unique(labels)) == set(range(10))
    assert loaded.split("test", network_for(cfg))[1].size >= 1000


def _valid():
    batches = {name: cifar_batch(10, i) for i, name in enumerate(TRAIN_BATCHES)}
    batches[TEST_BATCH] = cifar_batch(10, 9)
    return batches


def _truncated(tmp_path):
    good = write_archive(tmp_path / "good.tar.gz", _valid())
    path = tmp_path / "truncated.tar.gz"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return path


def _not_cifar(tmp_path):
    path = tmp_path / "other.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        (tmp_path / "readme.txt").write_text("hello")
        tar.add(tmp_path / "readme.txt", arcname="readme.txt")
    return path


def _with(tmp_path, name, **changes):
    batches = _valid()
    batches[name] = cifar_batch(10, 1, **changes)
    return write_archive(tmp_path / "bad.tar.gz", batches)


def _missing(tmp_path):
    batches = _valid()
    del batches["data_batch_3"]
    return write_archive(tmp_path / "missing.tar.gz", batches)


def _not_pickle(tmp_path):
    batches = _valid()
    del batches["data_batch_2"]
    return write_archive(tmp_path / "garbled.tar.gz", batches, raw={"data_batch_2": b"this is not a pickle"})


@pytest.mark.parametrize("make,message", [
    (_truncated, "truncated.tar.gz: not a readable CIFAR-10 archive"),
    (_not_cifar, "missing CIFAR-10 batch files: data_batch_1"),
    (_missing, "missing CIFAR-10 batch files: data_batch_3"),
    (_not_pickle, "data_batch_2: not a readable pickle"),
    (lambda p: _with(p, "data_batch_4", data=np.zeros((10, 3000), np.uint8)), "data_batch_4: wrong record length"),
    (lambda p: _with(p, "test_batch", labels=[0] * 9 + [10]), "test_batch: label outside 0-9: 10"),
    (lambda p: _with(p, "data_batch_1", labels=[0] * 9 + [-1]), "data_batch_1: label outside 0-9: -1"),
    (lambda p: _with(p, "data_batch_5", labels=[], data=np.zeros((0, 3072), np.uint8)), "data_batch_5: empty data"),
    (lambda p: _with(p, "data_batch_2", labels=[1] * 4), "data_batch_2: 4 labels for 10 images"),
    (lambda p: p / "nowhere.tar.gz", "nowhere.tar.gz: no such file"),
])
def test_malformed_input_is_refused_and_leaves_nothing(tmp_path, make, message, spark):
    data = make(tmp_path)
    with pytest.raises(DataError) as err:
        make_run(tmp_path, data).run_stage(spark, "ingest")  # a source that cannot be described fails on the way
    assert message in str(err.value)
    assert not Manifest(Storage(str(tmp_path / "run"))).committed("ingest")
    assert not (tmp_path / "run" / "data").exists()
