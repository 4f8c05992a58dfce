"""`cnnlab serve`: a page that classifies the images dropped on it, and its JSON API, over one or more finished runs.

    cnnlab serve RUN [RUN ...] [--host 127.0.0.1] [--port 8000] [--top 3] [--max-upload-mb 8]

Endpoints:
    GET  /          the page: drop or pick an image, see it and each run's top classes as bars, runs side by side
    POST /predict   images in the multipart field `file` (one or several), ?top=K: for each image, each run's top-k
                    classes with their probabilities
    GET  /health    {"ok": true, "runs": [{"name", "model", "label", "test_accuracy", "classes"}, ...]}

Uploads are decoded by the loader `predict` uses (cnnlab.data.images), brought to each model's size by its run's resize
mode and scored with its run's test-time augmentation, so the page answers what `cnnlab predict` answers. Every
refusal is an HTTP 4xx with {"detail": "<one line>"}: a missing file or bad parameter (400), an empty or damaged
image (400), a Host header that names no host this server answers for (400), a post from a page of another origin
(403), a request without a length (411), a request body over the upload limit, more than MAX_FILES images, an image
over the pixel limit or images over MAX_REQUEST_PIXELS together (413), a file that is no image of an allowed format
(415). At most DECODING_AT_ONCE requests decode images at a time, so memory stays bounded under any load.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import jinja2
import numpy as np
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.middleware.trustedhost import TrustedHostMiddleware

from cnnlab.common.errors import CnnlabError, one_line
from cnnlab.data.images import ImageTooLarge, NotAnImage, load_image_bytes, pixel_count
from cnnlab.runs.run import Run, RunSettings
from cnnlab.serving.predict import classify

DEFAULT_MAX_UPLOAD_BYTES = 8 * 2**20  # a large phone photo; the model sees it at 32 to 224 px anyway
DEFAULT_TOP = 3
# What one request may make the server do. Bytes do not bound it: a 6 KB 1-bit PNG of 7000x7000 decodes to 147 MB of
# RGB (about 290 MB with Pillow's working copies, 0.4 s), and a request could carry a thousand files.
MAX_FILES = 32
MAX_REQUEST_PIXELS = 50_000_000  # over all of a request's images: one at the per-image limit, or many small ones
DECODING_AT_ONCE = 2  # requests decoding at the same time; others wait: memory stays within two requests' worth
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass(frozen=True)
class ServedRun:
    name: str
    model: object
    settings: RunSettings
    lock: threading.Lock  # requests are answered on a thread pool, and a Keras model predicts for one at a time

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.model.input_shape[1:3])

    def top_classes(self, images: list[np.ndarray], k: int) -> list[list[dict[str, object]]]:
        with self.lock:
            return classify(self.model, images, self.settings.class_names, min(k, len(self.settings.class_names)),
                            self.settings.augmentation)

    def summary(self) -> dict[str, object]:
        metrics = self.settings.metrics
        return {"name": self.name, "model": metrics.get("model"), "label": metrics.get("label"),
                "test_accuracy": metrics["test_accuracy"], "classes": list(self.settings.class_names)}


def run_names(run_dirs: list[Path]) -> list[str]:
    """Each run's folder name, or as many of its path's last parts as tell it apart from the others (a comparison's
    runs are all called cnn/ and vgg16/); the same run given twice is refused."""
    paths = [Path(run_dir).resolve() for run_dir in run_dirs]
    if len(set(paths)) < len(paths):
        twice = next(run_dir for run_dir, path in zip(run_dirs, paths) if paths.count(path) > 1)
        raise CnnlabError(f"{twice} is given twice; serve each run once")
    depth = 1
    while len({path.parts[-depth:] for path in paths}) < len(paths):
        depth += 1  # ends: distinct paths differ somewhere
    return ["/".join(path.parts[-depth:]) for path in paths]


def check_runs(run_dirs: list[Path]) -> list[tuple[Run, RunSettings]]:
    """Every run with its settings, each checked to be a finished run with readable settings, and their names
    checked: before any model loads."""
    run_names(run_dirs)
    runs = [Run.open_finished(run_dir) for run_dir in run_dirs]
    return [(run, run.settings()) for run in runs]


def load_runs(run_dirs: list[Path]) -> list[ServedRun]:
    runs = [ServedRun(name, run.load_model(settings.class_names), settings, threading.Lock())
            for name, (run, settings) in zip(run_names(run_dirs), check_runs(run_dirs))]
    for run in runs:  # Keras builds its predict function on the first call: at start, not in a user's request
        run.top_classes([np.zeros((*run.input_size, 3), dtype=np.uint8)], 1)
    return runs


def create_app(run_dirs: list[Path], max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
               top: int = DEFAULT_TOP, allowed_hosts: tuple[str, ...] = LOCAL_HOSTS) -> FastAPI:
    """The app serving `run_dirs`, each run's model loaded once, here. Requests naming another host than
    `allowed_hosts` in their Host header are refused (a web page's DNS rebinding), and so are posts from a page of
    another origin (any site the user visits could otherwise post to this one)."""
    runs = load_runs(run_dirs)
    # No /docs, /redoc or /openapi.json: the page and /health say what the server does
    app = FastAPI(title="cnnlab serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    page = _render_page(runs, top, max_upload_bytes)
    decoding = threading.BoundedSemaphore(DECODING_AT_ONCE)

    @app.middleware("http")
    async def same_origin_posts_only(request: Request, call_next):
        origin = request.headers.get("origin")
        if request.method == "POST" and origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
            return _refusal(403, f"a post from another origin ({one_line(origin)[:100]}) is refused")
        return await call_next(request)

    @app.middleware("http")
    async def limit_request_body(request: Request, call_next):
        # Checked on the declared length, before the body is read; the server reads no more than it declares.
        length = request.headers.get("content-length")
        if request.method == "POST" and length is None:
            return _refusal(411, "send the request's Content-Length")
        if length is not None and (not length.isdigit() or int(length) > max_upload_bytes):
            return _refusal(413, f"request body over the upload limit of {max_upload_bytes / 2**20:g} MB")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def one_line_validation_error(request: Request, exc: RequestValidationError):
        error = exc.errors()[0]
        where = str(error["loc"][-1]) if error.get("loc") else "request"
        hint = " (send images in the multipart field 'file')" if where == "file" else ""
        return _refusal(400, f"{where}: {error['msg']}{hint}")

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/health")
    def health() -> dict[str, object]:
        return {"ok": True, "runs": [run.summary() for run in runs]}

    @app.post("/predict")
    def predict(file: list[UploadFile] = File(description="one or more images"),
                top: int = Query(top, ge=1, description="classes per image and run")) -> dict[str, object]:
        if len(file) > MAX_FILES:
            raise HTTPException(413, f"{len(file)} files in one request, over the {MAX_FILES} a request may hold")
        names = [one_line(upload.filename or f"file {index + 1}") for index, upload in enumerate(file)]
        contents = [upload.file.read() for upload in file]
        pixels = sum(_checked_upload(pixel_count, content, name) for content, name in zip(contents, names))
        if pixels > MAX_REQUEST_PIXELS:
            raise HTTPException(413, f"the request's images hold {pixels:,} pixels, over the {MAX_REQUEST_PIXELS:,} "
                                     "a request may hold")
        with decoding:
            try:
                images = _decode_for_each_run(contents, names, runs)
            finally:  # the full-size decodes are freed by now, the images at the models' sizes are small
                give_freed_memory_back()
        answers = {run.name: run.top_classes(images[run.name], top) for run in runs}
        return {"images": [{"image": name, "runs": {run.name: answers[run.name][index] for run in runs}}
                           for index, name in enumerate(names)]}

    return app


def give_freed_memory_back() -> None:
    """Hand the memory freed by a request's decoded images back to the system. glibc keeps freed heap memory for
    later use: after bursts of large images the server stayed 334 MB above its idle size 20 s later (measured,
    benchmarks/serve_soak.py). Without glibc (macOS, Windows, musl) there is no such call, and nothing is done."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _glibc():
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "malloc_trim") else None
    except (OSError, TypeError):  # Windows takes no None for "this process"
        return None


_LIBC = _glibc()


def _decode_for_each_run(contents: list[bytes], names: list[str], runs: list[ServedRun]) -> dict[str, list]:
    """Each upload at each run's input size and resize mode, decoded once per distinct pair; a bad upload refuses
    the whole request before any model runs, as `predict` refuses a bad file."""
    decoded = {}
    for run in runs:
        key = (run.input_size, run.settings.resize)
        if key not in decoded:
            decoded[key] = [_decode_upload(content, name, *key) for content, name in zip(contents, names)]
    return {run.name: decoded[(run.input_size, run.settings.resize)] for run in runs}


def _decode_upload(content: bytes, name: str, size: tuple[int, int], resize: str) -> np.ndarray:
    return _checked_upload(load_image_bytes, content, name, size, resize)


def _checked_upload(read, content: bytes, name: str, *args):
    """`read(content, name, *args)`, its refusals as HTTP statuses: empty or damaged 400, too large 413, no image 415."""
    try:
        return read(content, name, *args)
    except NotAnImage as exc:
        status = 400 if not content else 415
        raise HTTPException(status, one_line(exc)) from None
    except ImageTooLarge as exc:
        raise HTTPException(413, one_line(exc)) from None
    except CnnlabError as exc:  # damaged or truncated
        raise HTTPException(400, one_line(exc)) from None


def _refusal(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"detail": reason}, status_code=status)


def _render_page(runs: list[ServedRun], top: int, max_upload_bytes: int) -> str:
    environment = jinja2.Environment(loader=jinja2.PackageLoader(__package__, "templates"), autoescape=True,
                                     undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return environment.get_template("serve.html.j2").render(
        runs=[run.summary() for run in runs], top=top, max_upload_mb=f"{max_upload_bytes / 2**20:g}")
