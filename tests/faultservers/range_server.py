"""A stdlib range server on 127.0.0.1 with knobs that make it misbehave on purpose.

Objects are registered by path; responses honour ``Range`` (one range), ``ETag`` and
``If-Match`` like S3 does, unless a knob says otherwise.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass
class Knobs:
    """Fault switches. Counters apply to GET requests the server has seen."""

    ignore_range: bool = False          # answer 200 with the whole body to a Range GET
    bad_content_range: bool = False     # 206 with an off-by-one Content-Range
    wrong_length: bool = False          # Content-Length one larger than the body sent
    truncate_at: int | None = None      # close the connection after N body bytes
    truncate_times: int = 1 << 30       # ... for this many responses
    fail_first: int = 0                 # the first N GETs get fail_status
    fail_status: int = 503
    retry_after: str | None = None
    stall_seconds: float = 0.0          # sleep before the body (once per response)
    stall_times: int = 1 << 30
    trickle_bytes_per_s: int = 0        # send the body slowly
    change_after: int | None = None     # after N GETs the object content (and ETag) changes
    chunked: bool = False               # no Content-Length, chunked transfer encoding
    error_doc_200: bool = False         # 200 with an XML error document
    range_416_for_empty: bool = True    # S3-like 416 for bytes=0-0 on an empty object
    legacy_range_200: bool = False      # 200 + Content-Range for ranges (dfdaemon < v1.3.11)


class _QuietServer(ThreadingHTTPServer):
    """Client disconnects are part of the faults under test: no tracebacks on stderr
    (they would land in whatever test happens to be capturing output at the time)."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass


@dataclass
class _Obj:
    data: bytes
    etag: str = ""

    def __post_init__(self) -> None:
        self.etag = hashlib.md5(self.data).hexdigest()


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)


class RangeServer:
    """``with RangeServer() as srv: srv.put("/a", data); srv.url("/a")``."""

    def __init__(self, knobs: Knobs | None = None) -> None:
        self.knobs = knobs or Knobs()
        self.objects: dict[str, _Obj] = {}
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._gets = 0
        self._truncated = 0
        self._stalled = 0
        self._active = 0
        #: Most GETs that were being answered at the same time.
        self.max_active = 0
        #: ``Range`` header of every GET (None = no Range), in arrival order.
        self.ranges: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                outer._handle(self, head=True)

            def do_GET(self) -> None:
                with outer._lock:
                    outer._active += 1
                    outer.max_active = max(outer.max_active, outer._active)
                    outer.ranges.append(self.headers.get("Range"))
                try:
                    outer._handle(self, head=False)
                finally:
                    with outer._lock:
                        outer._active -= 1

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> RangeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def put(self, path: str, data: bytes) -> str:
        self.objects[path] = _Obj(data)
        return self.url(path)

    def etag(self, path: str) -> str:
        return self.objects[path].etag

    def url(self, path: str, query: str = "X-Amz-Signature=secretsig123&X-Amz-Date=20260101") -> str:
        return f"http://127.0.0.1:{self.port}{path}" + (f"?{query}" if query else "")

    @property
    def gets(self) -> int:
        return self._gets

    # -- request handling ----------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        k = self.knobs
        path = h.path.split("?", 1)[0]
        if h.path.startswith(("http://", "https://")):
            path = "/" + h.path.split("/", 3)[3].split("?", 1)[0]
        with self._lock:
            self.seen.append(Seen(h.command, h.path, dict(h.headers.items())))
            if not head:
                self._gets += 1
                n = self._gets
                if k.change_after is not None and n == k.change_after + 1 and path in self.objects:
                    old = self.objects[path].data
                    self.objects[path] = _Obj(bytes(b ^ 0xFF for b in old[:1]) + old[1:])
            else:
                n = 0
        obj = self.objects.get(path)
        if not head and n <= k.fail_first:
            self._send_status(h, k.fail_status, retry_after=k.retry_after)
            return
        if obj is None:
            self._send_status(h, 404)
            return
        if k.error_doc_200 and not head:
            body = b"<?xml version='1.0'?><Error><Code>SlowDown</Code></Error>"
            h.send_response(200)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
            return
        if_match = h.headers.get("If-Match")
        if if_match and if_match.strip('"') != obj.etag:
            self._send_status(h, 412)
            return
        data = obj.data
        size = len(data)
        status, start, end = 200, 0, size - 1
        rng = h.headers.get("Range")
        if rng and not k.ignore_range:
            m = _RANGE.match(rng.strip())
            if not m:
                self._send_status(h, 416)
                return
            a, b = m.groups()
            if a == "":
                start, end = max(0, size - int(b)), size - 1
            else:
                start, end = int(a), min(int(b) if b else size - 1, size - 1)
            if size == 0 or start >= size:
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{size}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            status = 206
        body = memoryview(data)[start : end + 1]
        if status == 206 and k.legacy_range_200:
            status = 200  # the Content-Range below still says which bytes these are
            h.send_response(200)
        else:
            h.send_response(status)
        h.send_header("ETag", f'"{obj.etag}"')
        h.send_header("Accept-Ranges", "bytes")
        if status == 206 or (k.legacy_range_200 and rng and not k.ignore_range):
            shown_end = end + 1 if k.bad_content_range else end
            h.send_header("Content-Range", f"bytes {start}-{shown_end}/{size}")
        if k.chunked and not head:
            h.send_header("Transfer-Encoding", "chunked")
        else:
            h.send_header("Content-Length", str(len(body) + (1 if k.wrong_length else 0)))
        h.end_headers()
        if head:
            return
        self._send_body(h, body)

    def _send_body(self, h: BaseHTTPRequestHandler, body: memoryview) -> None:
        k = self.knobs
        limit = len(body)
        cut = False
        with self._lock:
            if k.truncate_at is not None and self._truncated < k.truncate_times and limit > k.truncate_at:
                self._truncated += 1
                limit, cut = k.truncate_at, True
            stall = k.stall_seconds > 0 and self._stalled < k.stall_times
            if stall:
                self._stalled += 1
        if stall:
            time.sleep(k.stall_seconds)
        try:
            if k.chunked:
                for i in range(0, limit, 65536):
                    piece = body[i : min(i + 65536, limit)]
                    h.wfile.write(f"{len(piece):x}\r\n".encode() + bytes(piece) + b"\r\n")
                if not cut:
                    h.wfile.write(b"0\r\n\r\n")
            elif k.trickle_bytes_per_s:
                step = max(1, k.trickle_bytes_per_s // 20)
                for i in range(0, limit, step):
                    h.wfile.write(body[i : min(i + step, limit)])
                    h.wfile.flush()
                    time.sleep(0.05)
            else:
                h.wfile.write(body[:limit])
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return
        if cut:
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @staticmethod
    def _send_status(h: BaseHTTPRequestHandler, status: int, retry_after: str | None = None) -> None:
        body = f"<Error><Code>{status}</Code></Error>".encode()
        h.send_response(status)
        if retry_after:
            h.send_header("Retry-After", retry_after)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
