"""The delaying reverse proxy of the latency benchmark (tests/servers/latency_proxy/main.go):
every request waits at least the configured delay, bytes pass intact (ranges included), the
request head and body reach the upstream unchanged. Only lower bounds on time are asserted."""

from __future__ import annotations

import http.client
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from servers.latency import LatencyProxy, start_latency_proxy
from servers.nginx import NginxOrigin
from servers.procs import LOOPBACK
from servers.require import missing

DELAY_MS = 40.0


def _start(workdir: Path, upstream: str) -> LatencyProxy:
    try:
        return start_latency_proxy(workdir, upstream, delay_ms=DELAY_MS)
    except FileNotFoundError as exc:
        problem = exc
    missing("go (builds the latency proxy)", problem, hint="install Go (https://go.dev/dl/)")


class _Echo(BaseHTTPRequestHandler):
    """Answers every request with what it received: request line, Host, body."""

    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                body += self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        out = f"{self.requestline}\n{self.headers.get('Host')}\n".encode() + body
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_PUT = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def echo() -> Iterator[str]:
    server = ThreadingHTTPServer((LOOPBACK, 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{LOOPBACK}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _timed(conn: http.client.HTTPConnection, method: str, path: str, **kw: object) -> tuple[float, int, bytes]:
    t0 = time.perf_counter()
    conn.request(method, path, **kw)  # type: ignore[arg-type]
    resp = conn.getresponse()
    first = resp.read(1)
    dt = time.perf_counter() - t0
    return dt, resp.status, first + resp.read()


@pytest.mark.servers
def test_delays_every_request_and_passes_bytes_and_ranges(nginx_origin: NginxOrigin, tmp_path: Path) -> None:
    data = os.urandom(8 << 20)
    (nginx_origin.root / "latency-blob.bin").write_bytes(data)
    proxy = _start(tmp_path / "proxy", f"{nginx_origin.host}:{nginx_origin.port}")
    try:
        conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=30)
        try:
            # Several requests on one kept-alive connection: each one is delayed.
            dt, status, body = _timed(conn, "GET", "/latency-blob.bin")
            assert (status, body == data) == (200, True)
            assert dt >= DELAY_MS / 1000
            for rng, want in [("bytes=0-0", data[:1]), ("bytes=1048575-3145727", data[1048575:3145728]),
                              ("bytes=-100", data[-100:])]:
                dt, status, body = _timed(conn, "GET", "/latency-blob.bin", headers={"Range": rng})
                assert (status, body == want) == (206, True), rng
                assert dt >= DELAY_MS / 1000, rng
            dt, status, _ = _timed(conn, "GET", "/no-such-file")
            assert status == 404 and dt >= DELAY_MS / 1000
        finally:
            conn.close()
        # Concurrent connections are delayed side by side, not one after the other.
        results: list[bytes] = []

        def fetch() -> None:
            c = http.client.HTTPConnection(proxy.host, proxy.port, timeout=30)
            c.request("GET", "/latency-blob.bin", headers={"Range": "bytes=0-1023"})
            results.append(c.getresponse().read())
            c.close()

        threads = [threading.Thread(target=fetch) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results == [data[:1024]] * 8
        stats = proxy.stats()
        assert stats["requests"] == 5 + 8
        assert stats["connections"] == 1 + 8
        assert stats["errors"] == 0
        assert proxy.cpu_seconds() >= 0
    finally:
        proxy.stop()


@pytest.mark.servers
def test_request_head_and_bodies_reach_the_upstream_unchanged(echo: str, tmp_path: Path) -> None:
    proxy = _start(tmp_path / "proxy", echo)
    try:
        conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=30)
        try:
            host = "bucket.s3.example:9000"  # a presigned URL's signature covers Host: kept as sent
            dt, status, body = _timed(conn, "GET", "/b/k?X-Amz-Signature=abc", headers={"Host": host})
            assert status == 200 and dt >= DELAY_MS / 1000
            assert body == f"GET /b/k?X-Amz-Signature=abc HTTP/1.1\n{host}\n".encode()
            payload = os.urandom(300_000)
            dt, status, body = _timed(conn, "PUT", "/b/upload", body=payload, headers={"Host": host})
            assert status == 200 and body.endswith(payload) and dt >= DELAY_MS / 1000
            chunks = [b"a" * 10, os.urandom(70_000), b"z"]
            dt, status, body = _timed(conn, "POST", "/b/chunked", body=iter(chunks), encode_chunked=True,
                                      headers={"Host": host, "Transfer-Encoding": "chunked"})
            assert status == 200 and body.endswith(b"".join(chunks)) and dt >= DELAY_MS / 1000
        finally:
            conn.close()
    finally:
        proxy.stop()
