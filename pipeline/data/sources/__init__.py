"""Data sources a run ingests, detected from what `data.path` points to (a local path or any URL the
run root may take): the CIFAR-10 and CIFAR-100 python archives (or their folders), an image folder
(`DIR/<class>/*.png|jpg|jpeg`, or a `train/` and `test/` pair of them) and a Parquet dataset with an
image column and a label column.

A source describes itself on the driver from its listing and a first image (image shape, class
names) and cuts itself into pieces; executors read the pieces (`read`). Nothing here holds the
whole data set.

Modules: `base` (the interface every kind shares), one per kind (`cifar`, `image_folder`,
`parquet_images`) and `detect` (which kind a path holds: `open_source`)."""
from __future__ import annotations

from sparkcnn.pipeline.data.sources.base import Description, Piece, Records, Source, split_rule
from sparkcnn.pipeline.data.sources.detect import locate, open_source

__all__ = ["Description", "Piece", "Records", "Source", "locate", "open_source", "split_rule"]
