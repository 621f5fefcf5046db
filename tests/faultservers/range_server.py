"""The stand-in's test origin (``dfpeer.testing.RangeOrigin``) with knobs that make it misbehave.

Objects are registered by path; responses honour ``Range`` (one range, parsed like the peer
does), ``ETag`` and ``If-Match`` like S3 does, unless a knob says otherwise. Serving, storage,
range parsing and the request log are RangeOrigin's; this module adds the faults and the
counters the engine tests assert on.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

from dfpeer.server import parse_range
from dfpeer.testing import OriginHandler, OriginRequest, RangeOrigin

#: Query of :meth:`RangeServer.url` by default: presigned-looking (the secrets guard knows it).
PRESIGNED_QUERY = "X-Amz-Signature=secretsig123&X-Amz-Date=20260101"


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
    legacy_range_200: bool = False      # 200 + Content-Range for ranges (dfdaemon < v1.3.11)


@dataclass
class Seen:
    method: str
    path: str  # the request target as sent (absolute-form through a proxy)
    headers: dict[str, str] = field(default_factory=dict)


class _FaultHandler(OriginHandler):
    @property
    def srv(self) -> RangeServer:
        return self.server.origin  # type: ignore[return-value]  # handler_class of a RangeServer

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        srv = self.srv
        with srv.lock:
            srv._active += 1
            srv.max_active = max(srv.max_active, srv._active)
            srv.ranges.append(self.headers.get("Range"))
        try:
            self._get()
        finally:
            with srv.lock:
                srv._active -= 1

    def _record(self) -> tuple[str, OriginRequest]:
        path, request = super()._record()
        srv = self.srv
        with srv.lock:
            srv.seen.append(Seen(self.command, self.path, dict(self.headers.items())))
        return path, request

    def _get(self) -> None:
        srv = self.srv
        k = srv.knobs
        head = self.command == "HEAD"
        path, _ = self._record()
        n, replace = 0, None
        with srv.lock:
            if not head:
                srv._gets += 1
                n = srv._gets
                if k.change_after is not None and n == k.change_after + 1 and path in srv.objects:
                    old = srv.objects[path]
                    replace = bytes(b ^ 0xFF for b in old[:1]) + old[1:]
        if replace is not None:
            srv.put(path, replace)
        with srv.lock:
            data, etag = srv.objects.get(path), srv.etags.get(path, "").strip('"')
        if not head and n <= k.fail_first:
            self._send_status(k.fail_status, retry_after=k.retry_after)
            return
        if data is None:
            self._send_status(404)
            return
        if k.error_doc_200 and not head:
            body = b"<?xml version='1.0'?><Error><Code>SlowDown</Code></Error>"
            self._send(200, [("Content-Length", str(len(body)))], body)
            return
        if_match = self.headers.get("If-Match")
        if if_match and if_match.strip('"') != etag:
            self._send_status(412)
            return
        size = len(data)
        status, start, end = 200, 0, size - 1
        rng = self.headers.get("Range")
        if rng and not k.ignore_range:
            span = parse_range(rng, size)
            if span is None:
                self._send(416, [("Content-Range", f"bytes */{size}"), ("Content-Length", "0")])
                return
            (start, end), status = span, 206
        body = memoryview(data)[start : end + 1]
        headers = [("ETag", f'"{etag}"'), ("Accept-Ranges", "bytes")]
        if status == 206 or (k.legacy_range_200 and rng and not k.ignore_range):
            shown_end = end + 1 if k.bad_content_range else end
            headers.append(("Content-Range", f"bytes {start}-{shown_end}/{size}"))
        if k.chunked and not head:
            headers.append(("Transfer-Encoding", "chunked"))
        else:
            headers.append(("Content-Length", str(len(body) + (1 if k.wrong_length else 0))))
        if status == 206 and k.legacy_range_200:
            status = 200  # the Content-Range above still says which bytes these are
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self._send_body(body)

    def _send_body(self, body: memoryview) -> None:
        srv = self.srv
        k = srv.knobs
        limit = len(body)
        cut = False
        with srv.lock:
            if k.truncate_at is not None and srv._truncated < k.truncate_times and limit > k.truncate_at:
                srv._truncated += 1
                limit, cut = k.truncate_at, True
            stall = k.stall_seconds > 0 and srv._stalled < k.stall_times
            if stall:
                srv._stalled += 1
        if stall:
            time.sleep(k.stall_seconds)
        try:
            if k.chunked:
                for i in range(0, limit, 65536):
                    piece = body[i : min(i + 65536, limit)]
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + bytes(piece) + b"\r\n")
                if not cut:
                    self.wfile.write(b"0\r\n\r\n")
            elif k.trickle_bytes_per_s:
                step = max(1, k.trickle_bytes_per_s // 20)
                for i in range(0, limit, step):
                    self.wfile.write(body[i : min(i + step, limit)])
                    self.wfile.flush()
                    time.sleep(0.05)
            else:
                self.wfile.write(body[:limit])
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return
        if cut:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _send_status(self, status: int, retry_after: str | None = None) -> None:
        body = f"<Error><Code>{status}</Code></Error>".encode()
        headers = [("Retry-After", retry_after)] if retry_after else []
        self._send(status, [*headers, ("Content-Length", str(len(body)))], body)


class RangeServer(RangeOrigin):
    """``with RangeServer() as srv: srv.put("/a", data); srv.url("/a")``.

    The port is bound at construction (``.port``, ``.url()`` work before the ``with``).
    ``poll_interval`` bounds how long leaving the ``with`` waits for the serving thread.
    """

    handler_class = _FaultHandler

    def __init__(self, knobs: Knobs | None = None, *, poll_interval: float = 0.02) -> None:
        super().__init__(poll_interval=poll_interval)
        self.knobs = knobs or Knobs()
        self.seen: list[Seen] = []
        #: ``Range`` header of every GET (None = no Range), in arrival order.
        self.ranges: list[str | None] = []
        #: Most GETs that were being answered at the same time.
        self.max_active = 0
        self._gets = 0
        self._truncated = 0
        self._stalled = 0
        self._active = 0
        self.bind()

    def put(self, path: str, data: bytes) -> str:
        """Store (or replace) an object; returns its presigned-looking URL (:meth:`url`)."""
        super().put(path, data)
        return self.url(path)

    def etag(self, path: str) -> str:
        """The object's ETag without quotes (its MD5)."""
        return self.etags[path].strip('"')

    def url(self, path: str, query: str = PRESIGNED_QUERY) -> str:
        return self.url_for(path, query)

    @property
    def gets(self) -> int:
        return self._gets
