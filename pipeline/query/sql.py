"""Spark SQL over a run: one view per committed table (with the tensor functions of `tensor_functions.py`),
query output.

Views list only files that committed manifest entries own, so a query on a run that is still being
written sees committed stages only. Outputs that retention removed are listed in the `retired` view,
and a query that touches a view with removed outputs is told so.
"""
from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass, field

import pyarrow as pa

from sparkcnn.pipeline import stage_keys
from sparkcnn.pipeline.query import sql_guard
from sparkcnn.pipeline.query.tensor_functions import register_functions
from sparkcnn.pipeline.runroot import folder_index, layout
from sparkcnn.pipeline.runroot.records import latest_scoring
from sparkcnn.pipeline.runroot.retention import removed_with
from sparkcnn.schemas.statistics import BATCH_STATS_SCHEMA, RUNNING_STATS_SCHEMA
from sparkcnn.schemas.tables import (DEFAULT_CACHE, METRICS_SCHEMA, POOL_ARGMAXES, RELU_MASKS, SCORES_SCHEMA,
                                     STATS_SCHEMA, arrays_schema, images_schema, table_schema)


@dataclass
class ViewSource:
    """The committed files behind a view, in groups that share literal columns, and what retention removed."""

    name: str
    schema: pa.Schema
    groups: list[tuple[list[str], dict]] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    literals: dict = field(default_factory=dict)
    absolute: bool = False  # files are URLs of their own (a scored table), not paths under the run root

    def uri(self, run, path: str) -> str:
        return path if self.absolute else run.storage.uri(path)

    @property
    def files(self) -> list[str]:
        return [f for files, _ in self.groups for f in files]

    def add(self, key: str, entry: dict, output: str, literals: dict, gone: set[str]) -> None:
        """A stage's files of one output, or, when retention removed them (`gone`), its key."""
        if output not in entry["outputs"]:
            return
        if output in gone:
            self.retired.append(key)
        else:
            self.groups.append(([f["path"] for f in entry["outputs"][output]], literals))

    def signature(self) -> tuple:
        """What the view's DataFrame is built from: it is rebuilt when this changes."""
        return tuple((tuple(files), tuple(sorted(literals.items()))) for files, literals in self.groups)


def stored_schema(net, table: str) -> pa.Schema:
    """A per-image table's columns under any cache policy (a run may change policies between iterations):
    the current default layout first, then the columns only other policies write."""
    layouts = [table_schema(net, table, dict(zip(DEFAULT_CACHE, combo)))
               for combo in itertools.product(RELU_MASKS, POOL_ARGMAXES, (False, True))]
    return pa.unify_schemas([table_schema(net, table), *layouts])


def view_sources(run, entries: dict[str, dict] | None = None,
                 retired: dict[str, set[str]] | None = None) -> dict[str, ViewSource]:
    """Every view of a run and the committed files behind it, from the manifest's entries (all of them
    unless given; given ones fill only the views they feed) and the outputs retention removed of each."""
    entries = run.manifest.entries() if entries is None else entries
    retired = {k: run.retention.retired_outputs(k) for k in entries} if retired is None else retired
    net = run.network
    views = {
        "images": ViewSource("images", images_schema(net)),
        "stats": ViewSource("stats", STATS_SCHEMA),
        "testset": ViewSource("testset", table_schema(net, "batches")),
        "batches": ViewSource("batches", table_schema(net, "batches")),
        "evaluate": ViewSource("evaluate", table_schema(net, "evaluate")),
        "params": ViewSource("params", arrays_schema("params")),
        "velocity": ViewSource("velocity", arrays_schema("velocity")),
        "metrics": ViewSource("metrics", METRICS_SCHEMA),
    }
    for stage in net.per_image_stages:
        views[stage] = ViewSource(stage, stored_schema(net, stage), literals={"stage": stage})
    for stage in net.gradient_stages:
        views[f"{stage}_grads"] = ViewSource(f"{stage}_grads", arrays_schema(f"{stage}.grads"), literals={"stage": stage})
    if net.batch_norm_layers:
        views["batch_stats"] = ViewSource("batch_stats", BATCH_STATS_SCHEMA)
        views["running_stats"] = ViewSource("running_stats", RUNNING_STATS_SCHEMA)
    scoring = latest_scoring(run.storage)
    if scoring is not None:
        views["scores"] = ViewSource("scores", SCORES_SCHEMA, [(scoring["files"], {})], absolute=True)
    feeds = view_feeds(net)
    for key in sorted(entries):
        for view, output, literals in feeds(key):
            views[view].add(key, entries[key], output, literals, retired.get(key, set()))
    from sparkcnn.pipeline.query.trials import trial_sources

    views.update(trial_sources(run))  # a sweep's root: views across its trials
    return views


def view_feeds(net):
    """feeds(key): the views a committed stage adds files to, as (view, output, literal columns)."""
    per_image, gradients = set(net.per_image_stages), set(net.gradient_stages)
    statistics = set(net.statistics_stages)

    def feeds(key: str) -> list[tuple[str, str, dict]]:
        return of_stage(*stage_keys.parse_key(key)[:2])

    @functools.cache
    def of_stage(stage: str, epoch) -> list[tuple[str, str, dict]]:
        found = [("metrics", "metrics", {})]
        if stage == "ingest":
            found += [("images", "images", {}), ("stats", "stats", {})]
        elif stage in ("testset", "batches"):
            found.append((stage, stage_keys.PER_IMAGE, {}))
        elif stage == "evaluate":
            found.append(("evaluate", stage_keys.PER_IMAGE, {"eval_epoch": epoch}))
        elif stage in per_image:
            found.append((stage, stage_keys.PER_IMAGE, {}))
        if stage in ("init", "update"):
            found += [("params", "params", {}), ("velocity", "velocity", {})]
            found += [("running_stats", "running", {})] if net.batch_norm_layers else []
        if stage in statistics:
            found.append(("batch_stats", "stats", {}))
        if stage in gradients:
            found.append((f"{stage}_grads", "grads", {}))
        return found

    return feeds


def committed(run, wanted, manifest_listing=None, retired_listing=None) -> tuple[dict, dict]:
    """The manifest entries of the committed stages whose keys wanted(key) accepts, and the outputs
    retention removed of each (from the given listings of the two folders, else from new ones)."""
    listing = run.storage.list_stats(layout.MANIFEST) if manifest_listing is None else manifest_listing
    entries = run.manifest.entries([k for k in folder_index.document_names(listing) if wanted(k)], listing)
    retired = run.retention.retired_of(entries, retired_listing)
    return entries, {k: removed_with(entries[k], gone) if gone else gone for k, gone in retired.items()}


def run_id(run) -> str:
    return run.storage.url.rstrip("/").rsplit("/", 1)[-1]


BOOKKEEPING_VIEWS = ("manifest", "retired")


def view_names(sources: dict[str, ViewSource]) -> list[str]:
    """Every view a run has: its tables' and the bookkeeping ones."""
    return sorted([*sources, *BOOKKEEPING_VIEWS])


class RunViews:
    """A run's views in one SparkSession. A view is registered when a query first names it, from the
    manifest entries and retirement records of the stages that feed it only (through the folders'
    indexes) and one DataFrame over the view's committed files with the schema the project declares (no
    schema inference, no Spark job); it is registered again when the files behind it change, so every
    query sees what is committed at that moment. Shared views (the JDBC server's) are global temporary
    views, which the guard's parser shows in every session as a temporary view of the same name."""

    def __init__(self, spark, run, shared: bool = False):
        self.spark, self.run, self.shared = spark, run, shared
        self.sources: dict[str, ViewSource] = {}
        self._complete: set[str] = set()
        self._entries: dict[str, dict] | None = None
        self._listing = None
        self._registered: dict[str, tuple] = {}
        self._shadowed: set[str] = set()  # run views the session replaced with temporary views of its own
        # explicit file lists are checked on the driver, not by a Spark job per view
        spark.conf.set("spark.sql.sources.parallelPartitionDiscovery.threshold", "1000000")
        register_functions(spark)

    def names(self) -> list[str]:
        self.refresh()
        return view_names(self.sources)

    def refresh(self) -> bool:
        """List the manifest again, and forget what was read of it when a stage was committed, removed or
        retired since; True then."""
        storage = self.run.storage
        listing = tuple(storage.list_stats(folder) for folder in (layout.MANIFEST, layout.RETIRED, layout.SCORES))
        if listing == self._listing:
            return False
        self.run.retention.reload()
        self._listing, self._entries, self._complete = listing, None, set()
        self.sources = view_sources(self.run, {}, {})
        return True

    @property
    def entries(self) -> dict[str, dict]:
        """Every committed manifest entry (as of the last refresh)."""
        if self._entries is None:
            self._entries = self.run.manifest.entries(listing=self._listing[0])
        return self._entries

    def prepare(self, query: str) -> list[str]:
        """Refuse a statement that would write (sql_guard); register the views it names, or all of them for
        SHOW TABLES and SHOW VIEWS (as they are now); the notes it should print."""
        plan = sql_guard.checked(self.spark, query)
        change = sql_guard.session_view(plan)
        self._follow(change)
        self.refresh()
        named = view_names(self.sources) if sql_guard.is_listing(plan) else \
            referenced(query, [*self.sources, *BOOKKEEPING_VIEWS])
        self.register([n for n in named if change is None or n != change[1]])
        return retention_notes(self.run, {n: self.sources[n] for n in named if n in self.sources})

    def _follow(self, change: tuple[str, str] | None) -> None:
        """A statement that creates a temporary view shadows the run's view of that name in this session
        (it is not registered again); dropping it brings the run's back with the next statement."""
        if change is not None:
            action, name = change
            self._registered.pop(name, None)
            (self._shadowed.add if action == "create" else self._shadowed.discard)(name)

    def register(self, names=None) -> None:
        """Register the named views (default: all) whose committed files changed since they were, but for
        those the session shadows with its own."""
        names = [n for n in (self.names() if names is None else names) if n not in self._shadowed]
        self._fill([n for n in names if n in self.sources])
        for name in names:
            signature = self._signature(name)
            if self._registered.get(name) != signature:
                frame = self._frame(name)
                (frame.createOrReplaceGlobalTempView if self.shared else frame.createOrReplaceTempView)(name)
                self._registered[name] = signature

    def _fill(self, names: list[str]) -> None:
        """Complete the sources of the named views from the entries and records of the stages feeding them."""
        missing = set(names) - self._complete
        if not missing:
            return
        feeds = view_feeds(self.run.network)
        entries, retired = committed(self.run, lambda key: any(view in missing for view, _, _ in feeds(key)),
                                     *self._listing[:2])
        filled = view_sources(self.run, entries, retired)
        for name in missing:
            self.sources[name] = filled[name]
        self._complete |= missing

    def _signature(self, name: str) -> tuple:
        if name in BOOKKEEPING_VIEWS:
            return self._listing
        return self.sources[name].signature()

    def _frame(self, name: str):
        if name == "manifest":
            return self.spark.createDataFrame(manifest_table(self.run, self.entries))
        if name == "retired":
            return self.spark.createDataFrame(retired_table(self.run, self.entries))
        return self._files_frame(self.sources[name])

    def _files_frame(self, src: ViewSource):
        from pyspark.sql import functions as F
        from pyspark.sql.pandas.types import from_arrow_schema

        schema = from_arrow_schema(src.schema)
        by_literals: dict[tuple, list[str]] = {}
        for files, literals in src.groups:
            by_literals.setdefault(tuple(sorted(literals.items())), []).extend(files)
        frames = [self.spark.read.schema(schema).parquet(*[src.uri(self.run, f) for f in files])
                  .select(*[F.lit(v).alias(k) for k, v in literals], "*")
                  for literals, files in by_literals.items()]
        frame = frames[0] if frames else self.spark.createDataFrame([], schema)
        for other in frames[1:]:
            frame = frame.unionByName(other)
        return frame.select(F.lit(run_id(self.run)).alias("run_id"),
                            *[F.lit(v).alias(k) for k, v in src.literals.items()], "*")


def referenced(query: str, names) -> list[str]:
    """The view names a query mentions (as words, in any case)."""
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", query.lower()))
    return [n for n in names if n.lower() in words]


def register_views(spark, run) -> dict[str, ViewSource]:
    """Register every view of a run (and the tensor functions) in a SparkSession."""
    views = RunViews(spark, run)
    views.register()
    return views.sources


MANIFEST_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("key", pa.string()), ("stage", pa.string()), ("epoch", pa.int32()),
    ("iteration", pa.int32()), ("identity", pa.string()), ("rows", pa.int64()), ("bytes", pa.int64()),
    ("seconds", pa.float64()), ("committed_at", pa.float64()), ("files", pa.int32()), ("retired", pa.string())])
RETIRED_SCHEMA = pa.schema([("key", pa.string()), ("stage", pa.string()), ("iteration", pa.int32()),
                            ("outputs", pa.string())])


def manifest_table(run, entries: dict[str, dict]) -> pa.Table:
    rows = []
    for key in sorted(entries):
        e = entries[key]
        rows.append({"run_id": run_id(run), "key": key, "stage": e["stage"], "epoch": e["epoch"],
                     "iteration": e["iteration"], "identity": e["identity"], "rows": e.get("rows"),
                     "bytes": e.get("bytes"), "seconds": e.get("seconds"), "committed_at": e["committed_at"],
                     "files": sum(len(v) for v in e["outputs"].values()),
                     "retired": ",".join(sorted(run.retention.retired_outputs(key)))})
    return pa.Table.from_pylist(rows, MANIFEST_SCHEMA)


def retired_table(run, entries: dict[str, dict]) -> pa.Table:
    rows = [{"key": k, "stage": stage_keys.parse_key(k)[0], "iteration": stage_keys.parse_key(k)[2],
             "outputs": ",".join(sorted(run.retention.retired_outputs(k)))}
            for k in sorted(entries) if run.retention.retired_outputs(k)]
    return pa.Table.from_pylist(rows, RETIRED_SCHEMA)


def retention_notes(run, sources: dict[str, ViewSource], query: str | None = None) -> list[str]:
    """What a query should know about the views it names (all given ones when query is None) whose
    outputs retention removed."""
    notes = []
    names = sources if query is None else referenced(query, sources)
    for name in names:
        src = sources[name]
        if src.retired:
            kept = "nothing is left" if not src.files else f"{len(src.groups)} committed stage(s) remain"
            notes.append(f"note: view {name}: the outputs of {len(src.retired)} stage(s) were removed by retention "
                         f"(run.keep_iterations={run.cfg.run.keep_iterations}; see the `retired` view); {kept}")
    return notes


def sql_error(error: Exception) -> str:
    """The first line of a failed query's error, for the console."""
    first = str(error).strip().splitlines()
    return first[0] if first else type(error).__name__
