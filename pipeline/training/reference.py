"""The same training as a plain single-process numpy loop: same kernels, data order and updates.

No Spark, no storage, no shards: the yardstick the pipeline is checked against.
"""
from __future__ import annotations

import numpy as np

from sparkcnn.pipeline import stage_keys
from sparkcnn.pipeline.config import Config
from sparkcnn.pipeline.data import ingest
from sparkcnn.pipeline.training.run import network_for
from sparkcnn.stages import update, whole_network
from sparkcnn.stages.augment import augment
from sparkcnn.stages.tabular import StageContext, normalize


def train(cfg: Config, iterations: int) -> dict[str, np.ndarray]:
    """Parameters after `iterations` iterations of the config's training."""
    net = network_for(cfg)
    loaded = ingest.load(cfg, net)
    pixels, labels = loaded.split("train", net)
    stats = loaded.stats
    if cfg.train.images:
        pixels, labels = pixels[: cfg.train.images], labels[: cfg.train.images]
    mean, std = stats.column("mean").to_numpy(), stats.column("std").to_numpy()
    t_cfg = cfg.train
    sched = stage_keys.Schedule(labels.size, 0, t_cfg.batch_size, t_cfg.shard_size, t_cfg.epochs)
    params = update.init_params(net, t_cfg.seed)
    velocity = update.zero_velocity(net)
    for t in range(iterations):
        epoch, step = divmod(t, sched.iterations_per_epoch)
        order = stage_keys.epoch_permutation(t_cfg.seed, epoch, labels.size)
        ids = order[step * t_cfg.batch_size: (step + 1) * t_cfg.batch_size]
        ctx = StageContext(net, params, mean, std, normalizer=ids.size, seed=t_cfg.seed)
        images = augment(pixels[ids], ids, np.full(ids.size, epoch), t_cfg.seed, cfg.data.augment.crop_padding,
                         cfg.data.augment.flip)
        x = normalize(images, mean, std)
        if net.batch_norm_layers:  # each shard normalised by its own statistics (the whole batch: synced)
            shard = ids.size if all(layer.synced for layer in net.batch_norm_layers) else t_cfg.shard_size
            grads, stats = whole_network.shard_gradients(x, labels[ids], ctx, (t, ids), shard)
        else:
            (_, grads), stats = whole_network.gradients(x, labels[ids], ctx, (t, ids)), {}
        lr = update.learning_rate(t_cfg.learning_rate, t_cfg.lr_schedule, t, sched.total_iterations,
                                  t_cfg.lr_warmup_epochs * sched.iterations_per_epoch)
        stepped = update.step_running_stats(net, params, stats)
        params, velocity = update.sgd_step(params, velocity, grads, lr, t_cfg.momentum, t_cfg.weight_decay,
                                           t_cfg.nesterov)
        params.update(stepped)
    return params
