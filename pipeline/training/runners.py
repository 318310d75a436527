"""One runner per kind of stage outside an iteration: ingest, init, the shuffles (testset, batches) and
evaluate. A runner computes a stage's outputs from its StageEnvironment (environment.py) and returns its
manifest entry; the run commits it.
Iteration stages are run by the execution modes (sparkcnn.pipeline.training.modes)."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from sparkcnn.pipeline import stage_keys
from sparkcnn.pipeline.data import ingest
from sparkcnn.pipeline.errors import DataError, RunError
from sparkcnn.pipeline.runroot import layout
from sparkcnn.pipeline.spark.executor import ShuffleTask, StageTask, Unit, write_shard
from sparkcnn.pipeline.spark.jobs import run_job
from sparkcnn.schemas.tables import TASK_RESULT_SCHEMA
from sparkcnn.stages import update
from sparkcnn.stages.tabular import StageContext


def file_row(part: str, output: str, path: str, rows: int, size: int) -> dict:
    return {"part": part, "output": output, "path": path, "rows": rows, "bytes": size}


def write_table(storage, table: pa.Table, out_dir: str, output: str, part: str) -> dict:
    """Write one output part on the driver; returns its file row."""
    path = layout.output_path(out_dir, output, part)
    return file_row(part, output, path, table.num_rows, storage.write_parquet(table, path, fresh=True))


def spark_schema(schema: pa.Schema):
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


def check_parts(key: str, rows: list[dict], expected: dict[str, set[str]]) -> None:
    """Every expected part of every output came back exactly once."""
    for output, parts in expected.items():
        got = [r["part"] for r in rows if r["output"] == output]
        if sorted(got) != sorted(parts):
            missing = sorted(set(parts) - set(got))
            extra = sorted(p for p in set(got) if got.count(p) > 1 or p not in parts)
            raise RunError(f"stage {key}: output {output} has missing parts {missing[:5]} "
                           f"or repeated/unexpected parts {extra[:5]}")


def run_ingest(env, spark, key: str, epoch: int | None) -> dict:
    """The data source as the image table, one part per piece, read and written by Spark tasks (a first
    job counts each piece's rows of each split, which number the images), and the per-channel statistics.
    A problem anywhere (the first in source order is named) removes what was written: nothing is committed."""
    source, description = ingest.configured_source(env.cfg)
    numbered = ingest.numbered_pieces(spark, source, description, key)
    task = ingest.PieceTask(source.for_tasks(), description, env.network, env.storage, bool(env.cfg.data.resize))
    spark.sparkContext.setJobDescription(key)
    work = spark.sparkContext.parallelize([(i, p, s) for i, (p, s) in enumerate(numbered)], max(1, len(numbered)))
    results = [r for _, r in sorted(work.map(lambda item: (item[0], ingest.write_piece(task, item[1], *item[2]))).collect())]
    if error := ingest.first_error(results):
        env.storage.remove(layout.IMAGES)
        if not env.storage.listdir(layout.DATA):
            env.storage.remove(layout.DATA)
        raise DataError(error)
    outputs = [r["file"] for r in results]
    outputs.append(write_table(env.storage, ingest.stats_table(results, description.image[2]), layout.DATA, "stats",
                               stage_keys.ALL_PARTS))
    counts = ingest.ingest_values(env.cfg, source, description, results)
    if not counts["train"] or not counts["test"]:
        env.storage.remove(layout.DATA)
        raise DataError(f"{source.where}: {counts['train']} training and {counts['test']} test images; "
                               f"training needs both splits")
    return env.committer.entry(key, [], {"data": counts["digest"]}, outputs, {stage_keys.ALL_PARTS: counts})


def run_init(env, spark, key: str, epoch: int | None) -> dict:
    """The starting parameters and velocity: PyTorch's default initialisation, or a branch's source checkpoint."""
    branch = env.catalog.branch()
    if branch:
        source = env.open_catalog(branch["from"])
        tables = {name: source.storage.read_parquet(source.params_file(branch["iteration"], name)["path"])
                  for name in ("params", "velocity")}
    else:
        params = update.init_params(env.network, env.cfg.train.seed)
        velocity = update.zero_velocity(env.network)
        tables = update.version_tables(env.network, params, velocity, 0)
    out_dir = layout.params_dir(branch.get("iteration", 0))
    outputs = [write_table(env.storage, table, out_dir, name, stage_keys.ALL_PARTS) for name, table in tables.items()]
    return env.committer.entry(key, [], {"branch": branch} if branch else {}, outputs, {})


def image_order(env, epoch: int | None) -> pa.Table:
    """image_id -> (iteration, shard, position) for an epoch's shuffle, or the test split in order."""
    sched = env.schedule
    start_id = env.catalog.get("ingest")["values"][stage_keys.ALL_PARTS]["train"]
    if epoch is None:
        ids = np.arange(start_id, start_id + sched.test_images, dtype=np.int64)
        iterations = np.zeros(ids.size, np.int32)
        positions = np.arange(ids.size, dtype=np.int32)
    else:
        ids = stage_keys.epoch_permutation(env.cfg.train.seed, epoch, sched.train_images).astype(np.int64)
        index = np.arange(ids.size)
        iterations = (epoch * sched.iterations_per_epoch + index // sched.batch_size).astype(np.int32)
        positions = (index % sched.batch_size).astype(np.int32)
    shards = (positions // sched.shard_size).astype(np.int32)
    return pa.table({"image_id": ids, "iteration": iterations, "shard": shards, "position": positions})


def run_shuffle(env, spark, key: str, epoch: int | None) -> dict:
    """Write the images of an epoch (or the test split) as one file per (iteration, shard)."""
    from pyspark.sql import functions as F

    images = env.catalog.files("ingest", "images")
    test = epoch is None
    order = image_order(env, epoch)
    frame = spark.read.parquet(*[env.storage.uri(f["path"]) for f in images])
    frame = frame.where(F.col("split") == ("test" if test else "train")).drop("split", "source")
    joined = frame.join(F.broadcast(spark.createDataFrame(order)), "image_id")
    out_dir = layout.TESTSET if test else layout.batches_dir(epoch)
    task = ShuffleTask(env.storage, StageContext(env.network), out_dir, -1 if test else epoch)
    spark.sparkContext.setJobDescription(key)
    rows = joined.groupBy("iteration", "shard").applyInArrow(
        lambda table: write_shard(task, table), spark_schema(TASK_RESULT_SCHEMA)).toArrow().to_pylist()
    pairs = set(zip(order.column("iteration").to_pylist(), order.column("shard").to_pylist()))
    check_parts(key, rows, {"out": {stage_keys.batch_part(i, s) for i, s in pairs}})
    return env.committer.entry(key, ["ingest"], {}, rows, {})


def run_evaluate(env, spark, key: str, epoch: int) -> dict:
    """The whole network's forward pass on the test split with the parameters at the end of an epoch."""
    sched = env.schedule
    last = (epoch + 1) * sched.iterations_per_epoch - 1
    deps = ["testset", stage_keys.iteration_key(last, "update")]
    env.catalog.identity(key, deps, {})
    units = [Unit(stage_keys.shard_part(i), {"x": [f["path"]]}) for i, f in enumerate(env.catalog.files("testset", "out"))]
    sdef = env.network.evaluate_def
    task = StageTask(env.storage, sdef.function, env.contexts.context({}, stage="evaluate"),
                     layout.evaluate_dir(epoch), {n: list(i.columns) for n, i in sdef.inputs.items()},
                     frozenset(), units, key, env.catalog.params_ref(last + 1))
    rows = run_job(spark, key, task, env.cfg.spark.partitions)
    check_parts(key, rows, {"out": {u.part for u in units}})
    return env.committer.entry(key, deps, {}, rows, {r["part"]: json.loads(r["values"]) for r in rows})


SETUP = {"ingest": run_ingest, "init": run_init, "testset": run_shuffle, "batches": run_shuffle,
         "evaluate": run_evaluate}
