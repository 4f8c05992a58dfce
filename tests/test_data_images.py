import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageFile

from cnnlab.common.errors import CnnlabError
from cnnlab.data import images
from cnnlab.data.images import ALLOWED_FORMATS, load_image

# Modes each allowed format saves (Pillow may store them as another mode; the loader must take whatever comes back).
SAVED_MODES = {
    "JPEG": ("L", "RGB", "CMYK"),
    "PNG": ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"),
    "BMP": ("1", "L", "P", "RGB"),
    "GIF": ("L", "P", "RGB"),
    "WEBP": ("RGB", "RGBA"),
    "TIFF": ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "I;16", "I", "F", "YCbCr", "LAB"),
}
# TIFF compressions, each with the modes libtiff encodes with it
TIFF_COMPRESSIONS = {
    "raw": None, "tiff_lzw": None, "tiff_deflate": None, "tiff_adobe_deflate": None, "packbits": None,
    "zstd": None, "lzma": None, "jpeg": ("L", "RGB"), "group3": ("1",), "group4": ("1",), "tiff_ccitt": ("1",),
}
ANIMATED = ("GIF", "WEBP", "TIFF", "PNG")
WITH_EXIF = ("JPEG", "PNG", "WEBP", "TIFF")
ORIENTATION = 0x0112  # the EXIF tag
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAGIC = (b"\xff\xd8\xff", PNG_SIGNATURE, b"BM", b"GIF87a", b"GIF89a", b"RIFF\0\0\0\0WEBPVP8 ", b"RIFF\0\0\0\0WEBPVP8L",
         b"RIFF\0\0\0\0WEBPVP8X", b"II*\0", b"MM\0*", b"II+\0")


def saved(tmp_path, image, name, **options):
    path = tmp_path / name
    image.save(path, **options)
    return path


def written(tmp_path, content: bytes, name="image") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def assert_array_or_one_line_error(path, size):
    """The loader's contract on any file: the requested array or one CnnlabError line, and no warning leaks out."""
    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        try:
            array = load_image(path, size)
        except CnnlabError as error:
            assert len(str(error).splitlines()) == 1
        else:
            assert array.shape == (*size, 3) and array.dtype == np.uint8
    assert [str(warning.message) for warning in leaked] == []


# Conversions: every mode and format becomes RGB at the requested size

@pytest.mark.parametrize(
    "mode, name",
    [("RGB", "rgb.png"), ("RGBA", "rgba.png"), ("L", "grey.png"), ("P", "palette.png"), ("LA", "grey-alpha.png"),
     ("CMYK", "cmyk.jpg"), ("RGB", "photo.jpg"), ("1", "bilevel.bmp"), ("RGB", "photo.webp"), ("RGBA", "clear.webp"),
     ("P", "palette.gif"), ("CMYK", "print.tif"), ("YCbCr", "video.tif"), ("LAB", "lab.tif"), ("F", "float.tif")],
)
def test_any_mode_becomes_rgb_at_the_model_size(tmp_path, mode, name):
    path = saved(tmp_path, Image.new(mode, (97, 61)), name)
    array = load_image(path, (32, 24))
    assert array.shape == (32, 24, 3) and array.dtype == np.uint8


def test_transparent_pixels_are_shown_on_white(tmp_path):
    path = saved(tmp_path, Image.new("RGBA", (8, 8), (255, 0, 0, 0)), "clear.png")
    assert load_image(path, (4, 4)).tolist() == [[[255, 255, 255]] * 4] * 4


def test_transparent_colour_of_an_rgb_png_is_shown_on_white(tmp_path):
    path = saved(tmp_path, Image.new("RGB", (8, 8), (255, 0, 0)), "keyed.png", transparency=(255, 0, 0))
    assert load_image(path, (4, 4)).min() == 255


def test_premultiplied_grey_and_alpha_tiff(tmp_path):
    """TIFF's associated-alpha grey opens as mode La, which Pillow cannot convert to RGB directly."""
    data = bytearray(saved(tmp_path, Image.new("LA", (4, 4), (100, 0)), "la.tif").read_bytes())
    extra_samples = data.find(struct.pack("<HHI", 338, 3, 1))  # the ExtraSamples tag: 2 = unassociated alpha
    data[extra_samples + 8:extra_samples + 10] = struct.pack("<H", 1)  # 1 = associated (premultiplied) alpha
    path = written(tmp_path, bytes(data), "premultiplied.tif")
    assert Image.open(path).mode == "La"
    assert load_image(path, (2, 2)).min() == 255  # fully transparent: white


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    image = Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16))
    path = saved(tmp_path, image, "deep.png")
    assert load_image(path, (4, 4)).min() == 255
    half = saved(tmp_path, Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16)), "half.png")
    assert 126 <= load_image(half, (4, 4)).mean() <= 129


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (8, 8), (255, 0, 0))
    image.paste((0, 0, 255), (0, 4, 8, 8))  # stored: red on top, blue below
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # rotate 90 degrees clockwise to display
    path = saved(tmp_path, image, "turned.png", exif=exif)
    array = load_image(path, (8, 8))  # displayed: blue on the left, red on the right
    assert array[4, 0].tolist() == [0, 0, 255] and array[4, 7].tolist() == [255, 0, 0]


def test_corrupt_exif_loads_the_pixels_without_a_warning(tmp_path):
    """Pillow warns about a cut EXIF block; the photo is still fine, and a warning would be extra lines in the CLI."""
    cut_exif = b"Exif\0\0II*\0\x08\0\0\0\x05\0\x12\x01\x03\0"  # says 5 entries, holds part of one
    path = saved(tmp_path, Image.new("RGB", (8, 8), (0, 0, 255)), "cut-exif.jpg", exif=cut_exif)
    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        array = load_image(path, (4, 4))
    assert [str(warning.message) for warning in leaked] == []
    assert array[0, 0, 2] > 200 and array[0, 0, 0] < 50


@pytest.mark.parametrize("name", ["anim.gif", "anim.webp", "pages.tif", "anim.png"])
def test_animations_and_multi_page_files_use_the_first_frame(tmp_path, name):
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((0, 0, 255), (255, 0, 0))]
    path = tmp_path / name
    frames[0].save(path, save_all=True, append_images=frames[1:], lossless=True)
    pixel = load_image(path, (4, 4))[0, 0]
    assert pixel[2] > 200 and pixel[0] < 50


def test_tiff_whose_page_chain_loops_loads_its_first_page(tmp_path):
    data = bytearray(saved(tmp_path, Image.new("RGB", (4, 4), (1, 2, 3)), "one-page.tif").read_bytes())
    (first_page,) = struct.unpack_from("<I", data, 4)
    (entries,) = struct.unpack_from("<H", data, first_page)
    struct.pack_into("<I", data, first_page + 2 + 12 * entries, first_page)  # "next page": itself
    assert load_image(written(tmp_path, bytes(data), "loop.tif"), (2, 2)).tolist() == [[[1, 2, 3]] * 2] * 2


def test_aspect_ratio_is_stretched_to_the_model_size(tmp_path):
    image = Image.new("RGB", (40, 10), (255, 0, 0))
    image.paste((0, 0, 255), (20, 0, 40, 10))  # left half red, right half blue
    array = load_image(saved(tmp_path, image, "wide.png"), (8, 8))
    assert array[:, :3].tolist() == [[[255, 0, 0]] * 3] * 8 and array[:, 5:].tolist() == [[[0, 0, 255]] * 3] * 8


@pytest.mark.parametrize("turned", [False, True])
def test_crop_keeps_the_centre_square(tmp_path, turned):
    image = Image.new("RGB", (40, 10), (255, 0, 0))
    image.paste((0, 255, 0), (10, 0, 30, 10))  # red, a green middle half, red: the centre 10x10 is green
    image = image.transpose(Image.Transpose.ROTATE_90) if turned else image
    array = load_image(saved(tmp_path, image, "strip.png"), (8, 8), resize="crop")
    assert array.tolist() == [[[0, 255, 0]] * 8] * 8


def test_crop_takes_images_of_every_shape(tmp_path):
    # Floating-point rounding once made the crop box start at -1e-15 for some shapes (49x67 to 32x32), which Pillow
    # refuses: such pictures were skipped as damaged.
    for width in range(17, 100, 4):
        for height in range(17, 100, 3):
            path = saved(tmp_path, Image.new("RGB", (width, height), (10, 20, 30)), f"{width}x{height}.png")
            assert load_image(path, (32, 32), resize="crop").tolist() == [[[10, 20, 30]] * 32] * 32


def test_crop_to_a_wide_target_keeps_the_centre_band(tmp_path):
    image = Image.new("RGB", (20, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 3, 20, 17))  # a blue band, wider than the middle half that a 2:1 crop keeps
    array = load_image(saved(tmp_path, image, "square.png"), (4, 8), resize="crop")
    assert array.shape == (4, 8, 3) and array.tolist() == [[[0, 0, 255]] * 8] * 4


def test_pad_fits_the_whole_image_on_white(tmp_path):
    image = Image.new("RGB", (40, 10), (255, 0, 0))
    array = load_image(saved(tmp_path, image, "wide.png"), (8, 8), resize="pad")
    assert array.shape == (8, 8, 3)
    assert array[:3].tolist() == [[[255, 255, 255]] * 8] * 3 and array[5:].tolist() == [[[255, 255, 255]] * 8] * 3
    assert array[3:5].tolist() == [[[255, 0, 0]] * 8] * 2  # 40x10 scaled to 8x2, in the middle rows


def test_pad_of_a_tall_image_pads_left_and_right(tmp_path):
    array = load_image(saved(tmp_path, Image.new("RGB", (10, 40), (0, 0, 255)), "tall.png"), (8, 8), resize="pad")
    assert array[:, 3:5].tolist() == [[[0, 0, 255]] * 2] * 8
    assert array[:, :3].min() == 255 and array[:, 5:].min() == 255


@pytest.mark.parametrize("resize", ["stretch", "crop", "pad"])
def test_every_resize_mode_leaves_a_square_image_as_is(tmp_path, resize):
    pixels = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    array = load_image(saved(tmp_path, Image.fromarray(pixels), "square.png"), (8, 8), resize=resize)
    assert np.array_equal(array, pixels)


def test_decode_image_gives_the_upright_size(tmp_path):
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # turned a quarter: 30x20 stored, 20x30 shown
    path = saved(tmp_path, Image.new("RGB", (30, 20)), "turned.png", exif=exif)
    pixels, (width, height) = images.decode_image(path, (8, 8))
    assert pixels.shape == (8, 8, 3) and (width, height) == (20, 30)


def test_content_decides_the_format_not_the_name(tmp_path):
    path = saved(tmp_path, Image.new("RGB", (40, 40), (0, 128, 0)), "photo.eps", format="PNG")
    assert load_image(path, (32, 32))[0, 0].tolist() == [0, 128, 0]


def test_names_with_spaces_and_non_ascii(tmp_path):
    path = saved(tmp_path, Image.new("RGB", (40, 40), (0, 128, 0)), "mon chat é 猫.png")
    assert load_image(path, (32, 32))[0, 0].tolist() == [0, 128, 0]


# Refusals: one CnnlabError line each

def test_missing_file(tmp_path):
    with pytest.raises(CnnlabError, match="image not found"):
        load_image(tmp_path / "nope.png", (32, 32))
    with pytest.raises(CnnlabError, match="image not found"):
        load_image(tmp_path, (32, 32))  # a folder


def test_unreadable_file_is_named_as_such(tmp_path, monkeypatch):
    path = saved(tmp_path, Image.new("RGB", (4, 4)), "locked.png")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(CnnlabError, match=r"locked.png: cannot read \(Permission denied\)$"):
        load_image(path, (32, 32))


@pytest.mark.parametrize("name, options", [
    ("picture.eps", {}), ("picture.ppm", {}), ("picture.ico", {}), ("picture.pcx", {}), ("picture.tga", {}),
    ("picture.sgi", {}), ("picture.qoi", {}), ("picture.pdf", {}), ("picture.jp2", {}), ("picture.dds", {}),
    ("picture.png", {"format": "PPM"}),  # a name that lies does not get a file decoded
])
def test_formats_outside_the_allow_list_are_refused(tmp_path, name, options):
    path = saved(tmp_path, Image.new("RGB", (16, 16), (200, 10, 10)), name, **options)
    with pytest.raises(CnnlabError) as refused:
        load_image(path, (32, 32))
    assert str(refused.value) == f"{path}: not a readable image (not one of {', '.join(ALLOWED_FORMATS)})"


def test_photoshop_file_is_refused(tmp_path):
    """Pillow cannot write PSD; a minimal one (header, empty sections, one raw RGB channel set) by hand."""
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, 2, 2, 8, 3)
    body = struct.pack(">III", 0, 0, 0) + struct.pack(">H", 0) + bytes(3 * 2 * 2)
    path = written(tmp_path, header + body, "layers.psd")
    assert Image.open(path).format == "PSD"  # what Pillow would decode if allowed to
    with pytest.raises(CnnlabError, match="not a readable image"):
        load_image(path, (32, 32))


@pytest.mark.parametrize("content", [b"", b"definitely not an image", b"\x89PNG\r\n\x1a\n" + b"\0" * 20])
def test_not_an_image(tmp_path, content):
    with pytest.raises(CnnlabError, match="not a readable image|damaged or truncated"):
        load_image(written(tmp_path, content, "fake.png"), (32, 32))


@pytest.mark.parametrize("name", ["w.png", "w.jpg", "w.webp", "w.bmp", "w.gif", "w.tif"])
def test_truncated_image(tmp_path, name):
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    whole = saved(tmp_path, Image.fromarray(noise), name).read_bytes()
    with pytest.raises(CnnlabError, match="damaged or truncated"):
        load_image(written(tmp_path, whole[:len(whole) // 2], f"cut-{name}"), (32, 32))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # the refusal relies on Pillow's default


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 100 * 100)
    path = saved(tmp_path, Image.new("L", (101, 100)), "bomb.png")
    with pytest.raises(images.ImageTooLarge, match="101x100 pixels is over the 10,000-pixel limit"):
        load_image(path, (32, 32))


def test_header_beyond_pillows_own_bomb_limit_is_refused(tmp_path):
    """A PNG header of 20,000 x 20,000 pixels (and no pixels): Pillow's bomb error comes before the loader's check."""
    png = saved(tmp_path, Image.new("L", (1, 1)), "tiny.png").read_bytes()
    header = struct.pack(">II", 20_000, 20_000) + png[24:29]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + header))
    path = written(tmp_path, png[:16] + header + crc + png[33:], "huge.png")
    with pytest.raises(images.ImageTooLarge, match="over the 50,000,000-pixel limit"):
        load_image(path, (32, 32))


# Fuzzing: whatever the bytes, an array of the requested shape or one CnnlabError

sizes = st.tuples(st.integers(1, 8), st.integers(1, 8))


@st.composite
def encoded_images(draw) -> bytes:
    """A small image of an allowed format, mode and (for TIFF) compression; sometimes several frames."""
    image_format = draw(st.sampled_from(ALLOWED_FORMATS))
    mode = draw(st.sampled_from(SAVED_MODES[image_format]))
    width, height = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**32 - 1))
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 4), dtype=np.uint8)
    frames = [Image.fromarray(pixels[..., :3]).convert(mode) for _ in range(draw(st.integers(1, 2)))]
    options = {}
    if image_format == "TIFF":
        options["compression"] = draw(st.sampled_from(
            [name for name, modes in TIFF_COMPRESSIONS.items() if modes is None or mode in modes]))
    if image_format in ANIMATED and len(frames) > 1:
        options.update(save_all=True, append_images=frames[1:])
    if image_format in WITH_EXIF and draw(st.booleans()):
        options["exif"] = Image.Exif()
        options["exif"][ORIENTATION] = draw(st.integers(1, 8))
    buffer = io.BytesIO()
    frames[0].save(buffer, image_format, **options)
    return buffer.getvalue()


@st.composite
def damaged(draw, content: bytes) -> bytes:
    """`content` with a few random byte flips, cuts and insertions."""
    data = bytearray(content)
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(data)))
        change = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        if change == "flip" and where < len(data):
            data[where] ^= draw(st.integers(1, 255))
        elif change == "truncate":
            del data[where:]
        elif change == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[where:where + draw(st.integers(1, 16))]
    if draw(st.booleans()):
        _repair_png_checksums(data)  # else nearly every damaged PNG stops at its first checksum
    return bytes(data)


def _repair_png_checksums(data: bytearray) -> None:
    position = len(PNG_SIGNATURE) if data.startswith(PNG_SIGNATURE) else len(data)
    while position + 12 <= len(data):  # each chunk: length, type, content, CRC of type and content
        (length,) = struct.unpack_from(">I", data, position)
        end = position + 8 + length
        if end + 4 > len(data):
            return
        struct.pack_into(">I", data, end, zlib.crc32(data[position + 4:end]))
        position = end + 4


@given(content=st.binary(max_size=512), size=sizes)
def test_fuzz_arbitrary_bytes(tmp_path, content, size):
    assert_array_or_one_line_error(written(tmp_path, content), size)


@given(magic=st.sampled_from(MAGIC), rest=st.binary(max_size=512), size=sizes)
def test_fuzz_bytes_behind_an_allowed_formats_signature(tmp_path, magic, rest, size):
    assert_array_or_one_line_error(written(tmp_path, magic + rest), size)


@given(content=encoded_images(), size=sizes)
def test_fuzz_valid_small_images_load(tmp_path, content, size):
    array = load_image(written(tmp_path, content), size)
    assert array.shape == (*size, 3) and array.dtype == np.uint8


@given(content=encoded_images().flatmap(damaged), size=sizes)
def test_fuzz_damaged_small_images(tmp_path, content, size):
    assert_array_or_one_line_error(written(tmp_path, content), size)
