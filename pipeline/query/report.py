"""`sparkcnn report`: an HTML page and PNG charts made from a run's own tables."""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from sparkcnn.pipeline import stage_keys
from sparkcnn.pipeline.training.run import Run
from sparkcnn.schemas.tensors import decode_column

DPI = 100


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=DPI)
    _plt().close(fig)


def curves(metrics: list[dict], iterations_per_epoch: int, path: Path) -> dict:
    train = sorted((m for m in metrics if m["kind"] == "train"), key=lambda m: m["iteration"])
    tests = sorted((m for m in metrics if m["kind"] == "eval"), key=lambda m: m["epoch"])
    fig, (loss_ax, acc_ax) = _plt().subplots(1, 2, figsize=(10, 4))
    at = [(m["epoch"] + 1) * iterations_per_epoch - 1 for m in tests]
    for ax, field in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        ax.plot([m["iteration"] for m in train], [m[field] for m in train], label=f"train {field} (batch)")
        ax.plot(at, [m[field] for m in tests], marker="o", label=f"test {field}")
        ax.set_xlabel("iteration")
        ax.set_title(field)
        ax.legend()
    fig.tight_layout()
    _save(fig, path)
    return {"test_accuracy": {m["epoch"] + 1: m["accuracy"] for m in tests},
            "test_loss": {m["epoch"] + 1: m["loss"] for m in tests},
            "train_loss": {m["iteration"]: m["loss"] for m in train}}


def stage_times(metrics: list[dict], order: tuple[str, ...], path: Path) -> dict:
    """Mean seconds per stage and iteration, per execution mode, stages in the given order."""
    rows = [m for m in metrics if m["kind"] == "stage"]
    modes = sorted({m["mode"] or "staged" for m in rows})
    stages = [s for s in order if any(m["stage"] == s for m in rows)]
    table = {mode: {s: float(np.mean([m["seconds"] for m in rows if (m["mode"] or "staged") == mode
                                      and m["stage"] == s] or [0.0])) for s in stages} for mode in modes}
    fig, ax = _plt().subplots(figsize=(10, 4))
    width = 0.8 / max(len(modes), 1)
    for i, mode in enumerate(modes):
        ax.bar(np.arange(len(stages)) + i * width, [table[mode][s] for s in stages], width, label=mode)
    ax.set_xticks(np.arange(len(stages)) + width * (len(modes) - 1) / 2, stages, rotation=30)
    ax.set_ylabel("seconds per iteration")
    ax.set_title("time per stage")
    ax.legend()
    fig.tight_layout()
    _save(fig, path)
    return table


def latest_outputs(run: Run, stage: str, output: str = "out") -> tuple[int | None, list]:
    """The tables of a stage's latest iteration whose outputs are still stored."""
    kept = [stage_keys.parse_key(k)[2] for k in run.manifest.keys()
            if stage_keys.parse_key(k)[0] == stage and output not in run.retention.retired_outputs(k)]
    if not kept:
        return None, []
    t = max(kept)
    return t, [run.storage.read_parquet(f["path"]) for f in run.manifest.files(stage_keys.iteration_key(t, stage), output)]


def activations(run: Run, path: Path) -> dict:
    """A histogram of every forward stage's output, from its latest kept iteration."""
    stages = run.network.forward_stages
    fig, axes = _plt().subplots(1, len(stages), figsize=(3 * len(stages), 3.2), squeeze=False)
    found = {}
    column = "out"
    for ax, stage in zip(axes[0], stages):
        t, tables = latest_outputs(run, stage)
        if not tables:
            ax.set_title(f"{stage}: removed by retention")
            continue
        values = np.concatenate([decode_column(tb, column).reshape(-1) for tb in tables])
        counts, edges = np.histogram(values, bins=50)
        ax.stairs(counts, edges, fill=True)
        ax.set_yscale("log")
        ax.set_title(f"{stage}.{column} (iteration {t})")
        found[stage] = {"iteration": t, "values": int(values.size), "mean": float(values.mean())}
    fig.tight_layout()
    _save(fig, path)
    return found


def latest_evaluation(run: Run):
    evals = sorted(stage_keys.parse_key(k)[1] for k in run.manifest.keys() if k.startswith("eval."))
    if not evals:
        return None, None
    tables = [run.storage.read_parquet(f["path"]) for f in run.manifest.files(stage_keys.eval_key(evals[-1]), "out")]
    return evals[-1], tables


def confusion(run: Run, path: Path) -> np.ndarray | None:
    epoch, tables = latest_evaluation(run)
    if tables is None:
        return None
    labels = np.concatenate([t.column("label").to_numpy() for t in tables]).astype(int)
    predicted = np.concatenate([t.column("predicted").to_numpy() for t in tables]).astype(int)
    k, names = run.network.classes, run.class_names()
    matrix = np.bincount(labels * k + predicted, minlength=k * k).reshape(k, k)
    fig, ax = _plt().subplots(figsize=(6, 5.5))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(k), names, rotation=60)
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion on the test split (epoch {epoch + 1})")
    for (i, j), n in np.ndenumerate(matrix):
        ax.text(j, i, str(n), ha="center", va="center", fontsize=7)
    fig.colorbar(image)
    fig.tight_layout()
    _save(fig, path)
    return matrix


def misclassified(run: Run, path: Path, count: int = 32) -> list[dict]:
    _, tables = latest_evaluation(run)
    if tables is None:
        return []
    wrong = []
    for t in tables:
        mask = t.column("label").to_numpy() != t.column("predicted").to_numpy()
        wrong.extend(r for r, bad in zip(t.select(["image_id", "label", "predicted", "loss"]).to_pylist(), mask) if bad)
    wrong = sorted(wrong, key=lambda r: -r["loss"])[:count]
    ids = {r["image_id"] for r in wrong}
    pixels = {}
    for f in run.manifest.files("testset", "out"):
        t = run.storage.read_parquet(f["path"], ["image_id", "pixels"])
        for image_id, image in zip(t.column("image_id").to_pylist(), decode_column(t, "pixels")):
            if image_id in ids:
                pixels[image_id] = image
    cols = 8
    rows = max(1, (len(wrong) + cols - 1) // cols)
    fig, axes = _plt().subplots(rows, cols, figsize=(cols * 1.5, rows * 1.7), squeeze=False)
    for ax in axes.reshape(-1):
        ax.axis("off")
    names = run.class_names()
    for ax, r in zip(axes.reshape(-1), wrong):
        image = pixels[r["image_id"]]
        ax.imshow(image[:, :, 0] if image.shape[2] == 1 else image, cmap="gray")
        ax.set_title(f"{names[r['label']]}\n→ {names[r['predicted']]}", fontsize=7)
    fig.suptitle("misclassified test images (true → predicted), highest loss first")
    fig.tight_layout()
    _save(fig, path)
    return wrong


def _table(headers: list[str], rows: list[list]) -> str:
    cells = lambda tag, values: "".join(f"<{tag}>{html.escape(str(v))}</{tag}>" for v in values)
    return "<table><tr>" + cells("th", headers) + "</tr>" + "".join(f"<tr>{cells('td', r)}</tr>" for r in rows) + "</table>"


def write_report(run: Run, out: Path) -> dict:
    """Write report.html and its PNG charts into `out`; returns the figures' numbers."""
    out.mkdir(parents=True, exist_ok=True)
    metrics = run.metrics().to_pylist()
    sched = run.schedule()
    figures = {
        "curves": curves(metrics, sched.iterations_per_epoch, out / "curves.png"),
        "stages": stage_times(metrics, run.network.iteration_stages, out / "stages.png"),
        "activations": activations(run, out / "activations.png"),
    }
    matrix = confusion(run, out / "confusion.png")
    figures["confusion"] = matrix.tolist() if matrix is not None else None
    figures["misclassified"] = misclassified(run, out / "misclassified.png")
    sections = [
        f"<h1>sparkcnn run {html.escape(run.storage.url)}</h1>",
        f"<p>{run.iterations_done()} of {sched.total_iterations} iterations, mode {run.cfg.run.mode}, "
        f"batch {run.cfg.train.batch_size}, learning rate {run.cfg.train.learning_rate} ({run.cfg.train.lr_schedule})</p>",
        "<h2>Loss and accuracy</h2><img src='curves.png' alt='loss and accuracy curves'>",
        _table(["epoch", "test loss", "test accuracy"],
               [[e, f"{figures['curves']['test_loss'][e]:.4f}", f"{a:.4f}"]
                for e, a in figures["curves"]["test_accuracy"].items()]),
        "<h2>Time per stage</h2><img src='stages.png' alt='seconds per stage'>",
        _table(["stage", *figures["stages"]], [[s, *(f"{figures['stages'][m][s]:.3f}" for m in figures["stages"])]
                                               for s in next(iter(figures["stages"].values()), {})]),
        "<h2>Activations</h2><img src='activations.png' alt='activation histograms'>",
    ]
    if matrix is not None:
        sections += ["<h2>Confusion matrix (test split)</h2><img src='confusion.png' alt='confusion matrix'>",
                     _table(["true \\ predicted", *run.class_names()],
                            [[name, *row] for name, row in zip(run.class_names(), matrix.tolist())]),
                     "<h2>Misclassified test images</h2><img src='misclassified.png' alt='misclassified images'>"]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}img{max-width:100%}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}")
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>sparkcnn report</title><style>{style}</style>" \
           f"</head><body>{''.join(sections)}</body></html>\n"
    (out / "report.html").write_text(page)
    return figures
