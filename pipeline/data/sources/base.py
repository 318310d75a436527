"""What every source kind shares: the interface (`Source`), what a source says of itself before it is
read (`Description`), a unit of ingest work (`Piece`) and a piece as read (`Records`), and the seeded
split rule for sources without a split of their own."""
from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass

import numpy as np

from sparkcnn.pipeline.errors import DataError
from sparkcnn.pipeline.runroot.storage import Storage

MAX_CLASSES = 127  # labels are int8
PIECE_BYTES, PIECE_IMAGES = 32 << 20, 4096  # at most per piece (one Spark task, one part of the image table)


@dataclass(frozen=True)
class Description:
    """What the network and the schedule need to know of a source before it is read."""

    image: tuple[int, int, int]
    class_names: tuple[str, ...]
    notes: tuple[str, ...] = ()  # warnings about what the source holds (images it does not use)


@dataclass(frozen=True)
class Piece:
    """One unit of ingest work: a part of the image table. `items` says what to read (by source kind)."""

    part: str
    items: tuple


@dataclass
class Records:
    """A piece as read: per row its origin (a path or `file#row`), label index, split and pixels
    (H, W, C) uint8 or, for an image that cannot be decoded, the reason; and a digest of the bytes read."""

    origins: list[str]
    labels: list[int]
    splits: list[str]
    images: list
    digest: str


def split_rule(key: str, seed: int, test_fraction: float) -> str:
    """"test" for a stable, seeded fraction of keys (a file's path within the source, or a row's origin)."""
    draw = int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2.0 ** 64
    return "test" if draw < test_fraction else "train"


class Source:
    """The interface of every source kind."""

    kind = ""

    def __init__(self, storage: Storage, rel: str, settings: dict):
        self.storage, self.rel, self.settings = storage, rel, settings

    @property
    def where(self) -> str:
        return self.storage.where(self.rel)

    def describe(self) -> Description:
        raise NotImplementedError

    def for_tasks(self) -> "Source":
        """This source as tasks get it: without the listing that only planning needs."""
        light = copy.copy(self)
        if hasattr(light, "files"):
            light.files = []
        return light

    def pieces(self, description: Description) -> list[Piece]:
        raise NotImplementedError

    def read(self, piece: Piece, description: Description) -> Records:
        raise NotImplementedError

    def splits(self, piece: Piece, description: Description) -> list[str]:
        """Each row's split, as `read` gives them (sources that can tell without decoding say so cheaper)."""
        return self.read(piece, description).splits

    def shape(self, first: np.ndarray) -> tuple[int, int, int]:
        """The data set's image shape: `data.resize` when set, else the first image's."""
        resize = self.settings.get("resize") or []
        return (int(resize[0]), int(resize[1]), first.shape[2]) if resize else tuple(first.shape)

    @property
    def has_split(self) -> bool:
        """Whether the source says which images are test images (else a seeded hash of each image decides)."""
        return False

    @property
    def scoring(self) -> bool:
        """Read to be scored, not trained on: labels may be missing (images straight in the folder, a
        Parquet dataset without the label column), and any number of classes will do."""
        return bool(self.settings.get("scoring"))

    def checked_classes(self, names: list[str], where: str) -> tuple[str, ...]:
        if self.scoring:
            return tuple(names)
        if len(names) < 2:
            raise DataError(f"{where}: {len(names)} class(es) ({', '.join(names) or 'none'}); a classifier needs two or more")
        if len(names) > MAX_CLASSES:
            raise DataError(f"{where}: {len(names)} classes; at most {MAX_CLASSES} are supported")
        return tuple(names)
