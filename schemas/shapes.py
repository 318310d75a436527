"""Per-image tensor shapes (NHWC) that each layer type gives."""
from __future__ import annotations

from sparkcnn.schemas.topology import NetworkError


def window_output(size: int, window: int, stride: int, padding: int = 0) -> int | None:
    """Output length of a window sliding over `size` (None when it does not fit)."""
    span = size + 2 * padding - window
    return None if span < 0 else span // stride + 1



def output_shape(where: str, kind: str, options: dict, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A layer's output shape per image from its input's, or a NetworkError naming it."""
    if kind in ("relu", "dropout", "batch_norm", "add"):
        return shape
    if kind == "fc":
        return (options["units"],)
    if len(shape) != 3:
        raise NetworkError(f"{where}: a {kind} layer needs an image-shaped input (height, width, channels), but "
                           f"the layer before it gives {shape}; fc layers belong after the last {kind}")
    h, w, c = shape
    if kind == "global_avg_pool":
        return (c,)
    if kind == "conv":
        window, stride, padding, channels = options["kernel"], options["stride"], options["padding"], options["filters"]
    else:
        window, stride, padding, channels = options["size"], options["stride"], 0, c
    ho, wo = window_output(h, window, stride, padding), window_output(w, window, stride, padding)
    if ho is None or wo is None:
        what = "kernel" if kind == "conv" else "window"
        raise NetworkError(f"{where}: a {window}x{window} {what} does not fit its {h}x{w} input"
                           + (f" with padding {padding}" if kind == "conv" else ""))
    return (ho, wo, channels)
