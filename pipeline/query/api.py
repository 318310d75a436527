"""A run for notebooks and scripts: SQL answers as Arrow tables, stored tensors as numpy arrays, parameters
by name.

    from sparkcnn import open_run
    run = open_run("runs/default")
    run.sql("SELECT iteration, AVG(out_zeros) AS dead FROM relu1_fwd GROUP BY iteration").to_pandas()
    run.tensor("relu1_fwd", "out", iteration=39)                 # (500, 32, 32, 32) float32
    run.params()["conv1.w"]                                      # after the last committed update

Tensors and parameters are read from the committed files directly; only `sql` needs Spark (the active
SparkSession when there is one, else the run's own, started on first use).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sparkcnn.pipeline import stage_keys
from sparkcnn.pipeline.errors import RunError
from sparkcnn.pipeline.query.sql_guard import QueryError, QueryRefused  # noqa: F401 (QueryRefused: for callers)
from sparkcnn.pipeline.training.run import Run
from sparkcnn.schemas.tables import table_to_arrays
from sparkcnn.schemas.tensors import decode_column


class OpenRun:
    """One run root, opened for reading; every call sees what is committed at that moment."""

    def __init__(self, run: Run, spark=None):
        self.run = run
        self._spark = spark
        self._views = None

    @property
    def url(self) -> str:
        return self.run.storage.url

    def __repr__(self) -> str:
        return f"OpenRun({self.url!r})"

    @property
    def spark(self):
        """The SparkSession queries run in: the active one, else the run's own (started on first use)."""
        if self._spark is None:
            from pyspark.sql import SparkSession

            from sparkcnn.pipeline.query.sql_guard import SESSION
            from sparkcnn.pipeline.spark.session import session

            self._spark = SparkSession.getActiveSession() or session(self.run.cfg, conf=SESSION, querying=True)
        return self._spark

    def _catalog(self):
        from sparkcnn.pipeline.query import sql

        if self._views is None:
            self._views = sql.RunViews(self.spark, self.run)
        return self._views

    def sql(self, query: str) -> pa.Table:
        """The result of a Spark SQL query over the run's views (`.to_pandas()` for pandas); notes about
        outputs retention removed go to the `notes` attribute of the call's result metadata. Queries are
        read-only: a statement that would write is refused (QueryRefused, a QueryError) before it runs."""
        from sparkcnn.pipeline.query.sql import sql_error

        notes = self._catalog().prepare(query)
        try:
            table = self.spark.sql(query).toArrow()
        except Exception as e:
            if type(e).__module__.startswith(("pyspark", "py4j")):
                raise QueryError(sql_error(e)) from None
            raise
        return table.replace_schema_metadata({b"notes": "\n".join(notes).encode()}) if notes else table

    def views(self) -> list[str]:
        """Names of the run's views (tables and bookkeeping: manifest, retired), without starting Spark."""
        from sparkcnn.pipeline.query import sql

        return sql.view_names(sql.view_sources(self.run, {}, {}))

    def iterations(self, stage: str) -> list[int]:
        """Iterations whose outputs of a stage are stored (retention keeps the last few and inspected ones)."""
        from sparkcnn.pipeline.query import sql

        output = self._output(stage)
        self.run.retention.reload()
        entries, retired = sql.committed(self.run, lambda key: stage_keys.parse_key(key)[0] == stage)
        return sorted(t for key, entry in entries.items() for t in [stage_keys.parse_key(key)[2]]
                      if t is not None and output in entry["outputs"] and output not in retired[key])

    def tensor(self, stage: str, output: str, iteration: int | None = None, image_id: int | None = None) -> np.ndarray:
        """A stored tensor with its declared shape. For a per-image stage, `output` is a tensor column of its
        table (out, dx, mask, argmax, probs): all images of the iteration in batch order (N, *shape), or
        one image's (*shape). For a backward stage's parameter gradients, `output` names the parameter
        (conv1.w): one per shard (S, *shape). The iteration defaults to the last one stored."""
        table_output = self._output(stage, output)
        kept = self.iterations(stage)
        if iteration is None:
            if not kept:
                raise RunError(f"no iteration of {stage} is stored (retention removed them, or none ran yet)")
            iteration = kept[-1]
        if iteration not in kept:
            raise RunError(f"iteration {iteration} of {stage} is not stored; stored: {_ranges(kept)}")
        files = self.run.manifest.files(stage_keys.iteration_key(iteration, stage), table_output)
        if table_output == "grads":
            arrays = [table_to_arrays(self.run.storage.read_parquet(f["path"])) for f in files]
            if output not in arrays[0]:
                raise RunError(f"{stage} has no gradient {output}; it has: {', '.join(sorted(arrays[0]))}")
            return np.stack([a[output] for a in arrays])
        tables = [self.run.storage.read_parquet(f["path"]) for f in files]
        table = pa.concat_tables(tables).sort_by([("shard", "ascending"), ("position", "ascending")])
        if output not in _tensor_columns(table):
            raise RunError(f"table {stage} has no tensor {output}; it has: {', '.join(_tensor_columns(table))}")
        if image_id is None:
            return decode_column(table, output)
        row = table.filter(pc.equal(table.column("image_id"), image_id))
        if not row.num_rows:
            raise RunError(f"image {image_id} is not in iteration {iteration} of {stage}")
        return decode_column(row, output)[0]

    def params(self, iteration: int | None = None) -> dict[str, np.ndarray]:
        """Parameters by name after `iteration` iterations (default: after the last committed update)."""
        return dict(self.run.latest_params(iteration)[1])

    def _output(self, stage: str, output: str | None = None) -> str:
        """The stage output a tensor is in: per-image tables, or the parameter gradients."""
        net = self.run.network
        if stage in net.per_image_stages:
            return stage_keys.PER_IMAGE
        if stage in net.gradient_stages:
            return "grads"
        stages = [*net.per_image_stages, *(s for s in net.gradient_stages if s not in net.per_image_stages)]
        raise RunError(f"{stage} is not a stage with stored tensors; stages: {', '.join(stages)}")


def open_run(url: str, spark=None) -> OpenRun:
    """Open a run root (a folder or URL, hdfs:// included) for reading."""
    return OpenRun(Run.open(url), spark)


def _tensor_columns(table: pa.Table) -> list[str]:
    """The tensors a table stores: its binary columns, a sparse one (<name>_mask, <name>_values) by its name."""
    binary = [f.name for f in table.schema if pa.types.is_binary(f.type)]
    sparse = [n[: -len("_values")] for n in binary if n.endswith("_values") and n[: -len("_values")] + "_mask" in binary]
    return [*sparse, *(n for n in binary if n not in {f"{s}_mask" for s in sparse} | {f"{s}_values" for s in sparse})]


def _ranges(values: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    spans: list[list[int]] = []
    for v in values:
        if spans and v == spans[-1][1] + 1:
            spans[-1][1] = v
        else:
            spans.append([v, v])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans) or "none"
