"""Outbound HTTP(S) to origins and to a parent peer, with a keep-alive pool.

Like dfdaemon, TLS to the origin is *not* verified by default (``NoVerifier``,
dragonfly-proxy.md §3.2); pass ``verify=True`` (and optionally a CA file) to
verify.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["Target", "Upstream", "HOP_BY_HOP", "redact"]

#: Hop-by-hop headers (RFC 9110 §7.6.1) plus the proxy-only ones; never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-connection", "proxy-authorization",
        "proxy-authenticate", "te", "trailer", "trailers", "transfer-encoding", "upgrade",
    }
)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def redact(url: str) -> str:
    """*url* without query, fragment or userinfo: safe to log."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparsable url>"
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return f"{parts.scheme}://{netloc}{parts.path}" + ("?<redacted>" if parts.query else "")


@dataclass(frozen=True)
class Target:
    """Where an absolute URL points: connection key, request target and Host header."""

    scheme: str
    host: str
    port: int
    path: str  # origin-form request target (path?query)
    host_header: str

    @classmethod
    def parse(cls, url: str) -> Target:
        """Parse an absolute ``http(s)://`` URL; raises ValueError otherwise."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError("not an absolute http(s) URL")
        port = parts.port or _DEFAULT_PORTS[scheme]
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        host_header = shown if port == _DEFAULT_PORTS[scheme] else f"{shown}:{port}"
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return cls(scheme, host, port, path, host_header)


class Upstream:
    """Pooled ``http.client`` connections keyed by (scheme, host, port)."""

    def __init__(self, *, verify: bool = False, ca_file: str | None = None, timeout: float = 60.0) -> None:
        self.timeout = timeout
        if verify:
            self._ssl = ssl.create_default_context(cafile=ca_file)
        else:
            self._ssl = ssl.create_default_context()
            self._ssl.check_hostname = False
            self._ssl.verify_mode = ssl.CERT_NONE
        self._lock = threading.Lock()
        self._idle: dict[tuple[str, str, int], list[http.client.HTTPConnection]] = {}

    def _connect(self, key: tuple[str, str, int]) -> http.client.HTTPConnection:
        scheme, host, port = key
        if scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self._ssl)
        return http.client.HTTPConnection(host, port, timeout=self.timeout)

    def _checkout(self, key: tuple[str, str, int]) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                return idle.pop(), True
        return self._connect(key), False

    def request(
        self,
        method: str,
        url: str,
        headers: Iterable[tuple[str, str]],
        *,
        via: tuple[str, int] | None = None,
        body: Iterable[bytes] | None = None,
        chunked: bool = False,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send one request and return the connection and the (unread) response.

        *via* sends the request in absolute form to an HTTP proxy (the parent
        peer).  Give the pair back with :meth:`release` once the body is read.
        A reused idle connection that turns out to be dead is retried once on a
        fresh one when there is no body.
        """
        target = Target.parse(url)
        key = ("http", via[0], via[1]) if via else (target.scheme, target.host, target.port)
        request_target = url if via else target.path
        header_list = list(headers)
        for attempt in range(2):
            conn, reused = self._checkout(key) if body is None else (self._connect(key), False)
            try:
                conn.putrequest(method, request_target, skip_host=True, skip_accept_encoding=True)
                conn.putheader("Host", target.host_header)
                for name, value in header_list:
                    conn.putheader(name, value)
                if chunked:
                    conn.putheader("Transfer-Encoding", "chunked")
                conn.endheaders()
                if body is not None:
                    for chunk in body:
                        if not chunk:
                            continue
                        if chunked:
                            conn.send(b"%X\r\n" % len(chunk) + chunk + b"\r\n")
                        else:
                            conn.send(chunk)
                    if chunked:
                        conn.send(b"0\r\n\r\n")
                return conn, conn.getresponse()
            except (ConnectionError, ssl.SSLEOFError):  # incl. RemoteDisconnected: a stale pooled connection
                conn.close()
                if not reused or attempt:
                    raise
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")

    def release(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        """Return *conn* to the pool if its response was fully read, else close it."""
        if response.isclosed() and not response.will_close and conn.sock is not None:
            key = (
                "https" if isinstance(conn, http.client.HTTPSConnection) else "http",
                conn.host,
                conn.port,
            )
            with self._lock:
                idle = self._idle.setdefault(key, [])
                if len(idle) < 32:
                    idle.append(conn)
                    return
        conn.close()

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            pools = list(self._idle.values())
            self._idle.clear()
        for pool in pools:
            for conn in pool:
                conn.close()


def set_nodelay(sock: socket.socket) -> None:
    """Disable Nagle on a TCP socket (best effort)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass
