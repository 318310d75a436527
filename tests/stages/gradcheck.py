"""Finite-difference gradient checking in float64 for the float32 kernels."""
from __future__ import annotations

import numpy as np


def numeric_gradient(f, x: np.ndarray, h: float = 1e-3, samples: int = 40, rng=None) -> tuple[np.ndarray, np.ndarray]:
    """Central differences of scalar f at `samples` random elements of x; returns (indices, gradient)."""
    rng = rng or np.random.default_rng(0)
    flat = x.reshape(-1)
    idx = rng.choice(flat.size, size=min(samples, flat.size), replace=False)
    grads = np.empty(idx.size)
    for k, i in enumerate(idx):
        old = flat[i]
        flat[i] = old + h
        plus = f()
        flat[i] = old - h
        minus = f()
        flat[i] = old
        grads[k] = (plus - minus) / (2 * h)
    return idx, grads


def assert_gradient(analytic: np.ndarray, f, x: np.ndarray, rtol: float = 2e-2, atol: float = 1e-3, **kw) -> None:
    idx, numeric = numeric_gradient(f, x, **kw)
    got = analytic.reshape(-1)[idx]
    np.testing.assert_allclose(got, numeric, rtol=rtol, atol=atol)
