"""Convolution layer on NHWC tensors, weights laid out (F, C, kh, kw)."""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from sparkcnn.stages.tabular import StageResult, backward_result, layer_input, per_image_table, tensor

BLOCK = 32  # images per im2col tile; the matrix products' shapes, and so their bits, depend on it
COL2IM_BYTES = 1 << 19  # column bytes per col2im tile: about half a core's L2 cache


def im2col_blocks(x: np.ndarray, kernel: int, stride: int, padding: int):
    """x (N, H, W, C) -> tiles (start, stop, columns (images * Ho * Wo, C * kernel * kernel)),
    columns ordered (C, kh, kw), BLOCK images a tile, all tiles in one reused buffer."""
    if padding:
        x = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    windows = sliding_window_view(x, (kernel, kernel), axis=(1, 2))[:, ::stride, ::stride]
    n = windows.shape[0]
    buffer = np.empty((min(BLOCK, n), *windows.shape[1:]), x.dtype)
    for start in range(0, n, BLOCK):
        stop = min(n, start + BLOCK)
        tile = buffer[: stop - start]
        np.copyto(tile, windows[start:stop])
        yield start, stop, tile.reshape(tile.shape[0] * tile.shape[1] * tile.shape[2], -1)


def forward(x: np.ndarray, params: dict) -> tuple[np.ndarray, dict]:
    """Convolve x (N, H, W, C) with params w (F, C, k, k) and b (F,) (no b: no bias).

    params also holds stride, padding and input_grad (whether backward returns dx).
    Returns out (N, Ho, Wo, F) and a cache holding x, not the im2col columns.
    """
    w, bias = params["w"], params.get("b")
    filters, _, kernel, _ = w.shape
    stride, padding = params["stride"], params["padding"]
    ho = (x.shape[1] + 2 * padding - kernel) // stride + 1
    wo = (x.shape[2] + 2 * padding - kernel) // stride + 1
    out = np.empty((x.shape[0], ho, wo, filters), np.result_type(x, w))
    weights = np.ascontiguousarray(w.reshape(filters, -1).T)
    for start, stop, cols in im2col_blocks(x, kernel, stride, padding):
        tile = out[start:stop].reshape(-1, filters)
        np.matmul(cols, weights, out=tile)
        if bias is not None:
            tile += bias
    return out, make_cache(x, params)


def make_cache(x: np.ndarray, params: dict) -> dict:
    """What backward needs: the input (im2col columns are recomputed, never kept)."""
    return {"x": x, "w": params["w"], "stride": params["stride"], "padding": params["padding"],
            "input_grad": params.get("input_grad", False), "bias": "b" in params}


def backward(dout: np.ndarray, cache: dict) -> tuple[np.ndarray | None, dict]:
    """dout (N, Ho, Wo, F) -> dx (N, H, W, C) or None when input_grad is off, grads {w, b} (b with a bias)."""
    x, w, stride, padding = cache["x"], cache["w"], cache["stride"], cache["padding"]
    filters, channels, kernel, _ = w.shape
    dw = np.zeros((filters, channels * kernel * kernel), np.result_type(dout, x))
    for start, stop, cols in im2col_blocks(x, kernel, stride, padding):
        dw += dout[start:stop].reshape(-1, filters).T @ cols
    dw = dw.reshape(w.shape)
    dflat = dout.reshape(-1, filters)
    db = dflat.sum(axis=0, dtype=np.float32)
    dx = None
    if cache["input_grad"]:
        dcols = (dflat @ w.reshape(filters, -1)).reshape(*dout.shape[:3], channels, kernel, kernel)
        dx = col2im(dcols, x.shape, stride, padding)
    return dx, {"w": dw, "b": db} if cache.get("bias", True) else {"w": dw}


def col2im(dcols: np.ndarray, shape: tuple, stride: int, padding: int) -> np.ndarray:
    """dcols (N, Ho, Wo, C, k, k) -> dx (N, H, W, C): each column added back where its window read it,
    in (kh, kw) order starting from zero, a few images at a time so that their columns stay in cache."""
    n, h, w, channels = shape
    ho, wo, _, kernel, _ = dcols.shape[1:]
    dxp = np.zeros((n, h + 2 * padding, w + 2 * padding, channels), dcols.dtype)
    step = max(1, COL2IM_BYTES // dcols[0].nbytes)
    for start in range(0, n, step):
        tile, cols = dxp[start: start + step], dcols[start: start + step]
        for i in range(kernel):
            for j in range(kernel):
                tile[:, i: i + stride * ho: stride, j: j + stride * wo: stride] += cols[..., i, j]
    return dxp[:, padding: padding + h, padding: padding + w]


def layer_params(layer, ctx) -> dict:
    """The forward params of a conv layer: its weights and options, and whether backward returns dx."""
    return {**ctx.layer_params(layer), "stride": layer["stride"], "padding": layer["padding"],
            "input_grad": ctx.network.input_grad(layer)}


def forward_stage(inputs, ctx) -> StageResult:
    """x -> out."""
    out, _ = forward(layer_input(inputs["x"], ctx), layer_params(ctx.layer, ctx))
    return StageResult({"out": per_image_table(ctx, inputs["x"], out=out)})


def backward_stage(inputs, ctx) -> StageResult:
    """dout(dx) + x -> dx (except for the first trained layer) and the shard's parameter gradients."""
    dout = tensor(inputs["dout"], "dx")
    dx, grads = backward(dout, make_cache(layer_input(inputs["x"], ctx, inputs["dout"]), layer_params(ctx.layer, ctx)))
    return backward_result(ctx, inputs["dout"], dx, grads)
