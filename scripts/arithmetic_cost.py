"""What pinning the BLAS kernels costs: one numpy training iteration of a config (forward, backward,
update; BLAS on one thread, as a task runs it) with each kernel family this CPU offers, in turn, in
fresh processes.

    .venv/bin/python scripts/arithmetic_cost.py [--config conf/default.toml] [--images 2000] [--repeat 5]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

FAMILIES = ("Haswell", "SkylakeX")


def measure(config: str, images: int, repeat: int) -> dict:
    from threadpoolctl import threadpool_limits

    from sparkcnn.pipeline import config as config_mod, numerics
    from sparkcnn.pipeline.bench import baselines

    cfg = config_mod.load(config)
    x, labels, net = baselines.load_batch(cfg, images)
    with threadpool_limits(limits=1, user_api="blas"):
        rows = [baselines.bench_numpy(cfg, x, labels, net, 1) for _ in range(repeat)]
    seconds = sorted(r.total for r in rows)
    return {"arithmetic": numerics.arithmetic(), "min_s": seconds[0], "median_s": seconds[len(seconds) // 2],
            "max_s": seconds[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="conf/default.toml")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.config, args.images, args.repeat)))
        return
    print(f"{'kernels':<20} {'min s':>7} {'median s':>9} {'max s':>7}")
    for family in FAMILIES:
        env = {**os.environ, "OPENBLAS_CORETYPE": family}
        done = subprocess.run([sys.executable, __file__, "--child", "--config", args.config, "--images",
                               str(args.images), "--repeat", str(args.repeat)], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{family:<20} (not run here: {done.stderr.strip().splitlines()[-1:]})")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{r['arithmetic']:<20} {r['min_s']:>7.3f} {r['median_s']:>9.3f} {r['max_s']:>7.3f}")


if __name__ == "__main__":
    main()
