"""`sparkcnn sweep`: every combination of --grid values trained as a trial under one run root that holds
the shared ingest (sparkcnn.pipeline.ml.trials), N at a time as concurrent Spark jobs; again, it resumes the
unfinished trials. `sparkcnn report` on the root compares the trials."""
from __future__ import annotations

import html
import itertools
import sys
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

from sparkcnn.pipeline import config, stage_keys
from sparkcnn.pipeline.config import Config
from sparkcnn.pipeline.errors import ConfigError
from sparkcnn.pipeline.ml import tracking, trials
from sparkcnn.pipeline.query.trials import trial_settings
from sparkcnn.pipeline.training.run import Run


def parse_grid(items: list[str]) -> list[dict]:
    """['train.learning_rate=[0.01, 0.02]', ...] -> every combination as {key: value}."""
    axes = []
    for item in items:
        key, _, text = item.partition("=")
        values = config._parse_value(text.strip())
        if not key.strip() or not isinstance(values, list) or not values:
            raise ConfigError(f"--grid {item!r} must look like section.key=[value, ...]")
        axes.append([(key.strip(), v) for v in values])
    return [dict(point) for point in itertools.product(*axes)]


def trial_config(cfg: Config, point: dict) -> Config:
    raw = cfg.to_dict()
    for dotted, value in point.items():
        section, key = dotted.split(".", 1)
        raw.setdefault(section, {})[key] = value
    return config.from_dict(raw)


class SweepProgress:
    """One line with every running trial's iterations done (a live line on a terminal, else a log line
    at most every 10 s)."""

    def __init__(self, names: dict[str, str]):
        self.names, self.done = names, {}
        self.tty = sys.stdout.isatty()
        self._last = 0.0
        self._lock = threading.Lock()

    def after(self, run: Run, outcome) -> None:
        stage, _, iteration = stage_keys.parse_key(outcome.key)
        if stage != "update":
            return
        with self._lock:
            self.done[run.storage.url] = f"{iteration + 1}/{run.schedule().total_iterations}"
            now = time.monotonic()
            if not self.tty and now - self._last < 10:
                return
            self._last = now
            line = " | ".join(f"{self.names[u]} {d}" for u, d in sorted(self.done.items()))
            print(f"\r{line}" if self.tty else line, end="" if self.tty else "\n", flush=True)


def sweep(cfg: Config, grid: list[str], parallel: int, spark) -> list[dict]:
    """Train every trial of the grid (unfinished ones resumed); returns each trial's summary."""
    points = parse_grid(grid)
    trials.check_grid(points)
    if parallel < 1:
        raise ConfigError(f"--parallel must be 1 or more, not {parallel}")
    base = trials.ingest_base(spark, cfg)
    trials.check_same_ingest(base, cfg)
    opened = [trials.open_trial(base, trial_config(cfg, p), p) for p in points]
    names = {t.storage.url: ", ".join(f"{k}={v}" for k, v in p.items()) for t, p in zip(opened, points)}
    progress = SweepProgress(names)
    tracker = tracking.tracker(cfg.tracking.mlflow_uri, base.storage.url, len(points))

    def train(trial: Run, point: dict) -> None:
        trials.train_trial(spark, trial, on_stage=progress.after)
        tracker.record(trial, point)

    with ThreadPoolExecutor(parallel) as pool:
        futures = [pool.submit(train, t, p) for t, p in zip(opened, points)]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for future in done:
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            spark.sparkContext.cancelAllJobs()
            raise
    if progress.tty:
        print()
    return [summary(t, names[t.storage.url]) for t in opened]


def summary(run: Run, name: str) -> dict:
    """A trial's settings, iterations, last test accuracy and training loss."""
    rows = run.metrics().to_pylist()
    tests = sorted((m for m in rows if m["kind"] == "eval"), key=lambda m: m["epoch"])
    train = sorted((m for m in rows if m["kind"] == "train"), key=lambda m: m["iteration"])
    return {"trial": run.storage.url.rsplit("/", 1)[-1], "settings": name, "root": run.storage.url,
            "iterations": run.iterations_done(), "test_accuracy": tests[-1]["accuracy"] if tests else None,
            "loss": train[-1]["loss"] if train else None, "curve": [(m["iteration"], m["loss"]) for m in train]}


def compare(base_url: str, out: Path) -> list[dict]:
    """report.html comparing the trials under a run root: final accuracy and loss, curves side by side."""
    from sparkcnn.pipeline.query.report import _plt, _save, _table

    found = []
    for root in trials.trial_roots(base_url):
        run = Run.open(root)
        found.append(summary(run, ", ".join(f"{k}={v}" for k, v in trial_settings(run).items())))
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = _plt().subplots(figsize=(8, 4))
    for s in found:
        ax.plot([i for i, _ in s["curve"]], [v for _, v in s["curve"]], label=s["settings"] or s["trial"])
    ax.set_xlabel("iteration")
    ax.set_title("training loss per trial")
    ax.legend()
    _save(fig, out / "trials.png")
    rows = [[s["trial"], s["settings"], s["iterations"], _fmt(s["test_accuracy"]),
             _fmt(s["loss"])] for s in found]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>sparkcnn trials</title></head><body>"
            f"<h1>Trials of {html.escape(base_url)}</h1>"
            f"{_table(['trial', 'settings', 'iterations', 'test accuracy', 'last loss'], rows)}"
            f"<img src='trials.png' alt='loss curves'></body></html>\n")
    (out / "report.html").write_text(page)
    return found


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"
