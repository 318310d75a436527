"""MLflow tracking (the optional extra `.[mlflow]`), on when tracking.mlflow_uri is set: each training is an
MLflow run with its settings as params, loss per iteration and test accuracy per epoch as metrics, and
the ONNX model and report.html as artifacts; the trials of a sweep or fitMultiple are nested runs under
one parent. MLflow is imported only here, and only when tracking is on."""
from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path

from sparkcnn.pipeline.errors import ConfigError

EXPERIMENT = "sparkcnn"
MAX_PARAM = 6000  # MLflow's longest param value
BATCH = 1000  # MLflow's most metrics per log_batch


class NoTracker:
    """Tracking off."""

    def record(self, run, settings: dict) -> None:
        pass


class Tracker:
    """Runs in one MLflow store; with `trials` > 1, nested under a parent run that ends with the last."""

    def __init__(self, uri: str, name: str, trials: int):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ConfigError("tracking.mlflow_uri is set but MLflow is not installed: pip install "
                              "'sparkcnn[mlflow]' (or -e '.[mlflow]')") from None
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(EXPERIMENT)
        self.experiment = found.experiment_id if found else self.client.create_experiment(
            EXPERIMENT, artifact_location=artifact_location(uri))
        self.parent = self.client.create_run(self.experiment, run_name=name).info.run_id if trials > 1 else None
        self.left = trials
        self._lock = threading.Lock()

    def record(self, run, settings: dict) -> None:
        """Log a trained run root: params, metrics, ONNX model and report."""
        from mlflow.entities import Metric, Param

        tags = {"mlflow.parentRunId": self.parent} if self.parent else {}
        run_id = self.client.create_run(self.experiment, run_name=_name(run, settings), tags={
            **tags, "sparkcnn.run_root": run.storage.url}).info.run_id
        params = [Param(k, v[:MAX_PARAM]) for k, v in flat_settings(run.cfg).items()]
        self.client.log_batch(run_id, params=params)
        metrics = [Metric(k, v, int(time.time() * 1000), step) for k, v, step in run_metrics(run)]
        for start in range(0, len(metrics), BATCH):
            self.client.log_batch(run_id, metrics=metrics[start:start + BATCH])
        with tempfile.TemporaryDirectory() as tmp:
            onnx, report = artifacts(run, Path(tmp))
            self.client.log_artifact(run_id, str(onnx))
            self.client.log_artifacts(run_id, str(report), "report")
        self.client.set_terminated(run_id)
        with self._lock:
            self.left -= 1
            if self.parent and not self.left:
                self.client.set_terminated(self.parent)


def tracker(uri: str, name: str, trials: int = 1):
    """A Tracker for `uri`, or NoTracker when it is empty."""
    return Tracker(uri, name, trials) if uri else NoTracker()


def artifact_location(uri: str) -> str | None:
    """Artifacts beside a sqlite store (`mlartifacts/` next to the database file; MLflow's default is
    ./mlruns in the working directory); None (the server's choice) for other stores."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()


def flat_settings(cfg) -> dict[str, str]:
    """The settings that shape results (and the mode) as MLflow params: `train.learning_rate` -> '0.02'."""
    found = {"run.mode": cfg.run.mode}
    for section, values in cfg.result_settings().items():
        for key, value in values.items():
            found[f"{section}.{key}"] = value if isinstance(value, str) else json.dumps(value)
    return found


def run_metrics(run) -> list[tuple[str, float, int]]:
    """(name, value, step): training loss and accuracy per iteration, test loss and accuracy per epoch."""
    found = []
    for row in run.metrics().to_pylist():
        if row["kind"] == "train":
            found += [("loss", row["loss"], row["iteration"]), ("train_accuracy", row["accuracy"], row["iteration"])]
        elif row["kind"] == "eval":
            found += [("test_loss", row["loss"], row["epoch"]), ("test_accuracy", row["accuracy"], row["epoch"])]
    return found


def artifacts(run, folder: Path) -> list[Path]:
    """model.onnx (the last parameters) and report.html with its charts, written into `folder`."""
    from sparkcnn.pipeline.deploy.onnx_export import build
    from sparkcnn.pipeline.query.report import write_report

    iteration, params = run.latest_params()
    mean, std = run.channel_stats()
    onnx = folder / "model.onnx"
    onnx.write_bytes(build(run.network, params, mean, std, run.class_names(),
                           f"{run.storage.url} after {iteration} iterations").SerializeToString())
    write_report(run, folder / "report")
    return [onnx, folder / "report"]


def _name(run, settings: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(settings.items())) or run.storage.url.rsplit("/", 1)[-1]
