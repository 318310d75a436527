"""Encoded images to pixels: one rule per Pillow mode, so that no image is silently clipped.

- `1`, `L`, `LA`, `La`: grayscale, one channel (alpha dropped).
- `I;16`, `I;16B`, `I;16L`, `I;16N`, and `I` from a file of 16-bit samples (PNG, PGM/PPM, a TIFF whose
  BitsPerSample is 16): grayscale scaled to 8 bits by the high byte (value >> 8).
- `RGB`, `RGBA`, `RGBa`, `RGBX`, `CMYK`, `YCbCr`: RGB by Pillow's conversion (alpha dropped). 48-bit RGB and
  16-bit images with alpha reach this as RGB or RGBA: Pillow's decoder keeps the high byte of each sample.
- `P`, `PA`: through RGBA (a palette's transparency applies there), then RGB with the alpha dropped.
- `I` with 32-bit samples, `F` (float) and every other mode: refused, named.
Pillow's guard against decompression bombs (its warning between its two limits and its error beyond)
refuses the image like any unreadable one."""
from __future__ import annotations

import io
import re
import warnings

import numpy as np

GRAY = ("1", "L", "LA", "La")
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
SIXTEEN_BIT_FILES = ("PNG", "PPM")  # formats whose integer samples have at most 16 bits
COLOR = ("RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr")
PALETTE = ("P", "PA")
REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


class Refused(ValueError):
    """An image whose mode has no rule to 8-bit pixels."""


def decode_image(data: bytes, origin: str):
    """Encoded image bytes (PNG, JPEG, ...) -> uint8 array (H, W, C) in RGB or grayscale order,
    or the reason it cannot be read (a string naming `origin`)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                return to_array(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return f"{origin}: too many pixels to decode safely ({e})"
    except Refused as e:
        return f"{origin}: {e}"
    except UnidentifiedImageError:
        return f"{origin}: not a readable image (not a format Pillow recognises)"
    except Exception as e:  # a damaged file makes Pillow raise many kinds of error
        return f"{origin}: not a readable image ({REPR.sub('the data', str(e)) or type(e).__name__})"


def to_array(image) -> np.ndarray:
    """A PIL image as uint8 (H, W, 1) when it is grayscale, else (H, W, 3) RGB, by the module's rules."""
    mode = image.mode
    if mode in GRAY:
        return np.asarray(image.convert("L"), dtype=np.uint8)[:, :, None]
    if mode in SIXTEEN_BIT or (mode == "I" and sixteen_bit_file(image)):
        return high_byte(np.asarray(image))[:, :, None]
    if mode in COLOR:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    if mode in PALETTE:
        return np.asarray(image.convert("RGBA").convert("RGB"), dtype=np.uint8)
    if mode in ("I", "F"):
        kind = "a 32-bit integer" if mode == "I" else "a floating-point"
        raise Refused(f"{kind} image (mode {mode}) has no rule to 8-bit pixels; save it with 8 or 16 bits per sample")
    raise Refused(f"image mode {mode} is not supported; save it as grayscale or RGB")


def sixteen_bit_file(image) -> bool:
    """Whether a mode `I` image came from a file of 16-bit samples."""
    if image.format == "TIFF":
        return tuple(np.atleast_1d(image.tag_v2.get(258, ()))) == (16,)
    return image.format in SIXTEEN_BIT_FILES


def high_byte(values: np.ndarray) -> np.ndarray:
    """16-bit samples scaled to 8 bits: value >> 8; values outside 0-65535 are refused."""
    values = values.astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 0xFFFF):
        raise Refused(f"16-bit image with values outside 0-65535 ({values.min()} to {values.max()})")
    return (values >> 8).astype(np.uint8)


def fit(pixels: np.ndarray, shape: tuple[int, int, int], resize: bool) -> np.ndarray | None:
    """An image in the data set's shape: channels converted, size resized (bilinear) when `resize`;
    None when its size differs and resizing is off."""
    if pixels.shape == shape:
        return pixels
    from PIL import Image

    if pixels.shape[:2] != shape[:2] and not resize:
        return None
    image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    if pixels.shape[:2] != shape[:2]:
        image = image.convert("L" if pixels.shape[2] == 1 else "RGB").resize((shape[1], shape[0]), Image.BILINEAR)
    image = image.convert("L" if shape[2] == 1 else "RGB")
    array = np.asarray(image, dtype=np.uint8)
    return array[:, :, None] if shape[2] == 1 else array
