import numpy as np
import pytest
from PIL import Image

from cnnlab import predict
from cnnlab.errors import CnnlabError
from cnnlab.predict import load_image, top_k


def saved(tmp_path, image, name, **options):
    path = tmp_path / name
    image.save(path, **options)
    return path


@pytest.mark.parametrize(
    "mode, name",
    [("RGB", "rgb.png"), ("RGBA", "rgba.png"), ("L", "grey.png"), ("P", "palette.png"), ("LA", "grey-alpha.png"),
     ("CMYK", "cmyk.jpg"), ("RGB", "photo.jpg"), ("1", "bilevel.bmp")],
)
def test_any_mode_becomes_rgb_at_the_model_size(tmp_path, mode, name):
    path = saved(tmp_path, Image.new(mode, (97, 61)), name)
    array = load_image(path, (32, 32))
    assert array.shape == (32, 32, 3) and array.dtype == np.uint8


def test_transparent_pixels_are_shown_on_white(tmp_path):
    path = saved(tmp_path, Image.new("RGBA", (8, 8), (255, 0, 0, 0)), "clear.png")
    assert load_image(path, (4, 4)).tolist() == [[[255, 255, 255]] * 4] * 4


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    image = Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16))
    path = saved(tmp_path, image, "deep.png")
    assert load_image(path, (4, 4)).min() == 255
    half = saved(tmp_path, Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16)), "half.png")
    assert 126 <= load_image(half, (4, 4)).mean() <= 129


def test_animated_gif_uses_the_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((0, 0, 255), (255, 0, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    pixel = load_image(path, (4, 4))[0, 0]
    assert pixel[2] > 200 and pixel[0] < 50


def test_names_with_spaces_and_non_ascii(tmp_path):
    path = saved(tmp_path, Image.new("RGB", (40, 40), (0, 128, 0)), "mon chat é 猫.png")
    assert load_image(path, (32, 32))[0, 0].tolist() == [0, 128, 0]


def test_missing_file(tmp_path):
    with pytest.raises(CnnlabError, match="image not found"):
        load_image(tmp_path / "nope.png", (32, 32))


@pytest.mark.parametrize("content", [b"", b"definitely not an image", b"\x89PNG\r\n\x1a\n" + b"\0" * 20])
def test_not_an_image(tmp_path, content):
    path = tmp_path / "fake.png"
    path.write_bytes(content)
    with pytest.raises(CnnlabError, match="not a readable image|damaged or truncated"):
        load_image(path, (32, 32))


def test_truncated_image(tmp_path):
    whole = saved(tmp_path, Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), "w.png")
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole.read_bytes()[:2000])
    with pytest.raises(CnnlabError, match="damaged or truncated"):
        load_image(cut, (32, 32))


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(predict, "MAX_PIXELS", 100 * 100)
    path = saved(tmp_path, Image.new("L", (101, 100)), "bomb.png")
    with pytest.raises(CnnlabError, match="over the 10,000-pixel limit"):
        load_image(path, (32, 32))


def test_top_k_orders_by_probability():
    result = top_k(np.array([0.1, 0.6, 0.05, 0.25]), ("a", "b", "c", "d"), k=3)
    assert [guess["class"] for guess in result] == ["b", "d", "a"]
    assert result[0]["probability"] == pytest.approx(0.6)
