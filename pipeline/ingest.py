"""CIFAR-10 in its python-pickle layout (a .tar.gz or the extracted folder) to a Parquet image table."""
from __future__ import annotations

import hashlib
import os
import pickle
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa

from schemas.tables import STATS_SCHEMA, images_schema, spec
from schemas.tensors import summarize

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
IMAGE = (32, 32, 3)
RECORD_BYTES = 32 * 32 * 3
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


SAMPLE_DATA = Path(__file__).resolve().parent / "sample" / "cifar-10-sample.tar.gz"


class DataError(ValueError):
    """Input data that cannot be used; the message names the file and the problem."""


def resolve_data_path(path: str) -> str:
    """The data to ingest: the given path, else the embedded sample (copied out of a zipped package)."""
    if path:
        return path
    if SAMPLE_DATA.exists():
        return str(SAMPLE_DATA)
    from importlib import resources

    data = resources.files("pipeline").joinpath("sample", SAMPLE_DATA.name).read_bytes()
    copy = Path(tempfile.gettempdir()) / f"sparkcnn-{hashlib.sha256(data).hexdigest()[:12]}-{SAMPLE_DATA.name}"
    if not copy.exists():
        tmp = copy.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, copy)
    return str(copy)


def read_batches(path: str | Path) -> dict[str, bytes]:
    """Raw bytes of the six batch files, read from a .tar.gz archive or a folder."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    wanted = (*TRAIN_BATCHES, TEST_BATCH)
    if path.is_dir():
        found = {p.name: p for p in path.rglob("*") if p.name in wanted and p.is_file()}
        raw = {name: found[name].read_bytes() for name in wanted if name in found}
    else:
        raw = _read_archive(path, wanted)
    missing = [name for name in wanted if name not in raw]
    if missing:
        raise DataError(f"{path}: missing CIFAR-10 batch files: {', '.join(missing)}")
    return raw


def _read_archive(path: Path, wanted: tuple[str, ...]) -> dict[str, bytes]:
    raw = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                name = member.name.rsplit("/", 1)[-1]
                if member.isfile() and name in wanted:
                    raw[name] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"{path}: not a readable CIFAR-10 archive ({type(e).__name__}: {e})") from None
    return raw


def decode_batch(where: str, payload: bytes) -> tuple[np.ndarray, np.ndarray]:
    """A pickled batch -> pixels (N, 32, 32, 3) uint8 in HWC order, labels (N,) int8."""
    try:
        batch = pickle.loads(payload, encoding="bytes")
    except Exception as e:
        raise DataError(f"{where}: not a readable pickle ({type(e).__name__}: {e})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{where}: not a CIFAR-10 batch (expected a dict with b'data' and b'labels')")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"])
    if data.size == 0 or labels.size == 0:
        raise DataError(f"{where}: empty data")
    if data.ndim != 2 or data.shape[1] != RECORD_BYTES or data.dtype != np.uint8:
        raise DataError(f"{where}: wrong record length: data has shape {data.shape} and dtype {data.dtype}, "
                        f"expected (N, {RECORD_BYTES}) uint8")
    if labels.shape != (data.shape[0],):
        raise DataError(f"{where}: {labels.size} labels for {data.shape[0]} images")
    bad = labels[(labels < 0) | (labels > 9)]
    if bad.size:
        raise DataError(f"{where}: label outside 0-9: {int(bad[0])}")
    pixels = data.reshape(-1, IMAGE[2], *IMAGE[:2]).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(pixels), labels.astype(np.int8)


def describe(path: str | Path) -> tuple[tuple[int, int, int], int]:
    """(image height, width, channels) and the number of classes of a data set, without reading it."""
    return IMAGE, len(CLASSES)


def load(path: str | Path, net) -> tuple[dict[str, pa.Table], pa.Table, str]:
    """Validate and decode every batch; returns image tables by batch name, the stats table
    and a content hash. Nothing is written here, so bad input leaves nothing behind."""
    raw = read_batches(path)
    digest = hashlib.sha256()
    tables, train_pixels = {}, []
    next_id = 0
    for name in (*TRAIN_BATCHES, TEST_BATCH):
        digest.update(raw[name])
        pixels, labels = decode_batch(f"{path}: {name}", raw[name])
        n = labels.shape[0]
        split = "test" if name == TEST_BATCH else "train"
        if split == "train":
            train_pixels.append(pixels)
        stats = summarize(pixels)
        tables[name] = pa.Table.from_arrays(
            [pa.array(np.arange(next_id, next_id + n, dtype=np.int64)), pa.array(labels),
             pa.array([split] * n), pa.array([name] * n), spec(net, "images", "pixels").encode(pixels),
             *(pa.array(stats[k]) for k in ("mean", "std", "min", "max", "l2", "zeros"))],
            schema=images_schema(net),
        )
        next_id += n
    return tables, channel_stats(train_pixels), digest.hexdigest()


def channel_stats(batches: list[np.ndarray]) -> pa.Table:
    """Per-channel mean and std of uint8 pixels (N, H, W, C) scaled to [0, 1], from exact integer sums."""
    channels = batches[0].shape[-1]
    count, total, squares = 0, np.zeros(channels, np.uint64), np.zeros(channels, np.uint64)
    for pixels in batches:
        flat = pixels.reshape(-1, channels)
        count += flat.shape[0]
        total += flat.sum(axis=0, dtype=np.uint64)
        squares += (flat.astype(np.uint32) ** 2).sum(axis=0, dtype=np.uint64)
    mean = total.astype(np.float64) / count
    std = np.sqrt(np.maximum(squares.astype(np.float64) / count - mean ** 2, 0.0))
    return pa.Table.from_arrays(
        [pa.array(np.arange(channels, dtype=np.int32)), pa.array(mean / 255.0), pa.array(std / 255.0)],
        schema=STATS_SCHEMA,
    )
