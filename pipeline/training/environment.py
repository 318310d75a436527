"""What the execution modes and the setup runners are handed to plan, run and commit a stage: a narrow
view of a run, not the run itself."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sparkcnn.pipeline import stage_keys
from sparkcnn.pipeline.config import Config
from sparkcnn.pipeline.runroot.storage import Storage
from sparkcnn.pipeline.training.catalog import Catalog
from sparkcnn.pipeline.training.committer import Committer
from sparkcnn.pipeline.training.contexts import Contexts
from sparkcnn.schemas.network import Network


@dataclass(frozen=True)
class StageEnvironment:
    """catalog: the committed stages, read-only; schedule: the iterations and shards (None before ingest);
    contexts: stage contexts; committer: entries made, checked and committed; open_catalog(root): another
    run root's catalog (a branch's source)."""

    catalog: Catalog
    schedule: stage_keys.Schedule | None
    contexts: Contexts
    committer: Committer
    open_catalog: Callable[[str], Catalog]

    @property
    def cfg(self) -> Config:
        return self.catalog.cfg

    @property
    def storage(self) -> Storage:
        return self.catalog.storage

    @property
    def network(self) -> Network:
        return self.catalog.network
