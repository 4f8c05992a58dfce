"""`cnnlab serve`'s app through FastAPI's test client: the same answers as `predict`, refusals as one-line 4xx, several
runs side by side. (tests/test_cli_serve.py runs the real server in a fresh process, and its page in a browser.)"""

import io
import re

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cnnlab.common.errors import CnnlabError
from cnnlab.runs.run import Run
from cnnlab.serving.serve import create_app, run_names
from conftest import answers_of_run, copy_of


def png_bytes(colour=(200, 30, 30), size=(40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def client(trained_run):
    return TestClient(create_app([trained_run], max_upload_bytes=2**20), base_url="http://127.0.0.1")


def test_predict_answers_what_predict_images_answers_for_the_same_file(client, trained_run, tmp_path):
    path = tmp_path / "red.png"
    path.write_bytes(png_bytes())
    (expected,) = answers_of_run(trained_run, [path], k=3)
    response = client.post("/predict", files={"file": ("red.png", path.read_bytes(), "image/png")})
    assert response.status_code == 200, response.text
    (image,) = response.json()["images"]
    assert image["image"] == "red.png"
    answer = image["runs"][trained_run.name]
    assert [guess["class"] for guess in answer] == [guess["class"] for guess in expected["top"]]
    assert [guess["probability"] for guess in answer] == pytest.approx(
        [guess["probability"] for guess in expected["top"]], abs=1e-5)


def test_predict_takes_a_batch_and_a_top_k(client, trained_run):
    files = [("file", (f"{index}.png", png_bytes(colour), "image/png"))
             for index, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)])]
    response = client.post("/predict", files=files, params={"top": 5})
    assert response.status_code == 200, response.text
    images = response.json()["images"]
    assert [image["image"] for image in images] == ["0.png", "1.png", "2.png"]
    assert all(len(image["runs"][trained_run.name]) == 5 for image in images)


@pytest.mark.parametrize("name, content, status, reason", [
    ("notes.txt", b"hello, not an image", 415, "notes.txt: not a readable image (not one of JPEG, PNG, BMP, GIF, "
                                               "WEBP, TIFF)"),
    ("empty.png", b"", 400, "empty.png: empty file"),
    ("cut.png", png_bytes()[:60], 400, "cut.png: damaged or truncated image"),
    ("huge.png", b"0" * (2**20 + 1), 413, "request body over the upload limit of 1 MB"),
])
def test_a_bad_upload_is_a_one_line_4xx_and_the_next_request_is_answered(client, name, content, status, reason):
    refused = client.post("/predict", files={"file": (name, content, "image/png")})
    assert refused.status_code == status
    assert refused.json()["detail"].startswith(reason) and "\n" not in refused.json()["detail"]
    assert client.post("/predict", files={"file": ("ok.png", png_bytes(), "image/png")}).status_code == 200


def test_one_bad_image_refuses_the_whole_batch(client):
    files = [("file", ("good.png", png_bytes(), "image/png")), ("file", ("bad.png", png_bytes()[:60], "image/png"))]
    response = client.post("/predict", files=files)
    assert response.status_code == 400 and response.json()["detail"].startswith("bad.png: ")


@pytest.mark.parametrize("request_kwargs, reason", [
    ({}, "file: Field required (send images in the multipart field 'file')"),
    ({"files": {"file": ("a.png", png_bytes(), "image/png")}, "params": {"top": 0}},
     "top: Input should be greater than or equal to 1"),
])
def test_a_missing_file_or_bad_parameter_is_a_one_line_400(client, request_kwargs, reason):
    response = client.post("/predict", **request_kwargs)
    assert response.status_code == 400 and response.json() == {"detail": reason}


def test_health_names_each_run_and_its_test_accuracy(client, trained_run):
    metrics = Run.open_finished(trained_run).settings().metrics
    assert client.get("/health").json() == {"ok": True, "runs": [{
        "name": trained_run.name, "model": "cnn", "label": "CNN from scratch",
        "test_accuracy": metrics["test_accuracy"], "classes": list(metrics["data"]["classes"])}]}


def test_the_page_shows_every_run_and_loads_nothing_from_elsewhere(client, trained_run):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert f'data-run="{trained_run.name}"' in page.text
    assert "http://" not in page.text and "https://" not in page.text


def test_the_page_shows_no_image_before_one_is_chosen(client):
    # An <img> without a source draws a broken-image icon and its alt text: the preview is hidden until a choice.
    images = re.findall(r"<img\b[^>]*>", client.get("/").text)
    assert images and all(re.search(r'\ssrc="[^"]+"', image) or re.search(r"\shidden\b", image) for image in images)


def test_several_runs_are_served_side_by_side_under_names_that_tell_them_apart(trained_run, tmp_path):
    other = copy_of(trained_run, tmp_path / "copy")
    client = TestClient(create_app([trained_run, other]), base_url="http://127.0.0.1")
    names = [run["name"] for run in client.get("/health").json()["runs"]]
    assert names == [f"{trained_run.parent.name}/{trained_run.name}", f"copy/{trained_run.name}"]
    (image,) = client.post("/predict", files={"file": ("a.png", png_bytes(), "image/png")}).json()["images"]
    assert list(image["runs"]) == names
    assert image["runs"][names[0]] == image["runs"][names[1]]  # the same model twice answers the same


def test_run_names_refuse_the_same_run_twice(trained_run):
    with pytest.raises(CnnlabError, match="given twice"):
        run_names([trained_run, trained_run.parent / ".." / trained_run.parent.name / trained_run.name])


def test_an_unfinished_run_is_refused_before_any_model_loads(trained_run, tmp_path, monkeypatch):
    loaded = []
    monkeypatch.setattr(Run, "load_model", loaded.append)
    with pytest.raises(CnnlabError, match="not a cnnlab run directory"):
        create_app([trained_run, tmp_path])  # the finished run first: its model must not load either
    assert loaded == []


def test_a_request_is_bounded_by_its_decoded_pixels_and_files_not_its_bytes(client):
    """A 1-bit PNG of 8000x8000 is a few KB and 64 M pixels to decode: refused from its header, before decoding;
    so are many images that together hold too many, and more files than a request may carry."""
    from cnnlab.serving.serve import MAX_FILES, MAX_REQUEST_PIXELS

    buffer = io.BytesIO()
    Image.new("1", (8000, 8000)).save(buffer, "PNG", optimize=True)
    assert len(buffer.getvalue()) < 20_000
    one = client.post("/predict", files={"file": ("bomb.png", buffer.getvalue(), "image/png")})
    assert one.status_code == 413 and "64,000,000 pixels, over the 50,000,000" in one.json()["detail"]
    buffer = io.BytesIO()
    Image.new("1", (5000, 5000)).save(buffer, "PNG", optimize=True)  # 25 M pixels each: three are too many
    several = client.post("/predict", files=[("file", (f"{i}.png", buffer.getvalue(), "image/png")) for i in range(3)])
    assert several.status_code == 413
    assert several.json()["detail"] == (f"the request's images hold 75,000,000 pixels, over the "
                                        f"{MAX_REQUEST_PIXELS:,} a request may hold")
    many = client.post("/predict", files=[("file", (f"{i}.png", png_bytes(), "image/png")) for i in range(MAX_FILES + 1)])
    assert many.status_code == 413 and f"over the {MAX_FILES} a request may hold" in many.json()["detail"]
    assert client.get("/health").json()["ok"]


def test_other_hosts_and_other_origins_are_refused_and_the_api_docs_are_closed(client):
    """Any web page the user visits could post to a server on their machine (another origin) or reach it under a
    name of its own (DNS rebinding: another Host); neither is answered. FastAPI's /docs and /openapi.json are off."""
    image = {"file": ("red.png", png_bytes(), "image/png")}
    assert client.post("/predict", files=image, headers={"Origin": "http://127.0.0.1"}).status_code == 200
    other = client.post("/predict", files=image, headers={"Origin": "https://evil.example"})
    assert other.status_code == 403 and other.json()["detail"] == (
        "a post from another origin (https://evil.example) is refused")
    assert client.get("/health", headers={"Host": "evil.example"}).status_code == 400
    assert client.get("/health", headers={"Host": "localhost:8000"}).status_code == 200
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(path).status_code == 404
