"""A tiny forwarding HTTP proxy on loopback that records what went through it.

Absolute-form requests (``GET http://host/key HTTP/1.1``) are forwarded with
http.client; ``CONNECT host:port`` opens a blind tunnel. ``requests`` lists
``(method, target)`` with query strings cut (they hold signatures); a presigned target
ends in ``?<presigned>``.
"""

from __future__ import annotations

import http.client
import select
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import urlsplit

_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "upgrade",
        "transfer-encoding"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _record(self) -> None:
        with self.server.lock:
            mark = "?<presigned>" if "X-Amz-Signature=" in self.path else ""
            self.server.requests.append((self.command, self.path.split("?", 1)[0] + mark))
            auth = self.headers.get("Proxy-Authorization")
            if auth:
                self.server.auth.append(auth)

    def do_CONNECT(self) -> None:
        self._record()
        host, _, port = self.path.rpartition(":")
        try:
            upstream = socket.create_connection((host, int(port)), timeout=10)
        except OSError:
            self.send_error(502)
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        conns = [self.connection, upstream]
        while True:
            ready, _, _ = select.select(conns, [], [], 30)
            if not ready:
                break
            for src in ready:
                data = src.recv(65536)
                if not data:
                    upstream.close()
                    return
                (upstream if src is self.connection else self.connection).sendall(data)

    def _forward(self) -> None:
        self._record()
        parts = urlsplit(self.path)
        if parts.scheme != "http" or not parts.hostname:
            self.send_error(400, "absolute http:// URL expected")
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=30)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(self.command, target or "/", body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in _HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    requests: list[tuple[str, str]]
    auth: list[str]
    lock: threading.Lock


class ForwardProxy:
    """``with ForwardProxy() as p: p.url`` -> ``http://127.0.0.1:<port>``."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.requests = []
        self._server.auth = []
        self._server.lock = threading.Lock()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def requests(self) -> list[tuple[str, str]]:
        with self._server.lock:
            return list(self._server.requests)

    @property
    def auth(self) -> list[str]:
        with self._server.lock:
            return list(self._server.auth)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
