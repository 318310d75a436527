"""Committing a computed stage: its manifest entry made, its losses and parameters checked for
divergence, its totals and metrics attached, then the entry created exclusively (the commit), and the
retention of the iterations it makes old."""
from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass

from sparkcnn.pipeline import numerics, stage_keys
from sparkcnn.pipeline.errors import Diverged, RunError
from sparkcnn.pipeline.runroot import layout
from sparkcnn.pipeline.runroot.manifest import Manifest
from sparkcnn.pipeline.runroot.retention import Retention
from sparkcnn.pipeline.spark import faults
from sparkcnn.pipeline.training import metrics
from sparkcnn.pipeline.training.catalog import Catalog
from sparkcnn.stages.tabular import STD_FLOOR


@dataclass
class StageOutcome:
    key: str
    seconds: float
    rows: int
    bytes: int


class Committer:
    """The one writer of a run's manifest entries while it trains."""

    def __init__(self, catalog: Catalog, manifest: Manifest, retention: Retention):
        self.catalog, self.storage = catalog, catalog.storage
        self._manifest, self._retention = manifest, retention

    def entry(self, key: str, inputs: list[str], extra_identity: dict, outputs: list[dict], values: dict) -> dict:
        """The manifest entry of a computed stage: its identity from its inputs', its files by output."""
        stage, epoch, iteration = stage_keys.parse_key(key)
        identity = self.catalog.identity(key, inputs, extra_identity)
        grouped: dict[str, list[dict]] = {}
        for f in outputs:
            grouped.setdefault(f["output"], []).append({k: f[k] for k in ("part", "output", "path", "rows", "bytes")})
        return {"key": key, "stage": stage, "epoch": epoch, "iteration": iteration, "identity": identity,
                "inputs": inputs, "extra": extra_identity, "outputs": grouped, "values": values,
                "cache": self.catalog.cache, "arithmetic": numerics.arithmetic()}

    def commit(self, entry: dict) -> StageOutcome:
        """Commit a computed stage: its checks, totals and metrics, then its manifest entry."""
        key = entry["key"]
        stage, epoch, iteration = stage_keys.parse_key(key)
        self.check_finite(key, iteration, entry["values"])
        files = [f for fs in entry["outputs"].values() for f in fs]
        entry["rows"] = sum(f["rows"] for f in files if f["output"] in ("out", "images"))
        entry["bytes"] = sum(f["bytes"] for f in files)
        if stage == "update":
            metrics.attach_iteration_metrics(self.catalog, entry, iteration)
        elif stage == "evaluate":
            metrics.attach_eval_metrics(self.catalog, entry, epoch)
        self.commit_as_is(entry)
        return StageOutcome(key, entry["seconds"], entry["rows"], entry["bytes"])

    def commit_as_is(self, entry: dict) -> None:
        """Create a finished entry (no retirement record of an earlier commit of its key applies to it)."""
        self._retention.forget(entry["key"])
        self._manifest.commit(entry)

    def follow_up(self, key: str) -> None:
        """After a commit: the fault tests' hook, and an update's retention of the iterations it makes old."""
        faults.hit("after-commit", key)
        stage, _, iteration = stage_keys.parse_key(key)
        if stage == "update":
            self._retention.apply(iteration + 1, self.catalog.schedule())

    def refresh_indexes(self) -> None:
        """Bring the manifest's and the retirement records' indexes up to date (at epoch ends and when
        training stops), so that a reader of a long run reads a few files, not one per committed stage."""
        self._manifest.refresh_index()
        self._retention.refresh_index()

    def discard(self, rel: str) -> None:
        """Remove a file or folder that no entry owns, in the background."""
        self._retention.remove_later(rel)

    def check_finite(self, key: str, iteration: int | None, values: dict) -> None:
        """Refuse to commit a training loss or parameters that are not finite: such a run cannot learn.
        The run root records where it diverged, so that it is not recomputed and a branch starts from
        parameters that gave a finite loss."""
        if iteration is None:
            return
        losses_finite = all(math.isfinite(v["loss_sum"]) for v in values.values() if "loss_sum" in v)
        if losses_finite and all(v.get("params_finite", True) for v in values.values()):
            return
        what = "the training loss is not a finite number" if not losses_finite else \
            "the updated parameters are not all finite numbers"
        doc = {"iteration": iteration, "stage": key, "what": what,
               "last_good": iteration if losses_finite else iteration - 1}
        self.storage.write_bytes(layout.DIVERGED, json.dumps(doc).encode())
        raise self.diverged(doc)

    def diverged(self, doc: dict) -> Diverged:
        """The error for a run that diverged where `doc` (as check_finite recorded it) says."""
        what = f"iteration {doc['iteration']}: {doc['what']} ({doc['stage']} is not committed); the run cannot go on"
        if floored := self.catalog.floored_channels():
            return Diverged(f"{what}: the data may be the cause, not the learning rate: channel(s) "
                            f"{', '.join(map(str, floored))} of the training images hardly vary (standard deviation "
                            f"below {STD_FLOOR:.6f}, normalised by that floor); check the data")
        try:
            start = f"the parameters after {self.catalog.last_checkpoint()} iterations"
        except RunError:
            start = "a new run: no checkpoint before the divergence is kept"
        return Diverged(
            f"{what} with these settings. To continue with a smaller learning rate from {start}: sparkcnn resume "
            f"--run-root {shlex.quote(self.storage.url)} --branch NEW_ROOT --set train.learning_rate=SMALLER "
            f"(now {self.catalog.cfg.train.learning_rate:g})")
