"""What a stage function sees besides its input tables, made for a stage and an iteration: the network,
pixel statistics, loss normaliser, hyper-parameters, cache policy and augmentation of this run."""
from __future__ import annotations

from sparkcnn.pipeline.config import RunConfig
from sparkcnn.pipeline.training.catalog import Catalog
from sparkcnn.stages import update
from sparkcnn.stages.tabular import StageContext


def inspected(run: RunConfig, t: int) -> bool:
    """Whether iteration t keeps its stage outputs: listed for inspection, or every N-th in fused mode."""
    every = run.inspect_every
    return t in run.inspect_iterations or (run.mode == "fused" and every > 0 and t % every == 0)


class Contexts:
    """The stage contexts of a run (pixel statistics as its ingest committed them)."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.cfg = catalog.cfg

    def context(self, params: dict, normalizer: int = 1, hyper: dict | None = None, stage: str = "") -> StageContext:
        mean, std = self.catalog.channel_stats()
        augment = self.cfg.data.augment
        return StageContext(self.catalog.network, params, mean, std, normalizer, hyper or {}, self.catalog.cache,
                            stage, self.cfg.train.seed, augment=(augment.crop_padding, augment.flip))

    def hyper(self, t: int) -> dict:
        t_cfg = self.cfg.train
        sched = self.catalog.schedule()
        return {"learning_rate": update.learning_rate(t_cfg.learning_rate, t_cfg.lr_schedule, t, sched.total_iterations,
                                                      t_cfg.lr_warmup_epochs * sched.iterations_per_epoch),
                "momentum": t_cfg.momentum, "weight_decay": t_cfg.weight_decay, "nesterov": t_cfg.nesterov,
                "iteration": t + 1}

    def inspected(self, t: int) -> bool:
        return inspected(self.cfg.run, t)
