"""Each layer kernel's seconds and GFLOP/s, forward and backward, and the matrix-product peak to hold them
against: the numbers behind bench's kernel table and scripts/kernel_bench.py.

Seconds are the process's CPU time, not wall time: on a shared machine a kernel waiting for a core would
count, and with one BLAS thread CPU time is the kernel's time on one core (with more, GFLOP/s are per core)."""
from __future__ import annotations

import statistics
import time

import numpy as np

from sparkcnn.schemas.network import Network
from sparkcnn.schemas.topology import MULTI_INPUT
from sparkcnn.stages import update, whole_network
from sparkcnn.stages.tabular import StageContext


def layer_flops(layer, images: int, input_grad: bool) -> tuple[float, float]:
    """Floating-point operations of a layer's forward and backward on `images` images: multiply-adds count
    two (conv, fc), an add one per sum, every other kernel one per window element it reads."""
    out = images * int(np.prod(layer.out_shape))
    if layer.type in ("conv", "fc"):
        fan_in = layer.fan_in
        forward = 2.0 * out * fan_in
        return forward, forward * (2 if input_grad or layer.type == "fc" else 1)
    if layer.type == "add":  # backward hands dout on to every input: no arithmetic
        return float(out * (len(layer.inputs) - 1)), 0.0
    if layer.type in ("max_pool", "avg_pool"):
        window = out * layer["size"] ** 2
        return float(window), float(window)
    return float(out), float(out)


def matmul_peak(size: int = 1024, repeat: int = 10) -> float:
    """GFLOP/s of a float32 (size x size) @ (size x size) product, best of `repeat` (a shared machine's
    quietest moment), with the BLAS threads in force."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((size, size), np.float32) for _ in range(2))
    out = np.empty_like(a)
    best = float("inf")
    for _ in range(repeat + 1):
        t0 = time.process_time()
        np.matmul(a, b, out=out)
        best = min(best, time.process_time() - t0)
    return 2.0 * size ** 3 / best / 1e9


def layer_timings(net: Network, images: int, repeat: int, seed: int = 0) -> list[dict]:
    """Per layer (dropout aside), in the graph's order and in training mode: seconds forward and backward
    (median, min, max of `repeat` calls after a warm-up) on `images` random images and a random upstream
    gradient, and the FLOPs of each pass."""
    rng = np.random.default_rng(seed)
    ctx = StageContext(net, update.init_params(net, seed), normalizer=images)
    keys = (0, np.arange(images))
    x = rng.standard_normal((images, *net.layers[0].in_shape), np.float32)
    outputs, rows = {}, []
    for layer in net.layers:
        kernel = whole_network.LAYERS[layer.type]
        params = whole_network.layer_params(layer, ctx, keys)
        inputs = tuple(outputs[n] for n in layer.inputs) or (x,)
        x_in = inputs if layer.type in MULTI_INPUT else inputs[0]
        out, cache = kernel.forward(x_in, params)
        dout = rng.standard_normal(out.shape, np.float32)
        fwd = _seconds(lambda: kernel.forward(x_in, params), repeat)
        bwd = _seconds(lambda: kernel.backward(dout, cache), repeat) if net.has_backward(layer) else None
        flops = layer_flops(layer, images, net.input_grad(layer) if layer.type == "conv" else True)
        rows.append({"layer": layer.name, "type": layer.type, "forward": fwd, "backward": bwd,
                     "forward_flops": flops[0], "backward_flops": flops[1]})
        outputs[layer.name] = out
    return rows


def _seconds(call, repeat: int) -> dict:
    times = []
    for _ in range(repeat + 1):
        t0 = time.process_time()
        call()
        times.append(time.process_time() - t0)
    times = times[1:]
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def by_type(rows: list[dict]) -> dict[str, dict]:
    """Seconds and GFLOP/s (from the medians) forward and backward, summed over the layers of each type."""
    types = {}
    for r in rows:
        t = types.setdefault(r["type"], {"forward_s": 0.0, "backward_s": 0.0, "forward_flops": 0.0,
                                         "backward_flops": 0.0})
        t["forward_s"] += r["forward"]["median"]
        t["forward_flops"] += r["forward_flops"]
        if r["backward"]:
            t["backward_s"] += r["backward"]["median"]
            t["backward_flops"] += r["backward_flops"]
    for t in types.values():
        t["forward_gflops"] = gflops(t["forward_flops"], t["forward_s"]) or 0.0
        t["backward_gflops"] = gflops(t["backward_flops"], t["backward_s"])
    return types


def gflops(flops: float, seconds: float) -> float | None:
    """GFLOP/s, or None for a pass that does no arithmetic or takes no measurable time."""
    return flops / seconds / 1e9 if flops and seconds else None


def kernel_table(rows: list[dict], peak: float) -> str:
    """Per layer, then per layer type: forward and backward seconds (median [min-max]) and GFLOP/s, with
    the matrix-product peak."""
    def cell(s):
        return f"{s['median']:.4f} [{s['min']:.4f}-{s['max']:.4f}]" if s else "-"

    def number(value):
        return f"{value:.1f}" if value else "-"

    width = max(10, *(len(r["layer"]) + 2 for r in rows), *(len(r["type"]) + 2 for r in rows))
    lines = [f"{'layer':<{width}}{'forward s [min-max]':>28}{'GFLOP/s':>9}{'backward s [min-max]':>28}{'GFLOP/s':>9}"]
    for r in rows:
        fwd, bwd = gflops(r["forward_flops"], r["forward"]["median"]), r["backward"] and gflops(
            r["backward_flops"], r["backward"]["median"])
        lines.append(f"{r['layer']:<{width}}{cell(r['forward']):>28}{number(fwd):>9}{cell(r['backward']):>28}"
                     f"{number(bwd):>9}")
    lines.append(f"\n{'type':<{width}}{'forward s':>10}{'GFLOP/s':>9}{'backward s':>11}{'GFLOP/s':>9}{'% of peak':>11}")
    for kind, t in by_type(rows).items():
        bwd = number(t["backward_gflops"])
        share = f"{100 * t['forward_gflops'] / peak:.0f}/{100 * (t['backward_gflops'] or 0) / peak:.0f}"
        lines.append(f"{kind:<{width}}{t['forward_s']:>10.4f}{t['forward_gflops']:>9.1f}{t['backward_s']:>11.4f}{bwd:>9}"
                     f"{share:>11}")
    lines.append(f"matrix-product peak (float32 1024^3, best before and after, same threads): {peak:.1f} GFLOP/s")
    return "\n".join(lines)


def measure(net: Network, images: int, repeat: int, seed: int = 0, threads: int = 1) -> dict:
    """The matrix-product peak and every layer's timings with `threads` BLAS threads, as bench.json keeps them."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(threads, "blas"):
        peak = matmul_peak()
        layers = layer_timings(net, images, repeat, seed)
        peak = max(peak, matmul_peak())
    return {"threads": threads, "repeat": repeat, "peak_gflops": peak, "layers": layers, "by_type": by_type(layers)}
