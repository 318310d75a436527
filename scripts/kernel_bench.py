"""Seconds and GFLOP/s of every layer's forward and backward kernel for a config's network, next to the
single-precision matrix-product peak measured in the same process with the same BLAS threads.

    python scripts/kernel_bench.py [--config conf/quick.toml] [--images 250] [--repeat 5] [--threads 1]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sparkcnn.pipeline import config  # noqa: E402
from sparkcnn.pipeline.bench.kernel_speed import kernel_table, measure  # noqa: E402
from sparkcnn.pipeline.training.run import network_for  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None)
    parser.add_argument("--images", type=int, default=250)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    cfg = config.load(args.config)
    net = network_for(cfg)
    kernels = measure(net, args.images, args.repeat, cfg.train.seed, args.threads)
    print(f"{args.images} images, {args.threads} BLAS thread(s), CPU seconds, median [min-max] of {args.repeat} calls")
    print(kernel_table(kernels["layers"], kernels["peak_gflops"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
