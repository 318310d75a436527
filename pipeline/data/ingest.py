"""A data source (sparkcnn.pipeline.data.sources) to the Parquet image table: one part per piece, each piece read,
decoded and written by one task, with ids that follow the source order (the training split first,
then the test split); and the training split's per-channel statistics from exact integer sums."""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sparkcnn.pipeline.data.fingerprint import fingerprint
from sparkcnn.pipeline.data.images import fit
from sparkcnn.pipeline.data.sources import Description, Piece, Source, open_source
from sparkcnn.pipeline.errors import DataError
from sparkcnn.pipeline.runroot import layout
from sparkcnn.schemas.tables import STATS_SCHEMA, images_schema, spec
from sparkcnn.schemas.tensors import summarize
from sparkcnn.stages.tabular import STD_FLOOR, floored_std

SAMPLE_DATA = Path(__file__).resolve().parent / "sample" / "cifar-10-sample.tar.gz"


def resolve_data_path(path: str) -> str:
    """The data to ingest: the given path, else the embedded sample (copied out of a zipped package)."""
    if path:
        return path
    if SAMPLE_DATA.exists():
        return str(SAMPLE_DATA)
    from importlib import resources

    data = resources.files(__package__).joinpath("sample", SAMPLE_DATA.name).read_bytes()
    copy = Path(tempfile.gettempdir()) / f"sparkcnn-{hashlib.sha256(data).hexdigest()[:12]}-{SAMPLE_DATA.name}"
    if not copy.exists():
        tmp = copy.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, copy)
    return str(copy)


def source_settings(cfg) -> dict:
    """What a source reads of the config: data.* (but the path) and the seed of the split rule."""
    data = asdict(cfg.data)
    return {**{k: v for k, v in data.items() if k not in ("path", "augment")}, "seed": cfg.train.seed}


_described: dict[tuple, tuple[Source, Description]] = {}


def configured_source(cfg) -> tuple[Source, Description]:
    """The config's data source and its description (described once per process and source state)."""
    path = resolve_data_path(cfg.data.path)
    settings = source_settings(cfg)
    key = (path, repr(sorted(settings.items())), _stamp(path))
    if key not in _described:
        source = open_source(path, settings)
        _described[key] = source, source.describe()
    return _described[key]


def _stamp(path: str):
    try:
        stat = os.stat(path)
        return stat.st_size, stat.st_mtime_ns
    except OSError:
        return None


@dataclass(frozen=True)
class PieceTask:
    """What every ingest task needs: the source, its description and where the image table goes."""

    source: Source
    description: Description
    net: object
    storage: object
    resize: bool


def count_piece(source: Source, description: Description, piece: Piece) -> dict:
    """Rows of each split in a piece (first pass: ids need the counts of the pieces before)."""
    try:
        splits = source.splits(piece, description)
    except DataError as e:
        return {"error": str(e)}
    return {"train": splits.count("train"), "test": splits.count("test")}


def row_ids(splits: list[str], first_train: int, first_test: int) -> np.ndarray:
    """A piece's image ids: its training rows numbered from `first_train`, its test rows from `first_test`."""
    train = np.array(splits) == "train"
    ids = np.empty(train.size, np.int64)
    ids[train] = first_train + np.arange(int(train.sum()))
    ids[~train] = first_test + np.arange(int((~train).sum()))
    return ids


def numbered_pieces(spark, source: Source, description: Description, what: str) -> list[tuple[Piece, tuple[int, int]]]:
    """The source's pieces with (first training id, first test id) each, from a Spark job that counts
    every piece's rows of each split; the first problem found is a DataError."""
    pieces = source.pieces(description)
    light = source.for_tasks()
    context = spark.sparkContext
    context.setJobDescription(f"{what}: count")
    indexed = context.parallelize(list(enumerate(pieces)), max(1, len(pieces)))
    counts = [c for _, c in sorted(indexed.map(lambda item: (item[0], count_piece(light, description, item[1])))
                                   .collect())]
    if error := first_error(counts):
        raise DataError(error)
    return list(zip(pieces, first_ids(counts)))


def piece_table(task: PieceTask, piece: Piece, first_train: int, first_test: int) -> tuple[pa.Table | None, dict]:
    """A piece as its part of the image table, with per-channel integer sums of its training pixels,
    a digest of what was read and the first problem found (an unreadable image, a size that differs)."""
    try:
        records = task.source.read(piece, task.description)
    except DataError as e:
        return None, {"error": str(e)}
    shape = task.description.image
    pixels = []
    for origin, image in zip(records.origins, records.images):
        if isinstance(image, str):
            return None, {"error": image}
        fitted = fit(image, shape, task.resize)
        if fitted is None:
            return None, {"error": f"{origin}: image of height {image.shape[0]} and width {image.shape[1]}, but "
                                   f"the data set's images are {shape[0]}x{shape[1]}; set data.resize = [H, W] to "
                                   f"resize every image on ingest"}
        pixels.append(fitted)
    train = np.array(records.splits) == "train"
    ids = row_ids(records.splits, first_train, first_test)
    stacked = np.stack(pixels) if pixels else np.zeros((0, *shape), np.uint8)
    flat = stacked[train].reshape(-1, shape[2])
    stats = summarize(stacked)
    table = pa.Table.from_arrays(
        [pa.array(ids), pa.array(np.asarray(records.labels, np.int8)), pa.array(records.splits),
         pa.array(records.origins), spec(task.net, "images", "pixels").encode(stacked),
         *(pa.array(stats[k]) for k in ("mean", "std", "min", "max", "l2", "zeros"))],
        schema=images_schema(task.net),
    )
    values = {"train": int(train.sum()), "test": int((~train).sum()), "digest": records.digest,
              "pixels": int(flat.shape[0]), "sum": flat.sum(axis=0, dtype=np.uint64).tolist(),
              "squares": (flat.astype(np.uint32) ** 2).sum(axis=0, dtype=np.uint64).tolist()}
    return table, values


def write_piece(task: PieceTask, piece: Piece, first_train: int, first_test: int) -> dict:
    """Run on an executor: a piece's part of the image table written; its file row and values."""
    table, values = piece_table(task, piece, first_train, first_test)
    if table is None:
        return values
    path = layout.output_path(layout.IMAGES, "images", piece.part)
    size = task.storage.write_parquet(table, path, fresh=True)
    return {**values, "file": {"part": piece.part, "output": "images", "path": path, "rows": table.num_rows,
                               "bytes": size}}


def first_ids(counts: list[dict]) -> list[tuple[int, int]]:
    """(first training id, first test id) of each piece: training images are numbered from 0 in piece
    order, test images after all training images."""
    train_total = sum(c["train"] for c in counts)
    train_at, test_at = np.cumsum([0, *(c["train"] for c in counts)]), np.cumsum([0, *(c["test"] for c in counts)])
    return [(int(train_at[i]), int(train_total + test_at[i])) for i in range(len(counts))]


def first_error(results: list[dict]) -> str | None:
    """The first problem in piece order, or None."""
    return next((r["error"] for r in results if "error" in r), None)


def channel_stats(results: list[dict], channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and measured std of the training pixels scaled to [0, 1], from the pieces' exact sums."""
    count = sum(r["pixels"] for r in results)
    total = sum((np.array(r["sum"], np.uint64) for r in results), np.zeros(channels, np.uint64))
    squares = sum((np.array(r["squares"], np.uint64) for r in results), np.zeros(channels, np.uint64))
    mean = total.astype(np.float64) / count
    std = np.sqrt(np.maximum(squares.astype(np.float64) / count - mean ** 2, 0.0))
    return mean / 255.0, std / 255.0


def stats_table(results: list[dict], channels: int) -> pa.Table:
    """The statistics normalisation uses: the channel means and stds, each std at least STD_FLOOR."""
    mean, std = channel_stats(results, channels)
    return pa.Table.from_arrays([pa.array(np.arange(channels, dtype=np.int32)), pa.array(mean),
                                 pa.array(floored_std(std))], schema=STATS_SCHEMA)


def std_record(results: list[dict], channels: int) -> dict:
    """What the ingest entry records of the std floor: the measured stds and the channels floored."""
    std = channel_stats(results, channels)[1]
    return {"std_measured": std.tolist(), "std_floor": STD_FLOOR,
            "std_floored": [int(c) for c in np.flatnonzero(std < STD_FLOOR)]}


def ingest_values(cfg, source: Source, description: Description, results: list[dict]) -> dict:
    """The ingest entry's values: counts per split, the content digest, where the data came from and its
    fingerprint (sparkcnn.pipeline.data.fingerprint), image shape, classes, notes and the std floor's record."""
    return {"train": sum(r["train"] for r in results), "test": sum(r["test"] for r in results),
            "digest": digest(results), "source": source.where,
            "fingerprint": fingerprint(resolve_data_path(cfg.data.path)),
            "kind": source.kind, "image": list(description.image), "classes": len(description.class_names),
            "class_names": list(description.class_names), "notes": list(description.notes),
            **std_record(results, description.image[2])}


def digest(results: list[dict]) -> str:
    """The data set's content hash: of the pieces' digests, in piece order."""
    return hashlib.sha256("".join(r["digest"] for r in results).encode()).hexdigest()


@dataclass
class Loaded:
    """A whole (small) data set read in this process: for the numpy reference, the bench and tests."""

    description: Description
    tables: list[pa.Table]
    stats: pa.Table
    digest: str

    def split(self, name: str, net) -> tuple[np.ndarray, np.ndarray]:
        """Pixels (N, H, W, C) and labels of a split, in id order."""
        tables = [t.filter(pc.equal(t.column("split"), name)) for t in self.tables]
        table = pa.concat_tables(tables).sort_by("image_id")
        return spec(net, "images", "pixels").decode(table.column("pixels")), table.column("label").to_numpy()


def load(cfg, net) -> Loaded:
    """Every piece of the config's source read here, as ingest would write them (nothing is written)."""
    source, description = configured_source(cfg)
    task = PieceTask(source, description, net, None, bool(cfg.data.resize))
    pieces = source.pieces(description)
    counts = [count_piece(source, description, p) for p in pieces]
    if error := first_error(counts):
        raise DataError(error)
    results = [piece_table(task, p, *ids) for p, ids in zip(pieces, first_ids(counts))]
    if error := first_error([values for _, values in results]):
        raise DataError(error)
    values = [v for _, v in results]
    return Loaded(description, [t for t, _ in results], stats_table(values, description.image[2]), digest(values))
