"""Records in a run root that more than one reader uses."""
from __future__ import annotations

import json

from sparkcnn.pipeline.runroot import layout
from sparkcnn.pipeline.runroot.storage import Storage


def latest_scoring(storage: Storage) -> dict | None:
    """The newest scoring recorded in the run root, or None."""
    records = [n for n in storage.listdir(layout.SCORES) if n.endswith(".json")]
    if not records:
        return None
    return json.loads(storage.read_bytes(f"{layout.SCORES}/{max(records)}"))
