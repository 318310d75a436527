"""What a run root has committed, read-only: manifest entries and their files, the schedule the ingest
gives, stage identities from their inputs', parameters by iteration, checkpoints, and the ingest's
statistics and class names. Nothing here writes to the run root."""
from __future__ import annotations

import hashlib
import json
import shlex

import numpy as np
import pyarrow as pa

from sparkcnn.pipeline import numerics, stage_keys
from sparkcnn.pipeline.config import Config
from sparkcnn.pipeline.data import ingest
from sparkcnn.pipeline.data.fingerprint import fingerprint
from sparkcnn.pipeline.data.sources import locate
from sparkcnn.pipeline.data.sources.cifar import CIFAR10_CLASSES
from sparkcnn.pipeline.errors import MissingInput, RunError
from sparkcnn.pipeline.runroot import layout
from sparkcnn.pipeline.runroot.manifest import Manifest
from sparkcnn.pipeline.runroot.retention import Retention
from sparkcnn.pipeline.runroot.storage import Storage
from sparkcnn.pipeline.runroot.verify import verify
from sparkcnn.pipeline.spark.executor import Params
from sparkcnn.pipeline.training import planner
from sparkcnn.schemas.network import Network, StageDef
from sparkcnn.schemas.tables import METRICS_SCHEMA


class Catalog:
    """A run root's committed stages as this run's config sees them."""

    def __init__(self, cfg: Config, storage: Storage, manifest: Manifest, retention: Retention, network: Network,
                 cache: dict):
        self.cfg, self.storage, self.network, self.cache = cfg, storage, network, cache
        self._manifest, self._retention = manifest, retention
        self._stats: tuple[str, np.ndarray, np.ndarray] | None = None

    # entries

    def get(self, key: str) -> dict | None:
        return self._manifest.get(key)

    def committed(self, key: str) -> bool:
        return self._manifest.committed(key)

    def files(self, key: str, output: str) -> list[dict]:
        return self._manifest.files(key, output)

    def retired_outputs(self, key: str) -> set[str]:
        return self._retention.retired_outputs(key)

    def ingested(self) -> dict:
        """What ingest recorded of the data ({} before it is committed)."""
        entry = self.get("ingest")
        return entry["values"][stage_keys.ALL_PARTS] if entry else {}

    # schedule

    def schedule(self) -> stage_keys.Schedule:
        entry = self.get("ingest")
        if entry is None:
            raise MissingInput("stage ingest is not committed")
        counts = entry["values"]["all"]
        t = self.cfg.train
        train_images = min(t.images, counts["train"]) if t.images else counts["train"]
        return stage_keys.Schedule(train_images, counts["test"], t.batch_size, t.shard_size, t.epochs,
                                   self.branch().get("iteration", 0))

    def branch(self) -> dict:
        """Where this run branched from ({} for a run that started from scratch)."""
        if not hasattr(self, "_branch"):
            self._branch = json.loads(self.storage.read_bytes(layout.BRANCH)) if self.storage.exists(layout.BRANCH) else {}
        return self._branch

    def iterations_done(self) -> int:
        """Iterations whose update is committed, counted from iteration 0."""
        sched = self.schedule()
        t = sched.start_iteration
        while self.committed(stage_keys.iteration_key(t, "update")):
            t += 1
        return t

    def metrics(self) -> pa.Table:
        """All committed metrics rows of the run."""
        tables = [self.storage.read_parquet(f["path"]) for k in self._manifest.keys()
                  for f in (self.get(k)["outputs"].get("metrics") or [])]
        return pa.concat_tables(tables) if tables else METRICS_SCHEMA.empty_table()

    # identities and definitions

    def identity(self, key: str, inputs: list[str], extra: dict) -> str:
        """Hash of the stage, the settings that shape results, and its inputs' identities."""
        input_ids = {}
        for dep in inputs:
            entry = self.get(dep)
            if entry is None:
                raise MissingInput(f"cannot run {key}: its input stage {dep} is not committed")
            input_ids[dep] = entry["identity"]
        doc = {"key": key, "settings": self.cfg.result_settings(), "inputs": input_ids, **extra,
               **numerics.identity_extra()}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    def settings_match_commits(self) -> bool:
        """Whether this config's result settings are those the committed stages were computed with
        (what a config.json that went missing must be restored to)."""
        for key, extra in (("init", lambda: {"branch": self.branch()} if self.branch() else {}),
                           ("ingest", lambda: {"data": self.get("ingest")["values"]["all"]["digest"]})):
            entry = self.get(key)
            if entry is not None:
                return self.identity(key, entry["inputs"], extra()) == entry["identity"]
        return True

    def stage_def(self, stage: str, t: int) -> StageDef:
        """A stage of iteration t, reading its inputs as the policies they were written with hold them."""
        entries = {stage_keys.iteration_key(t, s): self.get(stage_keys.iteration_key(t, s))
                   for s in self.network.iteration_stages[:self.network.iteration_stages.index(stage)]}
        return self.network.stage_def(stage, self.cache, planner.written_policies(self.network, stage, t, entries))

    def verify(self, keys=None) -> dict[str, list[str]]:
        """Problems of committed stages (all, or those named): files that are not as recorded, and entries
        whose identity is not the one this run's settings and the inputs' identities give."""
        manifest = self._manifest
        keys = list(manifest.keys() if keys is None else keys)
        problems = verify(self.storage, manifest, self._retention, keys)
        for key in sorted(keys, key=lambda k: (manifest.readable(k) or {}).get("committed_at", 0.0)):
            entry = manifest.readable(key)  # inputs before their readers: only the first stale one is named
            if key in problems or entry is None or "extra" not in entry or set(entry.get("inputs", ())) & set(problems):
                continue
            try:
                same = self.identity(key, entry.get("inputs", []), entry["extra"]) == entry.get("identity")
            except RunError as e:  # an input that is not committed, or whose entry is damaged
                problems[key] = [str(e)]
                continue
            if not same:
                problems[key] = [f"{layout.manifest_entry(key)}: computed with other settings or inputs than this "
                                 f"run's (its identity differs)"]
        return problems

    # parameters

    def params_at(self, iteration: int) -> dict[str, np.ndarray]:
        """Parameters an iteration starts from (iteration N+1 -> the parameters after N)."""
        return self.params_ref(iteration).load()

    def params_ref(self, iteration: int) -> Params:
        """The same parameters by reference, for tasks to read."""
        return Params(self.storage, self.params_file(iteration, "params")["path"])

    def params_file(self, iteration: int, output: str) -> dict:
        start = self.schedule().start_iteration if self.committed("ingest") else 0
        if iteration < start:
            raise RunError(f"this run branched at iteration {start}; parameters of iteration {iteration} "
                           f"are in {self.branch()['from']}")
        key = stage_keys.params_key(iteration, start)
        if not self.committed(key):
            raise MissingInput(f"parameters for iteration {iteration}: stage {key} is not committed")
        if output in self.retired_outputs(key):
            kept = ", ".join(map(str, self.kept_params()))
            raise RunError(f"the parameters after {iteration} iterations were removed by the checkpoint policy "
                           f"(kept: every run.checkpoint_every={self.cfg.run.checkpoint_every}-th, epoch ends, the "
                           f"last, inspected iterations' and those of the last run.keep_iterations="
                           f"{self.cfg.run.keep_iterations} iterations); kept here: after {kept} iterations")
        (f,) = self.files(key, output)
        return f

    def kept_params(self) -> list[int]:
        """The iteration counts whose parameters are stored."""
        start = self.schedule().start_iteration
        return [v for v in range(start, self.iterations_done() + 1)
                if {"params"} - self.retired_outputs(stage_keys.params_key(v, start))]

    def divergence(self) -> dict:
        """Where this run diverged ({} when it did not)."""
        return json.loads(self.storage.read_bytes(layout.DIVERGED)) if self.storage.exists(layout.DIVERGED) else {}

    def last_checkpoint(self) -> int:
        """The latest iteration whose starting parameters and velocity are stored and intact (and, in a
        run that diverged, gave a finite loss)."""
        sched = self.schedule()
        last = min(self.iterations_done(), self.divergence().get("last_good", self.iterations_done()))
        for t in range(last, sched.start_iteration - 1, -1):
            key = stage_keys.params_key(t, sched.start_iteration)
            if self.committed(key) and not ({"params", "velocity"} & self.retired_outputs(key)) \
                    and not self.verify([key]):
                return t
        raise RunError(f"run {self.storage.url} has no intact checkpoint")

    # what ingest recorded

    def check_source(self, data_path: str) -> None:
        """One run root, one data source: once ingested, data.path must hold what ingest read."""
        entry = self.get("ingest")
        if entry is None:
            return
        recorded = entry["values"][stage_keys.ALL_PARTS]
        path = ingest.resolve_data_path(data_path)
        if not self.ingested_from(path):
            raise RunError(f"run root {self.storage.url} ingested {recorded['source']}, and data.path {path} holds "
                           f"other data: a run root trains on one data source; use a new --run-root for {path} "
                           f"(`sparkcnn resume --run-root {shlex.quote(self.storage.url)}` continues this run)")

    def ingested_from(self, path: str) -> bool:
        """Whether `path` holds the data this run ingested: by fingerprint, so the same data under another
        path or URL will do; by path for a run ingested before fingerprints were recorded, or when the
        data is no longer there."""
        recorded = self.get("ingest")["values"][stage_keys.ALL_PARTS]
        storage, rel = locate(path)
        if "fingerprint" in recorded and storage.exists(rel):
            return fingerprint(path) == recorded["fingerprint"]
        return storage.where(rel) == recorded["source"]

    def class_names(self) -> list[str]:
        """The classes' names in label order, as ingest recorded them (runs ingested before names were
        recorded were CIFAR-10)."""
        values = self.get("ingest")["values"][stage_keys.ALL_PARTS]
        return values.get("class_names") or list(CIFAR10_CLASSES[: values.get("classes", 10)])

    def channel_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """The training split's per-channel mean and std, as ingest committed them (read once)."""
        (f,) = self.files("ingest", "stats")
        if self._stats is None or self._stats[0] != f["path"]:
            stats = self.storage.read_parquet(f["path"])
            self._stats = f["path"], stats.column("mean").to_numpy(), stats.column("std").to_numpy()
        return self._stats[1], self._stats[2]

    def floored_channels(self) -> list[int]:
        """The channels whose std ingest found below the floor (normalised by STD_FLOOR instead)."""
        return self.ingested().get("std_floored", [])
