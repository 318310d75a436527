"""Pixels: every Pillow mode that can reach the decoder converted by its stated rule (checked against
hand-computed pixels) or refused, named; Pillow's size guard and damaged files named, never an object repr."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from sparkcnn.pipeline.data.images import decode_image, to_array


def png(width: int, height: int, color_type: int, depth: int, samples: np.ndarray) -> bytes:
    """A PNG written by hand (Pillow cannot write 48-bit RGB or 16-bit gray with alpha): big-endian samples."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = samples.astype(">u2" if depth == 16 else np.uint8).tobytes()
    row = len(raw) // height
    rows = b"".join(b"\0" + raw[i * row: (i + 1) * row] for i in range(height))
    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def saved(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


SIXTEEN = np.array([[0x0000, 0x00FF, 0x0100, 0x1234], [0x7FFF, 0x8001, 0xFF80, 0xFFFF]])
HIGH_BYTES = np.array([[0x00, 0x00, 0x01, 0x12], [0x7F, 0x80, 0xFF, 0xFF]], np.uint8)  # value >> 8, by hand


def test_16_bit_grayscale_png_is_scaled_by_its_high_byte_not_clipped():
    pixels = decode_image(png(4, 2, 0, 16, SIXTEEN), "gray16.png")
    np.testing.assert_array_equal(pixels, HIGH_BYTES[:, :, None])
    pillow_written = decode_image(saved(Image.fromarray(SIXTEEN.astype(np.uint16)), "PNG"), "pillow16.png")
    np.testing.assert_array_equal(pillow_written, HIGH_BYTES[:, :, None])


@pytest.mark.parametrize("mode,dtype", [("I;16", "<u2"), ("I;16L", "<u2"), ("I;16B", ">u2"), ("I;16N", "=u2")])
def test_every_16_bit_grayscale_mode_gives_the_high_byte(mode, dtype):
    image = Image.frombytes(mode, (4, 2), SIXTEEN.astype(dtype).tobytes())
    np.testing.assert_array_equal(to_array(image), HIGH_BYTES[:, :, None])


def test_mode_i_from_16_bit_files_is_scaled_and_32_bit_integers_and_floats_are_refused():
    pgm = b"P5 4 2 65535\n" + SIXTEEN.astype(">u2").tobytes()
    assert Image.open(io.BytesIO(pgm)).mode == "I"
    np.testing.assert_array_equal(decode_image(pgm, "gray16.pgm"), HIGH_BYTES[:, :, None])
    wide = saved(Image.fromarray(np.array([[5, 70000]], np.int32)), "TIFF")
    assert decode_image(wide, "wide.tif") == ("wide.tif: a 32-bit integer image (mode I) has no rule to 8-bit pixels; "
                                              "save it with 8 or 16 bits per sample")
    small_values = saved(Image.fromarray(np.array([[5, 7]], np.int32)), "TIFF")  # 32-bit samples, small values
    assert "32-bit integer image (mode I)" in decode_image(small_values, "small.tif")
    floats = saved(Image.fromarray(np.array([[0.5, 2.0]], np.float32)), "TIFF")
    assert decode_image(floats, "f.tif").startswith("f.tif: a floating-point image (mode F) has no rule")


def test_48_bit_rgb_and_16_bit_with_alpha_keep_the_high_byte_and_drop_the_alpha():
    rgb = np.array([[[0x1234, 0xFF80, 0x00FF], [0x8001, 0x0100, 0xFFFF]]])
    np.testing.assert_array_equal(decode_image(png(2, 1, 2, 16, rgb), "rgb48.png"),
                                  [[[0x12, 0xFF, 0x00], [0x80, 0x01, 0xFF]]])
    gray_alpha = np.array([[[0x1234, 0x0000], [0xFF80, 0xFFFF]]])
    np.testing.assert_array_equal(decode_image(png(2, 1, 4, 16, gray_alpha), "la32.png"),
                                  [[[0x12] * 3, [0xFF] * 3]])
    rgba = np.array([[[0x1234, 0xFF80, 0x00FF, 0x0000]]])
    np.testing.assert_array_equal(decode_image(png(1, 1, 6, 16, rgba), "rgba64.png"), [[[0x12, 0xFF, 0x00]]])


def test_palette_with_transparency_grayscale_with_alpha_and_cmyk():
    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 255, 0])
    palette.putpixel((1, 0), 1)
    np.testing.assert_array_equal(decode_image(_with_transparency(palette), "p.png"), [[[255, 0, 0], [0, 255, 0]]])
    gray_alpha = Image.fromarray(np.array([[[10, 0], [200, 255]]], np.uint8), "LA")
    np.testing.assert_array_equal(decode_image(saved(gray_alpha, "PNG"), "la.png"), [[[10], [200]]])
    cmyk = Image.new("CMYK", (1, 1), (10, 20, 30, 40))  # Pillow: R = (255 - C) * (255 - K) / 255, rounded
    np.testing.assert_array_equal(decode_image(saved(cmyk, "TIFF"), "cmyk.tif"), [[[207, 198, 190]]])


def _with_transparency(palette: Image.Image) -> bytes:
    out = io.BytesIO()
    palette.save(out, "PNG", transparency=1)
    assert Image.open(io.BytesIO(out.getvalue())).info["transparency"] == 1
    return out.getvalue()


def test_unsupported_modes_are_refused_by_name():
    with pytest.raises(ValueError, match="image mode HSV is not supported"):
        to_array(Image.new("HSV", (1, 1)))


def bomb(width: int, height: int) -> bytes:
    """A PNG claiming width x height with next to no data (Pillow checks the size when it opens the file)."""
    return png(width, height, 0, 8, np.zeros(1, np.uint8))


@pytest.mark.parametrize("side", [10000, 14000])  # between Pillow's two limits (a warning), and beyond (an error)
def test_decompression_bombs_are_named_unreadable_images(side):
    reason = decode_image(bomb(side, side), "big/bomb.png")
    assert reason.startswith(f"big/bomb.png: too many pixels to decode safely (Image size ({side * side} pixels) "
                             f"exceeds limit of ")


def test_unreadable_images_are_named_without_object_reprs():
    for data in (b"not an image at all", b"\x89PNG\r\n\x1a\n truncated", png(4, 2, 0, 16, SIXTEEN)[:60]):
        reason = decode_image(data, "cat/bad.png")
        assert reason.startswith("cat/bad.png: not a readable image (") and "object at 0x" not in reason, reason
