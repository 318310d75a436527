"""Metrics rows of a run: seconds, rows and bytes per stage, loss and accuracy per iteration and evaluation,
written beside the update or evaluate stage they describe and committed with it."""
from __future__ import annotations

import pyarrow as pa

from sparkcnn.pipeline import stage_keys
from sparkcnn.pipeline.runroot import layout
from sparkcnn.pipeline.training.runners import write_table
from sparkcnn.schemas.tables import METRICS_SCHEMA


def totals(values: dict) -> dict:
    """Loss sum, correct predictions and image count over the parts of a stage, in part order."""
    parts = [values[p] for p in sorted(values)]
    return {k: sum(v[k] for v in parts) for k in ("loss_sum", "correct", "count")}


def _stage_rows(catalog, keys: list[str], entry: dict) -> list[dict]:
    rows = []
    for k in keys:
        e = entry if k == entry["key"] else catalog.get(k)
        rows.append({"kind": "stage", "stage": e["stage"], "epoch": e["epoch"], "iteration": e["iteration"],
                     "seconds": e["seconds"], "rows": e["rows"], "bytes": e["bytes"]})
    return rows


def attach_iteration_metrics(catalog, entry: dict, t: int) -> None:
    """The metrics of iteration t, attached to its update's entry: per stage (as staged mode committed them,
    or as a whole iteration measured them) and the batch's loss and accuracy."""
    sched = catalog.schedule()
    epoch = sched.epoch_of(t)
    if "stage_seconds" in entry:
        images = sched.batch_images(t)
        rows = [{"kind": "stage", "stage": s, "iteration": t, "seconds": sec, "rows": images,
                 "bytes": entry["bytes"] if s == "update" else 0} for s, sec in entry["stage_seconds"].items()]
        total = totals(entry["values"])
    else:
        rows = _stage_rows(catalog, [stage_keys.iteration_key(t, s) for s in catalog.network.iteration_stages], entry)
        total = totals(catalog.get(stage_keys.iteration_key(t, "loss"))["values"])
    mode = catalog.cfg.run.mode if "stage_seconds" in entry else "staged"
    for row in rows:
        row.update(epoch=epoch, mode=mode)
    rows.append({"kind": "train", "mode": mode, "stage": "loss", "epoch": epoch, "iteration": t,
                 "seconds": sum(r["seconds"] for r in rows), "rows": total["count"],
                 "bytes": sum(r["bytes"] for r in rows), "loss": total["loss_sum"] / total["count"],
                 "accuracy": total["correct"] / total["count"]})
    _attach(catalog, entry, layout.iteration_metrics(t), rows)


def attach_eval_metrics(catalog, entry: dict, epoch: int) -> None:
    total = totals(entry["values"])
    rows = [{"kind": "eval", "mode": catalog.cfg.run.mode, "stage": "evaluate", "epoch": epoch, "iteration": None,
             "seconds": entry["seconds"], "rows": total["count"], "bytes": entry["bytes"],
             "loss": total["loss_sum"] / total["count"], "accuracy": total["correct"] / total["count"]}]
    _attach(catalog, entry, layout.epoch_metrics(epoch), rows)


def _attach(catalog, entry: dict, stem: str, rows: list[dict]) -> None:
    table = pa.Table.from_pylist(rows, schema=METRICS_SCHEMA)
    folder, name = stem.rsplit("/", 1)
    entry["outputs"]["metrics"] = [write_table(catalog.storage, table, folder, name, stage_keys.ALL_PARTS)]
