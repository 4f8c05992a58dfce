import numpy as np
import pytest
from PIL import Image

from cnnlab.runs.run import load_run_model
from cnnlab.serving.predict import predict_images, top_k
from conftest import CLASS_NAMES, run_cnnlab


def test_top_k_orders_by_probability():
    result = top_k(np.array([0.1, 0.6, 0.05, 0.25]), ("a", "b", "c", "d"), k=3)
    assert [guess["class"] for guess in result] == ["b", "d", "a"]
    assert result[0]["probability"] == pytest.approx(0.6)


def test_predict_images_answers_for_any_size_and_mode(trained_run, tmp_path):
    paths = [tmp_path / "big.jpg", tmp_path / "clear.png"]
    Image.new("RGB", (300, 200), (200, 30, 30)).save(paths[0])
    Image.new("RGBA", (7, 50), (0, 0, 0, 0)).save(paths[1])
    classes = tuple(f"class{i}" for i in range(10))
    results = predict_images(load_run_model(trained_run), paths, classes, k=2)
    assert [result["image"] for result in results] == [str(path) for path in paths]
    for result in results:
        assert len(result["top"]) == 2 and {guess["class"] for guess in result["top"]} <= set(classes)
        assert sum(guess["probability"] for guess in result["top"]) <= 1 + 1e-6


@pytest.mark.parametrize("name", ["picture.eps", "picture.ppm"])
def test_cli_refuses_formats_outside_the_allow_list_in_one_line(trained_run, tmp_path, name):
    good, bad = tmp_path / "good.png", tmp_path / name
    Image.new("RGB", (32, 32), (10, 200, 10)).save(good)
    Image.new("RGB", (32, 32), (10, 200, 10)).save(bad)
    result = run_cnnlab("predict", trained_run, good, bad)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [f"cnnlab: error: {bad}: not a readable image "
                                          "(not one of JPEG, PNG, BMP, GIF, WEBP, TIFF)"]


def test_predict_images_brings_images_to_size_by_the_given_resize_mode(trained_run, tmp_path):
    # The tiny run's classes are colours (conftest.batch_payload). A wide picture: bird's colour in the centre square,
    # horse's on both sides (two thirds of it). Cropping the centre sees only the bird; stretching sees mostly horse.
    colours = np.random.default_rng(42).integers(0, 240, (10, 3)).astype(np.uint8)
    wide = np.empty((32, 96, 3), dtype=np.uint8)
    wide[:] = colours[CLASS_NAMES.index("horse")]
    wide[:, 32:64] = colours[CLASS_NAMES.index("bird")]
    Image.fromarray(wide).save(tmp_path / "wide.png")
    model = load_run_model(trained_run)
    answers = {mode: predict_images(model, [tmp_path / "wide.png"], tuple(CLASS_NAMES), k=1, resize=mode)[0]
               for mode in ("crop", "stretch")}
    assert answers["crop"]["top"][0]["class"] == "bird"
    assert answers["stretch"]["top"][0]["class"] == "horse"
