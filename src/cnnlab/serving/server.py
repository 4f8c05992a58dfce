"""The HTTP server under `cnnlab serve`: uvicorn, with the limits on clients that it lacks.

uvicorn closes an idle keep-alive connection after a few seconds, but a client that connects and sends nothing, or
half a header, or half a body, holds its connection and its file descriptor for as long as it likes; 300 such clients
against a 256-descriptor limit left no descriptor for /health, and uvicorn and asyncio wrote a traceback per refused
accept (48,905 of them in seconds). Here:
- a request must arrive whole within `request_seconds` of its connection, or of the answer before it on a kept-alive
  connection: later, the client gets 408 and the connection is closed;
- at most `max_connections` are open, below the process's open-file limit: one more evicts the connection that has
  waited longest for its request (503; those without a whole header first, then slow uploads), so a crowd of slow
  clients cannot keep a new one, /health too, from an answer;
- uvicorn's and asyncio's warnings are logged one line per condition, with a count, never a traceback per event.
uvicorn has no option for any of these: they are made on its HTTP/1.1 protocol class, which its Config accepts.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from cnnlab.common.errors import CnnlabError

DEFAULT_REQUEST_SECONDS = 30.0  # an 8 MB upload needs 2.2 Mbit/s: a slow phone link
DEFAULT_MAX_CONNECTIONS = 64
KEEP_ALIVE_SECONDS = 5  # how long an answered connection may stay idle (uvicorn's own timer)
SPARE_FILE_DESCRIPTORS = 64  # for the models' files, the uploads spooled to disk, the logs
LOG_PERIOD_SECONDS = 60.0
LINGER_SECONDS = 2.0  # how long a refused client may take to read its answer before its connection is dropped


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on host:port, or a one-line error: bound before the models load, so that a port in use
    costs nothing."""
    listener = socket.socket()
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a restart gets the port
        listener.bind((host, port))
        listener.listen()
    except OSError as exc:
        listener.close()
        raise CnnlabError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return listener


def serve_forever(app, listener: socket.socket, request_seconds: float = DEFAULT_REQUEST_SECONDS,
                  max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
    """Answer `app` on `listener` until Ctrl-C or SIGTERM."""
    connections = connection_limit(max_connections)
    if connections < max_connections:
        print(f"serving at most {connections} connections at a time: the open-file limit (ulimit -n) allows no "
              "more", flush=True)
    protocol = type("GuardedH11Protocol", (GuardedH11Protocol,),
                    {"request_seconds": request_seconds, "max_connections": connections})
    config = uvicorn.Config(app, http=protocol, log_level="warning", timeout_keep_alive=KEEP_ALIVE_SECONDS)
    log_once_per_condition(logging.getLogger("uvicorn.error"), logging.getLogger("asyncio"))
    uvicorn.Server(config).run(sockets=[listener])


def connection_limit(wanted: int) -> int:
    """`wanted`, or as many connections as the open-file limit leaves descriptors for, raising the soft limit
    towards the hard one first, as servers do (many systems start processes at 256 or 1,024)."""
    try:
        import resource
    except ImportError:  # Windows: no such limit to query
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = _open_file_descriptors() + SPARE_FILE_DESCRIPTORS + wanted
    if soft != resource.RLIM_INFINITY and soft < needed:
        raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - _open_file_descriptors() - SPARE_FILE_DESCRIPTORS))


def _open_file_descriptors() -> int:
    for listing in ("/proc/self/fd", "/dev/fd"):
        if os.path.isdir(listing):
            return len(os.listdir(listing))
    return 0


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 connection with a deadline for each request and a cap on open connections (module
    docstring); `serve_forever` sets the two class attributes."""

    request_seconds: float
    max_connections: int

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._deadline, self._linger, self.answered = None, None, 0
        self._await_request()
        if len(self.connections) > self.max_connections:
            # Not at once: asyncio accepts a burst of connections before it reads any of them. A moment later the
            # requests that came with them are read, and a client with its request sent is not taken for a silent one.
            self.loop.call_later(0.01, self._enforce_cap)

    def connection_lost(self, exc) -> None:
        for timer in (self._deadline, self._linger):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._linger is None:  # a refused client's remaining upload is read and dropped
            self.received = True
            super().data_received(data)

    def eof_received(self) -> None:
        if self._linger is not None:
            self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.answered += 1
        if not self.transport.is_closing():
            self._await_request()  # the next request on this kept-alive connection

    def waiting(self) -> bool:
        """Whether this connection waits for (the rest of) a request: none of it is being answered yet."""
        answering = self.cycle is not None and self.cycle.response_started and not self.cycle.response_complete
        return self._linger is None and self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not (
            self.transport.is_closing() or answering)

    def _enforce_cap(self) -> None:
        """Close connections until at most max_connections are open: first those already refused, then those
        without a whole header, then slow uploads; of each, the one that waited longest first."""
        def order(connection):
            return connection._linger is None, connection.conn.their_state is not h11.IDLE, connection.waiting_since

        while len(self.connections) > self.max_connections:
            closable = [connection for connection in self.connections
                        if connection._linger is not None or connection.waiting()]
            if not closable:
                return  # all are being answered: their answers close or free them
            oldest = min(closable, key=order)
            if oldest._linger is not None:
                oldest.transport.abort()
            else:
                oldest.close_waiting(503, "the server has too many connections open; try again")
            self.connections.discard(oldest)  # gone once asyncio has run its connection_lost, after this loop

    def close_waiting(self, status: int, reason: str) -> None:
        """Close this waiting connection: with `status` to a request begun, or never sent; quietly where a kept-alive
        connection sent nothing since its last answer, as a keep-alive timeout closes it (its client opens another:
        an answer there would be taken for the answer to its next request)."""
        if self.received or not self.answered:
            self.refuse(status, reason)
        else:
            self.transport.close()

    def refuse(self, status: int, reason: str) -> None:
        """Answer `status` with the app's one-line JSON refusal, and close. The close lingers for a moment, as
        Apache's and nginx's do: closed at once with part of an upload unread, the socket would send a reset, and
        the client lose the answer."""
        body = json.dumps({"detail": reason}).encode()
        phrase = {408: "Request Timeout", 503: "Service Unavailable"}[status]
        self.transport.write(f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\nconnection: close\r\n"
                             f"content-length: {len(body)}\r\n\r\n".encode() + body)
        self._deadline.cancel()
        self._linger = self.loop.call_later(LINGER_SECONDS, self.transport.abort)
        try:
            if self.transport.can_write_eof():
                self.transport.write_eof()
        except OSError:  # the client is gone already (ENOTCONN)
            self.transport.abort()

    def _await_request(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self.waiting_since, self.received = time.monotonic(), False
        self._deadline = self.loop.call_later(self.request_seconds, self._request_overdue)

    def _request_overdue(self) -> None:
        if self.waiting():
            self.close_waiting(408, f"the request did not arrive whole within {self.request_seconds:g} s")


def log_once_per_condition(*loggers: logging.Logger, period: float = LOG_PERIOD_SECONDS) -> None:
    """Each logger writes each condition (a message's format) at most once per `period` seconds, as one line:
    no traceback, and a count of the times it was held back."""
    condition_filter = OncePerCondition(period)
    for logger in loggers:
        logger.addFilter(condition_filter)


class OncePerCondition(logging.Filter):
    def __init__(self, period: float):
        super().__init__()
        self.period = period
        self.conditions: dict[tuple, list] = {}  # condition: [when last written, times held back since]

    def filter(self, record: logging.LogRecord) -> bool:
        exception = record.exc_info[1] if record.exc_info else None
        # The format's first line: asyncio writes its context (sockets, callbacks) in lines below it
        form = record.msg.splitlines()[0] if isinstance(record.msg, str) and record.msg else type(record.msg).__name__
        condition = (record.name, form, type(exception).__name__)
        now = time.monotonic()
        seen = self.conditions.setdefault(condition, [-float("inf"), 0])
        if now - seen[0] < self.period:
            seen[1] += 1
            return False
        message = record.getMessage().splitlines()[0] if record.getMessage() else ""
        if exception is not None:
            message = f"{message}: {type(exception).__name__}: {str(exception).splitlines()[0] if str(exception) else ''}"
        if seen[1]:
            message += f" ({seen[1]} more like it in the {self.period:g} s before)"
        record.msg, record.args, record.exc_info, record.exc_text = message, (), None, None
        seen[:] = [now, 0]
        return True
