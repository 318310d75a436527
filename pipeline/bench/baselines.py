"""The bench's rows outside Spark, in this process: PyTorch on the CPU (and CUDA when there is one) and the
numpy kernels with one BLAS thread, on one batch of real CIFAR-10."""
from __future__ import annotations

import time

import numpy as np

from sparkcnn.pipeline.bench.row import Row, timed_row
from sparkcnn.pipeline.bench.torch_graph import torch_model
from sparkcnn.pipeline.config import Config
from sparkcnn.pipeline.data import ingest
from sparkcnn.pipeline.training.run import network_for
from sparkcnn.schemas.network import Network
from sparkcnn.stages import update, whole_network
from sparkcnn.stages.tabular import StageContext, normalize


def load_batch(cfg: Config, images: int):
    """The first `images` training images, normalised, with labels, and the channel stats."""
    net = network_for(cfg)
    loaded = ingest.load(cfg, net)
    pixels, labels = loaded.split("train", net)
    pixels, labels, stats = pixels[:images], labels[:images], loaded.stats
    if labels.size < images:
        raise ValueError(f"the data has {labels.size} training images, fewer than the {images} asked for")
    mean, std = stats.column("mean").to_numpy(), stats.column("std").to_numpy()
    return normalize(pixels, mean, std), labels, net


def bench_numpy(cfg: Config, x, labels, net: Network, repeat: int) -> Row:
    """The numpy kernels in this process with one BLAS thread, as a Spark task runs them (the same bits as the
    Spark modes; two threads were 5-8x slower on a shared 2-core machine, 2026-12-03)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        return _bench_numpy(cfg, x, labels, net, repeat)


def _bench_numpy(cfg: Config, x, labels, net: Network, repeat: int) -> Row:
    params = update.init_params(net, cfg.train.seed)
    velocity = update.zero_velocity(net)
    timings = []
    ids = np.arange(labels.size)
    for t in range(repeat + 1):
        ctx = StageContext(net, params, normalizer=labels.size, seed=cfg.train.seed)
        t0 = time.perf_counter()
        _, caches = whole_network.forward(x, labels, ctx, (t, ids))
        t1 = time.perf_counter()
        grads = whole_network.backward(caches, ctx)
        t2 = time.perf_counter()
        params, velocity = update.sgd_step(params, velocity, grads, cfg.train.learning_rate,
                                           cfg.train.momentum, cfg.train.weight_decay)
        timings.append((t1 - t0, t2 - t1, time.perf_counter() - t2))
    return timed_row("numpy (1 process)", labels.size, timings[1:], f"{blas_threads()} (1 process)")

def blas_threads() -> int:
    """The threads of the BLAS that numpy uses, as now limited."""
    from threadpoolctl import threadpool_info

    return max((i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"), default=1)


def bench_torch(cfg: Config, x, labels, net: Network, repeat: int, device: str) -> Row | None:
    try:
        import torch
    except ImportError:
        return None
    if device == "cuda" and not torch.cuda.is_available():
        return None
    net = torch_model(net, update.init_params(net, cfg.train.seed)).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.train.learning_rate, momentum=cfg.train.momentum,
                          weight_decay=cfg.train.weight_decay, nesterov=cfg.train.nesterov)
    xb = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)
    yb = torch.from_numpy(labels.astype(np.int64)).to(device)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    timings = []
    for _ in range(repeat + 1):
        opt.zero_grad()
        sync()
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(net(xb), yb)
        sync()
        t1 = time.perf_counter()
        loss.backward()
        sync()
        t2 = time.perf_counter()
        opt.step()
        sync()
        timings.append((t1 - t0, t2 - t1, time.perf_counter() - t2))
    threads = torch.get_num_threads()
    return timed_row(f"pytorch {device} ({threads} threads)" if device == "cpu" else "pytorch cuda", labels.size,
                     timings[1:], f"{threads} (1 process)" if device == "cpu" else "")
