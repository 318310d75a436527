"""PyTorch side of scripts/accuracy.sh: train a config's network, built from the same layer graph, with the
same recipe (batch, SGD with momentum, Nesterov, weight decay, warm-up then cosine per iteration, crop and
flip per image) on the full CIFAR-10, and print the test accuracy and wall time per epoch.

Usage: python scripts/torch_accuracy.py conf/resnet8.toml [--data cifar-10-python.tar.gz] [--shards N] [key=value...]
  --shards 1 (default): batch_norm on the whole batch (PyTorch's usual training, sparkcnn's sync = true);
  --shards N: the batch run as N micro-batches with gradients accumulated, each normalised by its own
  statistics (sparkcnn's sync = false with train.shard_size = batch_size / N).
"""
from __future__ import annotations

import argparse
import pickle
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sparkcnn.pipeline import config  # noqa: E402
from sparkcnn.pipeline.bench.torch_graph import torch_model  # noqa: E402
from sparkcnn.schemas.network import Network  # noqa: E402
from sparkcnn.stages import update  # noqa: E402


def load_cifar(path: str):
    """(train images, train labels, test images, test labels), images uint8 NHWC."""
    parts = {"train": [], "test": []}
    with tarfile.open(path) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            name = Path(member.name).name
            if name.startswith("data_batch") or name == "test_batch":
                batch = pickle.load(tar.extractfile(member), encoding="bytes")
                images = batch[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
                parts["test" if name == "test_batch" else "train"].append((images, np.array(batch[b"labels"])))
    return [np.concatenate([p[i] for p in parts[s]]) for s in ("train", "test") for i in (0, 1)]


def augment(x: torch.Tensor, padding: int, flip: bool, rng: np.random.Generator) -> torch.Tensor:
    """A random crop (zero padding) and horizontal flip per image of an NCHW batch."""
    n, _, h, w = x.shape
    if padding:
        padded = torch.nn.functional.pad(x, (padding,) * 4)
        dy, dx = rng.integers(0, 2 * padding + 1, (2, n))
        x = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    if flip:
        mirror = torch.from_numpy(rng.random(n) < 0.5)
        x = torch.where(mirror[:, None, None, None], x.flip(3), x)
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parent.parent.parent
                                              / "shared/data/cifar-10-python.tar.gz"))
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="section.key=value settings, as sparkcnn takes them")
    args = parser.parse_intermixed_args()
    torch.set_num_threads(args.threads)
    cfg = config.load(args.config, args.overrides)
    t = cfg.train
    xtr, ytr, xte, yte = load_cifar(args.data)
    mean, std = xtr.reshape(-1, 3).mean(0) / 255.0, (xtr.reshape(-1, 3) / 255.0).std(0)

    def tensor(images):
        return torch.from_numpy(((images / 255.0 - mean) / std).astype(np.float32).transpose(0, 3, 1, 2).copy())

    train_x, test_x = tensor(xtr), tensor(xte)
    net = Network(cfg.model.layers, (32, 32, 3), 10)
    model = torch_model(net, update.init_params(net, t.seed))
    opt = torch.optim.SGD(model.parameters(), lr=t.learning_rate, momentum=t.momentum, weight_decay=t.weight_decay,
                          nesterov=t.nesterov)
    per_epoch = -(-len(ytr) // t.batch_size)
    total, warmup = t.epochs * per_epoch, t.lr_warmup_epochs * per_epoch
    rng = np.random.default_rng(t.seed)
    for epoch in range(t.epochs):
        start = time.perf_counter()
        model.train()
        order = rng.permutation(len(ytr))
        for step in range(per_epoch):
            i = epoch * per_epoch + step
            for group in opt.param_groups:
                group["lr"] = update.learning_rate(t.learning_rate, t.lr_schedule, i, total, warmup)
            ids = order[step * t.batch_size:(step + 1) * t.batch_size]
            x = augment(train_x[ids], cfg.data.augment.crop_padding, cfg.data.augment.flip, rng)
            y = torch.from_numpy(ytr[ids])
            opt.zero_grad()
            for xs, ys in zip(x.chunk(args.shards), y.chunk(args.shards)):
                (torch.nn.functional.cross_entropy(model(xs), ys, reduction="sum") / len(ids)).backward()
            opt.step()
        seconds = time.perf_counter() - start
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(test_x[s:s + 1000]).argmax(1).numpy() == yte[s:s + 1000]).sum())
                          for s in range(0, len(yte), 1000))
        print(f"epoch {epoch + 1}: test accuracy {correct / len(yte):.4f}, {seconds:.1f} s", flush=True)


if __name__ == "__main__":
    main()
