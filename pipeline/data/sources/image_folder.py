"""Image folders: `DIR/<class>/*.png|jpg|jpeg`, or a `train/` and `test/` pair of them."""
from __future__ import annotations

import hashlib
import posixpath

import numpy as np

from sparkcnn.pipeline.data.images import decode_image
from sparkcnn.pipeline.data.sources.base import (PIECE_BYTES, PIECE_IMAGES, Description, Piece, Records, Source,
                                                 split_rule)
from sparkcnn.pipeline.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class ImageFolder(Source):
    """`DIR/<class>/<image>` (classes sorted by name), or `DIR/train/<class>/...` with `DIR/test/<class>/...`;
    without the pair, a seeded fraction of each folder's files (data.test_fraction) is the test split.
    An image in a subfolder of a class folder belongs to that class; images outside any class folder
    are not used for training (one warning counts them), and are scored unlabelled."""

    kind = "image folder"

    def __init__(self, storage, rel, settings, files: list[str]):
        super().__init__(storage, rel, settings)
        self.files = files  # image paths relative to the source, sorted
        self.paired = {f.split("/", 1)[0] for f in files if "/" in f} == {"train", "test"}

    @property
    def has_split(self) -> bool:
        return self.paired

    def _place(self, path: str) -> tuple[str, str | None]:
        """(class folder, or "" outside any; split of a train/test pair, else None) of an image."""
        parts = path.split("/")
        split = parts.pop(0) if self.paired and len(parts) > 1 else None
        return (parts[0] if len(parts) >= 2 else ""), split

    def _labelled(self) -> list[tuple[str, str, str]]:
        """(path, class name, split) of every image used, in path order."""
        rows = []
        for path in self.files:
            name, split = self._place(path)
            if name or self.scoring:
                rows.append((path, name, split or split_rule(path, self.settings.get("seed", 0),
                                                             self.settings.get("test_fraction", 0.1))))
        return rows

    def _unused(self) -> tuple[str, ...]:
        """A warning counting the images outside any class folder, which training does not use."""
        outside = [path for path in self.files if not self._place(path)[0]]
        if not outside or self.scoring:
            return ()
        return (f"{self.where}: {len(outside)} image(s) outside any class folder are not used (the first: "
                f"{outside[0]}); images are taken from DIR/<class>/ and its subfolders",)

    def class_folders(self) -> list[str]:
        found = set()
        base = self.storage.path(self.rel)
        for top in (("train", "test") if self.paired else ("",)):
            for entry in self.storage.fs.ls(posixpath.join(base, top) if top else base, detail=True):
                if entry.get("type") == "directory":
                    found.add(entry["name"].rstrip("/").rsplit("/", 1)[-1])
        return sorted(found)

    def describe(self) -> Description:
        labelled = self._labelled()
        with_images = {name for _, name, _ in labelled if name}
        empty = [c for c in self.class_folders() if c not in with_images]
        if empty:
            raise DataError(f"{self.where}: class folder {empty[0]} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        if not labelled:
            raise DataError(f"{self.where}: no images in class folders (expected DIR/<class>/*.png|jpg|jpeg)")
        first = labelled[0][0]
        pixels = decode_image(self._read(first), self.storage.where(posixpath.join(self.rel, first)))
        if isinstance(pixels, str):
            raise DataError(pixels)
        return Description(self.shape(pixels), self.checked_classes(sorted(with_images), self.where), self._unused())

    def pieces(self, description: Description) -> list[Piece]:
        index = {name: i for i, name in enumerate(description.class_names)}
        per_piece = max(1, min(PIECE_IMAGES, PIECE_BYTES // int(np.prod(description.image))))
        rows = [(path, index.get(name, -1), split) for path, name, split in self._labelled()]
        return [Piece(f"part-{n:05d}", tuple(rows[start: start + per_piece]))
                for n, start in enumerate(range(0, len(rows), per_piece))]

    def splits(self, piece: Piece, description: Description) -> list[str]:
        return [split for _, _, split in piece.items]

    def read(self, piece: Piece, description: Description) -> Records:
        digest = hashlib.sha256()
        origins, labels, splits, images = [], [], [], []
        for path, label, split in piece.items:
            data = self._read(path)
            digest.update(hashlib.sha256(path.encode() + b"\0" + data).digest())
            origin = self.storage.where(posixpath.join(self.rel, path))
            origins.append(origin)
            labels.append(label)
            splits.append(split)
            images.append(decode_image(data, origin))
        return Records(origins, labels, splits, images, digest.hexdigest())

    def _read(self, path: str) -> bytes:
        try:
            return self.storage.read_bytes(posixpath.join(self.rel, path))
        except OSError as e:
            raise DataError(f"{self.storage.where(posixpath.join(self.rel, path))}: cannot be read ({e})") from None

