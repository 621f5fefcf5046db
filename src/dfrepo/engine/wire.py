"""HTTP/1.1 GETs over plain TCP, without general-purpose machinery.

Every request the engine sends is alike: a GET with a handful of headers, answered by a
status line, a few headers and a body that the byte mover reads straight off the socket.
urllib3 and http.client (whose header parser is the ``email`` package) spend about
0.4 ms of Python on each such exchange: on a model of 1000 × 1 MiB files that is the
largest share of the client's CPU after the kernel's copies. Here the exchange is one
``sendall`` of the request, usually one ``recv`` for the head, and a dict of headers.

This covers plain-HTTP origins and the Dragonfly proxy (dfdaemon speaks plain HTTP on
its port). TLS origins and the environment's HTTP proxies stay with urllib3
(:class:`~dfrepo.engine.transport.Transport` decides).

Errors are the ones the engine already classifies: ``ConnectionError`` when a connection
cannot be opened, ``TimeoutError`` (``socket.timeout``) when a read stalls, and
``http.client`` exceptions for a peer that closes early or answers something that is
not HTTP/1.x — all retryable.
"""

from __future__ import annotations

import http.client
import logging
import select
import socket
import threading
import urllib.parse
from collections.abc import Mapping
from typing import overload

from ..errors import TransferError

log = logging.getLogger("dfrepo.wire")

#: Bytes asked for per ``recv`` while reading a head; what arrives past the head is the
#: body's beginning and is handed to the byte mover as already-buffered bytes.
HEAD_RECV = 65536
#: A head larger than this is refused (http.client's limit is 100 headers of 64 KiB).
MAX_HEAD = 256 * 1024
#: Bytes read and discarded to reuse a connection whose body was not wanted; beyond
#: this the connection is closed instead.
MAX_DRAIN = 1024 * 1024

_NO_BODY = frozenset({204, 304})
_UNSAFE = frozenset("\r\n\0")


class Headers(dict[str, str]):
    """Response headers by lower-case name; repeated fields joined with ``", "``."""

    @overload  # type: ignore[override]
    def get(self, key: str, default: None = None) -> str | None: ...
    @overload
    def get(self, key: str, default: str) -> str: ...

    def get(self, key: str, default: str | None = None) -> str | None:
        return dict.get(self, key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return dict.__getitem__(self, key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and dict.__contains__(self, key.lower())


def _parse_head(head: bytes) -> tuple[int, str, Headers, bool]:
    """``(status, reason, headers, keep_alive)`` of a response head (no final blank line)."""
    lines = head.split(b"\n")
    status_line = lines[0].rstrip(b"\r").decode("latin-1")
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise http.client.BadStatusLine(status_line[:80])
    headers = Headers()
    last = ""
    for raw in lines[1:]:
        line = raw.rstrip(b"\r")
        if line[:1] in (b" ", b"\t") and last:  # obsolete line folding (RFC 9112 §5.2)
            headers[last] += " " + line.strip().decode("latin-1")
            continue
        name, sep, value = line.partition(b":")
        name = name.strip()
        if not sep or not name:
            raise http.client.HTTPException(f"malformed response header line {line[:80]!r}")
        last = name.decode("latin-1").lower()
        text = value.strip().decode("latin-1")
        old = dict.get(headers, last)
        headers[last] = text if old is None else f"{old}, {text}"
    tokens = {t.strip().lower() for t in (dict.get(headers, "connection") or "").split(",")}
    keep_alive = "close" not in tokens and (version != "HTTP/1.0" or "keep-alive" in tokens)
    return int(code), reason.strip(), headers, keep_alive


class Connection:
    """One TCP connection of a :class:`Pool`."""

    __slots__ = ("sock", "pool", "reused")

    def __init__(self, sock: socket.socket, pool: Pool) -> None:
        self.sock = sock
        self.pool = pool
        self.reused = False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:  # Defensive: closing a broken socket
            pass

    def dropped(self) -> bool:
        """True when the idle connection cannot carry another request: the server closed
        it (EOF readable) or sent bytes nobody asked for."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        try:
            return bool(poller.poll(0))
        except OSError:  # Defensive: a closed descriptor
            return True


class Response:
    """A response whose head was read; its body is read through :meth:`readinto`, or
    straight off :attr:`sock` by the byte mover (then :meth:`consumed` is called)."""

    def __init__(self, conn: Connection, status: int, reason: str, headers: Headers,
                 keep_alive: bool, pending: bytes) -> None:
        self.conn: Connection | None = conn
        self.status = status
        self.reason = reason
        self.headers = headers
        self._keep_alive = keep_alive
        self._pending = pending
        self.chunked = "chunked" in (headers.get("transfer-encoding") or "").lower()
        self._chunk_left = 0
        self._done = False
        length = headers.get("content-length")
        # self.length: body bytes not yet read (None = unknown: chunked, or read to the close).
        if self.chunked:
            self.length: int | None = None
        elif length is not None:
            values = {v.strip() for v in length.split(",")}
            if len(values) != 1 or not next(iter(values)).isdigit():
                raise http.client.HTTPException(f"bad Content-Length {length[:40]!r}")
            self.length = int(values.pop())
        elif status in _NO_BODY or 100 <= status < 200:
            self.length = 0
        else:
            self.length = None  # delimited by the connection's close
            self._keep_alive = False
        if self.length is not None and len(pending) > self.length:
            # More bytes than the body: the connection cannot be trusted with another request.
            self._pending = pending[:self.length]
            self._keep_alive = False
        self._done = self.length == 0

    # -- what the byte mover needs ---------------------------------------------------------

    @property
    def sock(self) -> socket.socket | None:
        """The socket when the rest of the body is exactly :attr:`length` plain bytes."""
        if self.conn is None or self.chunked or self.length is None:
            return None
        return self.conn.sock

    def take_pending(self) -> bytes:
        """The body bytes read together with the head (counted as read)."""
        data, self._pending = self._pending, b""
        if self.length is not None:
            self.length -= len(data)
        return data

    def consumed(self) -> None:
        """The byte mover read the rest of the body off :attr:`sock`."""
        self._pending = b""
        self.length = 0
        self._done = True

    def readinto(self, view: memoryview) -> int:
        """Body bytes into *view*; 0 at the end of the body (or of the connection)."""
        if self._done or not len(view):
            return 0
        if self.chunked:
            return self._read_chunked(view)
        if self.length is not None:
            view = view[:self.length]
        got = self._raw_readinto(view)
        if self.length is not None:
            self.length -= got
            self._done = self.length == 0
        if got == 0:
            self._done = True
            self._keep_alive = False
        return got

    def _raw_readinto(self, view: memoryview) -> int:
        if self._pending:
            n = min(len(view), len(self._pending))
            view[:n] = self._pending[:n]
            self._pending = self._pending[n:]
            return n
        if self.conn is None:
            return 0
        return self.conn.sock.recv_into(view)

    def _readline(self) -> bytes:
        """One CRLF-terminated line of the chunked framing, without its ending."""
        buf = self._pending
        while b"\n" not in buf:
            if len(buf) > 4096 or self.conn is None:
                raise http.client.HTTPException("chunked body: malformed chunk header")
            more = self.conn.sock.recv(HEAD_RECV)
            if not more:
                raise http.client.IncompleteRead(b"")
            buf += more
        line, _, self._pending = buf.partition(b"\n")
        return line.rstrip(b"\r")

    def _read_chunked(self, view: memoryview) -> int:
        if self._chunk_left == 0:
            size_text = self._readline().split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise http.client.HTTPException(f"chunked body: bad chunk size {size_text[:20]!r}") from None
            if size == 0:
                while self._readline():  # trailer fields, up to the blank line
                    pass
                self._done = True
                return 0
            self._chunk_left = size
        got = self._raw_readinto(view[:self._chunk_left])
        if got == 0:
            raise http.client.IncompleteRead(b"", self._chunk_left)
        self._chunk_left -= got
        if self._chunk_left == 0 and self._readline():
            raise http.client.HTTPException("chunked body: chunk longer than its size")
        return got

    # -- the connection afterwards ---------------------------------------------------------

    def release_conn(self) -> None:
        """Give the connection back for reuse if the body was read to its end (else close it)."""
        conn, self.conn = self.conn, None
        if conn is None:
            return
        if self._done and self._keep_alive and not self._pending:
            conn.pool.put(conn)
        else:
            conn.close()

    def drain_conn(self) -> None:
        """Read and drop the rest of a small body, so the connection can be reused."""
        if self.conn is None:
            return
        scratch = memoryview(bytearray(65536))
        drained = 0
        try:
            while not self._done and drained < MAX_DRAIN:
                got = self.readinto(scratch)
                if got == 0:
                    break
                drained += got
        except (OSError, http.client.HTTPException):
            self.close()

    def close(self) -> None:
        """Drop the connection (its body will not be read)."""
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()


def request_target(url: str) -> str:
    """*url* with any byte that may not appear in a request line percent-encoded (as
    urllib3 does); an ordinary (presigned) URL is returned as it is."""
    if url.isascii() and url.isprintable() and " " not in url:
        return url
    return urllib.parse.quote(url, safe="!#$%&'()*+,/:;=?@[]~")


class Pool:
    """Keep-alive connections to one ``host:port``.

    :param maxsize: idle connections kept for reuse; more may be open at once (a busy
        batch never waits for a connection), the surplus is closed when returned.
    """

    def __init__(self, host: str, port: int, *, maxsize: int, connect_timeout: float,
                 read_timeout: float) -> None:
        self.host = host
        self.port = port
        self.maxsize = maxsize
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def connection(self) -> Connection:
        """An idle connection that is still usable, or a new one.

        :raises ConnectionError: (or ``TimeoutError``) the server cannot be connected to."""
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                break
            if not conn.dropped():
                return conn
            conn.close()
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except TimeoutError:
            raise
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ConnectionError(f"cannot connect to {self.host}:{self.port}: {reason}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self.read_timeout)
        return Connection(sock, self)

    def put(self, conn: Connection) -> None:
        conn.reused = True
        with self._lock:
            if not self._closed and len(self._idle) < self.maxsize:
                self._idle.append(conn)
                return
        conn.close()

    def exchange(self, conn: Connection, target: str, headers: Mapping[str, str]) -> Response:
        """Send ``GET target`` with *headers* (``Host`` among them) on *conn* and read the
        response head. On any error the connection is closed."""
        try:
            conn.sock.sendall(_request_bytes(target, headers))
            return _read_response(conn)
        except BaseException:
            conn.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _request_bytes(target: str, headers: Mapping[str, str]) -> bytes:
    parts = [f"GET {target} HTTP/1.1\r\n"]
    for name, value in headers.items():
        if _UNSAFE.intersection(name) or _UNSAFE.intersection(value) or ":" in name:
            raise TransferError(f"refusing to send request header {name[:40]!r}: it holds a line break or NUL")
        parts.append(f"{name}: {value}\r\n")
    parts.append("\r\n")
    return "".join(parts).encode("latin-1")


def _read_response(conn: Connection) -> Response:
    sock = conn.sock
    buf = b""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head, rest = buf[:end], buf[end + 4:]
        else:
            end = buf.find(b"\n\n")
            head, rest = (buf[:end], buf[end + 2:]) if end >= 0 else (b"", b"")
        if end >= 0:
            status, reason, headers, keep_alive = _parse_head(head)
            if 100 <= status < 200 and status != 101:  # interim (100 Continue): the real head follows
                buf = rest
                continue
            return Response(conn, status, reason, headers, keep_alive, rest)
        if len(buf) > MAX_HEAD:
            raise http.client.LineTooLong("response head")
        more = sock.recv(HEAD_RECV)
        if not more:
            if buf:
                raise http.client.IncompleteRead(buf[:80])
            raise http.client.RemoteDisconnected("the server closed the connection without a response")
        buf += more
