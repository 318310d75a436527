"""Build the embedded CIFAR-10 sample from the full python-pickle archive.

Usage: python scripts/make_sample.py [SOURCE.tar.gz] [OUT.tar.gz] [--train-per-batch N] [--test N]
Takes the first N images of each training batch and of the test batch, keeping the layout.
"""
from __future__ import annotations

import argparse
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from sparkcnn.pipeline.data.sources import open_source
from sparkcnn.pipeline.data.sources.cifar import (CIFAR10_BATCHES, CIFAR10_CLASSES as CLASSES,
                                                  CIFAR10_TEST_BATCH as TEST_BATCH,
                                                  CIFAR10_TRAIN_BATCHES as TRAIN_BATCHES)

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", default=str(ROOT.parent / "shared/data/cifar-10-python.tar.gz"))
    parser.add_argument("out", nargs="?", default=str(ROOT / "pipeline/sample/cifar-10-sample.tar.gz"))
    parser.add_argument("--train-per-batch", type=int, default=400)
    parser.add_argument("--test", type=int, default=1000)
    args = parser.parse_args()
    raw = open_source(args.source, {}).members(CIFAR10_BATCHES)
    with tarfile.open(args.out, "w:gz", compresslevel=9) as tar:
        for name in (*TRAIN_BATCHES, TEST_BATCH, "batches.meta"):
            if name == "batches.meta":
                payload = pickle.dumps({b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072}, protocol=2)
            else:
                keep = args.test if name == TEST_BATCH else args.train_per_batch
                batch = pickle.loads(raw[name], encoding="bytes")
                small = {
                    b"batch_label": batch.get(b"batch_label", name.encode()),
                    b"labels": list(batch[b"labels"][:keep]),
                    b"data": np.ascontiguousarray(batch[b"data"][:keep]),
                    b"filenames": list(batch.get(b"filenames", [])[:keep]),
                }
                payload = pickle.dumps(small, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(payload))
    print(f"wrote {args.out}: {Path(args.out).stat().st_size} bytes")


if __name__ == "__main__":
    main()
