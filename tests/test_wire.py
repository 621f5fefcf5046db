"""The lean HTTP/1.1 client (dfrepo.engine.wire) against a server that answers from a script:
framing, keep-alive reuse, what makes a connection unusable, and the errors it raises."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dfrepo.engine import Downloader, DownloadRequest
from dfrepo.engine.settings import TransferConfig
from dfrepo.engine.transport import Transport, _split
from dfrepo.engine.wire import Pool, Response, request_target
from dfrepo.errors import TransferError
from implementations import IMPLS


class Scripted:
    """A loopback server that answers each request with the next scripted reply.

    A reply is raw bytes, sent as they are; ``CLOSE`` after a reply closes that connection.
    ``requests`` holds ``(connection number, raw request head)`` of every request seen."""

    CLOSE = b"<close>"

    def __init__(self, replies: list[bytes]) -> None:
        self.replies = list(replies)
        self.requests: list[tuple[int, bytes]] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._conns = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self._conns += 1
                number = self._conns
            threading.Thread(target=self._serve, args=(sock, number), daemon=True).start()

    def _serve(self, sock: socket.socket, number: int) -> None:
        buf = b""
        with sock:
            while True:
                while b"\r\n\r\n" not in buf:
                    try:
                        more = sock.recv(65536)
                    except OSError:
                        return
                    if not more:
                        return
                    buf += more
                head, _, buf = buf.partition(b"\r\n\r\n")
                with self._lock:
                    self.requests.append((number, head))
                    reply = self.replies.pop(0) if self.replies else b"HTTP/1.1 500 Unscripted\r\n\r\n"
                close = reply.endswith(self.CLOSE)
                sock.sendall(reply.removesuffix(self.CLOSE))
                if close:
                    return

    def close(self) -> None:
        self.listener.close()


@contextmanager
def scripted(*replies: bytes) -> Iterator[tuple[Scripted, Pool]]:
    srv = Scripted(list(replies))
    pool = Pool("127.0.0.1", srv.port, maxsize=4, connect_timeout=5, read_timeout=5)
    try:
        yield srv, pool
    finally:
        pool.close()
        srv.close()


def get(pool: Pool, target: str = "/k", **headers: str) -> Response:
    return pool.exchange(pool.connection(), target, {"Host": "origin", **headers})


def read_all(resp: Response) -> bytes:
    out = bytearray()
    buf = memoryview(bytearray(7))  # small reads cross every framing boundary
    while got := resp.readinto(buf):
        out += buf[:got]
    return bytes(out)


def ok(body: bytes, *extra: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in extra)
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body


def test_keep_alive_connection_is_reused_and_headers_are_case_insensitive() -> None:
    with scripted(ok(b"one", "ETag: \"a\"", "X-Twice: 1", "x-twice: 2"), ok(b"two")) as (srv, pool):
        first = get(pool, "/a?x=1", Range="bytes=0-2")
        assert (first.status, first.reason) == (200, "OK")
        assert first.headers.get("etag") == '"a"' and first.headers["ETAG"] == '"a"'
        assert first.headers.get("X-Twice") == "1, 2" and "x-TWICE" in first.headers
        assert first.headers.get("Content-Range") is None
        assert read_all(first) == b"one"
        first.release_conn()
        second = get(pool, "/b")
        assert read_all(second) == b"two"
        second.release_conn()
    assert [n for n, _ in srv.requests] == [1, 1]
    head = srv.requests[0][1].decode()
    assert head.startswith("GET /a?x=1 HTTP/1.1\r\n") and "\r\nRange: bytes=0-2" in head and "Host: origin" in head


@pytest.mark.parametrize("reply", [
    ok(b"x", "Connection: close"),
    b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxEXTRA",  # bytes past the body
], ids=["connection-close", "http-1.0", "bytes-past-the-body"])
def test_connection_that_cannot_carry_another_request_is_not_reused(reply: bytes) -> None:
    with scripted(reply, ok(b"y")) as (srv, pool):
        resp = get(pool)
        assert read_all(resp) == b"x"
        resp.release_conn()
        again = get(pool)
        assert read_all(again) == b"y"
    assert [n for n, _ in srv.requests] == [1, 2]


def test_http_1_0_keep_alive_is_reused() -> None:
    with scripted(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx", ok(b"y")) as (srv, pool):
        resp = get(pool)
        assert read_all(resp) == b"x"
        resp.release_conn()
        assert read_all(get(pool)) == b"y"
    assert [n for n, _ in srv.requests] == [1, 1]


def test_body_not_read_to_its_end_closes_the_connection() -> None:
    with scripted(ok(b"0123456789"), ok(b"y")) as (srv, pool):
        resp = get(pool)
        resp.readinto(memoryview(bytearray(3)))
        resp.release_conn()
        assert read_all(get(pool)) == b"y"
    assert [n for n, _ in srv.requests] == [1, 2]


def test_drained_error_body_keeps_the_connection() -> None:
    with scripted(b"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 5\r\n\r\nnope!", ok(b"")) as (srv, pool):
        resp = get(pool)
        assert resp.status == 416
        resp.drain_conn()
        resp.release_conn()
        empty = get(pool)
        assert empty.length == 0 and read_all(empty) == b""
        empty.release_conn()
    assert [n for n, _ in srv.requests] == [1, 1]


def test_idle_connection_the_server_closed_is_replaced() -> None:
    with scripted(ok(b"x") + Scripted.CLOSE, ok(b"y")) as (srv, pool):
        resp = get(pool)
        assert read_all(resp) == b"x"
        resp.release_conn()  # looks reusable (no Connection: close), but the server hangs up
        for _ in range(500):  # the FIN arrives when the server thread gets to close (bounded: 5 s)
            conn = pool.connection()
            if not conn.reused:
                break
            pool.put(conn)
            time.sleep(0.01)
        assert not conn.reused
        assert read_all(pool.exchange(conn, "/k", {"Host": "origin"})) == b"y"


def test_chunked_body_with_extensions_and_trailers() -> None:
    body = b"4;ext=1\r\nWiki\r\n6\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nX-Trailer: t\r\n\r\n"
    reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    with scripted(reply, ok(b"next")) as (srv, pool):
        resp = get(pool)
        assert resp.sock is None  # the byte mover cannot read chunked framing off the socket
        assert read_all(resp) == b"Wikipedia in \r\n\r\nchunks."
        resp.release_conn()
        assert read_all(get(pool)) == b"next"
    assert [n for n, _ in srv.requests] == [1, 1]


def test_body_delimited_by_close() -> None:
    with scripted(b"HTTP/1.1 200 OK\r\n\r\nuntil the end" + Scripted.CLOSE) as (_, pool):
        resp = get(pool)
        assert resp.length is None and resp.sock is None
        assert read_all(resp) == b"until the end"


def test_interim_response_is_skipped_and_pending_body_is_handed_over() -> None:
    reply = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 206 Partial Content\r\nContent-Length: 4\r\n\r\nbody"
    with scripted(reply) as (_, pool):
        resp = get(pool)
        assert resp.status == 206
        assert resp.sock is not None
        assert resp.take_pending() == b"body" and resp.length == 0


@pytest.mark.parametrize(("reply", "error"), [
    (b"ICY 200 OK\r\n\r\n", http.client.BadStatusLine),
    (b"HTTP/1.1 2000 Nope\r\n\r\n", http.client.BadStatusLine),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", http.client.HTTPException),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\n", http.client.HTTPException),
    (Scripted.CLOSE, http.client.RemoteDisconnected),
    (b"HTTP/1.1 200 OK\r\nContent-" + Scripted.CLOSE, http.client.IncompleteRead),
], ids=["not-http", "four-digit-status", "no-colon", "conflicting-lengths", "closed-at-once", "closed-mid-head"])
def test_answers_that_are_not_http_raise_retryable_errors(reply: bytes, error: type[Exception]) -> None:
    from dfrepo.engine.retry import retryable

    with scripted(reply) as (_, pool), pytest.raises(error) as ei:
        get(pool)
    assert retryable(ei.value)


def test_a_head_that_never_ends_is_refused() -> None:
    reply = b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"p" * 300_000 + Scripted.CLOSE
    with scripted(reply) as (_, pool), pytest.raises(http.client.LineTooLong):
        get(pool)


def test_chunked_framing_errors() -> None:
    reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    with scripted(reply) as (_, pool), pytest.raises(http.client.HTTPException, match="chunk size"):
        read_all(get(pool))


@pytest.mark.parametrize("header", [("X-Bad", "a\r\nInjected: 1"), ("X-Nul", "a\0b"), ("X-Bad\r\nY", "1")])
def test_header_with_a_line_break_is_refused_before_anything_is_sent(header: tuple[str, str]) -> None:
    with scripted(ok(b"x")) as (srv, pool), pytest.raises(TransferError, match="line break or NUL"):
        pool.exchange(pool.connection(), "/k", {"Host": "origin", header[0]: header[1]})
    assert srv.requests == []


def test_connect_failure_is_a_connection_error() -> None:
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}"):
        Pool("127.0.0.1", port, maxsize=1, connect_timeout=2, read_timeout=2).connection()


def test_request_target_and_host_header() -> None:
    signed = "http://h/b/k?X-Amz-Signature=ab%2Fcd&X-Amz-Date=20260101T000000Z"
    assert request_target(signed) == signed
    assert request_target("http://h/a b/é") == "http://h/a%20b/%C3%A9"
    assert _split("http://[::1]:8080/a?b=1") == ("http", "::1", 8080, "[::1]:8080", "/a?b=1")
    assert _split("https://Host.example/k") == ("https", "host.example", 443, "host.example", "/k")
    assert _split("http://h:80") == ("http", "h", 80, "h", "/")
    assert _split("ftp://h/k") is None and _split("http://h:bad/k") is None


def test_surplus_connections_are_closed_when_the_pool_is_full() -> None:
    with scripted(ok(b"a"), ok(b"b")) as (_, pool):
        pool.maxsize = 1
        first, second = get(pool), get(pool)
        read_all(first), read_all(second)
        first.release_conn()
        second.release_conn()
        assert len(pool._idle) == 1


@pytest.mark.parametrize("impl", IMPLS)
def test_engine_downloads_chunked_and_close_delimited_bodies(impl: str, tmp_path: Path) -> None:
    """Bodies the byte mover cannot read off the socket go through ``readinto``: a
    chunked answer and one that ends with the connection, for a file of unknown size."""
    data = bytes(range(256)) * 300
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + 5000]), data[i:i + 5000]) for i in range(0, len(data), 5000))
    replies = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n",
               b"HTTP/1.1 200 OK\r\n\r\n" + data + Scripted.CLOSE]
    srv = Scripted(replies)  # both ignore Range: a 200 is the whole body
    try:
        cfg = TransferConfig(fsync=False, concurrency=1)
        with Downloader(cfg, implementation=impl) as dl:
            results = dl.download_many([DownloadRequest(url=f"http://127.0.0.1:{srv.port}/c", dest=tmp_path / "c")])
            results += dl.download_many([DownloadRequest(url=f"http://127.0.0.1:{srv.port}/d", dest=tmp_path / "d")])
    finally:
        srv.close()
    assert (tmp_path / "c").read_bytes() == data and (tmp_path / "d").read_bytes() == data
    assert [r.size for r in results] == [len(data), len(data)]


def test_transport_uses_the_lean_client_for_plain_http_only() -> None:
    with scripted(ok(b"x")) as (srv, _):
        transport = Transport(TransferConfig())
        try:
            resp = transport.request(f"http://127.0.0.1:{srv.port}/k", {"User-Agent": "t"})
            assert isinstance(resp, Response) and read_all(resp) == b"x"
            resp.release_conn()
        finally:
            transport.clear()
    assert b"Host: 127.0.0.1:" in srv.requests[0][1]
