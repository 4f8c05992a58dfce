"""The common corruptions: each one's defining property, on small batches of scene-like images (gradients, a disk and
a box), and the contract of `corrupt` (shape, dtype, determinism, refusals)."""

import colorsys
import io

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from scipy import ndimage

from cnnlab.common.errors import CnnlabError
from cnnlab.evaluation import corruptions
from cnnlab.evaluation.corruptions import CORRUPTIONS, FAMILIES, PARAMETERS, SEVERITIES, corrupt

RANDOM = ("gaussian_noise", "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "snow", "frost", "fog",
          "elastic_transform")
# The distance to the clean image grows with the severity (never falls; overall it grows): the others are below
GROWING = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "motion_blur", "zoom_blur", "snow", "fog",
           "brightness", "contrast", "pixelate", "jpeg_compression")
# Geometric or linear filters: a flat image stays flat
FLAT_STAYS_FLAT = ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "contrast", "elastic_transform",
                   "pixelate")


def scenes(count=8, height=32, width=32, seed=0) -> np.ndarray:
    """Natural-ish images: a linear colour gradient at a random angle, a disk and a box of flat random colours."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:height, :width] / max(height, width)
    out = []
    for _ in range(count):
        start, end = rng.uniform(40, 200, (2, 3))
        angle = rng.uniform(0, 2 * np.pi)
        position = (np.cos(angle) * cols + np.sin(angle) * rows)[..., None]
        image = start + (end - start) * (position - position.min()) / (np.ptp(position) + 1e-9)
        centre_row, centre_col, radius = rng.uniform(0.25, 0.75), rng.uniform(0.25, 0.75), rng.uniform(0.12, 0.3)
        image[(rows - centre_row) ** 2 + (cols - centre_col) ** 2 < radius**2] = rng.uniform(0, 255, 3)
        top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
        image[top : top + height // 4, left : left + width // 3] = rng.uniform(0, 255, 3)
        out.append(image)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def grey(level, count=8, side=32) -> np.ndarray:
    return np.full((count, side, side, 3), level, dtype=np.uint8)


def distance(a, b) -> float:
    return float(np.abs(a.astype(float) - b.astype(float)).mean())


def high_frequency_energy(images) -> float:
    values = images.astype(float)
    return float((np.diff(values, axis=1) ** 2).mean() + (np.diff(values, axis=2) ** 2).mean())


def test_fifteen_corruptions_in_four_families_each_with_five_severities():
    assert len(CORRUPTIONS) == len(set(CORRUPTIONS)) == 15
    assert list(FAMILIES) == ["noise", "blur", "weather", "digital"]
    assert [name for names in FAMILIES.values() for name in names] == list(CORRUPTIONS)
    assert set(PARAMETERS) == set(CORRUPTIONS) and SEVERITIES == (1, 2, 3, 4, 5)
    assert all(len(PARAMETERS[name]) == 5 for name in CORRUPTIONS)
    # CIFAR-10-C's constants, not ImageNet-C's (whose gaussian noise starts at 0.08 and JPEG quality at 25)
    assert PARAMETERS["gaussian_noise"] == (0.04, 0.06, 0.08, 0.09, 0.10)
    assert PARAMETERS["jpeg_compression"] == (80, 65, 58, 50, 40)
    assert [len(factors) for factors in PARAMETERS["zoom_blur"]] == [7, 12, 16, 21, 26]


@given(name=st.sampled_from(CORRUPTIONS), severity=st.sampled_from(SEVERITIES), count=st.integers(1, 3),
       height=st.integers(8, 40), width=st.integers(8, 40), seed=st.integers(0, 2**32 - 1))
def test_any_batch_keeps_its_shape_and_dtype_and_the_same_seed_gives_the_same_images(name, severity, count, height,
                                                                                     width, seed):
    images = np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)
    before = images.copy()
    out = corrupt(images, name, severity, seed)
    assert out.shape == images.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(images, before)  # the input is left alone
    np.testing.assert_array_equal(corrupt(images, name, severity, seed), out)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_random_corruptions_change_with_the_seed_and_the_others_do_not(name):
    images = scenes(4)
    first, second = corrupt(images, name, 3, seed=0), corrupt(images, name, 3, seed=1)
    assert not np.array_equal(first, images)
    assert np.array_equal(first, second) == (name not in RANDOM)


def test_a_batch_is_corrupted_in_chunks_each_with_its_own_random_stream():
    images = np.repeat(scenes(1), 300, axis=0)  # one image, more times than a chunk of 32 x 32 images holds
    whole = corrupt(images, "gaussian_noise", 2, seed=5)
    chunk = corruptions.CHUNK_PIXELS // (32 * 32)
    np.testing.assert_array_equal(whole[:chunk], corrupt(images[:chunk], "gaussian_noise", 2, seed=5))
    assert not np.array_equal(whole[:chunk], whole[chunk : 2 * chunk])  # not one noise pattern repeated


@pytest.mark.parametrize("name", GROWING)
def test_the_distance_to_the_clean_image_grows_with_severity(name):
    images = scenes(16)
    distances = [distance(corrupt(images, name, severity, 0), images) for severity in SEVERITIES]
    # Never falls (motion blur's severities 3 and 4 share a sigma: their kernels differ by taps of weight ~1e-9)
    assert all(later >= earlier - 1e-9 for earlier, later in zip(distances, distances[1:])), distances
    assert distances[-1] > 1.2 * distances[0], distances


@pytest.mark.parametrize("name", FLAT_STAYS_FLAT)
def test_blurs_warps_and_contrast_leave_a_flat_image_flat(name):
    images = np.concatenate([grey(30, 2), grey(200, 2)])
    for severity in SEVERITIES:
        np.testing.assert_allclose(corrupt(images, name, severity, 0), images, atol=1)


# ---------------------------------------------------------------------------------------------------------------- noise

@pytest.mark.parametrize("severity", SEVERITIES)
def test_gaussian_noise_is_zero_mean_with_the_severitys_deviation_at_any_brightness(severity):
    sigma = PARAMETERS["gaussian_noise"][severity - 1] * 255
    for level in (70, 180):  # far enough from 0 and 255 that clipping plays no part
        noise = corrupt(grey(level, 32), "gaussian_noise", severity, 0).astype(float) - level
        assert abs(noise.mean() + 0.5) < 0.4  # zero mean, less the half level that truncation to uint8 takes
        assert noise.std() == pytest.approx(sigma, rel=0.05)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_shot_noise_is_poisson_its_variance_grows_with_the_brightness(severity):
    rate = PARAMETERS["shot_noise"][severity - 1]
    for level in (64, 192):
        noise = corrupt(grey(level), "shot_noise", severity, 0).astype(float) - level
        assert abs(noise.mean() + 0.5) < 0.5
        # photons counted: variance (in [0, 1] units) = intensity / rate
        assert noise.std() == pytest.approx(np.sqrt(level / 255 / rate) * 255, rel=0.06)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_impulse_noise_sets_the_severitys_fraction_of_values_to_black_or_white(severity):
    out = corrupt(grey(128), "impulse_noise", severity, 0)
    changed = out != 128
    assert changed.mean() == pytest.approx(PARAMETERS["impulse_noise"][severity - 1], rel=0.12)
    assert set(np.unique(out[changed])) <= {0, 255}
    assert (out[changed] == 255).mean() == pytest.approx(0.5, abs=0.08)
    assert not np.all(changed.all(axis=3) == changed.any(axis=3))  # per channel, not per pixel


def test_impulse_noise_draws_salt_or_pepper_for_each_channel_on_its_own():
    out = corrupt(grey(128, 64), "impulse_noise", 5, 0).reshape(-1, 3)
    several = out[(out != 128).sum(axis=1) >= 2]  # pixels hit in two or three channels
    mixed = [(pixel == 0).any() and (pixel == 255).any() for pixel in several]
    assert len(several) > 100 and np.mean(mixed) > 0.3  # salt in one channel, pepper in another: often


# ----------------------------------------------------------------------------------------------------------------- blur

@pytest.mark.parametrize("name", ("defocus_blur", "motion_blur", "zoom_blur"))
def test_blurs_lower_high_frequency_energy_more_at_each_severity(name):
    images = scenes(16)
    energies = [high_frequency_energy(corrupt(images, name, severity, 0)) for severity in SEVERITIES]
    assert energies[0] < high_frequency_energy(images)
    assert all(later <= earlier + 1e-9 for earlier, later in zip(energies, energies[1:])), energies


def test_defocus_blur_uses_the_references_antialiased_disks():
    def centre(kernel):  # the 3 x 3 middle, and nothing outside it
        middle = kernel.shape[0] // 2
        inside = kernel[middle - 1 : middle + 2, middle - 1 : middle + 2]
        assert inside.sum() == pytest.approx(1, abs=1e-4)
        return inside

    np.testing.assert_allclose(centre(corruptions._disk(1.5, 0.1)), np.full((3, 3), 1 / 9), atol=1e-6)
    plus = centre(corruptions._disk(1, 0.2))  # radius 1: the pixel and its four neighbours
    np.testing.assert_allclose(plus, [[0, 0.2, 0], [0.2, 0.2, 0.2], [0, 0.2, 0]], atol=1e-4)
    weak = centre(corruptions._disk(0.3, 0.4))  # the pixel alone, softened by OpenCV's 3 x 3 Gaussian of sigma 0.4
    side = np.exp(-1 / (2 * 0.4**2)) / (1 + 2 * np.exp(-1 / (2 * 0.4**2)))
    np.testing.assert_allclose(weak, np.outer([side, 1 - 2 * side, side], [side, 1 - 2 * side, side]), atol=1e-6)
    for radius, sigma in PARAMETERS["defocus_blur"]:
        assert corruptions._disk(radius, sigma).sum() == pytest.approx(1)


def test_defocus_filter_mirrors_the_edges_like_opencv():
    x = np.random.default_rng(0).random((2, 9, 11, 3)).astype(np.float32)
    kernel = corruptions._disk(1, 0.4)
    expected = ndimage.correlate(x, kernel[None, :, :, None], mode="mirror")
    np.testing.assert_allclose(corruptions._filter(x, kernel), expected, atol=1e-5)


def sequential_shuffle(images, offsets):
    """make_cifar_c.py's glass blur loop, one swap at a time, with given draws."""
    out = images.copy()
    for index in range(len(out)):
        for h in range(out.shape[1] - 1, 1, -1):
            for w in range(out.shape[2] - 1, 1, -1):
                dy, dx = offsets[index, h, w]
                here, there = out[index, h, w].copy(), out[index, h + dy, w + dx].copy()
                out[index, h, w], out[index, h + dy, w + dx] = there, here
    return out


@given(count=st.integers(1, 3), height=st.integers(1, 12), width=st.integers(1, 12), seed=st.integers(0, 1000))
def test_glass_blurs_wavefront_shuffle_equals_the_references_sequential_swaps(count, height, width, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, height, width, 3), dtype=np.uint8)
    offsets = rng.integers(-1, 1, (count, height, width, 2))
    shuffled = corruptions.local_shuffle(images, offsets)
    np.testing.assert_array_equal(shuffled, sequential_shuffle(images, offsets))
    pixels = lambda batch: sorted(map(tuple, batch.reshape(-1, 3)))  # noqa: E731
    for before, after in zip(images, shuffled):  # pixels move, none is made or lost
        assert pixels(before) == pixels(after)


def test_glass_blur_shuffles_further_with_two_rounds_and_blurs_more_with_a_larger_sigma():
    images = scenes(16)
    distances = [distance(corrupt(images, "glass_blur", severity, 0), images) for severity in SEVERITIES]
    energies = [high_frequency_energy(corrupt(images, "glass_blur", severity, 0)) for severity in SEVERITIES]
    # (sigma, rounds): (0.05, 1), (0.25, 1), (0.4, 1), (0.25, 2), (0.4, 2)
    assert distances[3] > distances[1] and distances[4] > distances[2]
    assert energies[0] > energies[1] > energies[2] and energies[3] > energies[4]


def test_glass_blur_on_larger_images_swaps_pixels_a_scaled_distance_apart():
    x = np.random.default_rng(0).random((2, 16, 16, 3)).astype(np.float32)
    moved = corruptions._on_lattice(x, 2, lambda lattice: np.roll(lattice, 1, axis=1))
    np.testing.assert_array_equal(moved[:, 2:], x[:, :-2])  # one lattice step is two pixels
    np.testing.assert_array_equal(corruptions._on_lattice(x[:, :15, :13], 2, lambda lattice: lattice), x[:, :15, :13])


def test_motion_blur_smears_along_a_line_on_one_side_with_gaussian_weights():
    dot = np.zeros((1, 15, 15, 1), dtype=np.float32)
    dot[0, 7, 10] = 1
    smear = corruptions.line_blur(dot, radius=6, sigma=2, angles=np.array([0.0]))[0, ..., 0]
    assert np.flatnonzero(smear.sum(axis=1)).tolist() == [7]  # along the row
    row = smear[7]
    assert row[11:].sum() == 0 and row[10] > row[9] > row[8] > 0  # from the dot towards one side, fading
    weights = np.exp(-np.arange(13) ** 2 / 8)
    np.testing.assert_allclose(row[10::-1], (weights / weights.sum())[:11], rtol=1e-5)
    diagonal = corruptions.line_blur(dot, radius=6, sigma=2, angles=np.array([45.0]))[0, ..., 0]
    rows, cols = np.nonzero(diagonal)
    np.testing.assert_array_equal(7 - rows, 10 - cols)  # up and to the left, one for one


def test_zoom_blur_as_one_sparse_matrix_equals_zooming_factor_by_factor():
    images = scenes(3, 24, 20)
    factors = PARAMETERS["zoom_blur"][4]
    np.testing.assert_allclose(corruptions.zoom_blur(images, factors, None, 1.0),
                               corruptions.zoom_blur_by_factor(images.astype(np.float32) / 255, factors), atol=1e-5)


@pytest.mark.parametrize("factor", (1.0, 1.07, 1.25, 1.75, 2.25))
def test_clipped_zoom_is_the_references_scipy_zoom_of_the_centre(factor):
    x = np.random.default_rng(0).random((32, 32, 3))
    crop = int(np.ceil(32 / factor))
    top = (32 - crop) // 2
    zoomed = ndimage.zoom(x[top : top + crop, top : top + crop], (factor, factor, 1), order=1)
    trim = (zoomed.shape[0] - 32) // 2
    expected = zoomed[trim : trim + 32, trim : trim + 32]
    np.testing.assert_allclose(corruptions.clipped_zoom(x[None].astype(np.float32), factor)[0], expected, atol=1e-5)


# -------------------------------------------------------------------------------------------------------------- weather

def test_snow_brightens_with_severity():
    images = scenes(16)
    means = [corrupt(images, "snow", severity, 0).mean() for severity in SEVERITIES]
    assert images.mean() < means[0] and all(later > earlier for earlier, later in zip(means, means[1:])), means


def neighbour_correlation(layers, axis) -> float:
    centred = np.moveaxis(layers - layers.mean(axis=(1, 2), keepdims=True), axis, 1)
    return float((centred[:, 1:] * centred[:, :-1]).mean() / (centred**2).mean())


def test_snow_falls_in_steep_streaks_of_flakes_as_wide_as_the_severitys_zoom():
    for severity, (*_, zoom, _, _, _, keep) in zip(SEVERITIES, PARAMETERS["snow"]):
        snowfall = corrupt(grey(0, 32), "snow", severity, 0)[..., 0] / 255 - (1 - keep) * 0.5  # on black: the snow
        down, across = neighbour_correlation(snowfall, 1), neighbour_correlation(snowfall, 2)
        assert down > 0.5 and down > across  # streaks within 45 degrees of straight down
        assert (across > 0.4) == (zoom > 1)  # flakes zoomed from one pixel to several at severities 3 to 5


def test_frost_adds_one_blue_white_texture_more_strongly_at_each_severity():
    black = grey(0, 16)
    layers = [corrupt(black, "frost", severity, 0).astype(float) for severity in SEVERITIES]
    means = [layer.mean() for layer in layers]
    assert means[0] > 10 and all(later >= earlier for earlier, later in zip(means, means[1:])), means
    red, green, blue = layers[0].mean(axis=(0, 1, 2))
    assert blue > green > red  # ice, not snow: tinted blue
    # The same crops of the same textures at every severity, weighted by the severity's frost weight
    weights = [weight for _, weight in PARAMETERS["frost"]]
    np.testing.assert_allclose(layers[4] / weights[4], layers[0] / weights[0], atol=1 / weights[0] + 1)
    texture = corruptions.frost_textures(np.random.default_rng(0), 32, 32, 1.0)
    assert texture.shape == (5, 48, 48) and 0 <= texture.min() and texture.max() <= 1
    assert high_frequency_energy(texture[..., None] * 255) > 100  # needles of ice, not a smooth haze


def test_fog_is_a_smooth_veil_thicker_at_each_severity():
    fogged = [corrupt(grey(100), "fog", severity, 0).astype(float) for severity in SEVERITIES]
    variances = [image.var() for image in fogged]
    assert variances[0] > 10 and all(later > earlier for earlier, later in zip(variances, variances[1:])), variances
    for image, variance in zip(fogged, variances):  # white noise would have 4 x its variance here
        assert high_frequency_energy(image) < 0.15 * variance
    fractal = corruptions.plasma_fractal(np.random.default_rng(0), 4, 32, 2.0)
    assert fractal.shape == (4, 32, 32) and fractal.min() == 0 and fractal.max() == 1
    assert high_frequency_energy(fractal[..., None]) < 0.1 * fractal.var()


@given(pixel=st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)),
       severity=st.sampled_from(SEVERITIES))
def test_brightness_raises_the_hsv_value_and_keeps_hue_and_saturation(pixel, severity):
    out = corrupt(np.full((1, 8, 8, 3), pixel, dtype=np.uint8), "brightness", severity, 0)[0, 0, 0]
    hue, saturation, value = colorsys.rgb_to_hsv(*(np.array(pixel) / 255))
    expected = np.array(colorsys.hsv_to_rgb(hue, saturation, min(value + PARAMETERS["brightness"][severity - 1], 1)))
    assert np.abs(out.astype(int) - np.floor(expected * 255 + 1e-6)).max() <= 1
    assert out.astype(int).max() >= max(pixel)


def test_brightness_raises_the_mean_more_at_each_severity():
    images = scenes(8)
    means = [corrupt(images, "brightness", severity, 0).mean() for severity in SEVERITIES]
    assert images.mean() < means[0] and all(later > earlier for earlier, later in zip(means, means[1:]))


# -------------------------------------------------------------------------------------------------------------- digital

@pytest.mark.parametrize("severity", SEVERITIES)
def test_contrast_shrinks_each_channels_spread_about_its_mean_by_the_factor(severity):
    images = scenes(8)
    out = corrupt(images, "contrast", severity, 0).astype(float)
    factor = PARAMETERS["contrast"][severity - 1]
    np.testing.assert_allclose(out.std(axis=(1, 2)), factor * images.std(axis=(1, 2)), atol=0.6)
    np.testing.assert_allclose(out.mean(axis=(1, 2)), images.mean(axis=(1, 2)), atol=1)


def test_elastic_severity_1_is_an_affine_warp_and_the_highest_severities_bend_it():
    rows, cols = np.mgrid[:32, :32]
    where = np.stack([10 + 7 * cols, 10 + 7 * rows, np.full_like(rows, 128)], axis=-1)  # each pixel's own position
    images = np.repeat(where[None], 8, axis=0).astype(np.uint8)
    inside = (slice(None), slice(6, -6), slice(6, -6))

    def bending(severity):
        """How far each output pixel's source (read back from its colour) is from the best affine map, in px."""
        sources = (corrupt(images, "elastic_transform", severity, 0)[inside][..., :2].astype(float) - 10) / 7
        design = np.c_[cols[inside[1:]].ravel(), rows[inside[1:]].ravel(), np.ones(rows[inside[1:]].size)]
        residuals = []
        for source in sources.reshape(len(images), -1, 2):
            fit, *_ = np.linalg.lstsq(design, source, rcond=None)
            residuals.append(np.abs(design @ fit - source).mean())
        return float(np.mean(residuals))

    assert not np.array_equal(corrupt(images, "elastic_transform", 1, 0), images)
    assert bending(1) < 0.1  # what rounding to whole levels leaves
    assert bending(4) > 3 * bending(1) and bending(5) > 3 * bending(1)


def test_elastic_transform_only_moves_colours():
    two_colours = np.where(scenes(4) > 128, 200, 50).astype(np.uint8)
    for severity in SEVERITIES:
        out = corrupt(two_colours, "elastic_transform", severity, 0)
        assert out.min() >= 49 and out.max() <= 200  # blends of the two colours, nothing new


@pytest.mark.parametrize("severity", SEVERITIES)
def test_pixelate_makes_blocks_of_repeated_rows_and_columns(severity):
    images = scenes(8)
    small = int(32 * PARAMETERS["pixelate"][severity - 1])
    for image in corrupt(images, "pixelate", severity, 0):
        assert len(np.unique(image, axis=0)) <= small and np.unique(image, axis=1).shape[1] <= small


def test_jpeg_compression_is_pillows_jpeg_at_each_severitys_quality():
    images = scenes(4)
    outs = [corrupt(images, "jpeg_compression", severity, 0) for severity in SEVERITIES]
    for quality, out in zip(PARAMETERS["jpeg_compression"], outs):
        buffer = io.BytesIO()
        Image.fromarray(images[0]).save(buffer, "JPEG", quality=quality)
        np.testing.assert_array_equal(out[0], np.asarray(Image.open(buffer)))
    assert len({out.tobytes() for out in outs}) == 5


# ------------------------------------------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("name, severity, seed, problem", [
    ("gaussian_blur", 1, 0, "unknown corruption 'gaussian_blur'"),  # ImageNet-C's extra corruptions are not here
    ("Fog", 1, 0, "unknown corruption"),
    ("fog", 0, 0, "severity must be 1 to 5"),
    ("fog", 6, 0, "severity must be 1 to 5"),
    ("fog", True, 0, "severity must be 1 to 5"),
    ("fog", 2.0, 0, "severity must be 1 to 5"),
    ("fog", 1, -1, "seed must be in 0..2\\*\\*32-1"),
    ("fog", 1, 2**32, "seed must be in"),
])
def test_unknown_corruptions_severities_and_seeds_are_refused(name, severity, seed, problem):
    with pytest.raises(CnnlabError, match=problem):
        corrupt(scenes(1), name, severity, seed)


@pytest.mark.parametrize("images", [
    np.zeros((2, 32, 32, 3), dtype=np.float32),
    np.zeros((32, 32, 3), dtype=np.uint8),
    np.zeros((2, 32, 32, 1), dtype=np.uint8),
    np.zeros((2, 7, 32, 3), dtype=np.uint8),
    [[[[0, 0, 0]]]],
])
def test_anything_but_uint8_rgb_batches_is_refused(images):
    with pytest.raises(CnnlabError, match="corruptions take uint8 images"):
        corrupt(images, "contrast", 1)


def test_an_empty_batch_gives_an_empty_batch():
    assert corrupt(np.zeros((0, 32, 32, 3), dtype=np.uint8), "snow", 3).shape == (0, 32, 32, 3)


@pytest.mark.parametrize("mirror, expected", [
    (True, [2, 1, 0, 1, 2, 3, 2, 1, 0, 1, 2]),  # OpenCV's reflect-101: about the edge pixel
    (False, [1, 0, 0, 1, 2, 3, 3, 2, 1, 0, 0]),  # SciPy's "reflect": about the edge
])
def test_indices_outside_the_image_fold_back_in_both_reflection_modes(mirror, expected):
    near = np.arange(-2, 9)  # at most one reflection away: the quick path
    far = near + 6 * 4 * 10  # many periods away: the general path, periodic
    np.testing.assert_array_equal(corruptions._fold(near, 4, mirror), expected)
    np.testing.assert_array_equal(corruptions._fold(np.r_[near, -far], 4, mirror)[: len(near)], expected)
    np.testing.assert_array_equal(corruptions._fold(far, 4, mirror), expected)
