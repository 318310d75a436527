"""Data sources: image folders, Parquet datasets (encoded, raw and Spark image-source images) and
CIFAR-100, ingested by Spark tasks; shapes and classes from the data; augmentation; bad input refused."""
from __future__ import annotations

import io
import pickle
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sparkcnn.pipeline import config
from sparkcnn.pipeline.cli.main import main
from sparkcnn.pipeline.data import ingest
from sparkcnn.pipeline.data.sources import open_source, split_rule
from sparkcnn.pipeline.errors import DataError
from sparkcnn.pipeline.runroot.manifest import Manifest
from sparkcnn.pipeline.runroot.storage import Storage
from sparkcnn.pipeline.training import reference
from sparkcnn.pipeline.training.run import Run
from sparkcnn.schemas.tables import spec
from sparkcnn.stages.augment import augment
from tests.conftest import SMALL_NET, assert_bitwise_equal, image, image_folder

TRAIN = ["train.batch_size=12", "train.shard_size=6", "train.epochs=2", "run.keep_iterations=5"]


def make_run(tmp_path, data, *extra, name="run") -> Run:
    cfg = config.load(overrides=[*SMALL_NET, *TRAIN, f'data.path="{data}"', f'run.root="{tmp_path / name}"', *extra])
    run = Run(cfg)
    run.save_config()
    return run


def image_table(run: Run) -> pa.Table:
    tables = [run.storage.read_parquet(f["path"]) for f in run.manifest.files("ingest", "images")]
    return pa.concat_tables(tables).sort_by("image_id")


def test_image_folder_classes_splits_and_ids(tmp_path, spark):
    data = image_folder(tmp_path / "pets")
    run = make_run(tmp_path, data)
    run.run_stage(spark, "ingest")
    values = run.manifest.get("ingest")["values"]["all"]
    assert values["class_names"] == ["cat", "dog", "owl"] and values["image"] == [8, 10, 3]
    assert values["kind"] == "image folder" and values["train"] + values["test"] == 24
    table = image_table(run)
    files = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.*"))
    splits = {f: split_rule(f, 0, 0.1) for f in files}
    expected = [f for f in files if splits[f] == "train"] + [f for f in files if splits[f] == "test"]
    assert [s.split("pets/", 1)[1] for s in table.column("source").to_pylist()] == expected
    assert table.column("image_id").to_pylist() == list(range(24))
    assert table.column("label").to_pylist() == [["cat", "dog", "owl"].index(f.split("/")[0]) for f in expected]
    first = spec(run.network, "images", "pixels").decode(table.column("pixels"))[0]
    np.testing.assert_array_equal(first, np.asarray(Image.open(data / expected[0]).convert("RGB")))
    again = make_run(tmp_path, data, name="again")
    again.run_stage(spark, "ingest")
    assert image_table(again).drop(["source"]).equals(table.drop(["source"]))  # same ids, same images
    assert again.manifest.get("ingest")["values"]["all"]["digest"] == values["digest"]


def test_train_and_test_folders_give_the_splits(tmp_path, spark):
    image_folder(tmp_path / "pair" / "train", per_class=6)
    image_folder(tmp_path / "pair" / "test", per_class=2, seed=1)
    run = make_run(tmp_path, tmp_path / "pair")
    run.run_stage(spark, "ingest")
    values = run.manifest.get("ingest")["values"]["all"]
    assert (values["train"], values["test"]) == (18, 6) and values["class_names"] == ["cat", "dog", "owl"]
    splits = image_table(run).column("split").to_pylist()
    assert splits == ["train"] * 18 + ["test"] * 6


def test_grayscale_folder_trains_and_predicts_class_names(tmp_path, spark, capsys):
    data = image_folder(tmp_path / "gray", shape=(8, 8, 1), per_class=10)
    run = make_run(tmp_path, data)
    assert run.network.image == (8, 8, 1)
    run.train(spark, 2)
    assert run.iterations_done() == 2
    assert main(["predict", "--run-root", run.storage.url, str(data / "owl" / "001.png")]) == 0
    name = capsys.readouterr().out.split()[1]
    assert name in ("cat", "dog", "owl")


def test_resize_and_mixed_sizes(tmp_path, spark):
    data = image_folder(tmp_path / "mixed")
    rng = np.random.default_rng(5)
    image(rng, (12, 9, 3)).save(data / "dog" / "big.png")
    with pytest.raises(DataError, match=r"dog/big.png: image of height 12 and width 9, but the data set's images "
                                        r"are 8x10; set data.resize"):
        make_run(tmp_path, data).run_stage(spark, "ingest")
    assert not (tmp_path / "run" / "data").exists()
    run = make_run(tmp_path, data, "data.resize=[6, 6]", name="resized")
    run.run_stage(spark, "ingest")
    assert run.network.image == (6, 6, 3)
    table = image_table(run)
    big = table.column("source").to_pylist().index(str(data / "dog" / "big.png"))
    pixels = spec(run.network, "images", "pixels").decode(table.column("pixels"))[big]
    expected = np.asarray(Image.open(data / "dog" / "big.png").convert("RGB").resize((6, 6), Image.BILINEAR))
    np.testing.assert_array_equal(pixels, expected)


def _truncated_image(root):
    data = image_folder(root)
    (data / "cat" / "002.png").write_bytes((data / "cat" / "002.png").read_bytes()[:60])
    return data


def _empty_class(root):
    data = image_folder(root)
    (data / "emu").mkdir()
    return data


@pytest.mark.parametrize("make,message", [
    (_truncated_image, "cat/002.png: not a readable image"),
    (_empty_class, "class folder emu holds no images"),
    (lambda root: image_folder(root, classes=("cat",)), "1 class(es) (cat); a classifier needs two or more"),
])
def test_bad_image_folders_are_named_and_leave_nothing(tmp_path, spark, make, message):
    data = make(tmp_path / "bad")
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_run(tmp_path, data).run_stage(spark, "ingest")
    assert not Manifest(Storage(str(tmp_path / "run"))).committed("ingest")
    assert not (tmp_path / "run" / "data").exists()


def encoded(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def test_parquet_with_encoded_images_and_string_labels(tmp_path, spark):
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, (30, 6, 6, 3), dtype=np.uint8)
    names = np.array(["zebra", "ant", "mole"])[np.arange(30) % 3]
    table = pa.table({"png": [encoded(p) for p in pixels], "kind": names,
                      "split": ["test" if i % 5 == 0 else "train" for i in range(30)]})
    (tmp_path / "set").mkdir()
    pq.write_table(table.slice(0, 20), tmp_path / "set" / "part-0.parquet", row_group_size=8)
    pq.write_table(table.slice(20), tmp_path / "set" / "part-1.parquet")
    run = make_run(tmp_path, tmp_path / "set", 'data.image_column="png"', 'data.label_column="kind"')
    run.run_stage(spark, "ingest")
    values = run.manifest.get("ingest")["values"]["all"]
    assert values["class_names"] == ["ant", "mole", "zebra"] and (values["train"], values["test"]) == (24, 6)
    got = image_table(run)
    order = [i for i in range(30) if i % 5] + [i for i in range(30) if i % 5 == 0]
    np.testing.assert_array_equal(spec(run.network, "images", "pixels").decode(got.column("pixels")), pixels[order])
    assert got.column("label").to_pylist() == [["ant", "mole", "zebra"].index(names[i]) for i in order]


def test_parquet_with_raw_images(tmp_path, spark):
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (20, 5, 4, 1), dtype=np.uint8)
    path = tmp_path / "raw.parquet"
    pq.write_table(pa.table({"image": [p.tobytes() for p in pixels], "label": np.arange(20) % 3,
                             "height": [5] * 20, "width": [4] * 20, "channels": [1] * 20}), path)
    run = make_run(tmp_path, path, "data.test_fraction=0.25")
    run.run_stage(spark, "ingest")
    assert run.network.image == (5, 4, 1)
    got = image_table(run)
    rows = [int(s.rsplit("#", 1)[1]) for s in got.column("source").to_pylist()]
    np.testing.assert_array_equal(spec(run.network, "images", "pixels").decode(got.column("pixels")), pixels[rows])
    assert sorted(rows) == list(range(20))


def test_spark_image_source_table_is_read_as_rgb(tmp_path, spark):
    folder = image_folder(tmp_path / "pics", per_class=4, shape=(6, 7, 3))
    for path in folder.rglob("*.jpg"):
        path.unlink()
    from pyspark.sql import functions as F

    frame = spark.read.format("image").option("recursiveFileLookup", "true").load(str(folder))
    frame = frame.withColumn("label", F.element_at(F.split(F.col("image.origin"), "/"), -2))
    frame.write.parquet(str(tmp_path / "spark-images"))
    run = make_run(tmp_path, tmp_path / "spark-images", "data.test_fraction=0.3")
    run.run_stage(spark, "ingest")
    got = image_table(run)
    assert run.manifest.get("ingest")["values"]["all"]["class_names"] == ["cat", "dog", "owl"]
    decoded = spec(run.network, "images", "pixels").decode(got.column("pixels"))
    for origin, pixels, label in zip(got.column("source").to_pylist(), decoded, got.column("label").to_pylist()):
        path = origin.split("file:", 1)[-1]
        np.testing.assert_array_equal(pixels, np.asarray(Image.open(path).convert("RGB")))
        assert ["cat", "dog", "owl"][label] == path.split("/")[-2]


@pytest.mark.parametrize("table,settings,message", [
    (pa.table({"picture": [b"x"], "label": [1]}), [], "no column image"),
    (pa.table({"image": [b"x", b"y"], "label": pa.array([1, None], pa.int64())}), [], "has 1 null"),
    (pa.table({"image": [b"x"], "label": [1.5]}), [], "label column label is double"),
])
def test_bad_parquet_is_named(tmp_path, spark, table, settings, message):
    pq.write_table(table, tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=message):
        make_run(tmp_path, tmp_path / "bad.parquet", *settings).run_stage(spark, "ingest")


def cifar100(path, n=30):
    rng = np.random.default_rng(4)
    members = {"train": {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b"fine_labels": list(np.arange(n) % 5), b"coarse_labels": list(np.arange(n) % 2)},
               "test": {b"data": rng.integers(0, 256, (10, 3072), dtype=np.uint8),
                        b"fine_labels": list(np.arange(10) % 5), b"coarse_labels": list(np.arange(10) % 2)},
               "meta": {b"fine_label_names": [b"apple", b"bee", b"cup", b"dune", b"eel"],
                        b"coarse_label_names": [b"food", b"nature"]}}
    with tarfile.open(path, "w:gz") as tar:
        for name, value in members.items():
            payload = pickle.dumps(value, protocol=2)
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path, members


@pytest.mark.parametrize("coarse", [False, True])
def test_cifar100_fine_and_coarse_labels(tmp_path, spark, coarse):
    path, members = cifar100(tmp_path / "cifar-100-python.tar.gz")
    settings = [f"data.coarse_labels={str(coarse).lower()}", 'model.layers=[{type="fc", units=%d}]' % (2 if coarse else 5)]
    run = make_run(tmp_path, path, *settings)
    run.run_stage(spark, "ingest")
    values = run.manifest.get("ingest")["values"]["all"]
    assert values["kind"] == "cifar-100" and (values["train"], values["test"]) == (30, 10)
    assert values["class_names"] == (["food", "nature"] if coarse else ["apple", "bee", "cup", "dune", "eel"])
    key = b"coarse_labels" if coarse else b"fine_labels"
    assert image_table(run).column("label").to_pylist() == members["train"][key] + members["test"][key]


def test_the_last_layer_must_have_the_datas_classes(tmp_path):
    path, _ = cifar100(tmp_path / "c100.tar.gz")
    with pytest.raises(config.ConfigError, match="needs 5 scores"):
        make_run(tmp_path, path)  # SMALL_NET ends in 3 units


def test_augmentation_is_a_function_of_seed_epoch_and_image():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (64, 6, 6, 3), dtype=np.uint8)
    ids, epoch = np.arange(64) + 100, np.zeros(64, np.int64)
    once = augment(pixels, ids, epoch, 0, 2, True)
    assert once.shape == pixels.shape and not np.array_equal(once, pixels)
    np.testing.assert_array_equal(augment(pixels[::-1], ids[::-1], epoch, 0, 2, True), once[::-1])  # row by row
    np.testing.assert_array_equal(augment(pixels[5:9], ids[5:9], epoch[5:9], 0, 2, True), once[5:9])
    assert not np.array_equal(augment(pixels, ids, epoch + 1, 0, 2, True), once)
    assert not np.array_equal(augment(pixels, ids, epoch, 1, 2, True), once)
    flipped = augment(pixels, ids, epoch, 0, 0, True)
    mirrored = [np.array_equal(f, p[:, ::-1]) for f, p in zip(flipped, pixels)]
    assert all(m or np.array_equal(f, p) for m, f, p in zip(mirrored, flipped, pixels)) and 16 < sum(mirrored) < 48
    shifted = augment(np.ones_like(pixels), ids, epoch, 0, 2, False)
    assert shifted.min() == 0 and (shifted.reshape(64, -1).sum(axis=1) >= 2 * 2 * 3).all()  # zeros come from padding


def test_augmented_training_equals_the_reference_in_every_mode(tmp_path, spark):
    data = image_folder(tmp_path / "pets", per_class=10)
    augmented = ["data.augment.crop_padding=2", "data.augment.flip=true"]
    runs = {}
    for mode, extra in (("staged", ""), ("fused", ""), ("memory", ""), ("staged", "spark.partitions=3")):
        name = f"{mode}{extra and ', 3 partitions'}"
        runs[name] = make_run(tmp_path, data, *augmented, f"run.mode='{mode}'", *[e for e in [extra] if e],
                              name=name.replace(", ", "-").replace(" ", "-"))
        runs[name].train(spark, 3)
    params = {m: r.latest_params(3)[1] for m, r in runs.items()}
    for other in ("fused", "memory", "staged, 3 partitions"):
        assert_bitwise_equal(params["staged"], params[other])
    expected = reference.train(runs["staged"].cfg, 3)
    for name in expected:
        assert np.linalg.norm(params["staged"][name] - expected[name]) <= 1e-6 * np.linalg.norm(expected[name])
    plain = make_run(tmp_path, data, name="plain")
    plain.train(spark, 3)
    assert not np.array_equal(plain.latest_params(3)[1]["conv1.w"], params["staged"]["conv1.w"])


def test_sources_are_detected(tmp_path):
    image_folder(tmp_path / "f")
    pq.write_table(pa.table({"image": [b"x"], "label": [0]}), tmp_path / "one.parquet")
    assert open_source(str(tmp_path / "f"), {}).kind == "image folder"
    assert open_source(str(tmp_path / "one.parquet"), {}).kind == "parquet"
    assert open_source(str(cifar100(tmp_path / "c.tar.gz")[0]), {}).kind == "cifar-100"
    assert open_source(str(ingest.SAMPLE_DATA), {}).kind == "cifar-10"
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="holds no CIFAR batches, Parquet files or images"):
        open_source(str(tmp_path / "nothing"), {})


def test_empty_and_non_parquet_parquet_files_are_named_as_such(tmp_path):
    (tmp_path / "empty.parquet").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty.parquet: empty \(0 bytes\), not a data source"):
        open_source(str(tmp_path / "empty.parquet"), {})
    (tmp_path / "text.parquet").write_text("image,label\n")
    with pytest.raises(DataError, match=r"text.parquet: not a Parquet file \(it does not begin with PAR1\)"):
        open_source(str(tmp_path / "text.parquet"), {})
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "part-0.parquet").write_bytes(b"")
    with pytest.raises(DataError, match=r"folder/part-0.parquet: not a Parquet file \(empty: 0 bytes\)"):
        open_source(str(tmp_path / "folder"), {}).describe()


def test_images_outside_class_folders_are_counted_and_deeper_ones_belong_to_their_class(tmp_path):
    data = image_folder(tmp_path / "pair" / "train", per_class=2)
    image_folder(tmp_path / "pair" / "test", per_class=1, seed=1)
    rng = np.random.default_rng(7)
    (data / "owl" / "young").mkdir()
    image(rng, (8, 10, 3)).save(data / "owl" / "young" / "a.png")
    image(rng, (8, 10, 3)).save(data / "loose.png")
    image(rng, (8, 10, 3)).save(tmp_path / "pair" / "top.png")
    source = open_source(str(tmp_path / "pair"), {})
    description = source.describe()
    assert source.paired and description.class_names == ("cat", "dog", "owl")
    assert description.notes == (f"{tmp_path / 'pair'}: 2 image(s) outside any class folder are not used (the first: "
                                 f"top.png); images are taken from DIR/<class>/ and its subfolders",)
    rows = [row for piece in source.pieces(description) for row in piece.items]
    assert ("train/owl/young/a.png", 2, "train") in rows and len(rows) == 3 * 2 + 1 + 3 * 1
    scoring = open_source(str(tmp_path / "pair"), {"scoring": True})
    assert not scoring.describe().notes and len(scoring.pieces(scoring.describe())[0].items) == 12
