"""Load on `cnnlab serve`: N clients at once POST an image to /predict for S seconds, all on 127.0.0.1.

    .venv/bin/python benchmarks/serve_load.py RUN_DIR                            # 16 clients for 20 s
    .venv/bin/python benchmarks/serve_load.py RUN_DIR --clients 2 --seconds 2    # a smoke test
    .venv/bin/python benchmarks/serve_load.py RUN_DIR --image photo.jpg

The server is `python -m cnnlab serve RUN_DIR` in its own process, started as a user starts it. The clients share one
asyncio loop here (httpx), so that they take little of the CPU the server needs; each sends its next request as soon
as its last is answered. The image is a generated 640x480 JPEG (a photo's size and cost to decode) unless --image
names one. Prints requests/s, p50 and p99 latency and the errors (a failed request or any answer but 200); exits
non-zero on any error.
"""

import argparse
import asyncio
import contextlib
import dataclasses
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
import typing
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from cnnlab.backends.machine import cpu_model
from cnnlab.common.cores import usable_cores

START_SECONDS = 300  # loading a model and TensorFlow takes a while on a busy machine


def generated_jpeg() -> bytes:
    grid = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(grid).resize((640, 480), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def free_port() -> int:
    """A port of 127.0.0.1 free a moment ago (the tests use this one too)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerFailed(RuntimeError):
    """The server exited, or did not answer /health in time; the message ends with what it wrote to stderr."""


@dataclasses.dataclass(frozen=True)
class Served:
    url: str  # http://127.0.0.1:PORT
    pid: int
    stderr: typing.IO[str]  # what the server has written to stderr so far: Served.said()

    def said(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()


@contextlib.contextmanager
def served(*run_dirs: Path, options: tuple = (), timeout: float = START_SECONDS):
    """`python -m cnnlab serve RUN_DIRS OPTIONS` on a free port of 127.0.0.1, as a user starts it, yielding a Served
    once /health answers; stopped after (SIGTERM: uvicorn shuts down cleanly). tests/conftest.py hands it to the
    tests."""
    port = free_port()
    with tempfile.TemporaryFile("w+") as stderr:  # a file, not a pipe: a server that writes much never blocks
        process = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", *map(str, run_dirs), "--port", str(port),
                                    *map(str, options)],
                                   stdout=subprocess.DEVNULL, stderr=stderr, text=True,
                                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        url = f"http://127.0.0.1:{port}"

        def failed(why: str) -> ServerFailed:
            stderr.seek(0)
            return ServerFailed(f"{why}; its stderr ends: {stderr.read()[-2000:]}")

        try:
            deadline = time.monotonic() + timeout
            while not _healthy(url):
                if process.poll() is not None:
                    raise failed(f"the server exited with {process.returncode}")
                if time.monotonic() > deadline:
                    raise failed(f"the server did not answer /health within {timeout:g} s")
                time.sleep(0.5)
            yield Served(url, process.pid, stderr)
        finally:
            process.terminate()
            process.wait(timeout=30)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


async def one_client(http: httpx.AsyncClient, url: str, image: bytes, stop_at: float, latencies: list,
                     errors: Counter) -> None:
    while time.perf_counter() < stop_at:
        start = time.perf_counter()
        try:
            response = await http.post(f"{url}/predict", files={"file": ("load.jpg", image, "image/jpeg")})
        except httpx.HTTPError as exc:
            errors[type(exc).__name__] += 1
            continue
        if response.status_code == 200:
            latencies.append(time.perf_counter() - start)
        else:
            errors[f"HTTP {response.status_code}: {response.text[:200]}"] += 1


async def load(url: str, image: bytes, clients: int, seconds: float) -> tuple[list, Counter, float]:
    latencies, errors = [], Counter()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(one_client(http, url, image, start + seconds, latencies, errors)
                               for _ in range(clients)))
        return latencies, errors, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default: 16)")
    parser.add_argument("--seconds", type=float, default=20, help="how long they send (default: 20)")
    parser.add_argument("--image", type=Path, help="the image to send (default: a generated 640x480 JPEG)")
    args = parser.parse_args()
    image = args.image.read_bytes() if args.image else generated_jpeg()
    try:
        with served(args.run_dir) as server:
            url = server.url
            httpx.post(f"{url}/predict", files={"file": ("warm.jpg", image, "image/jpeg")}, timeout=60)  # not timed
            latencies, errors, elapsed = asyncio.run(load(url, image, args.clients, args.seconds))
    except ServerFailed as exc:
        sys.exit(f"serve_load: {exc}")
    milliseconds = np.array(latencies) * 1000
    print(f"{cpu_model()}, {usable_cores()} cores; {args.clients} clients for {args.seconds:g} s, "
          f"{len(image):,}-byte image, run {args.run_dir}")
    if len(latencies):
        print(f"{len(latencies)} requests answered: {len(latencies) / elapsed:.1f} requests/s, "
              f"latency p50 {np.percentile(milliseconds, 50):.0f} ms, p99 {np.percentile(milliseconds, 99):.0f} ms")
    print(f"errors: {sum(errors.values())}")
    for reason, count in errors.most_common(5):
        print(f"  {count} x {reason}")
    return 1 if errors or not latencies else 0


if __name__ == "__main__":
    sys.exit(main())
