"""The fault matrix (docs/fault-matrix.md): every failure either recovers byte-exact or
ends in a named :mod:`dfrepo.errors` exception (disk errors: ``OSError`` with the errno),
never leaves a partial file under the final name, and never leaves ``*.dfrepo-part``
files or ``.*.dfrepo-stage-*`` directories behind (except where a process was SIGKILLed,
which nothing can clean up; the next pull must still work).

Engine-level cases run on both byte movers (``implementation="cython"|"python"``).
Everything is loopback; servers are in-process threads or child processes this test starts.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dfrepo import errors
from dfrepo.dragonfly import DragonflyConfig
from dfrepo.engine import Downloader, DownloadRequest, download
from dfrepo.engine.settings import MiB, TransferConfig
from dfrepo.objects import RemoteObject
from dfrepo.pull import pull
from faultservers import FaultProxy, Knobs, RangeServer
from faultservers.fault_proxy import close_pair
from implementations import IMPLS

LOCATION = "s3://127.0.0.1:9/bucket/m"  # parsed only: every pull here passes objects=
IS_ROOT = os.geteuid() == 0


def data_of(n: int, seed: int = 11) -> bytes:
    return random.Random(seed).randbytes(n)


def cfg(**kw: object) -> TransferConfig:
    base: dict[str, object] = dict(range_size=64 * 1024, buffer_size=16 * 1024, concurrency=4,
                                   backoff_base=0.01, backoff_max=0.05, read_timeout=3.0,
                                   connect_timeout=1.0, fsync=False)
    base.update(kw)
    return TransferConfig(**base)  # type: ignore[arg-type]


def leftovers(*dirs: Path) -> list[Path]:
    """Temp files/dirs dfrepo makes: ``.x.NNN.dfrepo-part`` and ``.dest.dfrepo-stage-NNN``."""
    found: list[Path] = []
    for d in dirs:
        if not Path(d).exists():
            continue
        for p in Path(d).rglob("*"):
            if p.name.endswith(".dfrepo-part") or ".dfrepo-stage-" in p.name:
                found.append(p)
    return found


def assert_clean_failure(tmp: Path, dest: Path) -> None:
    assert not dest.exists(), "a failed download must not appear under its final name"
    assert leftovers(tmp) == []


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class ResetProxy(FaultProxy):
    """Like FaultProxy.cut_after, but ends the client side with a TCP RST (SO_LINGER 0)
    instead of a FIN: the client sees ECONNRESET mid-body."""

    def _pump(self, src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        if limit is None:
            return super()._pump(src, dst, limit)
        sent = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if sent + len(data) > limit:
                    dst.sendall(data[: limit - sent])
                    time.sleep(0.02)  # let the client read the partial body first
                    dst.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for s, how in ((dst, socket.SHUT_RD), (src, socket.SHUT_RDWR)):
                try:
                    s.shutdown(how)
                except OSError:
                    pass
                try:
                    s.close()
                except OSError:
                    pass


@contextmanager
def tmpfs(where: Path, size: str, *, readonly: bool = False) -> Iterator[Path]:
    """A private tmpfs (root only); skips the test when mounting is impossible."""
    if not IS_ROOT:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        if readonly:
            subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True, capture_output=True)
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def objects_for(srv: RangeServer, files: dict[str, bytes], prefix: str = "/m/") -> list[RemoteObject]:
    return [RemoteObject(rel_path=rel, size=len(data), url=srv.put(prefix + rel, data),
                         version=srv.etag(prefix + rel), md5=hashlib.md5(data).hexdigest())
            for rel, data in files.items()]


def model_files(weights: int, seed: int = 3) -> dict[str, bytes]:
    rnd = random.Random(seed)
    return {"config.pbtxt": b'name: "m"\n', "1/model.bin": rnd.randbytes(weights),
            "1/vocab.txt": rnd.randbytes(4000)}


# =============================================================== network (engine, both impls)


def test_net_connection_reset_mid_range_recovers(impl: str, tmp_path: Path) -> None:
    data = data_of(1_000_000)
    with RangeServer() as srv, ResetProxy(srv.port) as fp:
        srv.put("/obj", data)
        fp.cut_after(150_000, times=3)
        url = f"http://127.0.0.1:{fp.port}/obj?X-Amz-Signature=secretsig123"
        res = download(url, tmp_path / "out", config=cfg(range_size=512 * 1024), implementation=impl)
    assert (tmp_path / "out").read_bytes() == data
    assert res.retries >= 1 and leftovers(tmp_path) == []


def test_net_connection_reset_every_time_is_exhausted(impl: str, tmp_path: Path) -> None:
    with RangeServer() as srv, ResetProxy(srv.port) as fp:
        srv.put("/obj", data_of(300_000))
        fp.cut_after(1000, times=1000)
        url = f"http://127.0.0.1:{fp.port}/obj?X-Amz-Signature=secretsig123"
        with pytest.raises(errors.RetriesExhaustedError) as ei:
            download(url, tmp_path / "out", size=300_000, config=cfg(max_attempts=3, concurrency=1),
                     implementation=impl)
    assert ei.value.attempts == 3
    assert_clean_failure(tmp_path, tmp_path / "out")


def test_net_stall_past_read_timeout_recovers(impl: str, tmp_path: Path) -> None:
    data = data_of(200_000)
    with RangeServer(Knobs(stall_seconds=1.2, stall_times=1)) as srv:
        url = srv.put("/obj", data)
        res = download(url, tmp_path / "out", size=len(data), config=cfg(read_timeout=0.3, concurrency=1),
                       implementation=impl)
    assert (tmp_path / "out").read_bytes() == data
    assert res.retries >= 1 and leftovers(tmp_path) == []


def test_net_stall_forever_is_exhausted(impl: str, tmp_path: Path) -> None:
    with RangeServer(Knobs(stall_seconds=1.0)) as srv:
        url = srv.put("/obj", data_of(10_000))
        t0 = time.monotonic()
        with pytest.raises(errors.RetriesExhaustedError) as ei:
            download(url, tmp_path / "out", size=10_000, config=cfg(read_timeout=0.25, max_attempts=2),
                     implementation=impl)
        assert time.monotonic() - t0 < 3.0, "the read timeout must bound each attempt"
    assert ei.value.attempts == 2
    assert_clean_failure(tmp_path, tmp_path / "out")


def test_net_slow_trickle_completes(impl: str, tmp_path: Path) -> None:
    """A slow but steady body is not a stall: each read waits < read_timeout."""
    data = data_of(60_000)
    with RangeServer(Knobs(trickle_bytes_per_s=120_000)) as srv:
        url = srv.put("/obj", data)
        res = download(url, tmp_path / "out", config=cfg(read_timeout=0.5, concurrency=1, range_size=64 * 1024),
                       implementation=impl)
    assert (tmp_path / "out").read_bytes() == data
    assert res.retries == 0 and leftovers(tmp_path) == []


def test_net_connect_refused_is_exhausted(impl: str, tmp_path: Path) -> None:
    port = free_port()
    with pytest.raises(errors.RetriesExhaustedError) as ei:
        download(f"http://127.0.0.1:{port}/x?sig=abcdef", tmp_path / "out", config=cfg(max_attempts=2),
                 implementation=impl)
    assert ei.value.attempts == 2
    assert_clean_failure(tmp_path, tmp_path / "out")


@pytest.mark.parametrize("status", [500, 503, 429])
def test_net_origin_retryable_status_recovers(impl: str, tmp_path: Path, status: int) -> None:
    data = data_of(200_000)
    with RangeServer(Knobs(fail_first=2, fail_status=status)) as srv:
        url = srv.put("/obj", data)
        res = download(url, tmp_path / "out", config=cfg(), implementation=impl)
    assert (tmp_path / "out").read_bytes() == data
    assert res.retries >= 2 and leftovers(tmp_path) == []


@pytest.mark.parametrize("status", [503, 429])
def test_net_retry_after_is_honoured(tmp_path: Path, status: int) -> None:
    """Retry-After: 1 must delay the retry by >= 1 s although the backoff is 10 ms.
    (Retry policy is Python code shared by both byte movers: run once.)"""
    impl = IMPLS[-1]
    data = data_of(100_000)
    with RangeServer(Knobs(fail_first=1, fail_status=status, retry_after="1")) as srv:
        url = srv.put("/obj", data)
        t0 = time.monotonic()
        res = download(url, tmp_path / "out", config=cfg(backoff_base=0.01, backoff_max=5.0),
                       implementation=impl)
        elapsed = time.monotonic() - t0
    assert (tmp_path / "out").read_bytes() == data
    assert res.retries == 1
    assert 0.95 <= elapsed < 4.0, f"Retry-After: 1 not honoured (took {elapsed:.2f}s)"


def test_net_retry_after_is_capped_by_backoff_max(tmp_path: Path) -> None:
    impl = IMPLS[-1]
    data = data_of(50_000)
    with RangeServer(Knobs(fail_first=1, fail_status=503, retry_after="3600")) as srv:
        url = srv.put("/obj", data)
        t0 = time.monotonic()
        download(url, tmp_path / "out", config=cfg(backoff_max=0.2), implementation=impl)
        assert time.monotonic() - t0 < 2.0
    assert (tmp_path / "out").read_bytes() == data


def test_net_short_body_resumes(impl: str, tmp_path: Path) -> None:
    data = data_of(400_000)
    with RangeServer(Knobs(truncate_at=20_000, truncate_times=3)) as srv:
        url = srv.put("/obj", data)
        res = download(url, tmp_path / "out", size=len(data), config=cfg(), implementation=impl)
    assert (tmp_path / "out").read_bytes() == data
    assert res.retries >= 3 and leftovers(tmp_path) == []


def test_net_short_body_always_is_exhausted(impl: str, tmp_path: Path) -> None:
    with RangeServer(Knobs(truncate_at=5_000)) as srv:
        url = srv.put("/obj", data_of(100_000))
        with pytest.raises(errors.RetriesExhaustedError) as ei:
            download(url, tmp_path / "out", size=100_000, config=cfg(max_attempts=3, concurrency=1),
                     implementation=impl)
    assert isinstance(ei.value.__cause__, (errors.IncompleteDownloadError, ConnectionError))
    assert_clean_failure(tmp_path, tmp_path / "out")


def test_net_200_to_range_probe_streams_whole_body(impl: str, tmp_path: Path) -> None:
    data = data_of(300_000)
    with RangeServer(Knobs(ignore_range=True)) as srv:
        url = srv.put("/obj", data)
        download(url, tmp_path / "out", config=cfg(), implementation=impl)
        assert srv.gets == 1
    assert (tmp_path / "out").read_bytes() == data


def test_net_200_to_range_request_with_known_size_is_refused(impl: str, tmp_path: Path) -> None:
    with RangeServer(Knobs(ignore_range=True)) as srv:
        url = srv.put("/obj", data_of(300_000))
        with pytest.raises(errors.RangeNotSupportedError):
            download(url, tmp_path / "out", size=300_000, config=cfg(), implementation=impl)
    assert_clean_failure(tmp_path, tmp_path / "out")


def test_net_wrong_content_range_is_refused(impl: str, tmp_path: Path) -> None:
    with RangeServer(Knobs(bad_content_range=True)) as srv:
        url = srv.put("/obj", data_of(300_000))
        with pytest.raises(errors.RangeNotSupportedError, match="Content-Range"):
            download(url, tmp_path / "out", config=cfg(), implementation=impl)
    assert_clean_failure(tmp_path, tmp_path / "out")


def test_net_content_length_mismatch_on_206_is_refused(impl: str, tmp_path: Path) -> None:
    with RangeServer(Knobs(wrong_length=True)) as srv:
        url = srv.put("/obj", data_of(100_000))
        with pytest.raises(errors.RangeNotSupportedError, match="Content-Length"):
            download(url, tmp_path / "out", size=100_000, config=cfg(), implementation=impl)
    assert_clean_failure(tmp_path, tmp_path / "out")


def test_net_content_length_too_long_on_200_is_exhausted(impl: str, tmp_path: Path) -> None:
    """Whole-body 200 announcing one byte more than it sends (keep-alive): the read
    times out instead of hanging, is retried, then named."""
    with RangeServer(Knobs(ignore_range=True, wrong_length=True)) as srv:
        url = srv.put("/obj", data_of(50_000))
        with pytest.raises(errors.RetriesExhaustedError):
            download(url, tmp_path / "out", config=cfg(read_timeout=0.3, max_attempts=2), implementation=impl)
    assert_clean_failure(tmp_path, tmp_path / "out")


def test_net_chunked_without_length_completes(impl: str, tmp_path: Path) -> None:
    data = data_of(300_000)
    with RangeServer(Knobs(ignore_range=True, chunked=True)) as srv:
        url = srv.put("/obj", data)
        download(url, tmp_path / "out", config=cfg(), implementation=impl)
    assert (tmp_path / "out").read_bytes() == data


def test_net_chunked_206_ranges_complete(impl: str, tmp_path: Path) -> None:
    data = data_of(300_000)
    with RangeServer(Knobs(chunked=True)) as srv:
        url = srv.put("/obj", data)
        download(url, tmp_path / "out", size=len(data), config=cfg(), implementation=impl)
    assert (tmp_path / "out").read_bytes() == data


def test_net_chunked_truncated_is_not_a_short_file(impl: str, tmp_path: Path) -> None:
    """A chunked body cut before its last chunk must fail, never publish a short file."""
    with RangeServer(Knobs(ignore_range=True, chunked=True, truncate_at=100_000)) as srv:
        url = srv.put("/obj", data_of(300_000))
        with pytest.raises(errors.RetriesExhaustedError):
            download(url, tmp_path / "out", config=cfg(max_attempts=2), implementation=impl)
    assert_clean_failure(tmp_path, tmp_path / "out")


# =============================================================== data integrity


def test_data_object_replaced_mid_download(impl: str, tmp_path: Path) -> None:
    with RangeServer(Knobs(change_after=3)) as srv:
        url = srv.put("/obj", data_of(640 * 1024))
        with pytest.raises(errors.SourceChangedError):
            download(url, tmp_path / "out", config=cfg(concurrency=1), implementation=impl)
    assert_clean_failure(tmp_path, tmp_path / "out")


def test_data_object_replaced_with_listed_etag_gets_412(impl: str, tmp_path: Path) -> None:
    with RangeServer(Knobs(change_after=2)) as srv:
        url = srv.put("/obj", data_of(640 * 1024))
        with pytest.raises(errors.SourceChangedError):
            download(url, tmp_path / "out", size=640 * 1024, etag=srv.etag("/obj"), config=cfg(concurrency=1),
                     implementation=impl)
        assert any("If-Match" in s.headers for s in srv.seen)
    assert_clean_failure(tmp_path, tmp_path / "out")


def test_data_error_document_with_200_and_md5(impl: str, tmp_path: Path) -> None:
    data = data_of(5000)
    with RangeServer(Knobs(error_doc_200=True)) as srv:
        url = srv.put("/obj", data)
        with pytest.raises(errors.ChecksumMismatchError):
            download(url, tmp_path / "out", md5=hashlib.md5(data).hexdigest(), config=cfg(), implementation=impl)
    assert_clean_failure(tmp_path, tmp_path / "out")


def test_data_error_document_with_200_and_listed_size(impl: str, tmp_path: Path) -> None:
    """What pull() sees (sizes come from the listing): 200 to a range GET is refused."""
    with RangeServer(Knobs(error_doc_200=True)) as srv:
        url = srv.put("/obj", data_of(5000))
        with pytest.raises(errors.RangeNotSupportedError):
            download(url, tmp_path / "out", size=5000, config=cfg(), implementation=impl)
    assert_clean_failure(tmp_path, tmp_path / "out")


def test_data_md5_mismatch_vs_listing(impl: str, tmp_path: Path) -> None:
    with RangeServer() as srv:
        url = srv.put("/obj", data_of(5000))
        with pytest.raises(errors.ChecksumMismatchError):
            download(url, tmp_path / "out", size=5000, md5="0" * 32, config=cfg(), implementation=impl)
    assert_clean_failure(tmp_path, tmp_path / "out")


def test_data_md5_mismatch_fails_whole_pull(tmp_path: Path) -> None:
    files = model_files(200_000)
    with RangeServer() as srv:
        objs = objects_for(srv, files)
        objs[1] = RemoteObject(rel_path=objs[1].rel_path, size=objs[1].size, url=objs[1].url,
                               version=objs[1].version, md5="f" * 32)
        with pytest.raises(errors.ChecksumMismatchError):
            pull(LOCATION, tmp_path / "dest", objects=objs, dragonfly=DragonflyConfig(), transfer=cfg())
    assert_clean_failure(tmp_path, tmp_path / "dest")


# =============================================================== through the stand-in peer


def test_peer_truncation_recovers(impl: str, tmp_path: Path, peer) -> None:  # type: ignore[no-untyped-def]
    data = data_of(4 * MiB)
    with RangeServer() as srv:
        url = srv.put("/obj", data)
        peer.set_faults(truncate_after_bytes=100_000, truncate_count=3)
        res = download(url, tmp_path / "out", size=len(data), config=cfg(range_size=1 * MiB),
                       dragonfly=DragonflyConfig(proxy=peer.url), implementation=impl)
        assert peer.stats()["aborted_responses"] == 3
    assert (tmp_path / "out").read_bytes() == data
    assert res.via == "proxy" and res.retries >= 3 and leftovers(tmp_path) == []


def test_peer_backend_503_is_retried(impl: str, tmp_path: Path, peer) -> None:  # type: ignore[no-untyped-def]
    data = data_of(2 * MiB)
    with RangeServer() as srv:
        url = srv.put("/obj", data)
        peer.set_faults(fail_next=2, fail_status=503, fail_error_type="backend")
        res = download(url, tmp_path / "out", config=cfg(range_size=1 * MiB),
                       dragonfly=DragonflyConfig(proxy=peer.url), implementation=impl)
    assert (tmp_path / "out").read_bytes() == data
    assert res.retries >= 2 and res.via == "proxy"


def test_peer_backend_403_is_final_and_keeps_status(impl: str, tmp_path: Path, peer) -> None:  # type: ignore[no-untyped-def]
    with RangeServer() as srv:
        url = srv.put("/obj", data_of(2 * MiB))
        peer.set_faults(fail_next=5, fail_status=403, fail_error_type="backend")
        with pytest.raises(errors.HTTPStatusError) as ei:
            download(url, tmp_path / "out", config=cfg(range_size=1 * MiB),
                     dragonfly=DragonflyConfig(proxy=peer.url), implementation=impl)
        assert peer.stats()["p2p_requests"] == 1, "a 403 from the backend must not be retried"
    assert ei.value.status == 403 and ei.value.error_type == "backend"
    assert not ei.value.retryable and "origin (via Dragonfly)" in str(ei.value)
    assert_clean_failure(tmp_path, tmp_path / "out")


def test_peer_empty_object_unknown_size(tmp_path: Path, peer) -> None:  # type: ignore[no-untyped-def]
    with RangeServer() as srv:
        url = srv.put("/empty", b"")
        download(url, tmp_path / "out", config=cfg(max_attempts=2), dragonfly=DragonflyConfig(proxy=peer.url))
    assert (tmp_path / "out").read_bytes() == b""


def test_peer_empty_object_known_size(tmp_path: Path, peer) -> None:  # type: ignore[no-untyped-def]
    with RangeServer() as srv:
        url = srv.put("/empty", b"")
        res = download(url, tmp_path / "out", size=0, config=cfg(), dragonfly=DragonflyConfig(proxy=peer.url))
        assert res.requests == 0
    assert (tmp_path / "out").read_bytes() == b""


class DropReusedProxy(FaultProxy):
    """In front of the peer: the second request on a connection is swallowed and the
    connection closed without an answer (what a client sees when dfdaemon closes an idle
    keep-alive connection just as it is reused). ``drops`` limits how often."""

    def __init__(self, target_port: int, drops: int) -> None:
        super().__init__(target_port)
        self.drops_left = drops

    def _pump(self, src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        if src.getsockname()[1] != self.port:  # upstream -> client: plain relay
            return super()._pump(src, dst, limit)
        requests = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if data.startswith(b"GET "):
                    requests += 1
                    with self._lock:
                        drop = requests == 2 and self.drops_left > 0
                        self.drops_left -= drop
                    if drop:
                        break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            close_pair(src, dst)


def test_peer_drops_reused_keepalive_connection(impl: str, tmp_path: Path, peer) -> None:  # type: ignore[no-untyped-def]
    """Regression: urllib3 reports this as ProxyError(RemoteDisconnected); it used to end
    the download as a bare TransferError("download failed: ProxyError"). It is a broken
    connection like any other and must be retried (through the proxy, no fallback)."""
    # Piece-aligned ranges of > 4 MiB through the peer (8 MiB here): 8 requests on 2
    # connections, so connections are reused often enough for three drops.
    data = data_of(64 * MiB)
    with RangeServer() as srv, DropReusedProxy(peer.port, drops=3) as fp:
        url = srv.put("/obj", data)
        df = DragonflyConfig(proxy=f"http://127.0.0.1:{fp.port}", fallback_direct=False, peer_ranges=True)
        res = download(url, tmp_path / "out", size=len(data), config=cfg(range_size=8 * MiB, concurrency=2),
                       dragonfly=df, implementation=impl)
        assert fp.drops_left == 0
    assert (tmp_path / "out").read_bytes() == data
    assert res.via == "proxy" and res.retries >= 1


@pytest.mark.parametrize("fallback", [True, False], ids=["fallback-on", "fallback-off"])
def test_peer_dies_mid_pull(impl: str, tmp_path: Path, fallback: bool) -> None:
    """The peer is closed (listener and every connection) after ~2 MiB arrived.

    fallback on  -> the pull completes byte-exact directly from the origin (via="direct").
    fallback off -> ProxyUnavailableError (the retry finds the proxy unreachable; the
    error is not retryable by design), and nothing is published."""
    from dfpeer import StandinPeer

    files = model_files(8 * MiB)
    killed = threading.Event()
    with RangeServer() as srv, StandinPeer(tmp_path / "peer-data") as p:
        objs = objects_for(srv, files)

        seen_at_kill = [0]

        def progress(done: int, total: int) -> None:
            if done >= 2 * MiB and not killed.is_set():
                killed.set()
                p.close()
                seen_at_kill[0] = len(srv.seen)

        df = DragonflyConfig(proxy=p.url, fallback_direct=fallback)
        dest = tmp_path / "dest"
        if fallback:
            res = pull(LOCATION, dest, objects=objs, dragonfly=df, progress=progress, implementation=impl,
                       transfer=cfg(range_size=1 * MiB, concurrency=2))
            assert killed.is_set()
            assert tree(dest) == files
            assert res.via == "direct" and res.fallback_reason and "unreachable" in res.fallback_reason
            # After the kill the client's own range GETs reach the origin without any
            # X-Dragonfly-* header (the peer's last in-flight piece fetches, which do carry
            # them, may still be arriving too).
            late = srv.seen[seen_at_kill[0]:]
            assert any(not any(k.lower().startswith("x-dragonfly-") for k in x.headers) for x in late)
            assert leftovers(tmp_path) == []
        else:
            with pytest.raises(errors.ProxyUnavailableError):
                pull(LOCATION, dest, objects=objs, dragonfly=df, progress=progress, implementation=impl,
                     transfer=cfg(range_size=1 * MiB, concurrency=2))
            assert killed.is_set()
            assert_clean_failure(tmp_path, dest)


# =============================================================== local filesystem


@pytest.mark.parametrize("prealloc", [True, False], ids=["fallocate", "pwrite"])
def test_local_enospc(impl: str, tmp_path: Path, prealloc: bool) -> None:
    """ENOSPC surfaces as OSError(ENOSPC), is not retried, and the tmpfs is left empty."""
    data = data_of(1_000_000)
    with RangeServer() as srv:
        url = srv.put("/obj", data)
        if IS_ROOT:
            with tmpfs(tmp_path / "tiny", "256k") as mnt:
                with pytest.raises(OSError) as ei:  # the free-space check off: ENOSPC on write
                    download(url, mnt / "out", size=len(data),
                             config=cfg(preallocate=prealloc, check_space=False), implementation=impl)
                assert os.listdir(mnt) == []
        else:  # /dev/full through the file-system seam: every write fails with ENOSPC
            from dfrepo.engine.fs import FileSystem

            class DevFull(FileSystem):
                def create_temp(self, dest: Path) -> tuple[int, str]:
                    return os.open("/dev/full", os.O_WRONLY), str(dest) + ".never-created"

            req = DownloadRequest(url=url, dest=tmp_path / "out", size=len(data))
            with Downloader(cfg(preallocate=False, check_space=False), implementation=impl, fs=DevFull()) as dl:
                with pytest.raises(OSError) as ei:
                    dl.download_many([req])
        ranges = [x.headers.get("Range") for x in srv.seen]
        assert len(ranges) == len(set(ranges)), "ENOSPC must not be retried"
    assert ei.value.errno == errno.ENOSPC
    assert not isinstance(ei.value, errors.DfrepoError)


def test_local_enospc_pull_removes_stage(tmp_path: Path) -> None:
    files = model_files(1_000_000)
    with RangeServer() as srv, tmpfs(tmp_path / "tiny", "512k") as mnt:
        objs = objects_for(srv, files)
        with pytest.raises(OSError) as ei:
            pull(LOCATION, mnt / "model", objects=objs, dragonfly=DragonflyConfig(),
                 transfer=cfg(check_space=False))
        assert ei.value.errno == errno.ENOSPC
        assert os.listdir(mnt) == []


def test_local_free_space_checked_before_the_first_byte(tmp_path: Path) -> None:
    """A model that cannot fit fails at once with InsufficientSpaceError (nothing fetched,
    nothing left behind), naming the directory and the bytes needed and available."""
    files = model_files(1_000_000)
    with RangeServer() as srv, tmpfs(tmp_path / "tiny", "512k") as mnt:
        objs = objects_for(srv, files)
        with pytest.raises(errors.InsufficientSpaceError) as ei:
            pull(LOCATION, mnt / "model", objects=objs, dragonfly=DragonflyConfig(), transfer=cfg())
        assert os.listdir(mnt) == []
        assert srv.gets == 0
    err = ei.value
    assert err.needed > sum(len(d) for d in files.values()) and 0 < err.available < err.needed
    assert str(mnt) in str(err) and "free space" in str(err)


def test_local_readonly_destination(impl: str, tmp_path: Path) -> None:
    with RangeServer() as srv:
        url = srv.put("/obj", data_of(10_000))
        if IS_ROOT:
            ctx = tmpfs(tmp_path / "ro", "1m", readonly=True)
        else:
            (tmp_path / "ro").mkdir()
            (tmp_path / "ro").chmod(0o555)
            ctx = nullctx(tmp_path / "ro")
        with ctx as ro:
            with pytest.raises(OSError) as ei:
                download(url, ro / "out", config=cfg(), implementation=impl)
            assert ei.value.errno in (errno.EROFS, errno.EACCES)
            with pytest.raises(OSError) as ei2:
                pull(LOCATION, ro / "model", objects=objects_for(srv, model_files(1000)),
                     dragonfly=DragonflyConfig(), transfer=cfg())
            assert ei2.value.errno in (errno.EROFS, errno.EACCES)
            assert os.listdir(ro) == []
        assert srv.gets == 0, "nothing may be fetched when the destination cannot be written"


@contextmanager
def nullctx(value: Path) -> Iterator[Path]:
    try:
        yield value
    finally:
        value.chmod(0o755)


def test_local_destination_on_other_filesystem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """dest on tmpfs (/dev/shm), TMPDIR on disk: staging happens next to dest, so the
    final rename never crosses filesystems (no EXDEV)."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("/dev/shm is not a separate filesystem here")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    renames: list[tuple[str, str]] = []
    real_rename = os.rename

    def spy(src: str, dst: str) -> None:
        renames.append((str(src), str(dst)))
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", spy)
    parent = Path(tempfile.mkdtemp(prefix="dfrepo-faultmatrix-", dir=shm))
    try:
        files = model_files(300_000)
        with RangeServer() as srv:
            pull(LOCATION, parent / "model", objects=objects_for(srv, files), dragonfly=DragonflyConfig(),
                 transfer=cfg())
        assert tree(parent / "model") == files
        assert renames and all(os.path.dirname(s) == str(parent) for s, _ in renames)
        assert leftovers(parent) == [] and leftovers(tmp_path) == []
    finally:
        import shutil

        shutil.rmtree(parent, ignore_errors=True)


_CHILD = r"""
import json, sys
from dfrepo.engine.settings import TransferConfig
from dfrepo.dragonfly import DragonflyConfig
from dfrepo.objects import RemoteObject
from dfrepo.pull import pull
with open(sys.argv[1]) as fh:
    a = json.load(fh)
objs = [RemoteObject(**o) for o in a["objects"]]
r = pull(a["location"], a["dest"], objects=objs, dragonfly=DragonflyConfig(proxy=a["proxy"]),
         transfer=TransferConfig(**a["transfer"]), implementation=a["impl"])
print(json.dumps({"bytes": r.bytes, "via": r.via}), flush=True)
"""


def _spawn_pull(objs: list[RemoteObject], dest: Path, proxy: str | None, impl: str,
                **transfer: object) -> subprocess.Popen[str]:
    payload = {
        "location": LOCATION, "dest": str(dest), "proxy": proxy, "impl": impl,
        "transfer": {"range_size": 256 * 1024, "concurrency": 2, "fsync": False, "read_timeout": 5.0,
                     "backoff_base": 0.01, "backoff_max": 0.1, **transfer},
        "objects": [{"rel_path": o.rel_path, "size": o.size, "url": o.url, "version": o.version, "md5": o.md5}
                    for o in objs],
    }
    args = dest.parent / f".{dest.name}-args.json"  # presigned URLs: never on a command line
    args.write_text(json.dumps(payload))
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_local_two_processes_same_model_two_dests(tmp_path: Path, peer) -> None:  # type: ignore[no-untyped-def]
    files = model_files(5 * MiB)
    impl = IMPLS[-1]
    with RangeServer() as srv:
        objs = objects_for(srv, files)
        procs = [_spawn_pull(objs, tmp_path / f"dest{i}", peer.url, impl) for i in range(2)]
        outs = []
        for proc in procs:
            try:
                out, err = proc.communicate(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            assert proc.returncode == 0, err[-2000:]
            outs.append(json.loads(out.strip().splitlines()[-1]))
    for i in range(2):
        assert tree(tmp_path / f"dest{i}") == files
    assert all(o["via"] == "proxy" for o in outs)
    # Both went through one peer: the big file came from the origin about once.
    assert peer.stats()["origin_bytes"] < 2 * len(files["1/model.bin"])
    assert leftovers(tmp_path) == []


def test_local_killed_mid_pull_then_restarted(tmp_path: Path) -> None:
    """SIGKILL leaves its stage directory behind; the next pull into the same dest
    removes it (its process is gone), succeeds byte-exact and publishes nothing from
    the dead process."""
    files = model_files(1 * MiB)
    dest = tmp_path / "dest"
    impl = IMPLS[-1]
    with RangeServer(Knobs(trickle_bytes_per_s=200_000)) as srv:
        objs = objects_for(srv, files)
        proc = _spawn_pull(objs, dest, None, impl)
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if srv.gets >= 3 and leftovers(tmp_path):
                    break
                if proc.poll() is not None:
                    pytest.fail(f"child ended early: {proc.stderr.read()[-2000:] if proc.stderr else ''}")
                time.sleep(0.05)
            time.sleep(0.3)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=10)
            if proc.stdout:
                proc.stdout.close()
            if proc.stderr:
                proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL
        stale = leftovers(tmp_path)
        assert stale, "the killed pull should have left its stage directory"
        assert not dest.exists()
        srv.knobs.trickle_bytes_per_s = 0
        res = pull(LOCATION, dest, objects=objs, dragonfly=DragonflyConfig(), transfer=cfg(), implementation=impl)
    assert tree(dest) == files and res.files == len(files)
    # The dead process's stage was removed, and the new pull cleaned up its own.
    assert not [p for p in leftovers(tmp_path) if p.parent == tmp_path]


def test_local_killed_mid_download_then_restarted(tmp_path: Path) -> None:
    """Engine-level twin: a leftover ``.out.*.dfrepo-part`` never blocks the next download."""
    data = data_of(600_000)
    (tmp_path / ".out.zzz.dfrepo-part").write_bytes(b"junk from a dead process")
    with RangeServer() as srv:
        url = srv.put("/obj", data)
        download(url, tmp_path / "out", config=cfg(), implementation=IMPLS[-1])
    assert (tmp_path / "out").read_bytes() == data
    assert [p.name for p in leftovers(tmp_path)] == [".out.zzz.dfrepo-part"]
