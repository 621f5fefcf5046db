"""The stand-in dfdaemon HTTP proxy: request dispatch, P2P path, pass-through, admin API.

One thread per client connection (``socketserver.ThreadingTCPServer``) with
blocking sockets.  Stored pieces are sent with ``os.sendfile`` straight from the
task's data file; missing pieces are fetched by up to ``concurrent_pieces``
worker threads per request, single-flight per piece across requests.

See ``peer/README.md`` for the admin API and the list of what is (and is not)
emulated.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import queue
import re
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .store import Claim, Task, TaskStore
from .taskid import (
    DEFAULT_FILTERED_QUERY_PARAMS,
    MIN_PIECE_LENGTH,
    Canonicalization,
    auto_piece_length,
    blob_digest_task_id,
    content_task_id,
    parse_bytesize,
    task_id,
)
from .upstream import HOP_BY_HOP, Target, Upstream, redact, set_nodelay

__all__ = ["PeerConfig", "PeerCore", "PeerServer", "ADMIN_PREFIX", "DIRECT_SOURCE_THRESHOLD", "PARENT_FETCH_HEADER"]

log = logging.getLogger("dfpeer")

ADMIN_PREFIX = "/_dfpeer/"

#: dfdaemon >= v1.4.2 (``resource/task.rs`` ``Task::download``): when the requested range is
#: at most this long, or the whole object is, the missing pieces are fetched straight from the
#: origin without the scheduler (no parent).  ``super::piece::MIN_PIECE_LENGTH``, inclusive.
DIRECT_SOURCE_THRESHOLD = 4 * 1024 * 1024

#: Marks the stand-in's own piece request to its ``--parent``.  The parent treats it as a piece
#: upload (never the small-request shortcut) and does not forward the marker to the origin.
PARENT_FETCH_HEADER = "X-Dfpeer-Parent-Fetch"

_BUFFER_SIZE = 1 << 20
_local = threading.local()


def _buffer() -> memoryview:
    """A reused per-thread 1 MiB buffer for origin/parent reads."""
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = memoryview(bytearray(_BUFFER_SIZE))
    return buf


def _title(name: str) -> str:
    """Title-Case a header name the way hyper writes it (``x-amz-id`` -> ``X-Amz-Id``)."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


@dataclass
class PeerConfig:
    """Everything the peer can be told at start-up (CLI flags map 1:1)."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    parent: str | None = None  # "http://127.0.0.1:PORT"
    rules: tuple[str, ...] = ()  # proxy.rules[].regex, matched with re.search on the URL without query
    canonicalization: Canonicalization = "B"
    verify_origin: bool = False  # dfdaemon does not verify origin TLS by default
    ca_file: str | None = None
    concurrent_pieces: int = 8  # download.concurrentPieceCount default
    server_ip: str | None = None  # X-Dragonfly-Server-IP; defaults to host
    disable_back_to_source: bool = False
    legacy_range_200: bool = False  # dfdaemon < v1.3.11 answered ranges with 200 + Content-Range
    # dfdaemon >= v1.4.2: a range <= 4 MiB or an object <= 4 MiB skips the scheduler, so its
    # missing pieces come from the origin, never the parent.  False = dfdaemon < v1.4.1 behaviour.
    small_to_source: bool = True
    idle_timeout: float = 120.0
    upstream_timeout: float = 60.0
    send_timeout: float = 60.0


class Stats:
    """Counters, shaped after ``dragonfly_client_download_traffic{type}`` plus request counts."""

    _FIELDS = (
        "requests", "p2p_requests", "passthrough_requests", "admin_requests",
        "origin_requests", "stat_requests", "origin_bytes",
        "parent_requests", "parent_bytes", "parent_failures",
        "served_bytes", "local_bytes", "passthrough_bytes",
        "local_hits", "error_responses", "aborted_responses",
        "direct_small",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(self._FIELDS, 0)

    def add(self, name: str, amount: int = 1) -> None:
        """Increment counter *name*."""
        with self._lock:
            self._values[name] += amount

    def reset(self) -> None:
        """Zero every counter."""
        with self._lock:
            self._values = dict.fromkeys(self._FIELDS, 0)

    def snapshot(self) -> dict[str, Any]:
        """Copy of the counters plus the ``traffic`` view."""
        with self._lock:
            values: dict[str, Any] = dict(self._values)
        values["traffic"] = {
            "BACK_TO_SOURCE": values["origin_bytes"],
            "REMOTE_PEER": values["parent_bytes"],
            "LOCAL_PEER": values["local_bytes"],
        }
        return values


@dataclass
class Faults:
    """Fault knobs for client tests (``POST /_dfpeer/faults``)."""

    truncate_after_bytes: int | None = None  # cut the next P2P response body after N bytes
    truncate_count: int = 1  # how many responses the truncation applies to
    fail_next: int = 0  # answer the next K P2P requests with fail_status (before streaming)
    fail_status: int = 500
    fail_error_type: str = "dfdaemon"
    first_byte_delay: float = 0.0  # seconds to sleep before P2P response headers
    parent_unavailable: bool = False  # ignore --parent ("scheduler unavailable": back to source)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    _KNOBS = (
        "truncate_after_bytes", "truncate_count", "fail_next", "fail_status",
        "fail_error_type", "first_byte_delay", "parent_unavailable",
    )

    def update(self, values: dict[str, Any]) -> None:
        """Set knobs from a JSON object; unknown keys raise ValueError."""
        unknown = set(values) - set(self._KNOBS)
        if unknown:
            raise ValueError(f"unknown fault knobs: {sorted(unknown)}")
        with self._lock:
            for key, value in values.items():
                setattr(self, key, value)

    def clear(self) -> None:
        """Back to no faults."""
        self.update({
            "truncate_after_bytes": None, "truncate_count": 1, "fail_next": 0, "fail_status": 500,
            "fail_error_type": "dfdaemon", "first_byte_delay": 0.0, "parent_unavailable": False,
        })

    def snapshot(self) -> dict[str, Any]:
        """Current knob values."""
        with self._lock:
            return {key: getattr(self, key) for key in self._KNOBS}

    def take_failure(self) -> tuple[int, str] | None:
        """Consume one ``fail_next``; return (status, error type) if it fired."""
        with self._lock:
            if self.fail_next <= 0:
                return None
            self.fail_next -= 1
            return int(self.fail_status), str(self.fail_error_type)

    def take_truncation(self) -> int | None:
        """Consume one truncation; return the byte limit if it fired."""
        with self._lock:
            if self.truncate_after_bytes is None or self.truncate_count <= 0:
                return None
            self.truncate_count -= 1
            limit = int(self.truncate_after_bytes)
            if self.truncate_count <= 0:
                self.truncate_after_bytes = None
                self.truncate_count = 1
            return limit


class PieceFailure(Exception):
    """A piece (or stat) could not be fetched; carries what the proxy should answer."""

    def __init__(self, status: int, headers: list[tuple[str, str]], error_type: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.headers = headers
        self.error_type = error_type


@dataclass
class _Request:
    """Per-request download state shared by the serving thread and its workers."""

    url: str
    headers: list[tuple[str, str]]
    cancelled: threading.Event = field(default_factory=threading.Event)
    error: PieceFailure | None = None
    workers: int = 0
    direct: bool = False  # the <= 4 MiB shortcut: missing pieces from the origin, never the parent


_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


def parse_range(value: str, length: int) -> tuple[int, int] | None:
    """First range of a ``Range`` header as inclusive ``(start, end)``; None if invalid/unsatisfiable."""
    unit, _, spec = value.strip().partition("=")
    if unit.strip().lower() != "bytes" or length <= 0:
        return None
    first, _, _ = spec.partition(",")
    start_text, dash, end_text = first.strip().partition("-")
    if not dash:
        return None
    try:
        if not start_text.strip():
            suffix = int(end_text)
            if suffix <= 0:
                return None
            return max(0, length - suffix), length - 1
        start = int(start_text)
        end = int(end_text) if end_text.strip() else length - 1
    except ValueError:
        return None
    end = min(end, length - 1)
    if start < 0 or start > end:
        return None
    return start, end


class PeerCore:
    """Shared state of one peer: config, task store, outbound pool, counters, faults."""

    def __init__(self, config: PeerConfig) -> None:
        self.config = config
        self.store = TaskStore(config.data_dir)
        self.upstream = Upstream(
            verify=config.verify_origin, ca_file=config.ca_file, timeout=config.upstream_timeout
        )
        self.stats = Stats()
        self.faults = Faults()
        self.rules = [re.compile(rule) for rule in config.rules]
        self.parent: tuple[str, int] | None = None
        if config.parent:
            parts = urlsplit(config.parent)
            if parts.scheme != "http" or not parts.hostname:
                raise ValueError("--parent must be http://host:port")
            self.parent = (parts.hostname, parts.port or 80)

    # ----------------------------------------------------------------- decisions

    def matches_rule(self, url: str) -> bool:
        """True if a configured rule matches *url* without query and fragment."""
        bare = url.split("#", 1)[0].split("?", 1)[0]
        return any(rule.search(bare) for rule in self.rules)

    def stats_snapshot(self) -> dict[str, Any]:
        """Counters plus a per-task summary."""
        snap = self.stats.snapshot()
        snap["tasks"] = {task.task_id: task.snapshot() for task in self.store}
        return snap

    # ----------------------------------------------------------------- origin / parent I/O

    def stat(self, url: str, headers: list[tuple[str, str]]) -> tuple[int, list[tuple[str, str]]]:
        """``GET Range: bytes=0-0`` (416 -> plain GET); return (content length, stored headers)."""
        ranged = True
        while True:
            self.stats.add("origin_requests")
            self.stats.add("stat_requests")
            request_headers = headers + [("Range", "bytes=0-0")] if ranged else headers
            try:
                conn, resp = self.upstream.request("GET", url, request_headers)
            except (OSError, http.client.HTTPException) as exc:
                raise PieceFailure(500, [], "backend", f"stat failed: {exc.__class__.__name__}") from None
            try:
                if resp.status == 416 and ranged:
                    ranged = False
                    continue
                origin_headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
                if not 200 <= resp.status < 300:
                    raise PieceFailure(resp.status, origin_headers, "backend", f"stat status {resp.status}")
                total: int | None = None
                if resp.status == 206:
                    match = _CONTENT_RANGE.match(resp.getheader("Content-Range", ""))
                    if match and match.group(3) != "*":
                        total = int(match.group(3))
                elif resp.length is not None:
                    total = resp.length
                if total is None:
                    raise PieceFailure(500, [], "dfdaemon", "invalid content length")
                if resp.length is not None and resp.length <= 64 * 1024:
                    resp.read()  # small: drain and keep the connection
                stored = [
                    (k, v) for k, v in origin_headers if k.lower() not in ("content-length", "content-range")
                ]
                return total, stored
            finally:
                if not resp.isclosed():
                    conn.close()
                else:
                    self.upstream.release(conn, resp)

    def fetch_piece(self, task: Task, number: int, request: _Request) -> None:
        """Store piece *number*: from the parent first (if any), else from the origin."""
        offset, length = task.piece_span(number)
        piece_range = ("Range", f"bytes={offset}-{offset + length - 1}")
        if self.parent is not None and not self.faults.parent_unavailable and not request.direct:
            parent_headers = [(k, v) for k, v in request.headers if k.lower() != "x-dragonfly-use-p2p"]
            parent_headers += [("X-Dragonfly-Use-P2P", "true"), (PARENT_FETCH_HEADER, "1"), piece_range]
            try:
                self._download(task, offset, length, request.url, parent_headers, via=self.parent)
                return
            except PieceFailure as exc:
                self.stats.add("parent_failures")
                log.info("parent failed for piece %d of %s: %s; back to source", number, task.task_id[:12], exc)
        if self.config.disable_back_to_source:
            raise PieceFailure(500, [], "dfdaemon", "back-to-source disabled")
        self._download(task, offset, length, request.url, request.headers + [piece_range], via=None)

    def _download(
        self,
        task: Task,
        offset: int,
        length: int,
        url: str,
        headers: list[tuple[str, str]],
        *,
        via: tuple[str, int] | None,
    ) -> None:
        counter_requests, counter_bytes = (("parent_requests", "parent_bytes") if via
                                           else ("origin_requests", "origin_bytes"))
        self.stats.add(counter_requests)
        try:
            conn, resp = self.upstream.request("GET", url, headers, via=via)
        except (OSError, http.client.HTTPException) as exc:
            raise PieceFailure(500, [], "backend", f"connect failed: {exc.__class__.__name__}") from None
        received = 0
        try:
            if not 200 <= resp.status < 300:
                origin_headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
                raise PieceFailure(resp.status, origin_headers, "backend", f"piece status {resp.status}")
            if via is not None and resp.getheader("X-Dragonfly-Task-Id", "") != task.task_id:
                raise PieceFailure(500, [], "dfdaemon", "parent served a different task")
            if resp.status == 206:
                match = _CONTENT_RANGE.match(resp.getheader("Content-Range", ""))
                if not match or (int(match.group(1)), int(match.group(2))) != (offset, offset + length - 1):
                    raise PieceFailure(500, [], "backend", "origin returned a different range")
            elif not (offset == 0 and length == task.content_length and resp.length == length):
                raise PieceFailure(500, [], "backend", "origin ignored Range")
            buf = _buffer()
            position = offset
            remaining = length
            while remaining:
                got = resp.readinto(buf[: min(remaining, _BUFFER_SIZE)])
                if not got:
                    raise PieceFailure(500, [], "backend", "short piece body")
                view = buf[:got]
                while view:
                    written = os.pwrite(task.fd, view, position)
                    view = view[written:]
                    position += written
                received += got
                remaining -= got
        except (OSError, http.client.HTTPException) as exc:
            raise PieceFailure(500, [], "backend", f"piece read failed: {exc.__class__.__name__}") from None
        finally:
            self.stats.add(counter_bytes, received)
            if resp.isclosed():
                self.upstream.release(conn, resp)
            else:
                conn.close()

    def worker(self, task: Task, pieces: queue.SimpleQueue[int], request: _Request) -> None:
        """Download loop of one per-request worker thread."""
        try:
            while not request.cancelled.is_set() and request.error is None:
                try:
                    number = pieces.get_nowait()
                except queue.Empty:
                    return
                claim = task.claim(number, cancelled=request.cancelled)
                if claim is not Claim.DOWNLOAD:
                    continue
                try:
                    self.fetch_piece(task, number, request)
                except PieceFailure as exc:
                    task.abandon(number)
                    request.error = exc
                    return
                except BaseException:
                    task.abandon(number)
                    request.error = PieceFailure(500, [], "dfdaemon", "internal error")
                    raise
                task.complete(number)
        finally:
            with task.cond:
                request.workers -= 1
                task.cond.notify_all()

    def wait_piece(self, task: Task, number: int, request: _Request) -> bool:
        """Block until piece *number* is stored; False if the request's download failed."""
        if task.done[number]:
            return True
        with task.cond:
            while not task.done[number]:
                if request.error is not None:
                    return False
                if request.workers <= 0 and number not in task.inflight:
                    # Our workers are gone and nobody is fetching it (store cleared, cancelled).
                    return False
                task.cond.wait(0.5)
            return True


class _Handler(BaseHTTPRequestHandler):
    """One client connection; handles keep-alive requests until close or idle timeout."""

    protocol_version = "HTTP/1.1"
    server: PeerServer
    core: PeerCore

    # ------------------------------------------------------------------ plumbing

    def setup(self) -> None:
        super().setup()
        self.core = self.server.core
        sock: socket.socket = self.connection
        set_nodelay(sock)
        sock.settimeout(self.core.config.idle_timeout)
        seconds = int(self.core.config.send_timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", seconds, 0))
        self.server.track(sock, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silence the stdlib access log: it would print query strings (signatures)."""

    def handle_one_request(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(65537)
        except (TimeoutError, OSError):
            self.close_connection = True
            return
        if not self.raw_requestline or len(self.raw_requestline) > 65536:
            self.close_connection = True
            return
        if not self.parse_request():
            return
        try:
            self._dispatch()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        except Exception:
            log.exception("internal error on %s %s", self.command, redact(self.path))
            self.close_connection = True

    def _write_head(self, status: int, headers: Sequence[tuple[str, str]]) -> None:
        lines = [f"HTTP/1.1 {status} {_reason(status)}"]
        lines.extend(f"{_title(name)}: {value}" for name, value in headers)
        if self.close_connection:
            lines.append("Connection: close")
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def _send_empty(self, status: int, headers: Sequence[tuple[str, str]] = (), error_type: str | None = None) -> None:
        """Respond with an empty body (the proxy's error shape, §3.6)."""
        out = [(k, v) for k, v in headers if k.lower() not in ("content-length", "content-range")]
        out.append(("Content-Length", "0"))
        if error_type is not None:
            out.append(("X-Dragonfly-Error-Type", error_type))
            self.core.stats.add("error_responses")
        self._write_head(status, out)

    def _send_json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload, indent=1, sort_keys=True).encode()
        self._write_head(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        self.wfile.write(body)

    def _body_chunks(self) -> Iterator[bytes] | None:
        """Iterator over the request body (Content-Length or chunked), or None if there is none."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length", "0") or 0)
        if length <= 0:
            return None
        return self._read_exact(length)

    def _read_exact(self, length: int) -> Iterator[bytes]:
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                raise ConnectionResetError("client body ended early")
            length -= len(chunk)
            yield chunk

    def _read_chunked(self) -> Iterator[bytes]:
        while True:
            size_line = self.rfile.readline(1024)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            yield from self._read_exact(size)
            self.rfile.readline(1024)

    def _drain_body(self) -> None:
        chunks = self._body_chunks()
        if chunks is not None:
            for _ in chunks:
                pass

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self) -> None:
        core = self.core
        target = self.path
        if self.command == "CONNECT":
            core.stats.add("requests")
            self.close_connection = True
            self._send_empty(501, error_type="proxy")  # MITM is not emulated
            return
        if target.startswith(ADMIN_PREFIX):
            core.stats.add("admin_requests")
            self._admin(target[len(ADMIN_PREFIX):])
            return
        core.stats.add("requests")
        lowered = target[:8].lower()
        if lowered.startswith("http://") or lowered.startswith("https://"):
            url = target
        else:
            url = self._mirror_url(target)
            if url is None:
                self._drain_body()
                self._send_empty(400, error_type="proxy")
                return
        try:
            Target.parse(url)
        except ValueError:
            self._drain_body()
            self._send_empty(400, error_type="proxy")
            return
        use_p2p = self.headers.get("X-Dragonfly-Use-P2P", "").strip().lower() == "true"
        if self.command == "GET" and (core.matches_rule(url) or use_p2p):
            self._drain_body()
            self._p2p(url)
        else:
            self._passthrough(url)

    def _mirror_url(self, target: str) -> str | None:
        """Reverse-proxy (registry mirror) mode: ``X-Dragonfly-Registry`` or the ``ns`` query param."""
        registry = self.headers.get("X-Dragonfly-Registry", "").strip()
        if not registry:
            query = urlsplit(target).query
            registry = next((v for k, v in parse_qsl(query) if k == "ns"), "")
            if registry and "://" not in registry:
                registry = "https://" + registry
        if not registry or not target.startswith("/"):
            return None
        return registry.rstrip("/") + target

    # ------------------------------------------------------------------ admin API

    def _admin(self, action: str) -> None:
        core = self.core
        method = self.command
        body = b"".join(self._body_chunks() or ())
        path = action.split("?", 1)[0].rstrip("/")
        if method == "GET" and path == "health":
            self._send_json(200, {"ok": True, "port": self.server.server_address[1]})
        elif method == "GET" and path == "stats":
            self._send_json(200, core.stats_snapshot())
        elif method == "POST" and path == "reset-stats":
            core.stats.reset()
            self._send_json(200, {"ok": True})
        elif method == "DELETE" and path == "tasks":
            self._send_json(200, {"ok": True, "dropped": core.store.clear()})
        elif method == "GET" and path == "faults":
            self._send_json(200, core.faults.snapshot())
        elif method == "POST" and path == "faults":
            try:
                values = json.loads(body or b"{}")
                if not isinstance(values, dict):
                    raise ValueError("expected a JSON object")
                core.faults.update(values)
            except ValueError as exc:
                self._send_json(400, {"error": str(exc)})
                return
            self._send_json(200, core.faults.snapshot())
        elif method == "DELETE" and path == "faults":
            core.faults.clear()
            self._send_json(200, core.faults.snapshot())
        else:
            self._send_json(404, {"error": "unknown admin endpoint"})

    # ------------------------------------------------------------------ P2P path

    def _task_id(self, url: str, piece_length: int | None) -> str:
        headers = self.headers
        content = headers.get("X-Dragonfly-Content-For-Calculating-Task-ID")
        if content is not None:
            return content_task_id(content)
        if headers.get("X-Dragonfly-Enable-Task-ID-Based-Blob-Digest", "").strip().lower() == "true":
            digest = blob_digest_task_id(url)
            if digest is not None:
                return digest
        filter_header = headers.get("X-Dragonfly-Filtered-Query-Params")
        if filter_header is not None:
            filtered: Sequence[str] = [item.strip() for item in filter_header.split(",")]
        else:
            filtered = DEFAULT_FILTERED_QUERY_PARAMS
        return task_id(
            url,
            piece_length=piece_length,
            tag=headers.get("X-Dragonfly-Tag") or None,
            application=headers.get("X-Dragonfly-Application") or None,
            filtered=filtered,
            canonicalization=self.core.config.canonicalization,
        )

    def _p2p(self, url: str) -> None:
        core = self.core
        core.stats.add("p2p_requests")
        failure = core.faults.take_failure()
        if failure is not None:
            self._send_empty(failure[0], error_type=failure[1])
            return
        piece_length: int | None = None
        piece_header = self.headers.get("X-Dragonfly-Piece-Length")
        if piece_header is not None:
            piece_length = parse_bytesize(piece_header)  # unparsable -> ignored, like dfdaemon
            if piece_length is not None and piece_length < MIN_PIECE_LENGTH:
                self._send_empty(500, error_type="proxy")
                return
        tid = self._task_id(url, piece_length)
        parent_fetch = self.headers.get(PARENT_FETCH_HEADER) is not None
        skip = ("host", "range", PARENT_FETCH_HEADER.lower())
        forward = [(k, v) for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() not in skip]
        task = core.store.get(tid)
        if task is None or task.failed:
            with core.store.creation_lock(tid):
                task = core.store.get(tid)
                if task is None or task.failed:
                    try:
                        total, stored = core.stat(url, forward)
                    except PieceFailure as exc:
                        log.info("stat %s -> %d (%s)", redact(url), exc.status, exc)
                        self._send_empty(exc.status, exc.headers, exc.error_type)
                        return
                    task = core.store.create(
                        tid,
                        content_length=total,
                        piece_length=piece_length or auto_piece_length(total),
                        headers=stored,
                        url=redact(url),
                    )
        finished_at_start = task.finished
        range_header = self.headers.get("Range")
        if range_header is not None:
            span = parse_range(range_header, task.content_length)
            if span is None:
                self._send_empty(500, error_type="dfdaemon")
                return
            start, end = span
        elif task.content_length == 0:
            start, end = 0, -1
        else:
            start, end = 0, task.content_length - 1
        ranged = range_header is not None
        # dfdaemon >= v1.4.2, resource/task.rs Task::download: after the locally stored pieces,
        # `!disable_back_to_source && (range.length <= MIN_PIECE_LENGTH || content_length <=
        # MIN_PIECE_LENGTH)` sends the missing pieces straight to the origin, skipping the
        # scheduler.  The range is the parsed (clamped) request range; the length is the task's,
        # i.e. from the bytes=0-0 stat or the stored metadata.  The pieces are still stored.
        direct = (
            core.config.small_to_source
            and not core.config.disable_back_to_source
            and not parent_fetch
            and (
                (ranged and end - start + 1 <= DIRECT_SOURCE_THRESHOLD)
                or task.content_length <= DIRECT_SOURCE_THRESHOLD
            )
        )
        self._serve(task, url, forward, start, end, ranged, finished_at_start, direct)

    def _serve(
        self,
        task: Task,
        url: str,
        forward: list[tuple[str, str]],
        start: int,
        end: int,
        ranged: bool,
        finished_at_start: bool,
        direct: bool = False,
    ) -> None:
        core = self.core
        headers = list(task.headers)
        headers.append(("Content-Length", str(end - start + 1)))
        if ranged:
            headers.append(("Content-Range", f"bytes {start}-{end}/{task.content_length}"))
        headers.append(("X-Dragonfly-Task-Id", task.task_id))
        headers.append(("X-Dragonfly-Server-Ip", core.config.server_ip or core.config.host))
        if finished_at_start:
            headers.append(("X-Dragonfly-Task-Download-Finished", "true"))
            core.stats.add("local_hits")
        status = 206 if ranged and not core.config.legacy_range_200 else 200
        if end < start:  # empty object
            self._write_head(status, headers)
            return
        pieces = task.pieces_for(start, end)
        request = _Request(url=url, headers=forward)
        missing = [number for number in pieces if not task.done[number]]
        if missing and direct:
            request.direct = True
            core.stats.add("direct_small")
        if missing:
            work: queue.SimpleQueue[int] = queue.SimpleQueue()
            for number in missing:
                work.put(number)
            count = min(core.config.concurrent_pieces, len(missing))
            request.workers = count
            for _ in range(count):
                threading.Thread(target=core.worker, args=(task, work, request), daemon=True).start()
        try:
            first = pieces[0]
            if not core.wait_piece(task, first, request):
                error = request.error or PieceFailure(500, [], "dfdaemon", "piece unavailable")
                log.info("first piece of %s failed: %s", redact(url), error)
                self._send_empty(error.status, error.headers, error.error_type)
                return
            if core.faults.first_byte_delay:
                time.sleep(float(core.faults.first_byte_delay))
            limit = core.faults.take_truncation()
            self._write_head(status, headers)
            self._stream(task, pieces, start, end, request, missing, limit)
        finally:
            request.cancelled.set()
            task.wake()

    def _stream(
        self,
        task: Task,
        pieces: range,
        start: int,
        end: int,
        request: _Request,
        missing: list[int],
        limit: int | None,
    ) -> None:
        """Send the body in piece order with sendfile; abort (short body) on failure or fault."""
        core = self.core
        sock: socket.socket = self.connection
        out_fd = sock.fileno()
        sent_total = 0
        was_missing = set(missing)
        sock.settimeout(None)  # blocking sendfile; SO_SNDTIMEO bounds a stalled client
        last = pieces[-1]
        number = pieces[0]
        try:
            while number <= last:
                if not core.wait_piece(task, number, request):
                    log.info("piece %d of %s failed mid-stream: %s", number, redact(request.url), request.error)
                    self._abort()
                    return
                # Coalesce a run of stored pieces of the same origin (local / fetched) into one sendfile.
                run_end = number
                local = number not in was_missing
                while (
                    run_end < last
                    and task.done[run_end + 1]
                    and ((run_end + 1) not in was_missing) == local
                ):
                    run_end += 1
                piece_offset = number * task.piece_length
                run_stop = min(task.content_length, (run_end + 1) * task.piece_length)
                number = run_end + 1
                offset = max(start, piece_offset)
                count = min(end + 1, run_stop) - offset
                truncated = False
                if limit is not None and sent_total + count > limit:
                    count = limit - sent_total
                    truncated = True
                piece_sent = 0
                while piece_sent < count:
                    sent = os.sendfile(out_fd, task.fd, offset + piece_sent, count - piece_sent)
                    if sent == 0:
                        break
                    piece_sent += sent
                sent_total += piece_sent
                core.stats.add("served_bytes", piece_sent)
                if local:
                    core.stats.add("local_bytes", piece_sent)
                if truncated or piece_sent < count:
                    self._abort()
                    return
        finally:
            try:
                sock.settimeout(core.config.idle_timeout)
            except OSError:
                pass

    def _abort(self) -> None:
        """End the response early: the client sees a body shorter than Content-Length."""
        self.core.stats.add("aborted_responses")
        self.close_connection = True

    # ------------------------------------------------------------------ pass-through

    def _passthrough(self, url: str) -> None:
        core = self.core
        core.stats.add("passthrough_requests")
        connection_tokens = {t.strip().lower() for t in self.headers.get("Connection", "").split(",")}
        skip = HOP_BY_HOP | connection_tokens | {"host", "expect", "content-length"}
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in skip]
        chunked_in = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        body = self._body_chunks()
        if body is not None and not chunked_in:
            headers.append(("Content-Length", self.headers["Content-Length"]))
        try:
            conn, resp = core.upstream.request(self.command, url, headers, body=body, chunked=chunked_in)
        except (OSError, http.client.HTTPException) as exc:
            log.info("pass-through %s %s failed: %s", self.command, redact(url), exc.__class__.__name__)
            self.close_connection = True
            self._send_empty(500, error_type="backend")
            return
        try:
            self._relay(resp)
        finally:
            if resp.isclosed():
                core.upstream.release(conn, resp)
            else:
                conn.close()

    def _relay(self, resp: http.client.HTTPResponse) -> None:
        """Copy an origin response to the client unchanged (status, headers, body)."""
        out = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
        no_body = self.command == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
        if no_body:
            self._write_head(resp.status, out)
            resp.read()
            return
        buf = _buffer()
        if resp.chunked:
            out.append(("Transfer-Encoding", "chunked"))
            self._write_head(resp.status, out)
            while True:
                chunk = resp.read1(_BUFFER_SIZE)
                if not chunk:
                    break
                self.wfile.write(b"%X\r\n%s\r\n" % (len(chunk), chunk))
                self.core.stats.add("passthrough_bytes", len(chunk))
            self.wfile.write(b"0\r\n\r\n")
            return
        if resp.length is None:
            self.close_connection = True  # delimited by close
        self._write_head(resp.status, out)
        while True:
            got = resp.readinto(buf)
            if not got:
                break
            self.wfile.write(buf[:got])
            self.core.stats.add("passthrough_bytes", got)
        if resp.length:  # origin closed early: propagate the short body
            self.close_connection = True


class PeerServer(socketserver.ThreadingTCPServer):
    """Threaded TCP server (one thread per connection) carrying a :class:`PeerCore`."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, core: PeerCore) -> None:
        self.core = core
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__((core.config.host, core.config.port), _Handler)

    def track(self, sock: socket.socket, is_open: bool) -> None:
        """Remember live client sockets so :meth:`close_all` can end keep-alive connections."""
        with self._open_lock:
            if is_open:
                self._open.add(sock)
            else:
                self._open.discard(sock)

    def close_all(self) -> None:
        """Shut down every live client connection."""
        with self._open_lock:
            socks = list(self._open)
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
