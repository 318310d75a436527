"""Batch scoring: a data source's images through a trained network as a Spark job over the source's pieces,
each task writing its part of a Parquet table (pipeline.sources reads, the network's forward pass scores).
Ids are those ingest would give the same source, so the run's own test split scores under its own ids."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline import ingest, layout
from pipeline.errors import RunError
from pipeline.images import fit
from pipeline.sources import Description, Piece, Source, open_source
from pipeline.storage import Storage
from schemas.tables import SCORES_SCHEMA
from stages.tabular import StageContext

SPLITS = ("test", "train", "all")
NAMED_UNREADABLE = 10  # unreadable images named per piece (all are counted)
SUCCESS = "_SUCCESS"


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
    from pipeline.predict import probabilities

    try:
        records = task.source.read(piece, task.description)
    except ingest.DataError as e:
        return {"error": str(e)}
    ids = ingest.row_ids(records.splits, first_train, first_test)
    rows, pixels, unreadable = [], [], []
    for i, image in enumerate(records.images):
        if task.split != "all" and records.splits[i] != task.split:
            continue
        if isinstance(image, str):
            unreadable.append(image)
            continue
        rows.append(i)
        pixels.append(fit(image, task.ctx.network.image, resize=True))
    result = {"rows": len(rows), "unreadable": len(unreadable), "named": unreadable[:NAMED_UNREADABLE],
              "labelled": 0, "correct": 0}
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


def prepare_out(url: str, overwrite: bool) -> Storage:
    """The output folder, empty: one that holds anything is refused unless `overwrite` (then emptied)."""
    out = Storage(url)
    if out.exists("") and (not out.fs.isdir(out.path("")) or out.listdir("")):
        if not overwrite:
            raise RunError(f"output {out.where('')} exists; pass --overwrite to replace it")
        out.remove("")
    return out


def score(run, spark, params: dict, described_as: str, data: str, split: str, out_url: str, overwrite: bool,
          progress=None) -> dict:
    """Score `data` (a source as ingest takes it) with `params`; write the table to `out_url`, record the
    scoring in the run root (the `scores` view) and return the summary."""
    if split not in SPLITS:
        raise RunError(f"--split must be one of {', '.join(SPLITS)}, not {split!r}")
    source = open_source(data, {**ingest.source_settings(run.cfg), "scoring": True})
    description = source.describe()
    out = prepare_out(out_url, overwrite)
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
        out.remove("")
        raise ingest.DataError(error)
    summary = {
        "out": out.where(""), "data": source.where, "split": split, "parameters": described_as,
        "images": sum(r["rows"] for r in results), "unreadable": sum(r["unreadable"] for r in results),
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


def latest_scoring(run) -> dict | None:
    """The newest scoring recorded in the run root, or None."""
    records = [n for n in run.storage.listdir(layout.SCORES) if n.endswith(".json")]
    if not records:
        return None
    return json.loads(run.storage.read_bytes(f"{layout.SCORES}/{max(records)}"))

