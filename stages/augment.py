"""Training-time augmentation of uint8 images: a random crop after zero padding and a horizontal flip.
Each image's choice is a pure function of (seed, epoch, image id), so restarts, execution modes and
partitionings see the same images."""
from __future__ import annotations

import numpy as np

_MASK = (1 << 64) - 1


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, elementwise on uint64."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def draws(seed: int, epochs: np.ndarray, image_ids: np.ndarray, count: int) -> np.ndarray:
    """`count` uniform uint64 draws per image (N, count), from (seed, epoch, image id) alone."""
    with np.errstate(over="ignore"):
        base = _mix(np.uint64(seed & _MASK) * np.uint64(0x9E3779B97F4A7C15)
                    + _mix(epochs.astype(np.uint64) + np.uint64(0x632BE59BD9B4E019))
                    + _mix(image_ids.astype(np.uint64) ^ np.uint64(0xD1B54A32D192ED03)))
        return np.stack([_mix(base + np.uint64(k + 1) * np.uint64(0x9E3779B97F4A7C15)) for k in range(count)], axis=1)


def augment(pixels: np.ndarray, image_ids: np.ndarray, epochs: np.ndarray, seed: int, crop_padding: int,
            flip: bool) -> np.ndarray:
    """Images (N, H, W, C) uint8, each shifted by a crop of the image padded with `crop_padding` zeros on
    every side (offsets 0..2*padding in each direction) and mirrored left-right with probability 1/2."""
    if not crop_padding and not flip:
        return pixels
    n, h, w, _ = pixels.shape
    d = draws(seed, epochs, image_ids, 3)
    out = pixels
    if crop_padding:
        p = crop_padding
        padded = np.pad(pixels, ((0, 0), (p, p), (p, p), (0, 0)))
        dy = (d[:, 0] % np.uint64(2 * p + 1)).astype(np.int64)
        dx = (d[:, 1] % np.uint64(2 * p + 1)).astype(np.int64)
        out = np.stack([padded[i, dy[i]: dy[i] + h, dx[i]: dx[i] + w] for i in range(n)]) if n else pixels
    if flip:
        mirrored = (d[:, 2] >> np.uint64(63)).astype(bool)
        out = out.copy() if out is pixels else out
        out[mirrored] = out[mirrored, :, ::-1]
    return out
