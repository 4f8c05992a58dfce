"""Soak `cnnlab serve` with valid, hostile and slow clients at once, on 127.0.0.1, and check that it holds.

    .venv/bin/python benchmarks/serve_soak.py RUN_DIR                  # a minute, docs/reliability.md's figures
    .venv/bin/python benchmarks/serve_soak.py RUN_DIR --seconds 10     # the test's short soak

The server is `python -m cnnlab serve RUN_DIR --request-timeout T --max-connections C`, started as a user starts it.
For --seconds, all at once:
- valid clients post a 640x480 JPEG, and a request of three 16 M-pixel PNGs (just under the pixel limit: decoded);
- hostile clients post pixel bombs, 40 files, text as an image, a lying Content-Length, bytes that are no HTTP, and
  posts from another origin or for another Host;
- slow clients connect and send nothing, half a header or half a body, and a crowd of idle connections twice the
  connection cap is kept open;
- /health is asked every 0.25 s.
Every request must get an HTTP status (the slow ones a 408 or 503 before their connection closes), /health must answer
each time within 5 s, 200 or, where the flood of connections had it closed for a newer one, 503, and the server's resident memory, sampled from /proc, must settle within --memory-bound MB of
its size before the soak. Prints the requests by kind and status, /health's slowest answer, and idle, peak and
settled memory; exits non-zero if any of these fails. Linux only (/proc).
"""

import argparse
import asyncio
import io
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
from PIL import Image

from cnnlab.backends.machine import cpu_model
from cnnlab.common.cores import usable_cores
from serve_load import ServerFailed, generated_jpeg, served

HEALTH_EVERY, HEALTH_TIMEOUT = 0.25, 5.0
FRESH_CONNECTIONS = httpx.Limits(max_keepalive_connections=0)
SETTLE_SECONDS = 20  # how long memory may take to settle once the clients stop


def png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, "PNG")
    return buffer.getvalue()


def resident_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        kilobytes = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return kilobytes / 1024


class Soak:
    def __init__(self, url: str, pid: int, seconds: float, request_seconds: float, max_connections: int):
        self.url, self.pid, self.request_seconds, self.max_connections = url, pid, request_seconds, max_connections
        self.stop_at = time.monotonic() + seconds
        self.statuses: dict[str, Counter] = {}
        self.health_seconds: list[float] = []
        self.health_failures, self.health_evicted = Counter(), 0
        self.memory: list[float] = []
        self.jpeg = generated_jpeg()
        self.under_limit = [png((4000, 4000))] * 3  # 48 M pixels: decoded, the most one request may make it do
        self.bomb = png((8000, 8000), "1")

    def count(self, kind: str, outcome) -> None:
        self.statuses.setdefault(kind, Counter())[outcome] += 1

    def running(self) -> bool:
        return time.monotonic() < self.stop_at

    async def http_client(self, kind: str, send) -> None:
        # A connection per request: a kept-alive one may be closed as the next request goes out, HTTP/1.1's race,
        # which a client meets by retrying (the e2e tests check that a kept-alive connection is closed quietly)
        async with httpx.AsyncClient(base_url=self.url, timeout=120, limits=FRESH_CONNECTIONS) as http:
            while self.running():
                try:
                    self.count(kind, (await send(http)).status_code)
                except httpx.HTTPError as exc:
                    self.count(kind, f"no status: {type(exc).__name__}")

    async def raw_client(self, kind: str, payload: bytes) -> None:
        """Send `payload` on a connection of its own, keep it open and read the answer's status line; again."""
        while self.running():
            try:
                reader, writer = await asyncio.open_connection(*self.url.removeprefix("http://").split(":"))
                writer.write(payload)
                await writer.drain()
                line = await asyncio.wait_for(reader.readline(), self.request_seconds + 30)
                writer.close()
                self.count(kind, int(line.split()[1]) if line.startswith(b"HTTP/1.1 ") else f"no status: {line[:30]}")
            except (OSError, asyncio.TimeoutError) as exc:
                self.count(kind, f"no status: {type(exc).__name__}")
            await asyncio.sleep(0.1)

    async def health(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=HEALTH_TIMEOUT, limits=FRESH_CONNECTIONS) as http:
            while self.running():
                start = time.monotonic()
                try:
                    status = (await http.get("/health")).status_code
                    if status == 503:
                        self.health_evicted += 1  # the connection cap at work: refused with a status, in time
                    elif status != 200:
                        self.health_failures[f"HTTP {status}"] += 1
                except httpx.HTTPError as exc:
                    self.health_failures[type(exc).__name__] += 1
                self.health_seconds.append(time.monotonic() - start)
                await asyncio.sleep(HEALTH_EVERY)

    async def sample_memory(self) -> None:
        while self.running():
            self.memory.append(resident_mb(self.pid))
            await asyncio.sleep(0.2)

    def clients(self) -> list:
        def post(*files, **kwargs):
            return lambda http: http.post("/predict", files=[("file", file) for file in files], **kwargs)

        host = self.url.removeprefix("http://")
        body = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n"
        valid = [("valid photo", post(("photo.jpg", self.jpeg, "image/jpeg"))),
                 ("valid 48 M pixels", post(*[(f"{index}.png", image, "image/png")
                                              for index, image in enumerate(self.under_limit)]))]
        hostile = [("pixel bomb", post(("bomb.png", self.bomb, "image/png"))),
                   ("40 files", post(*[("photo.jpg", self.jpeg, "image/jpeg")] * 40)),
                   ("text as an image", post(("notes.png", b"no image at all", "image/png"))),
                   ("another origin", post(("photo.jpg", self.jpeg, "image/jpeg"),
                                           headers={"origin": "http://evil.example"})),
                   ("another Host", lambda http: http.get("/health", headers={"host": "evil.example"}))]
        form = f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        raw = [("no HTTP at all", b"\x16\x03\x01 hello, no HTTP\r\n\r\n"),
               ("lying Content-Length", f"{form}Content-Length: {10**12}\r\n\r\n".encode() + body),
               ("sends nothing", b""),
               ("half a header", f"GET /health HTTP/1.1\r\nHost: {host}\r\n".encode()),
               ("half a body", f"{form}Content-Length: 100000\r\n\r\n".encode() + body)]
        raw += [("idle crowd", b"")] * (2 * self.max_connections)
        return ([self.http_client(kind, send) for kind, send in valid * 2 + hostile]
                + [self.raw_client(kind, payload) for kind, payload in raw] + [self.health(), self.sample_memory()])


async def soak(soak_: Soak) -> None:
    await asyncio.gather(*soak_.clients())


def settled_memory(pid: int, idle: float, bound: float) -> float:
    """Resident memory once it is within `bound` of `idle`, or after SETTLE_SECONDS, whichever comes first."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while (memory := resident_mb(pid)) > idle + bound and time.monotonic() < deadline:
        time.sleep(0.5)
    return memory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    parser.add_argument("--seconds", type=float, default=60, help="how long the clients run (default: 60)")
    parser.add_argument("--request-timeout", type=float, default=5, help="the server's (default: 5)")
    parser.add_argument("--max-connections", type=int, default=32, help="the server's (default: 32)")
    parser.add_argument("--memory-bound", type=float, default=150,
                        help="MB above its idle size within which the server's memory must settle (default: 150)")
    args = parser.parse_args()
    options = ("--request-timeout", args.request_timeout, "--max-connections", args.max_connections)
    try:
        with served(args.run_dir, options=options) as server:
            warm = httpx.post(f"{server.url}/predict", files={"file": ("a.jpg", generated_jpeg(), "image/jpeg")},
                              timeout=60)
            assert warm.status_code == 200, warm.text
            idle = resident_mb(server.pid)
            run = Soak(server.url, server.pid, args.seconds, args.request_timeout, args.max_connections)
            asyncio.run(soak(run))
            settled = settled_memory(server.pid, idle, args.memory_bound)
            said = server.said()
    except ServerFailed as exc:
        sys.exit(f"serve_soak: {exc}")
    print(f"{cpu_model()}, {usable_cores()} cores; {args.seconds:g} s, --request-timeout {args.request_timeout:g} "
          f"--max-connections {args.max_connections}, run {args.run_dir}")
    unanswered = 0
    for kind, outcomes in run.statuses.items():
        print(f"  {kind}: " + ", ".join(f"{count} x {outcome}" for outcome, count in sorted(outcomes.items(), key=str)))
        unanswered += sum(count for outcome, count in outcomes.items() if isinstance(outcome, str))
    requests = sum(sum(outcomes.values()) for outcomes in run.statuses.values())
    print(f"requests: {requests}, without a status: {unanswered}")
    print(f"/health: {len(run.health_seconds)} asked, failed {sum(run.health_failures.values())} "
          f"{dict(run.health_failures)}, 503 for too many connections {run.health_evicted}, slowest "
          f"{max(run.health_seconds):.2f} s")
    print(f"memory: idle {idle:.0f} MB, peak {max(run.memory):.0f} MB, settled {settled:.0f} MB "
          f"({settled - idle:+.0f} MB; bound {args.memory_bound:g})")
    print(f"server's stderr: {len(said.splitlines())} lines")
    for line in said.splitlines()[:20]:
        print(f"  {line}")
    return 1 if unanswered or run.health_failures or settled > idle + args.memory_bound else 0


if __name__ == "__main__":
    sys.exit(main())
