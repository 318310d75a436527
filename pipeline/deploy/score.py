"""Batch scoring: a data source's images through a trained network as a Spark job over the source's pieces,
each task writing its part of a Parquet table (sparkcnn.pipeline.data.sources reads, the network's forward pass scores).
Ids are those ingest would give the same source, so the run's own test split scores under its own ids."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from sparkcnn.pipeline.data import ingest
from sparkcnn.pipeline.data.images import fit
from sparkcnn.pipeline.data.sources import Description, Piece, Source, open_source
from sparkcnn.pipeline.errors import DataError, RunError
from sparkcnn.pipeline.runroot import layout
from sparkcnn.pipeline.runroot.lock import RunLock
from sparkcnn.pipeline.runroot.storage import Storage
from sparkcnn.schemas.tables import SCORES_SCHEMA
from sparkcnn.stages.tabular import StageContext

SPLITS = ("test", "train", "all")
NAMED_UNREADABLE = 10  # unreadable images named per piece (all are counted)
SUCCESS = "_SUCCESS"
OUT_LOCK = "_lock"  # the output's lock (sparkcnn.pipeline.runroot.lock): one scoring writes an output at a time


def label_map(source_names: tuple[str, ...], run_names: list[str]) -> list[int] | None:
    """Each source class's index among the run's classes: by name; integer labels (names "0", "1", ...)
    by index when the run's names are not theirs; None when the labels cannot be compared."""
    if set(source_names) <= set(run_names):
        return [run_names.index(n) for n in source_names]
    if all(n == str(i) for i, n in enumerate(source_names)) and len(source_names) <= len(run_names):
        return list(range(len(source_names)))
    return None


@dataclass(frozen=True)
class ScoreTask:
    """What every scoring task needs."""

    source: Source
    description: Description
    ctx: StageContext
    out: Storage
    split: str
    labels: list[int] | None
    class_names: tuple[str, ...]


def score_piece(task: ScoreTask, piece: Piece, first_train: int, first_test: int) -> dict:
    """Run on an executor: a piece's images of the wanted split scored and written as one part."""
    from sparkcnn.pipeline.deploy.predict import probabilities

    try:
        records = task.source.read(piece, task.description)
    except DataError as e:
        return {"error": str(e)}
    ids = ingest.row_ids(records.splits, first_train, first_test)
    rows, pixels, unreadable, other_split = [], [], [], 0
    for i, image in enumerate(records.images):
        if task.split != "all" and records.splits[i] != task.split:
            other_split += 1
            continue
        if isinstance(image, str):
            unreadable.append(image)
            continue
        rows.append(i)
        pixels.append(fit(image, task.ctx.network.image, resize=True))
    result = {"rows": len(rows), "unreadable": len(unreadable), "named": unreadable[:NAMED_UNREADABLE],
              "other_split": other_split, "labelled": 0, "correct": 0}
    if not rows:
        return result
    probs = probabilities(task.ctx, np.stack(pixels))
    predicted = probs.argmax(axis=1)
    source_labels = [records.labels[i] for i in rows]
    labels = [task.labels[v] if task.labels is not None and v >= 0 else None for v in source_labels]
    names = task.description.class_names
    table = pa.Table.from_arrays([
        pa.array(ids[rows]), pa.array([records.origins[i] for i in rows]), pa.array([records.splits[i] for i in rows]),
        pa.array(labels, pa.int32()), pa.array([names[v] if v >= 0 else None for v in source_labels], pa.string()),
        pa.array(predicted.astype(np.int32)), pa.array([task.class_names[p] for p in predicted]),
        pa.array(probs.max(axis=1)), pa.array(list(probs), pa.list_(pa.float32())),
    ], schema=SCORES_SCHEMA)
    path = f"part-{piece.part}.parquet"
    result["bytes"] = task.out.write_parquet(table, path)
    result["file"] = task.out.uri(path)
    known = [(label, p) for label, p in zip(labels, predicted) if label is not None]
    result["labelled"], result["correct"] = len(known), int(sum(label == p for label, p in known))
    return result


def output_folder(url: str, overwrite: bool) -> Storage:
    """The output as a folder: a file there is refused unless `overwrite` (then removed)."""
    out = Storage(url)
    if out.exists("") and not out.fs.isdir(out.path("")):
        if not overwrite:
            raise RunError(f"output {out.where('')} exists and is a file; pass --overwrite to replace it")
        out.remove("")
    return out


def prepare_out(out: Storage, overwrite: bool) -> None:
    """Empty the output folder (but its lock): one that holds anything is refused unless `overwrite`."""
    held = [name for name in out.listdir("") if name != OUT_LOCK]
    if held and not overwrite:
        state = "exists" if SUCCESS in held else "holds an earlier scoring that did not finish (no _SUCCESS)"
        raise RunError(f"output {out.where('')} {state}; pass --overwrite to replace it")
    for name in held:
        out.remove(name)


def scoring_split(run, source: Source, data: str, split: str | None) -> str:
    """The split to score: the run's own data and sources with a split of their own have the run's split
    rule (default test); any other source is scored whole (all), and a split cannot apply to it."""
    if split is not None and split not in SPLITS:
        raise RunError(f"--split must be one of {', '.join(SPLITS)}, not {split!r}")
    if source.has_split or run.ingested_from(data):
        return split or "test"
    if split in (None, "all"):
        return "all"
    raise RunError(f"{source.where} is not this run's data and has no split of its own (no train/ and test/ "
                   f"folders, no split column): --split {split} cannot apply to it; score it all (the default)")


def score(run, spark, params: dict, described_as: str, data: str, split: str | None, out_url: str, overwrite: bool,
          progress=None) -> dict:
    """Score `data` (a source as ingest takes it) with `params`, holding the output's lock; write the table to
    `out_url`, record the scoring in the run root (the `scores` view) and return the summary."""
    source = open_source(data, {**ingest.source_settings(run.cfg), "scoring": True})
    split = scoring_split(run, source, data, split)
    description = source.describe()
    out = output_folder(out_url, overwrite)
    with RunLock(out, folder=OUT_LOCK, what="score output"):
        prepare_out(out, overwrite)
        return _score(run, spark, params, described_as, source, description, split, out, progress)


def _score(run, spark, params: dict, described_as: str, source: Source, description: Description, split: str,
           out: Storage, progress) -> dict:
    """The scoring itself, into an empty output folder: its table, _SUCCESS and the run's record of it."""
    numbered = ingest.numbered_pieces(spark, source, description, "score")
    mean, std = run.channel_stats()
    names = run.class_names()
    ctx = StageContext(run.network, params, mean, std)
    task = ScoreTask(source.for_tasks(), description, ctx, out, split, label_map(description.class_names, names),
                     tuple(names))
    spark.sparkContext.setJobDescription(f"score {len(numbered)} pieces")
    work = spark.sparkContext.parallelize([(i, p, s) for i, (p, s) in enumerate(numbered)], max(1, len(numbered)))
    job = work.map(lambda item: (item[0], score_piece(task, item[1], *item[2])))
    results = [r for _, r in sorted((progress or _no_progress)(len(numbered), job.collect))]
    if error := ingest.first_error(results):
        prepare_out(out, overwrite=True)
        raise DataError(error)
    summary = {
        "out": out.where(""), "data": source.where, "split": split, "parameters": described_as,
        "images": sum(r["rows"] for r in results), "unreadable": sum(r["unreadable"] for r in results),
        "other_split": sum(r["other_split"] for r in results),
        "unreadable_named": [n for r in results for n in r["named"]][:NAMED_UNREADABLE],
        "labelled": sum(r["labelled"] for r in results), "correct": sum(r["correct"] for r in results),
        "files": [r["file"] for r in results if "file" in r], "scored_at": time.time(),
    }
    out.write_bytes(SUCCESS, json.dumps(summary, indent=1).encode())
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"-{int(time.time() * 1e6) % 1000000:06d}"
    run.storage.write_bytes(layout.score_record(stamp), json.dumps(summary, indent=1).encode())
    return summary


def _no_progress(pieces: int, collect):
    return collect()
