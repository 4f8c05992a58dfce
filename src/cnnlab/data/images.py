"""One image loader for every image a user hands cnnlab: any allowed file becomes a uint8 RGB array of a given size.

Only the formats in ALLOWED_FORMATS are ever decoded: Pillow is told not to try its other plugins, which read
rarer formats (EPS through Ghostscript, PSD, FITS, ...) and are not hardened for hostile files. Whatever a damaged
or hostile file makes the decoder raise becomes one CnnlabError.
"""

from __future__ import annotations

import contextlib
import io
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnlab.common.errors import CnnlabError

ALLOWED_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")  # Pillow's names for them
MAX_PIXELS = 50_000_000  # refuse decompression bombs well before they exhaust memory
BACKGROUND = (255, 255, 255)  # transparent areas are shown on white, as most viewers do
ALPHA_MODES = ("RGBA", "RGBa", "LA", "PA")
# What the allowed decoders raise on damaged files: the first three are all that fuzzing them produced
# (tests/test_data_images.py); EOFError is how Pillow's frame readers report missing frame data. The rest are what
# Pillow's pure-Python plugins can raise on a hostile header past `open` (a short struct, an index past a table, a
# zero size), never seen in fuzzing but possible, and no reason to show a traceback.
DECODER_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, KeyError, TypeError,
                  ZeroDivisionError, MemoryError)


class ImageTooLarge(CnnlabError):
    """An image over MAX_PIXELS: a refusal of the whole input, where a merely unreadable file can be skipped."""


class NotAnImage(CnnlabError):
    """A file that is no image of an allowed format at all (or empty), where a damaged one is a plain CnnlabError: a
    server answers the two differently (HTTP 415 and 400)."""


def load_image(path: Path, size: tuple[int, int], resize: str = "stretch") -> np.ndarray:
    """Read `path` as a uint8 array of shape (height, width, 3) = `size`: the first frame of an animation, turned as
    its EXIF orientation says, on white where transparent, brought to `size` as `resize` says (see `_fit`)."""
    return decode_image(path, size, resize)[0]


def decode_image(path: Path, size: tuple[int, int], resize: str = "stretch") -> tuple[np.ndarray, tuple[int, int]]:
    """`load_image`, and the (width, height) the image had upright, before resizing."""
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"image not found: {path}")
    try:
        file = path.open("rb")
    except OSError as exc:
        raise CnnlabError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from None
    with file:
        return _decode_checked(file, path, size, resize)


def load_image_bytes(content: bytes, name: str, size: tuple[int, int], resize: str = "stretch") -> np.ndarray:
    """`load_image` for a file's content held in memory (an upload), with the same checks; `name` is what messages
    call it."""
    if not content:
        raise NotAnImage(f"{name}: empty file")
    return _decode_checked(io.BytesIO(content), name, size, resize)[0]


def pixel_count(content: bytes, name: str) -> int:
    """Width x height of the image in `content`, from its header alone (nothing is decoded): what decoding it will
    cost, known before paying it. Refused as `load_image_bytes` refuses a file that is no image."""
    if not content:
        raise NotAnImage(f"{name}: empty file")
    with _refusals(name), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(io.BytesIO(content), formats=ALLOWED_FORMATS) as image:
            return image.width * image.height


def _decode_checked(file, name, size: tuple[int, int], resize: str) -> tuple[np.ndarray, tuple[int, int]]:
    with _refusals(name):
        return _decode(file, name, size, resize)


@contextlib.contextmanager
def _refusals(name):
    """Pillow's failures on a file as cnnlab's one-line refusals: no image of an allowed format, too large, damaged."""
    try:
        yield
    except UnidentifiedImageError:
        raise NotAnImage(f"{name}: not a readable image (not one of {', '.join(ALLOWED_FORMATS)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own, higher limit, met while reading the header, before the size is known to the check below
        raise ImageTooLarge(f"{name}: over the {MAX_PIXELS:,}-pixel limit") from None
    except DECODER_ERRORS as exc:
        raise CnnlabError(f"{name}: damaged or truncated image ({type(exc).__name__})") from None


def _decode(file, path, size: tuple[int, int], resize: str) -> tuple[np.ndarray, tuple[int, int]]:
    with warnings.catch_warnings():
        # Pillow warns about files it can still decode (odd EXIF, bad metadata); they would add lines to the CLI's
        # one-line errors. Its decompression-bomb warning, though, is a refusal.
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(file, formats=ALLOWED_FORMATS) as image:  # lazy: the header only, at the first frame
            if image.width * image.height > MAX_PIXELS:
                raise ImageTooLarge(
                    f"{path}: {image.width}x{image.height} pixels is over the {MAX_PIXELS:,}-pixel limit")
            upright = ImageOps.exif_transpose(image)  # decodes the pixels
            return np.asarray(_fit(_to_rgb(upright), size, resize), dtype=np.uint8), upright.size


def _fit(image: Image.Image, size: tuple[int, int], resize: str) -> Image.Image:
    """`image` at `size` (height, width): "stretch" it, "crop" the centred part of the target's shape (a square for
    a square target), or scale it to fit inside and "pad" the rest with BACKGROUND, centred."""
    height, width = size
    if resize == "stretch":
        return _resized(image, (width, height))
    if resize == "crop":
        scale = max(width / image.width, height / image.height)
        # Clamped: for an image whose side already fits exactly, rounding can leave an offset of -1e-15, which
        # Pillow refuses (a 49x67 image cropped to 32x32 did).
        left, top = max(0.0, (image.width - width / scale) / 2), max(0.0, (image.height - height / scale) / 2)
        return _resized(image, (width, height), box=(left, top, image.width - left, image.height - top))
    if resize == "pad":
        scale = min(width / image.width, height / image.height)
        inner = (min(width, max(1, round(image.width * scale))), min(height, max(1, round(image.height * scale))))
        canvas = Image.new("RGB", (width, height), BACKGROUND)
        canvas.paste(_resized(image, inner), ((width - inner[0]) // 2, (height - inner[1]) // 2))
        return canvas
    raise ValueError(f"unknown resize mode {resize!r}")  # the config allows only the three: a caller's mistake


def _resized(image: Image.Image, size: tuple[int, int], box=None) -> Image.Image:
    # reducing_gap: a large photo is first shrunk by whole factors (fast), and only the last 3x is resampled exactly
    return image.resize(size, Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode.startswith("I"):
        image = _grey_to_8_bits(image)
    if image.mode == "La":  # premultiplied grey and alpha (TIFF): Pillow converts it only to LA
        image = image.convert("LA")
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _grey_to_8_bits(image: Image.Image) -> Image.Image:
    """16- and 32-bit grey scaled to 8 bits by the range the format allows, not clipped as Pillow's convert does."""
    wide = image.convert("I")
    top = 65535 if wide.getextrema()[1] > 255 else 255
    return wide.point(lambda value: value * (255 / top)).convert("L")
