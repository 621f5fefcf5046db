"""A recording HTTP/1.1 relay: a transparent TCP forwarder that logs every request line.

Put in front of an S3 server, it answers "which requests did the server get?" without relying on
the server's own logging. Only the client->server direction is parsed (request line, headers,
and the body framing — Content-Length or chunked — so keep-alive request boundaries are found);
the server->client direction is copied as a plain byte stream with ``splice(2)`` through a pipe,
so multi-hundred-MB/s GETs are not slowed by Python. Bytes are never modified.
"""

from __future__ import annotations

import fcntl
import os
import socket
import threading
import time
from dataclasses import dataclass, field

from .procs import LOOPBACK

__all__ = ["RecordedRequest", "RecordingRelay"]

_CHUNK = 1 << 20
_F_SETPIPE_SZ = 1031
_MAX_HEAD = 1 << 20


@dataclass(frozen=True)
class RecordedRequest:
    """One request seen by the relay."""

    method: str
    target: str  # path with query, exactly as sent
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased names (last one wins)
    time: float = 0.0  # time.time() when the head was complete


class _ClientClosed(Exception):
    """The client side ended (cleanly between requests or mid-request)."""


class RecordingRelay:
    """Listen on 127.0.0.1:<free port> and relay every connection to ``upstream``."""

    def __init__(self, upstream_host: str, upstream_port: int, *, host: str = LOOPBACK) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server((host, 0), backlog=256)
        self.host = host
        self.port: int = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._conns: set[socket.socket] = set()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name=f"relay:{self.port}", daemon=True)
        self._thread.start()

    # -- public ----------------------------------------------------------------------------
    def requests(self) -> list[RecordedRequest]:
        """Every request since start or the last :meth:`clear`, in arrival order."""
        with self._lock:
            return list(self._requests)

    def request_log(self) -> list[tuple[str, str]]:
        """(method, path-with-query) of every request since start or the last :meth:`clear`."""
        return [(r.method, r.target) for r in self.requests()]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def close(self) -> None:
        """Stop accepting and cut every open connection."""
        self._closed.set()
        # close() alone does not wake a thread blocked in accept(); shutdown() does (Linux).
        _shutdown(self._listener)
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            conns = list(self._conns)
        for s in conns:
            _shutdown(s)
        self._thread.join(timeout=5)

    # -- plumbing --------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._conns.update((client, upstream))
        pump = threading.Thread(target=self._pump, args=(upstream, client), daemon=True)
        pump.start()
        try:
            self._forward_requests(client, upstream)
        except (_ClientClosed, OSError, ValueError):
            pass
        finally:
            # The client is done sending; let the server finish its response, then close.
            try:
                upstream.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            pump.join()
            with self._lock:
                self._conns.difference_update((client, upstream))
            client.close()
            upstream.close()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        """Copy server->client until the server closes; splice(2) when possible."""
        try:
            _splice_all(src, dst)
        except OSError:
            pass
        finally:
            _shutdown(dst)
            _shutdown(src)

    def _forward_requests(self, client: socket.socket, upstream: socket.socket) -> None:
        reader = _Reader(client)
        while True:
            head = reader.read_head()
            upstream.sendall(head)
            method, target, headers = _parse_head(head)
            with self._lock:
                self._requests.append(RecordedRequest(method, target, headers, time.time()))
            te = headers.get("transfer-encoding", "").lower()
            if "chunked" in te:
                self._forward_chunked(reader, upstream)
            else:
                length = int(headers.get("content-length", "0") or "0")
                reader.forward(length, upstream)

    @staticmethod
    def _forward_chunked(reader: _Reader, upstream: socket.socket) -> None:
        while True:
            line = reader.read_line()
            upstream.sendall(line)
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, ended by an empty line
                    trailer = reader.read_line()
                    upstream.sendall(trailer)
                    if trailer in (b"\r\n", b"\n"):
                        return
            reader.forward(size, upstream)
            upstream.sendall(reader.read_line())  # the CRLF after the chunk data


class _Reader:
    """Buffered reads from the client socket, for heads and framed bodies."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def _fill(self) -> None:
        data = self.sock.recv(_CHUNK)
        if not data:
            raise _ClientClosed
        self.buf += data

    def read_head(self) -> bytes:
        start = 0
        while True:
            idx = self.buf.find(b"\r\n\r\n", max(0, start - 3))
            if idx >= 0:
                head = bytes(self.buf[: idx + 4])
                del self.buf[: idx + 4]
                return head
            if len(self.buf) > _MAX_HEAD:
                raise ValueError("request head too large")
            start = len(self.buf)
            self._fill()

    def read_line(self) -> bytes:
        while True:
            idx = self.buf.find(b"\n")
            if idx >= 0:
                line = bytes(self.buf[: idx + 1])
                del self.buf[: idx + 1]
                return line
            if len(self.buf) > _MAX_HEAD:
                raise ValueError("line too long")
            self._fill()

    def forward(self, n: int, dst: socket.socket) -> None:
        """Send exactly ``n`` body bytes to ``dst``: buffered ones first, then straight through."""
        if self.buf and n:
            take = min(n, len(self.buf))
            dst.sendall(self.buf[:take])
            del self.buf[:take]
            n -= take
        if n:
            block = bytearray(min(n, _CHUNK))
            view = memoryview(block)
            while n:
                got = self.sock.recv_into(view, min(n, len(block)))
                if not got:
                    raise _ClientClosed
                dst.sendall(view[:got])
                n -= got


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    text = head.decode("latin-1")
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) < 3:
        raise ValueError(f"bad request line: {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return parts[0], parts[1], headers


def _splice_all(src: socket.socket, dst: socket.socket) -> None:
    splice = getattr(os, "splice", None)
    if splice is None:
        _copy_all(src, dst)
        return
    r, w = os.pipe()
    try:
        try:
            fcntl.fcntl(w, _F_SETPIPE_SZ, _CHUNK)
        except OSError:
            pass
        sfd, dfd = src.fileno(), dst.fileno()
        while True:
            n = splice(sfd, w, _CHUNK)
            if n == 0:
                return
            while n:
                n -= splice(r, dfd, n)
    finally:
        os.close(r)
        os.close(w)


def _copy_all(src: socket.socket, dst: socket.socket) -> None:
    block = bytearray(_CHUNK)
    view = memoryview(block)
    while True:
        got = src.recv_into(view)
        if not got:
            return
        dst.sendall(view[:got])


def _shutdown(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
