"""The 15 common corruptions of CIFAR-10-C, at severities 1 to 5, for any batch of uint8 NHWC images.

After Hendrycks and Dietterich (2019), "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations", with the constants of their CIFAR-10 script (hendrycks/robustness, ImageNet-C/create_c/
make_cifar_c.py), not ImageNet-C's:

    from cnnlab.evaluation.corruptions import CORRUPTIONS, FAMILIES, corrupt
    foggy = corrupt(images, "fog", severity=3, seed=0)      # uint8, the shape of `images`

Why not a package: `imagecorruptions` (PyPI, installable here) has ImageNet-C's constants, which are meant for 224 px
pictures (its gaussian noise 2 to 4 times as strong, its defocus disks of radius 3 to 10 px), needs OpenCV and
scikit-image, and corrupts one image at a time in Python loops (its glass blur visits every pixel in Python). This
module is NumPy, SciPy and Pillow, works on whole batches, and needs no Keras.

Deterministic: the output depends only on the images, the name, the severity and `seed`. Two models scored with
one seed see identical images. The random draws do not depend on the severity, so the five severities of a random
corruption differ in strength only (the same noise, scaled; the same fog, thicker). Images are processed in chunks of
about 131,000 pixels, each with its own random stream (seed, corruption, first image of the chunk).

Where this differs from the reference, and why:
- frost: the paper blends crops of five frost photographs, which come with the authors' repository (and the
  imagecorruptions wheel), not with cnnlab, and nothing is downloaded here; a frost texture (bright ice needles over
  a fractal haze, tinted blue-white) is generated from the seed instead, and blended with the reference's weights.
  Frost numbers are therefore not directly comparable with published CIFAR-10-C ones.
- motion blur (and snow's streaks) used ImageMagick; here the same kernel is built with NumPy: a one-sided line of
  2*ceil(radius)+1 taps along the angle, Gaussian weights in the distance, offsets rounded to whole pixels, edges
  repeated, as ImageMagick's MotionBlurImage does (taps weighing less than a millionth are left out).
- glass blur swaps each pixel with a random up-left neighbour, row by row from the bottom right, so that a pixel can
  travel a chain of swaps; here the swaps run as a wavefront (one swap per row at a time, rows two columns apart),
  which keeps every dependency of the reference's order: the result equals the sequential loop given the same draws
  (tested), in about 3 x the image side of NumPy steps instead of one Python step per pixel.
- intermediate 8-bit roundings of the reference (PNG files, OpenCV) are kept where they matter; float32 throughout.

Image sizes: the constants are CIFAR's, for 32 x 32 px, and are used as they are at 32 px. For other sizes, every
length in pixels (blur radii and sigmas, glass blur's step, motion and snow streaks, snowflake size, elastic
displacements, frost needles) is multiplied by scale = sqrt(height * width) / 32, so that a 64 px image of a scene is
corrupted as its 32 px version would be (a step or a zoom never below 1 px); fog's fractal and zoom factors are
relative already. Per-pixel corruptions
(noise, brightness, contrast) and JPEG quality are not scaled: their 8 x 8 blocks and per-pixel noise are what a
camera or codec does at any size.
"""

from __future__ import annotations

import functools
import io
import math

import numpy as np
from PIL import Image
from scipy import ndimage, sparse

from cnnlab.common.errors import CnnlabError

FAMILIES: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
}
CORRUPTIONS: tuple[str, ...] = tuple(name for names in FAMILIES.values() for name in names)  # the paper's order
SEVERITIES = (1, 2, 3, 4, 5)
MIN_SIDE = 8  # elastic_transform's affine anchors need a third of the side to be at least 2 px
CHUNK_PIXELS = 2**17  # images per chunk: about this many pixels (128 images of 32 x 32), so that they stay in cache

# Severities 1 to 5 of each corruption, CIFAR-10-C's constants (make_cifar_c.py); values in [0, 1] units, lengths in
# pixels at 32 x 32 unless said otherwise.
PARAMETERS: dict[str, tuple] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # standard deviation
    "shot_noise": (500, 250, 100, 75, 50),  # photons at full intensity (Poisson rate)
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),  # fraction of values set to 0 or 1 (salt and pepper, even odds)
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),  # disk radius, antialias sigma
    # blur sigma, rounds of swaps (the swap distance is 1 px at every CIFAR severity)
    "glass_blur": ((0.05, 1), (0.25, 1), (0.4, 1), (0.25, 2), (0.4, 2)),
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),  # radius, sigma; angle uniform in [-45, 45] degrees
    # zoom factors averaged with the image; the reference's np.arange calls, whose float ends include 1.06 and 1.11
    "zoom_blur": tuple(tuple(np.arange(1, top, 0.01)) for top in (1.06, 1.11, 1.16, 1.21, 1.26)),
    # snow layer: noise mean, noise sd, zoom, threshold, streak radius, streak sigma, weight of the image
    "snow": ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
             (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),  # weight of the image, of the frost
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),  # fog strength, fractal roughness decay
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),  # added to HSV value
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # factor on the distance from each channel's mean
    # displacement strength, its smoothing sigma, affine jitter: fractions of the image side (32 px in the reference)
    "elastic_transform": ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
                          (0.1, 0.03, 0.03)),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),  # downscale factor (box filter down, then box filter up)
    "jpeg_compression": (80, 65, 58, 50, 40),  # JPEG quality (Pillow)
}


def corrupt(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """`images` (uint8, N x H x W x 3) under corruption `name` at `severity` (1-5), as uint8 of the same shape."""
    _check(images, name, severity, seed)
    count, height, width = images.shape[:3]
    scale = math.sqrt(height * width) / 32
    corruption, parameters = _FUNCTIONS[name], PARAMETERS[name][severity - 1]
    out = np.empty_like(images)
    chunk = max(1, CHUNK_PIXELS // (height * width))
    for start in range(0, count, chunk):
        rng = np.random.default_rng([seed, CORRUPTIONS.index(name), start])
        result = corruption(images[start : start + chunk], parameters, rng, scale)
        out[start : start + chunk] = result if result.dtype == np.uint8 else _to_uint8(result)
    return out


def _check(images, name, severity, seed) -> None:
    if name not in CORRUPTIONS:
        raise CnnlabError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    if type(severity) is not int or severity not in SEVERITIES:
        raise CnnlabError(f"corruption severity must be 1 to 5, got {severity!r}")
    if type(seed) is not int or not 0 <= seed < 2**32:
        raise CnnlabError(f"corruption seed must be in 0..2**32-1, got {seed!r}")
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4
            and images.shape[3] == 3 and min(images.shape[1:3]) >= MIN_SIDE):
        shape = getattr(images, "shape", None)
        raise CnnlabError(f"corruptions take uint8 images, N x H x W x 3 with sides of at least {MIN_SIDE} px; got "
                          f"{getattr(images, 'dtype', type(images).__name__)} of shape {shape}")


def _unit(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / 255


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """[0, 1] values as uint8, truncated as the reference's np.uint8 does; the small guard keeps a value that came
    from uint8 and was not changed from dropping a level through float rounding."""
    return np.floor(np.clip(values, 0, 1) * 255 + 1e-3).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------------- noise

def gaussian_noise(images, sigma, rng, scale):
    return _unit(images) + sigma * rng.standard_normal(images.shape, dtype=np.float32)


def shot_noise(images, rate, rng, scale):
    return (rng.poisson(_unit(images) * rate) / rate).astype(np.float32)


def impulse_noise(images, amount, rng, scale):
    """Each value (each channel of each pixel) is, with probability `amount`, set to 0 or 1 at even odds."""
    x = _unit(images)
    hit = rng.random(x.shape, dtype=np.float32) < amount
    salt = rng.random(x.shape, dtype=np.float32) < 0.5
    return np.where(hit, salt.astype(np.float32), x)


# ----------------------------------------------------------------------------------------------------------------- blur

def defocus_blur(images, parameters, rng, scale):
    radius, alias_sigma = parameters
    return _filter(_unit(images), _disk(radius * scale, alias_sigma * scale))


def _disk(radius: float, alias_sigma: float) -> np.ndarray:
    """The reference's aperture: a disk of `radius` on the integer grid, summing to 1, smoothed by a 3 x 3 Gaussian
    (5 x 5 above radius 8) of `alias_sigma` to soften its aliased edge."""
    half = 1 if radius <= 8 else 2
    reach = math.ceil(radius) + half
    grid = np.arange(-reach, reach + 1)
    disk = (grid[:, None] ** 2 + grid[None, :] ** 2 <= radius**2).astype(np.float64)
    taps = np.exp(-np.arange(-half, half + 1) ** 2 / (2 * alias_sigma**2))
    taps /= taps.sum()
    smooth = ndimage.correlate1d(ndimage.correlate1d(disk, taps, axis=0, mode="constant"), taps, axis=1,
                                 mode="constant")
    return smooth / smooth.sum()


def _filter(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Each image and channel correlated with the odd, square `kernel`, edges mirrored without repeating the edge
    pixel (OpenCV's default), through the FFT: fast for the large kernels of large images too."""
    reach = kernel.shape[0] // 2
    height, width = x.shape[1:3]
    padded = np.pad(x, ((0, 0), (reach, reach), (reach, reach), (0, 0)), mode="reflect")
    shape = padded.shape[1:3]
    flipped = kernel[::-1, ::-1].astype(np.float32)  # correlation is convolution with the kernel turned round
    spectrum = np.fft.rfft2(padded, axes=(1, 2)) * np.fft.rfft2(flipped, s=shape)[None, :, :, None]
    full = np.fft.irfft2(spectrum, s=shape, axes=(1, 2))  # circular, but the valid part never wraps
    return full[:, 2 * reach : 2 * reach + height, 2 * reach : 2 * reach + width].astype(np.float32)


def glass_blur(images, parameters, rng, scale):
    """Blur, shuffle pixels locally (`rounds` times), blur again. At scale s the swaps move pixels by round(s) px."""
    sigma, rounds = parameters
    sigma *= scale
    x = np.floor(_gaussian(_unit(images), sigma) * 255) / 255  # the reference's np.uint8 in between
    step = max(1, round(scale))
    for _ in range(rounds):
        x = _on_lattice(x, step, lambda lattice: local_shuffle(lattice, _swap_offsets(rng, lattice.shape)))
    return _gaussian(x, sigma)


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    """skimage.filters.gaussian as the reference calls it: each channel, edge pixels repeated, 4 sigmas wide."""
    return ndimage.gaussian_filter(x, (0, sigma, sigma, 0), mode="nearest", truncate=4.0)


def _swap_offsets(rng, shape) -> np.ndarray:
    """(dy, dx) for every pixel, each -1 or 0 (the reference's randint(-1, 1)): the up-left partner of each swap."""
    return rng.integers(-1, 1, size=(*shape[:3], 2), dtype=np.int64)


def local_shuffle(images: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Glass blur's pixel shuffle: for rows h = H-1..2, and in each for columns w = W-1..2, swap pixel (h, w) with
    (h + dy, w + dx), `offsets[n, h, w]` = (dy, dx) in {-1, 0}; the same result as that loop, computed as a
    wavefront.

    A swap touches its pixel and an up-left neighbour, so the swap at (h, w) only has to follow the swaps at
    (h, w + 1) (same row) and (h + 1, w - 1 .. w + 1) (the row below). Step t does, in every image, the swap at
    column index t - 2r of each row index r (both counted from the bottom right): swaps done together are at least
    two columns apart, and every swap comes after those it must follow.
    """
    count, height, width = images.shape[:3]
    pixels = _as_pixels(images.copy())
    rows, cols = np.arange(height - 1, 1, -1), np.arange(width - 1, 1, -1)
    starts = np.arange(count)[:, None] * (height * width)  # each image's first pixel in `pixels`
    row_index = np.arange(len(rows))
    steps = len(cols) + 2 * (len(rows) - 1) if len(rows) and len(cols) else 0
    for step in range(steps):
        col_index = step - 2 * row_index
        active = (col_index >= 0) & (col_index < len(cols))
        h, w = rows[row_index[active]], cols[col_index[active]]
        here = (starts + h * width + w).ravel()
        there = (starts + (h + offsets[:, h, w, 0]) * width + (w + offsets[:, h, w, 1])).ravel()
        mine, theirs = pixels[here], pixels[there]
        pixels[here] = theirs
        pixels[there] = mine
    return _from_pixels(pixels, images)


def _as_pixels(x: np.ndarray) -> np.ndarray:
    """A contiguous N x H x W x C array as one flat array of whole pixels (each C values as one item), so that
    gathering and moving pixels costs one index per pixel, not one per value."""
    x = np.ascontiguousarray(x)
    return x.view(np.dtype((np.void, x.dtype.itemsize * x.shape[-1]))).reshape(-1)


def _from_pixels(pixels: np.ndarray, like: np.ndarray) -> np.ndarray:
    return pixels.view(like.dtype).reshape(like.shape)


def _on_lattice(x: np.ndarray, step: int, operation) -> np.ndarray:
    """`operation` applied to each of the step x step interleaved sub-images of `x` (pixels step apart), so that
    moving one lattice pixel moves `step` image pixels. Sides are padded to a multiple of `step` and cut back."""
    if step == 1:
        return operation(x)
    count, height, width, channels = x.shape
    tall, wide = -(-height // step), -(-width // step)
    padded = np.pad(x, ((0, 0), (0, tall * step - height), (0, wide * step - width), (0, 0)), mode="edge")
    lattice = padded.reshape(count, tall, step, wide, step, channels).transpose(0, 2, 4, 1, 3, 5)
    done = operation(lattice.reshape(count * step * step, tall, wide, channels))
    done = done.reshape(count, step, step, tall, wide, channels).transpose(0, 3, 1, 4, 2, 5)
    return done.reshape(count, tall * step, wide * step, channels)[:, :height, :width]


def motion_blur(images, parameters, rng, scale):
    radius, sigma = parameters
    angles = rng.uniform(-45, 45, len(images))
    blurred = line_blur(_unit(images), radius * scale, sigma * scale, angles)
    return np.round(blurred * 255) / 255  # ImageMagick writes 8-bit pixels


def line_blur(x: np.ndarray, radius: float, sigma: float, angles: np.ndarray) -> np.ndarray:
    """ImageMagick's motion blur of each image at its angle (degrees): the weighted mean of the pixels at distances
    i = 0 .. 2*ceil(radius) along the angle, weights exp(-i^2 / 2 sigma^2), offsets rounded, edge pixels repeated.
    Taps that would add less than a millionth are left out."""
    count, height, width, channels = x.shape
    distances = np.arange(2 * math.ceil(radius) + 1)
    weights = np.exp(-(distances**2) / (2 * sigma**2))
    weights = (weights / weights.sum()).astype(np.float32)
    radians = np.deg2rad(angles)
    pixels = _as_pixels(x)
    starts = np.arange(count)[:, None, None] * (height * width)
    rows, cols = np.arange(height)[None, :, None], np.arange(width)[None, None, :]
    out = np.zeros_like(x)
    for distance, weight in zip(distances, weights):
        if weight < 1e-6:
            break
        dx = np.ceil(distance * np.cos(radians) - 0.5).astype(int)[:, None, None]
        dy = np.ceil(distance * np.sin(radians) - 0.5).astype(int)[:, None, None]
        source = np.clip(rows + dy, 0, height - 1) * width + np.clip(cols + dx, 0, width - 1)
        out += weight * _from_pixels(pixels[starts + source], x)
    return out


def zoom_blur(images, factors, rng, scale):
    """The mean of the image and its centre zoomed in by each factor. The same linear map for every image: for up to
    ZOOM_OPERATOR_PIXELS pixels, one sparse matrix (pixels x pixels, all factors summed) applied to the whole chunk;
    beyond, factor by factor (the matrix would hold up to 4 x factors entries per pixel)."""
    x = _unit(images)
    count, height, width, channels = x.shape
    if height * width > ZOOM_OPERATOR_PIXELS:
        return zoom_blur_by_factor(x, factors)
    columns = x.transpose(1, 2, 0, 3).reshape(height * width, count * channels)  # a column per image and channel
    blurred = _zoom_operator(height, width, tuple(factors)) @ columns
    return blurred.reshape(height, width, count, channels).transpose(2, 0, 1, 3)


ZOOM_OPERATOR_PIXELS = 256 * 256


def zoom_blur_by_factor(x: np.ndarray, factors) -> np.ndarray:
    total = x.copy()
    for factor in factors:
        total += clipped_zoom(x, factor)
    return total / (len(factors) + 1)


@functools.lru_cache(maxsize=8)
def _zoom_operator(height: int, width: int, factors: tuple[float, ...]) -> sparse.csr_matrix:
    """zoom_blur as a sparse matrix on row-major pixel indices: identity plus every clipped zoom, averaged."""
    operator = sparse.identity(height * width, dtype=np.float32, format="csr")
    outputs = np.arange(height * width)
    for factor in factors:
        row_low, row_high, row_fraction = _zoom_taps(height, factor)
        col_low, col_high, col_fraction = _zoom_taps(width, factor)
        corners = []
        for rows, row_weight in ((row_low, 1 - row_fraction), (row_high, row_fraction)):
            for cols, col_weight in ((col_low, 1 - col_fraction), (col_high, col_fraction)):
                corners.append(((rows[:, None] * width + cols[None, :]).ravel(),
                                (row_weight[:, None] * col_weight[None, :]).ravel()))
        sources = np.concatenate([source for source, _ in corners])
        weights = np.concatenate([weight for _, weight in corners])
        operator = operator + sparse.csr_matrix((weights, (np.tile(outputs, 4), sources)),
                                                shape=operator.shape, dtype=np.float32)
    return (operator / np.float32(len(factors) + 1)).tocsr()


def clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """The centre 1/factor of each image, zoomed back to full size by linear interpolation (scipy.ndimage.zoom's
    order 1, as the reference calls it), its middle kept."""
    for axis in (1, 2):
        low, high, fraction = _zoom_taps(x.shape[axis], factor)
        fraction = fraction.reshape([-1 if index == axis else 1 for index in range(x.ndim)])
        low_values = np.take(x, low, axis=axis)
        x = low_values + fraction * (np.take(x, high, axis=axis) - low_values)
    return x


def _zoom_taps(size: int, factor: float):
    """For each output position along an axis of `size`: the two source positions and the weight of the second."""
    crop = math.ceil(size / factor)
    first = (size - crop) // 2
    zoomed = int(round(crop * factor))  # scipy's output size
    trim = (zoomed - size) // 2
    # scipy.ndimage.zoom maps output o to input o * (in - 1) / (out - 1)
    where = (np.arange(trim, trim + size) * (crop - 1) / max(zoomed - 1, 1)).astype(np.float32)
    low = np.floor(where).astype(int)
    return first + low, first + np.minimum(low + 1, crop - 1), where - low


# -------------------------------------------------------------------------------------------------------------- weather

def snow(images, parameters, rng, scale):
    mean, spread, zoom, threshold, radius, sigma, keep = parameters
    x = _unit(images)
    count, height, width = x.shape[:3]
    layer = rng.normal(mean, spread, (count, height, width, 1)).astype(np.float32)
    layer = clipped_zoom(layer, max(1.0, zoom * scale))  # flakes `zoom` px wide at 32 px
    layer[layer < threshold] = 0
    layer = np.floor(np.clip(layer, 0, 1) * 255) / 255  # the reference's 8-bit PNG
    layer = line_blur(layer, radius * scale, sigma * scale, rng.uniform(-135, -45, count))
    layer = np.round(layer * 255) / 255
    grey = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # OpenCV's RGB to grey
    x = keep * x + (1 - keep) * np.maximum(x, grey[..., None] * 1.5 + 0.5)
    return x + layer + layer[:, ::-1, ::-1]  # and the layer turned half round


def frost(images, parameters, rng, scale):
    """The image dimmed and a crop of a frost texture added (`frost_textures`: generated, not photographed)."""
    keep, add = parameters
    count, height, width = images.shape[:3]
    textures = frost_textures(rng, height, width, scale)
    which = rng.integers(0, len(textures), count)
    tops = rng.integers(0, textures.shape[1] - height + 1, count)
    lefts = rng.integers(0, textures.shape[2] - width + 1, count)
    rows = tops[:, None, None] + np.arange(height)[None, :, None]
    cols = lefts[:, None, None] + np.arange(width)[None, None, :]
    crops = textures[which[:, None, None], rows, cols][..., None] * FROST_TINT
    return keep * _unit(images) + add * crops


FROST_TEXTURES = 5  # the reference picks one of 5 photographs per image
FROST_TINT = np.array([0.86, 0.93, 1.0], dtype=np.float32)  # blue-white ice
FROST_NEEDLES = 70  # ice needles per 32 x 32 px of texture


def frost_textures(rng, height: int, width: int, scale: float) -> np.ndarray:
    """FROST_TEXTURES grey frost textures of 1.5 x the image's sides, values in [0, 1]: a soft fractal haze with
    thin bright needles of ice (2 to 10 px long at 32 px), at random angles, blurred a little."""
    tall, wide = height * 3 // 2, width * 3 // 2
    side = 1 << (max(tall, wide) - 1).bit_length()
    haze = plasma_fractal(rng, FROST_TEXTURES, side, decay=2)[:, :tall, :wide]
    needles = round(FROST_NEEDLES * tall * wide / (32 * scale) ** 2)
    texture = np.repeat(np.arange(FROST_TEXTURES), needles)
    lengths = rng.uniform(2, 10, texture.size) * scale
    angles = rng.uniform(0, np.pi, texture.size)
    brightness = rng.uniform(0.4, 1, texture.size)
    along = np.linspace(0, 1, math.ceil(10 * scale) * 2 + 1)
    rows = rng.uniform(0, tall, texture.size)[:, None] + np.sin(angles)[:, None] * lengths[:, None] * along
    cols = rng.uniform(0, wide, texture.size)[:, None] + np.cos(angles)[:, None] * lengths[:, None] * along
    ice = np.zeros((FROST_TEXTURES, tall, wide), dtype=np.float32)
    np.maximum.at(ice, (texture[:, None], rows.astype(int) % tall, cols.astype(int) % wide),
                  brightness[:, None].astype(np.float32))
    ice = ndimage.gaussian_filter(ice, (0, 0.6 * scale, 0.6 * scale), mode="wrap")
    ice /= ice.max(axis=(1, 2), keepdims=True)
    return np.clip(0.5 * haze + ice, 0, 1).astype(np.float32)


def fog(images, parameters, rng, scale):
    strength, decay = parameters
    x = _unit(images)
    count, height, width = x.shape[:3]
    side = 1 << max(height - 1, width - 1).bit_length()  # the fractal's side: a power of two, at least the image's
    haze = plasma_fractal(rng, count, side, decay)[:, :height, :width, None].astype(np.float32)
    peak = x.max(axis=(1, 2, 3), keepdims=True)
    return (x + strength * haze) * peak / (peak + strength)


def plasma_fractal(rng, count: int, side: int, decay: float) -> np.ndarray:
    """`count` diamond-square height maps, side x side (a power of two), each scaled to [0, 1]: the reference's
    plasma_fractal, for a batch. Each halving of the step adds detail `decay` times weaker."""
    maps = np.zeros((count, side, side))
    step, wibble = side, 100.0

    def wibbled_mean(total):
        return total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)  # wibble squared, as the reference

    while step >= 2:
        half = step // 2
        corners = maps[:, ::step, ::step]
        square = corners + np.roll(corners, -1, axis=1)
        maps[:, half::step, half::step] = wibbled_mean(square + np.roll(square, -1, axis=2))
        centres, corners = maps[:, half::step, half::step], maps[:, ::step, ::step]
        maps[:, ::step, half::step] = wibbled_mean(centres + np.roll(centres, 1, axis=1) + corners
                                                   + np.roll(corners, -1, axis=2))
        maps[:, half::step, ::step] = wibbled_mean(centres + np.roll(centres, 1, axis=2) + corners
                                                   + np.roll(corners, -1, axis=1))
        step, wibble = half, wibble / decay
    maps -= maps.min(axis=(1, 2), keepdims=True)
    return maps / maps.max(axis=(1, 2), keepdims=True)


def brightness(images, amount, rng, scale):
    """HSV value raised by `amount`, hue and saturation kept: every channel scaled by new value / old value."""
    x = _unit(images)
    value = x.max(axis=3, keepdims=True)
    raised = np.minimum(value + amount, 1)
    return np.where(value > 0, x * raised / np.maximum(value, 1e-12), raised)


# -------------------------------------------------------------------------------------------------------------- digital

def contrast(images, factor, rng, scale):
    x = _unit(images)
    means = x.mean(axis=(1, 2), keepdims=True)
    return (x - means) * factor + means


def elastic_transform(images, parameters, rng, scale):
    """A random affine warp (three anchor points jittered), then a smooth random displacement of every pixel."""
    strength, smoothness, jitter = (value * 32 * scale for value in parameters)
    x = _unit(images)
    count, height, width = x.shape[:3]
    rows, cols = _affine_sources(rng, count, height, width, jitter)
    x = _sample(x, rows, cols, mirror=True)  # OpenCV's warpAffine, reflect-101 edges
    if strength == 0:
        return x
    shifts = rng.uniform(-1, 1, (2, count, height, width))
    dx, dy = (ndimage.gaussian_filter(field, (0, smoothness, smoothness), mode="reflect", truncate=3) * strength
              for field in shifts)
    grid_rows, grid_cols = np.mgrid[:height, :width]
    return _sample(x, grid_rows + dy, grid_cols + dx, mirror=False)  # map_coordinates, mode "reflect"


def _affine_sources(rng, count, height, width, jitter):
    """Where each output pixel comes from under an affine map that moves three anchors around the centre (a third of
    the side away) by up to `jitter` px each; returns source rows and columns, count x height x width."""
    centre = np.array([width // 2, height // 2], dtype=np.float64)  # (x, y), as OpenCV takes points
    reach = min(height, width) // 3
    anchors = np.array([centre + reach, [centre[0] + reach, centre[1] - reach], centre - reach])
    moved = anchors + rng.uniform(-jitter, jitter, (count, 3, 2))
    # forward map [x', y'] = A [x, y] + b, fitted to the anchors; the warp reads the source at the inverse
    forward = np.linalg.solve(np.c_[anchors, np.ones(3)][None], moved)  # count x 3 x 2: rows A^T then b
    linear, offset = forward[:, :2].transpose(0, 2, 1), forward[:, 2]
    inverse = np.linalg.inv(linear)[:, :, :, None, None]  # count x 2 x 2, broadcast over the pixels
    x_from, y_from = np.meshgrid(np.arange(width), np.arange(height))
    x_from, y_from = x_from - offset[:, 0, None, None], y_from - offset[:, 1, None, None]
    rows = inverse[:, 1, 0] * x_from + inverse[:, 1, 1] * y_from
    cols = inverse[:, 0, 0] * x_from + inverse[:, 0, 1] * y_from
    return rows, cols


def _sample(x: np.ndarray, rows: np.ndarray, cols: np.ndarray, mirror: bool) -> np.ndarray:
    """Each image read at (rows, cols) with bilinear interpolation. Outside the image: mirrored about the edge
    pixel (`mirror`, OpenCV's reflect-101) or about the edge itself (SciPy's "reflect")."""
    count, height, width, channels = x.shape
    rows, cols = rows.astype(np.float32), cols.astype(np.float32)
    r0, c0 = np.floor(rows), np.floor(cols)
    fr, fc = (rows - r0)[..., None], (cols - c0)[..., None]
    r0, c0 = r0.astype(np.int64), c0.astype(np.int64)
    pixels = _as_pixels(x)
    starts = np.arange(count)[:, None, None] * (height * width)
    upper, lower = (starts + _fold(r, height, mirror) * width for r in (r0, r0 + 1))
    left, right = (_fold(c, width, mirror) for c in (c0, c0 + 1))

    def at(row_start, col):
        return _from_pixels(pixels[row_start + col], x)

    top = at(upper, left) * (1 - fc) + at(upper, right) * fc
    bottom = at(lower, left) * (1 - fc) + at(lower, right) * fc
    return top * (1 - fr) + bottom * fr


def _fold(index: np.ndarray, size: int, mirror: bool) -> np.ndarray:
    """Indices outside 0..size-1 reflected back in: about the edge pixel (`mirror`: ... 2 1 | 0 1 2 ... n-1 | n-2 ...)
    or about the edge (... 1 0 | 0 1 ... n-1 | n-1 ...)."""
    if size == 1:
        return np.zeros_like(index)
    edge = 0 if mirror else 1
    if index.min() > -size and index.max() < 2 * size - 1:  # one reflection at most: the usual case, and quicker
        index = np.where(index < 0, -index - edge, index)
        return np.where(index >= size, 2 * size - 2 + edge - index, index)
    if mirror:
        period = 2 * size - 2
        index = np.abs(index) % period
        return np.where(index < size, index, period - index)
    period = 2 * size
    index = np.where(index < 0, -index - 1, index) % period
    return np.where(index < size, index, period - 1 - index)


def pixelate(images, factor, rng, scale):
    """Each image shrunk to `factor` of its sides and enlarged back, both with Pillow's box filter."""
    height, width = images.shape[1:3]
    small = (int(width * factor), int(height * factor))
    return np.stack([np.asarray(Image.fromarray(image).resize(small, Image.Resampling.BOX)
                                .resize((width, height), Image.Resampling.BOX)) for image in images])


def jpeg_compression(images, quality, rng, scale):
    """Each image saved as a JPEG of `quality` by Pillow and read back."""
    return np.stack([_jpeg_round_trip(image, quality) for image in images])


def _jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))


_FUNCTIONS = {name: globals()[name] for name in CORRUPTIONS}  # each corruption is the function of its name
