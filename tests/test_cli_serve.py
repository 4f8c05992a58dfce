"""`cnnlab serve` as a user runs it: a fresh `python -m cnnlab serve` process on 127.0.0.1, asked over HTTP, its page
opened in headless Chromium; and its one-line refusals."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from cnnlab.cli import main
from conftest import CLASS_NAMES, launch_chromium, run_cnnlab
from test_cli_every_model import KINDS


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def served(*run_dirs, timeout: float = 300):
    """`python -m cnnlab serve RUN_DIRS` on a free port, yielding its base URL once /health answers; stopped after."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", *map(str, run_dirs), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert server.poll() is None, f"the server exited: {server.communicate()[1][-2000:]}"
            assert time.monotonic() < deadline, "the server did not answer /health in time"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()  # SIGTERM: uvicorn shuts down cleanly
        server.wait(timeout=30)


def class_colour_png(path, class_name: str):
    """A picture of one synthetic class: its colour (conftest.batch_payload), at a size the models must resize."""
    colours = np.random.default_rng(42).integers(0, 240, (10, 3)).astype(np.uint8)
    Image.new("RGB", (48, 40), tuple(int(value) for value in colours[CLASS_NAMES.index(class_name)])).save(path)
    return path


def predicted_class(run_dir, image) -> str:
    done = run_cnnlab("predict", run_dir, image, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)[0]["top"][0]["class"]


@pytest.fixture(scope="module")
def kind_runs(tmp_path_factory, synthetic_archive, request):
    """A finished run per model kind, trained on demand: the tiny CNN run every test shares, and the others trained
    here by `python -m cnnlab train`, only for the (slow) tests that ask for them."""
    root = tmp_path_factory.mktemp("serve-kinds")

    def run_of(kind):
        if kind == "cnn":
            return request.getfixturevalue("trained_run")
        if not (root / kind).exists():
            done = run_cnnlab("train", "--data", synthetic_archive, "--epochs", "1", "--train-limit", "500",
                              "--val-size", "200", *KINDS[kind], "--out", root / kind)
            assert done.returncode == 0, done.stderr
        return root / kind

    return run_of


@pytest.mark.parametrize("kind", ["cnn", pytest.param("vgg16", marks=pytest.mark.slow),
                                  pytest.param("fastnet", marks=pytest.mark.slow)])
def test_the_server_answers_what_predict_answers_for_each_model_kind(kind_runs, kind, tmp_path):
    run_dir = kind_runs(kind)
    image = class_colour_png(tmp_path / "ship.png", "ship")
    with served(run_dir) as url:
        health = httpx.get(f"{url}/health").json()
        response = httpx.post(f"{url}/predict", files={"file": ("ship.png", image.read_bytes(), "image/png")},
                              timeout=60)
        refused = httpx.post(f"{url}/predict", files={"file": ("notes.txt", b"no image", "text/plain")})
        again = httpx.post(f"{url}/predict", files={"file": ("ship.png", image.read_bytes(), "image/png")}, timeout=60)
    assert health["ok"] and [run["model"] for run in health["runs"]] == [json.loads(
        (run_dir / "metrics.json").read_text())["model"]]
    assert response.status_code == 200, response.text
    answer = response.json()["images"][0]["runs"][run_dir.name]
    assert answer[0]["class"] == predicted_class(run_dir, image)
    assert refused.status_code == 415 and again.json() == response.json()


def test_the_page_shows_the_label_of_a_dropped_image_in_chromium(trained_run, chromium, tmp_path):
    from playwright.sync_api import sync_playwright

    image = class_colour_png(tmp_path / "ship.png", "ship")
    expected = predicted_class(trained_run, image)
    requests = []
    with served(trained_run) as url, sync_playwright() as playwright:
        browser = launch_chromium(playwright, chromium, tmp_path / "profile", viewport=(1200, 800))
        page = browser.new_page()
        page.on("request", lambda request: requests.append(request.url))
        page.goto(f"{url}/", wait_until="load")
        page.set_input_files("#file", str(image))
        label = f'.run[data-run="{trained_run.name}"] .label'
        page.wait_for_function(f"document.querySelector('{label}').textContent.length > 0", timeout=60_000)
        shown, bars = page.inner_text(label), page.locator(".bars li").count()
        page.screenshot(path=str(tmp_path / "page.png"))
        browser.close()
    assert shown == expected and bars == 3
    assert all(request.startswith((url, "blob:")) for request in requests), requests  # nothing from elsewhere
    with Image.open(tmp_path / "page.png") as screenshot:
        assert screenshot.format == "PNG" and screenshot.size == (1200, 800)
        assert len(np.unique(np.asarray(screenshot.convert("L")))) > 10  # drawn, not a blank page


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
                                       "pip install 'cnnlab[serve]'\n")
