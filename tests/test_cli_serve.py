"""`cnnlab serve` as a user runs it: a fresh `python -m cnnlab serve` process on 127.0.0.1, asked over HTTP, its page
opened in headless Chromium; and its one-line refusals."""

import json
import socket
import sys

import httpx
import numpy as np
import pytest
from PIL import Image

from cnnlab.cli import main
from conftest import CLASS_NAMES, DEFAULT_TIER_KINDS, TINY_KINDS, answers_of_run, launch_chromium, run_cnnlab, served


def class_colour_png(path, class_name: str):
    """A picture of one synthetic class: its colour (conftest.batch_payload), at a size the models must resize."""
    colours = np.random.default_rng(42).integers(0, 240, (10, 3)).astype(np.uint8)
    Image.new("RGB", (48, 40), tuple(int(value) for value in colours[CLASS_NAMES.index(class_name)])).save(path)
    return path


def predicted_class(run_dir, image) -> str:
    """The class `cnnlab predict` names first for `image`."""
    return answers_of_run(run_dir, [image])[0]["top"][0]["class"]


@pytest.mark.parametrize("kinds", [DEFAULT_TIER_KINDS, pytest.param(tuple(TINY_KINDS), marks=pytest.mark.slow)],
                         ids=["default-tier-kinds", "every-kind"])
def test_one_server_answers_what_predict_answers_for_every_model_kind(kind_runs, kinds, tmp_path):
    run_dirs = [kind_runs[kind] for kind in kinds]
    image = class_colour_png(tmp_path / "ship.png", "ship")
    with served(*run_dirs) as server:
        url = server.url
        health = httpx.get(f"{url}/health").json()
        response = httpx.post(f"{url}/predict", files={"file": ("ship.png", image.read_bytes(), "image/png")},
                              timeout=60)
        refused = httpx.post(f"{url}/predict", files={"file": ("notes.txt", b"no image", "text/plain")})
        again = httpx.post(f"{url}/predict", files={"file": ("ship.png", image.read_bytes(), "image/png")}, timeout=60)
    assert health["ok"] and [run["model"] for run in health["runs"]] == [
        json.loads((run_dir / "metrics.json").read_text())["model"] for run_dir in run_dirs]
    assert response.status_code == 200, response.text
    answers = response.json()["images"][0]["runs"]
    assert {name: answer[0]["class"] for name, answer in answers.items()} == {
        run_dir.name: predicted_class(run_dir, image) for run_dir in run_dirs}
    assert refused.status_code == 415 and again.json() == response.json()


def a_test_image_the_run_gets_right(run_dir, path) -> str:
    """One of the run's own test images (its data, its test split) that the run classifies as its true label, written
    to `path` as a PNG: the surest of those it got right when it was tested. Returns the true label's class name."""
    from cnnlab.config import config_from_dict
    from cnnlab.data import load_dataset
    from cnnlab.runs import rundir

    config = config_from_dict(rundir.read_json(run_dir / rundir.CONFIG))
    data = load_dataset(config.data, config.train.seed)
    with np.load(run_dir / rundir.TEST_PREDICTIONS) as recorded:
        assert np.array_equal(recorded["labels"], data.y_test)  # the run's test split, in the run's order
        probabilities = recorded["probabilities"].astype(np.float32)
    right = np.flatnonzero(probabilities.argmax(axis=1) == data.y_test)
    assert right.size, "the run got no test image right"
    best = right[probabilities[right, data.y_test[right]].argmax()]
    Image.fromarray(np.asarray(data.x_test[best])).save(path)
    return data.class_names[data.y_test[best]]


def test_the_page_shows_the_true_label_of_a_real_test_image_in_chromium(trained_run, chromium, tmp_path):
    from playwright.sync_api import sync_playwright

    image = tmp_path / "test-image.png"
    truth = a_test_image_the_run_gets_right(trained_run, image)
    assert predicted_class(trained_run, image) == truth  # the image the run was tested on, and predict gets it right
    requests = []
    with served(trained_run) as server, sync_playwright() as playwright:
        url = server.url
        browser = launch_chromium(playwright, chromium, tmp_path / "profile", viewport=(1200, 800))
        page = browser.new_page()
        page.on("request", lambda request: requests.append(request.url))
        page.goto(f"{url}/", wait_until="load")
        # Before a choice: an empty box where the image will go, no broken-image icon
        preview_before, box = page.locator("#preview").is_visible(), page.locator("figure").bounding_box()
        page.set_input_files("#file", str(image))
        label = f'.run[data-run="{trained_run.name}"] .label'
        page.wait_for_function(f"document.querySelector('{label}').textContent.length > 0", timeout=60_000)
        page.wait_for_function("document.getElementById('preview').naturalWidth > 0")
        shown, bars = page.inner_text(label), page.locator(".bars li").count()
        preview_after = page.locator("#preview").is_visible()
        page.screenshot(path=str(tmp_path / "page.png"))
        browser.close()
    assert shown == truth and bars == 3
    assert not preview_before and box["width"] >= 240 and box["height"] >= 240 and preview_after
    assert all(request.startswith((url, "blob:")) for request in requests), requests  # nothing from elsewhere
    with Image.open(tmp_path / "page.png") as screenshot:
        assert screenshot.format == "PNG" and screenshot.size == (1200, 800)
        assert len(np.unique(np.asarray(screenshot.convert("L")))) > 10  # drawn, not a blank page


def status_line(connection: socket.socket) -> bytes:
    """The status line of the answer the server sends next on `connection`, read whole; b"" where it closes the
    connection without a word."""
    connection.settimeout(30)
    reader = connection.makefile("rb")
    status = reader.readline().rstrip()
    if not status:
        return status
    headers = iter(reader.readline, b"\r\n")
    length = next((int(line.split(b":")[1]) for line in headers if line.lower().startswith(b"content-length")), 0)
    list(headers)
    reader.read(length)
    return status


def test_slow_and_idle_clients_are_timed_out_or_evicted_and_health_still_answers(trained_run):
    """uvicorn alone kept connections that send nothing, half a header or half a body open for ever: 300 of them took
    every file descriptor. Here each waits --request-timeout at most (408), past --max-connections the one that
    waited longest is closed (503, or quietly for a kept-alive one with nothing sent since its answer), and a
    condition is logged once, not per event."""
    with served(trained_run, options=("--request-timeout", "3", "--max-connections", "4")) as server:
        address = ("127.0.0.1", int(server.url.rsplit(":", 1)[1]))
        kept_alive = socket.create_connection(address)
        kept_alive.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert status_line(kept_alive) == b"HTTP/1.1 200 OK"
        half_header = socket.create_connection(address)
        half_header.sendall(b"GET /health HTTP/1.1\r\nHost: 12")
        idle = [socket.create_connection(address) for _ in range(3)]  # five open: over the cap of four
        assert status_line(kept_alive) == b""  # the longest waiting, closed without a word
        crowd = [socket.create_connection(address) for _ in range(8)]
        health = httpx.get(f"{server.url}/health", timeout=10)  # a new client: it gets an answer, not the crowd
        evicted = [status_line(connection) for connection in [half_header, *idle]]
        last = status_line(crowd[-1])  # the newest of the crowd: no newer one evicted it, the deadline closed it
        for _ in range(50):
            with socket.create_connection(address) as garbage:
                garbage.sendall(b"\x16\x03\x01 no HTTP\r\n\r\n")
                assert status_line(garbage) == b"HTTP/1.1 400 Bad Request"
        said = server.said()
    assert health.status_code == 200 and health.json()["ok"]
    assert evicted == [b"HTTP/1.1 503 Service Unavailable"] * 4
    assert last == b"HTTP/1.1 408 Request Timeout"
    assert said.count("Invalid HTTP request received") == 1 and "Traceback" not in said


@pytest.mark.parametrize("option, value, message", [
    ("--port", "70000", "--port must be 0 to 65535, not 70000"),
    ("--port", "-1", "--port must be 0 to 65535, not -1"),
    ("--max-upload-mb", "inf", "--max-upload-mb must be a finite number above 0, not inf"),
    ("--max-upload-mb", "nan", "--max-upload-mb must be a finite number above 0, not nan"),
    ("--max-upload-mb", "1e308", "--max-upload-mb must be a finite number above 0, not 1e+308"),
    ("--max-upload-mb", "0", "--max-upload-mb must be a finite number above 0, not 0"),
    ("--request-timeout", "0", "--request-timeout must be a finite number above 0, not 0"),
    ("--request-timeout", "inf", "--request-timeout must be a finite number above 0, not inf"),
    ("--max-connections", "0", "--max-connections must be positive, not 0"),
])
def test_serve_refuses_an_out_of_range_port_or_upload_limit_in_one_line(option, value, message, tmp_path):
    done = run_cnnlab("serve", tmp_path, f"{option}={value}", timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr == f"cnnlab: error: {message}\n"


def test_serve_refuses_an_unfinished_run_in_one_line(tmp_path, capsys):
    assert main(["serve", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"cnnlab: error: {tmp_path} is not a cnnlab run directory (no status.json or " \
                                      "config.json)\n"


def test_serve_refuses_a_port_in_use_in_one_line(trained_run, capsys):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["serve", str(trained_run), "--port", str(port)]) == 1
    assert capsys.readouterr().err == f"cnnlab: error: cannot listen on 127.0.0.1:{port}: Address already in use\n"


def test_serve_without_the_serve_extra_says_which_to_install(trained_run, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if not installed: importlib finds no such module
    assert main(["serve", str(trained_run)]) == 1
    assert capsys.readouterr().err == ("cnnlab: error: cnnlab serve needs the serve extra: "
                                       "pip install -e '.[serve]' in cnnlab's folder\n")
