"""A sweep's trials as the query side sees them: the settings each varies, and views across them."""
from __future__ import annotations

import json

from sparkcnn.pipeline import stage_keys
from sparkcnn.pipeline.runroot.layout import TRIAL_DOC, TRIALS
from sparkcnn.pipeline.training.run import Run
from sparkcnn.schemas.tables import METRICS_SCHEMA, table_schema


def trial_settings(root: Run) -> dict:
    """The settings a trial varies (from its trial.json), {} for a run that is not a trial."""
    if not root.storage.exists(TRIAL_DOC):
        return {}
    return json.loads(root.storage.read_bytes(TRIAL_DOC))["settings"]


def trial_sources(run) -> dict:
    """The views across the trials under a run root (none for other roots): `trial_metrics` and
    `trial_evaluate`, each trial's rows with its name (`trial`) and varied settings (`settings`, JSON)."""
    from sparkcnn.pipeline.query.sql import ViewSource

    names = run.storage.listdir(TRIALS)
    if not names:
        return {}
    views = {"trial_metrics": ViewSource("trial_metrics", METRICS_SCHEMA),
             "trial_evaluate": ViewSource("trial_evaluate", table_schema(run.network, "evaluate"))}
    for name in names:
        if not run.storage.exists(f"{TRIALS}/{name}/{TRIAL_DOC}"):
            continue
        trial = Run.open(f"{run.storage.url}/{TRIALS}/{name}")
        literals = {"trial": name, "settings": json.dumps(trial_settings(trial), sort_keys=True)}
        for key, entry in sorted(trial.manifest.entries().items()):
            stage, epoch, _ = stage_keys.parse_key(key)
            outputs = {o: [{**f, "path": f"{TRIALS}/{name}/{f['path']}"} for f in files]
                       for o, files in entry["outputs"].items()}
            gone = trial.retention.retired_outputs(key)
            views["trial_metrics"].add(key, {"outputs": outputs}, "metrics", literals, gone)
            if stage == "evaluate":
                views["trial_evaluate"].add(key, {"outputs": outputs}, stage_keys.PER_IMAGE, {**literals, "eval_epoch": epoch},
                                            gone)
    return views
