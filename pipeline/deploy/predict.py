"""Using a trained network: test accuracy of a checkpoint, and classes of image files."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from sparkcnn.pipeline.training.run import Run, RunError
from sparkcnn.schemas.tensors import decode_column
from sparkcnn.stages import whole_network
from sparkcnn.stages.tabular import normalize


def load_checkpoint(run: Run, checkpoint: str | None, iteration: int | None) -> tuple[str, dict]:
    """Parameters from an exported .npz, or from the run at an iteration (default: the latest)."""
    if checkpoint is None:
        done, params = run.latest_params(iteration)
        return f"{run.storage.url} after {done} iterations", params
    if iteration is not None:
        raise RunError("--checkpoint and --iteration name two different sets of parameters: give one")
    return checkpoint, read_checkpoint(checkpoint, {**run.network.param_shapes, **run.network.state_shapes})


def read_checkpoint(path: str, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The float32 arrays of an .npz that `sparkcnn export` wrote, checked against the network's
    parameter names and shapes. Pickled objects are refused, never unpickled."""
    where = f"checkpoint {path}"
    if not Path(path).is_file():
        raise RunError(f"{where}: no such file")
    if not zipfile.is_zipfile(path):
        raise RunError(f"{where}: not an .npz archive (`sparkcnn export --out FILE.npz` writes one)")
    try:
        with np.load(path, allow_pickle=False) as data:
            params = {name: data[name] for name in data.files}
    except ValueError as e:
        raise RunError(f"{where}: holds pickled objects, which are not loaded ({e})") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise RunError(f"{where}: unreadable ({type(e).__name__}: {e})") from None
    problems = [f"missing {name}" for name in sorted(set(shapes) - set(params))]
    problems += [f"unexpected array {name}" for name in sorted(set(params) - set(shapes))]
    for name in sorted(set(shapes) & set(params)):
        array = params[name]
        if not isinstance(array, np.ndarray) or array.dtype != np.float32:
            problems.append(f"{name} is {getattr(array, 'dtype', type(array).__name__)}, expected float32")
        elif array.shape != tuple(shapes[name]):
            problems.append(f"{name} has shape {array.shape}, expected {tuple(shapes[name])}")
    if problems:
        raise RunError(f"{where}: does not match this run's network: {'; '.join(problems)}")
    return params


def predict_arrays(run: Run, params: dict, pixels: np.ndarray) -> np.ndarray:
    """Class probabilities (N, classes) for uint8 images (N, H, W, C), normalised as in training."""
    return probabilities(run.context(params), pixels)


def probabilities(ctx, pixels: np.ndarray, chunk: int = 500) -> np.ndarray:
    """The same, given a stage context (network, parameters, channel statistics)."""
    probs = []
    for start in range(0, pixels.shape[0], chunk):
        x = normalize(pixels[start: start + chunk], ctx.mean, ctx.std)
        labels = np.zeros(x.shape[0], np.int64)
        probs.append(whole_network.forward(x, labels, ctx)[1][-1]["probs"])
    return np.concatenate(probs) if probs else np.empty((0, ctx.network.classes), np.float32)


def read_test_split(run: Run):
    """image ids, labels and pixels of the run's test split, in order."""
    tables = [run.storage.read_parquet(f["path"]) for f in run.manifest.files("testset", "out")]
    ids = np.concatenate([t.column("image_id").to_numpy() for t in tables])
    labels = np.concatenate([t.column("label").to_numpy() for t in tables])
    pixels = np.concatenate([decode_column(t, "pixels") for t in tables])
    return ids, labels, pixels


def evaluate(run: Run, params: dict) -> dict:
    ids, labels, pixels = read_test_split(run)
    predicted = predict_arrays(run, params, pixels).argmax(axis=1)
    return {"accuracy": float((predicted == labels).mean()), "images": int(labels.size),
            "image_id": ids, "label": labels, "predicted": predicted}


def load_image(path: str | Path, shape: tuple[int, int, int]) -> np.ndarray:
    """A PNG or JPEG file as uint8 (H, W, C) in the network's image shape (resized, and converted to
    grayscale or RGB, when needed)."""
    from sparkcnn.pipeline.data.images import decode_image, fit

    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise RunError(f"{path}: no such file") from None
    except OSError as e:
        raise RunError(f"{path}: cannot be read ({e})") from None
    pixels = decode_image(data, str(path))
    if isinstance(pixels, str):
        raise RunError(pixels)
    return fit(pixels, tuple(shape), resize=True)
