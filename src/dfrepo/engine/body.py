"""The contract between the Python engine and the byte mover (``dfrepo/_fastio.pyi``).

The compiled core and its twin never see a response object: the engine hands them a
:class:`Body` — a socket fd to read directly (or -1), the body bytes already read
together with the head, and a generic ``readinto`` for everything else (TLS, chunked,
unknown length) — and afterwards tells the response that the body was consumed
(:func:`release`). Responses come from :mod:`~dfrepo.engine.wire` (plain HTTP) or urllib3
(TLS, environment proxies); this module is the only place that reaches into
``http.client.HTTPResponse`` internals, and it says why at each step.
"""

from __future__ import annotations

import mmap
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import urllib3

from .wire import Response as WireResponse

WritableBuffer = bytearray | mmap.mmap
"""The byte mover's reused buffer: any writable, contiguous buffer of bytes."""

WriteLock = threading.Lock
"""Taken by the byte mover around each write into a file that several requests fill."""


def new_buffer(size: int) -> mmap.mmap:
    """A buffer whose pages are not touched until used: a splice-only worker never makes
    its buffer resident, so peak RSS does not grow with the number of connections."""
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


@dataclass
class Cursor:
    """Bytes written so far by one copy: a retry resumes from the first unwritten byte."""

    written: int = 0


@dataclass(frozen=True)
class Body:
    """One response body as the byte mover sees it."""

    sock_fd: int
    """A plain-TCP socket the remaining ``length`` body bytes can be read from, or -1."""
    timeout: float | None
    """The socket's read timeout in seconds (None = wait forever)."""
    buffered: bytes
    """Body bytes already read off the socket by http.client: they come first."""
    readinto: Callable[[memoryview], int]
    """Generic reader, used when ``sock_fd`` is -1 (0 at the end of the body)."""

    @property
    def direct(self) -> bool:
        return self.sock_fd >= 0


def _http_response(resp: urllib3.BaseHTTPResponse) -> Any:
    # urllib3 keeps the http.client response it reads from as ``_fp`` (no public accessor).
    return resp._fp  # type: ignore[attr-defined]  # private in urllib3's stubs, stable since 1.x


def _plain_socket(resp: urllib3.BaseHTTPResponse, hresp: Any) -> socket.socket | None:
    """The TCP socket under *resp* when its body may be read straight off it: no TLS, not
    chunked, a known length."""
    sock = getattr(getattr(resp, "connection", None), "sock", None)
    if not isinstance(sock, socket.socket) or isinstance(sock, ssl.SSLSocket):
        return None
    if getattr(hresp, "chunked", False) or getattr(hresp, "length", None) is None:
        return None
    return sock


def open_body(resp: urllib3.BaseHTTPResponse | WireResponse, length: int, *, direct: bool, chunk: int) -> Body:
    """Describe *resp*'s body for the byte mover.

    :param length: the body bytes expected (-1 = read to the end).
    :param direct: the mover can read sockets itself (the compiled core, io_mode not
        ``readinto``); otherwise ``sock_fd`` is -1.
    :param chunk: at most this many already-buffered bytes are taken over.
    """
    if isinstance(resp, WireResponse):
        wsock = resp.sock if direct and length > 0 and resp.length == length else None
        if wsock is None:
            return Body(-1, None, b"", resp.readinto)
        return Body(wsock.fileno(), wsock.gettimeout(), resp.take_pending(), resp.readinto)
    hresp = _http_response(resp)
    sock = _plain_socket(resp, hresp) if direct and length > 0 else None
    if sock is None:
        return Body(-1, None, b"", hresp.readinto)
    # http.client reads through a BufferedReader: bytes past the headers may sit there.
    reader = hresp.fp
    buffered = reader.read1(min(length, chunk)) if reader.peek(0) else b""
    return Body(sock.fileno(), sock.gettimeout(), buffered, hresp.readinto)


def release(resp: urllib3.BaseHTTPResponse | WireResponse, body: Body) -> None:
    """Hand the connection back to its pool after a complete body."""
    if isinstance(resp, WireResponse):
        if body.direct:
            resp.consumed()
        resp.release_conn()
        return
    if body.direct:
        # The bytes were read behind http.client's back: tell it the body is consumed
        # (length 0, then a zero-byte read closes its file object), so urllib3 sees a
        # finished response and may reuse the connection.
        hresp = _http_response(resp)
        hresp.length = 0
        hresp.read(1)
    resp.release_conn()
