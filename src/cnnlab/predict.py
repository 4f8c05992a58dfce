"""Predictions on one's own images: any size and mode is converted to the model's RGB input size."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnlab.errors import CnnlabError, first_line
from cnnlab.evaluate import predict_probabilities

MAX_PIXELS = 50_000_000  # refuse decompression bombs well before they exhaust memory
BACKGROUND = (255, 255, 255)  # transparent areas are shown on white, as most viewers do


def load_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Read `path` as a uint8 array of shape (height, width, 3) = `size`."""
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"image not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise CnnlabError(
                        f"{path}: {image.width}x{image.height} pixels is over the {MAX_PIXELS:,}-pixel limit"
                    )
                image.seek(0)  # animated images: the first frame
                image = ImageOps.exif_transpose(image)
                rgb = _to_rgb(image)
                resized = rgb.resize((size[1], size[0]), Image.Resampling.BICUBIC, reducing_gap=3.0)
                return np.asarray(resized, dtype=np.uint8)
    except CnnlabError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise CnnlabError(f"{path}: not a readable image ({first_line(exc)})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise CnnlabError(f"{path}: damaged or truncated image ({type(exc).__name__})") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16- and 32-bit grey: scale to 8 bits by the range the format allows, not by clipping.
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values / top * 255.0, 0, 255).astype(np.uint8), mode="L")
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def top_k(probabilities: np.ndarray, class_names: tuple[str, ...], k: int = 3) -> list[dict[str, object]]:
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [{"class": class_names[i], "probability": float(probabilities[i])} for i in order]


def predict_images(model, paths: list[Path], class_names: tuple[str, ...], k: int = 3,
                   augmentation: int = 0) -> list[dict[str, object]]:
    """Top-k classes for each image, with the run's own test-time augmentation so that answers match its test
    accuracy; every image is read (and refused if bad) before the model runs."""
    height, width = model.input_shape[1:3]
    images = np.stack([load_image(path, (height, width)) for path in paths])
    probabilities = predict_probabilities(model, images, augmentation=augmentation)
    return [{"image": str(path), "top": top_k(row, class_names, k)} for path, row in zip(paths, probabilities)]
