"""The model's scoring of a batch of rows, without Spark: encoded, raw and unreadable images."""
from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
from PIL import Image

from tests.pipeline.ml.test_estimator import LAYERS


def trained():
    from sparkcnn.pipeline.ml.model import Trained
    from sparkcnn.schemas.network import Network
    from sparkcnn.stages.update import init_params

    params = init_params(Network(LAYERS, (8, 10, 3), 3), 0)
    return Trained(LAYERS, (8, 10, 3), ("cat", "dog", "owl"), params, np.full(3, 0.5), np.full(3, 0.25))


def test_score_rows_encoded_raw_and_unreadable():
    from sparkcnn.pipeline.ml.model import score_rows

    model = trained()
    pixels = np.random.default_rng(0).integers(0, 256, (8, 10, 3), dtype=np.uint8)
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, format="PNG")
    encoded = pa.table({"image": pa.array([png.getvalue(), b"not an image"], pa.binary())})
    predictions, probs, names = score_rows(model, encoded, model.context())
    assert predictions[1] is None and names[1] is None
    assert names[0] == model.class_names[int(predictions[0])] and abs(sum(probs[0]) - 1) < 1e-5
    raw = pa.table({"image": pa.array([pixels.tobytes()], pa.binary()), "height": [8], "width": [10], "channels": [3]})
    assert score_rows(model, raw, model.context())[1][0] == probs[0]  # the same image, raw or encoded
