"""A tiny range-capable origin server for tests (stdlib only, loopback, threaded).

``RangeOrigin`` serves in-memory objects by path (the query string is ignored,
so presigned-looking URLs work), honours a single ``Range`` (parsed like the peer
does, :func:`dfpeer.server.parse_range`), answers HEAD and PUT, can be told to fail
a path with any status, and records every request. Test suites extend it through
``handler_class`` (a subclass of :class:`OriginHandler`); dfrepo's fault server
(tests/faultservers) does.
"""

from __future__ import annotations

import hashlib
import ssl
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from .server import parse_range

__all__ = ["OriginHandler", "OriginRequest", "RangeOrigin"]


@dataclass(frozen=True)
class OriginRequest:
    """One request as the origin saw it."""

    method: str
    path: str  # without query
    query: str
    range: str | None
    headers: dict[str, str]  # lower-cased names


@dataclass
class _Failure:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    remaining: int | None = None  # None = forever
    after: int = 0  # let this many requests through first


class OriginHandler(BaseHTTPRequestHandler):
    """Request handler of :class:`RangeOrigin` (``self.server.origin`` is the origin)."""

    protocol_version = "HTTP/1.1"
    server: _OriginServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Quiet."""

    def _record(self) -> tuple[str, OriginRequest]:
        target = self.path
        if target.lower().startswith(("http://", "https://")):
            parts = urlsplit(target)
            target = parts.path + ("?" + parts.query if parts.query else "")
        path, _, query = target.partition("?")
        request = OriginRequest(
            method=self.command,
            path=path,
            query=query,
            range=self.headers.get("Range"),
            headers={k.lower(): v for k, v in self.headers.items()},
        )
        origin = self.server.origin
        with origin.lock:
            origin.requests.append(request)
        return path, request

    def _failure(self, path: str) -> _Failure | None:
        origin = self.server.origin
        with origin.lock:
            failure = origin.failures.get(path)
            if failure is None:
                return None
            if failure.after > 0:
                failure.after -= 1
                return None
            if failure.remaining is not None:
                failure.remaining -= 1
                if failure.remaining <= 0:
                    del origin.failures[path]
            return failure

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes | memoryview = b"") -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)
            origin = self.server.origin
            with origin.lock:
                origin.bytes_sent += len(body)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._get()

    def do_HEAD(self) -> None:  # noqa: N802
        self._get()

    def _get(self) -> None:
        path, request = self._record()
        failure = self._failure(path)
        if failure is not None:
            self._send(failure.status, failure.headers + [("Content-Length", str(len(failure.body)))], failure.body)
            return
        origin = self.server.origin
        data = origin.objects.get(path)
        if data is None:
            body = b"<Error><Code>NoSuchKey</Code></Error>"
            self._send(404, [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))], body)
            return
        base = [
            ("Content-Type", "application/octet-stream"),
            ("ETag", origin.etags[path]),
            ("Last-Modified", "Tue, 24 Nov 2026 08:00:00 GMT"),
            ("Accept-Ranges", "bytes"),
            ("x-amz-request-id", "origin-test"),
        ]
        size = len(data)
        if request.range is None or not origin.honour_range:
            self._send(200, base + [("Content-Length", str(size))], memoryview(data))
            return
        span = parse_range(request.range, size)
        if span is None:
            self._send(416, base + [("Content-Range", f"bytes */{size}"), ("Content-Length", "0")])
            return
        start, end = span
        self._send(
            206,
            base + [("Content-Range", f"bytes {start}-{end}/{size}"), ("Content-Length", str(end - start + 1))],
            memoryview(data)[start : end + 1],
        )

    def do_PUT(self) -> None:  # noqa: N802
        path, _ = self._record()
        length = int(self.headers.get("Content-Length", "0") or 0)
        body = self.rfile.read(length) if length else b""
        failure = self._failure(path)
        if failure is not None:
            self._send(failure.status, failure.headers + [("Content-Length", str(len(failure.body)))], failure.body)
            return
        self.server.origin.put(path, body)
        self._send(200, [("ETag", self.server.origin.etags[path]), ("Content-Length", "0")])


class _OriginServer(ThreadingHTTPServer):
    daemon_threads = True
    origin: RangeOrigin

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up (tests cut connections on purpose) are not errors."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            return
        super().handle_error(request, client_address)


class RangeOrigin:
    """In-memory object origin on 127.0.0.1 (a context manager).

    ``origin.put("/bucket/model.bin", data)``; ``origin.url_for("/bucket/model.bin", query)``;
    ``origin.fail("/bucket/x", 403, b"AccessDenied", times=1)``.
    """

    #: Handles every request; subclass :class:`OriginHandler` to change the answers.
    handler_class: type[OriginHandler] = OriginHandler

    def __init__(self, host: str = "127.0.0.1", *, ssl_context: ssl.SSLContext | None = None,
                 poll_interval: float = 0.1) -> None:
        self.host = host
        self.ssl_context = ssl_context  # server-side context: serve HTTPS
        self.poll_interval = poll_interval  # serve_forever's poll: how long close() may wait
        self.lock = threading.Lock()
        self.objects: dict[str, bytes] = {}
        self.etags: dict[str, str] = {}
        self.failures: dict[str, _Failure] = {}
        self.requests: list[OriginRequest] = []
        self.bytes_sent = 0
        self.honour_range = True
        self._server: _OriginServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def put(self, path: str, data: bytes) -> str:
        """Store (or replace) an object; returns its URL (valid once bound)."""
        with self.lock:
            self.objects[path] = data
            self.etags[path] = '"' + hashlib.md5(data).hexdigest() + '"'
        return self.url_for(path)

    def fail(self, path: str, status: int, body: bytes = b"", *, headers: list[tuple[str, str]] | None = None,
             times: int | None = None, after: int = 0) -> None:
        """Answer requests for *path* with *status* (*times* times, or until cleared), after *after* successes."""
        with self.lock:
            self.failures[path] = _Failure(status, body, list(headers or []), times, after)

    def clear_failures(self) -> None:
        """Remove every scripted failure."""
        with self.lock:
            self.failures.clear()

    def reset_log(self) -> None:
        """Forget recorded requests and the byte counter."""
        with self.lock:
            self.requests.clear()
            self.bytes_sent = 0

    def requests_for(self, path: str, method: str | None = None) -> list[OriginRequest]:
        """Recorded requests for *path* (optionally one method)."""
        with self.lock:
            return [r for r in self.requests if r.path == path and (method is None or r.method == method)]

    def url_for(self, path: str, query: str = "") -> str:
        """Absolute URL of *path* on this origin."""
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}{path}" + (f"?{query}" if query else "")

    def bind(self) -> RangeOrigin:
        """Bind a free port (``.port``) without serving yet; :meth:`start` does both."""
        if self._server is None:
            self._server = _OriginServer((self.host, 0), self.handler_class)
            self._server.origin = self
            if self.ssl_context is not None:
                self._server.socket = self.ssl_context.wrap_socket(self._server.socket, server_side=True)
            self.port = int(self._server.server_address[1])
        return self

    def start(self) -> RangeOrigin:
        """Bind a free port (unless bound) and serve on a background thread."""
        server = self.bind()._server
        assert server is not None
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": self.poll_interval},
                                        daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving."""
        if self._server is not None:
            if self._thread is not None:
                self._server.shutdown()
                self._thread = None
            self._server.server_close()
            self._server = None

    def __enter__(self) -> RangeOrigin:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
