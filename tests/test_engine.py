"""The transfer engine on real loopback sockets, on both implementations."""

from __future__ import annotations

import errno
import os
import pickle
import random
import socket
from pathlib import Path

import pytest

from dfrepo import errors
from dfrepo.engine import Downloader, DownloadRequest, download
from dfrepo.engine.fs import FileSystem
from dfrepo.engine.settings import MiB, TransferConfig
from dfrepo.redact import redact_url
from faultservers import FaultProxy, Knobs, RangeServer
from implementations import IMPLS


def data_of(n: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(n)


def small_cfg(**kw: object) -> TransferConfig:
    base = dict(range_size=64 * 1024, buffer_size=16 * 1024, concurrency=4, backoff_base=0.01,
                backoff_max=0.05, read_timeout=5.0, connect_timeout=2.0)
    base.update(kw)
    return TransferConfig(**base)  # type: ignore[arg-type]


def no_temp_files(d: Path) -> bool:
    return not [p for p in d.rglob("*") if p.name.endswith(".dfrepo-part")]


@pytest.mark.parametrize("size", [0, 1, 2, 64 * 1024, 64 * 1024 * 3, 64 * 1024 * 3 + 17, 1_000_003])
def test_sizes_byte_exact(impl: str, tmp_path: Path, size: int) -> None:
    data = data_of(size)
    with RangeServer() as srv:
        url = srv.put("/obj", data)
        res = download(url, tmp_path / "out", config=small_cfg(), implementation=impl)
    assert (tmp_path / "out").read_bytes() == data
    assert res.size == size
    assert res.implementation == impl
    assert no_temp_files(tmp_path)


def test_known_size_skips_probe(impl: str, tmp_path: Path) -> None:
    data = data_of(300_000)
    with RangeServer() as srv:
        url = srv.put("/obj", data)
        res = download(url, tmp_path / "out", size=len(data), etag=srv.etag("/obj"),
                       config=small_cfg(), implementation=impl)
        ranges = [s.headers.get("Range") for s in srv.seen]
    assert "bytes=0-0" not in ranges
    assert res.requests == len(ranges) == 5
    assert (tmp_path / "out").read_bytes() == data


# A 200 to the size probe (Range ignored): test_fault_matrix.py
# test_net_200_to_range_probe_streams_whole_body.


def test_chunked_whole_body(impl: str, tmp_path: Path) -> None:
    data = data_of(200_000)
    with RangeServer(Knobs(ignore_range=True, chunked=True)) as srv:
        url = srv.put("/obj", data)
        download(url, tmp_path / "out", config=small_cfg(), implementation=impl)
    assert (tmp_path / "out").read_bytes() == data


def test_wrong_content_range_is_an_error(impl: str, tmp_path: Path) -> None:
    with RangeServer(Knobs(bad_content_range=True)) as srv:
        url = srv.put("/obj", data_of(300_000))
        with pytest.raises(errors.RangeNotSupportedError):
            download(url, tmp_path / "out", size=300_000, config=small_cfg(), implementation=impl)
    assert not (tmp_path / "out").exists()
    assert no_temp_files(tmp_path)


@pytest.mark.parametrize("status", [503, 429, 500])
def test_retryable_statuses_recover(impl: str, tmp_path: Path, status: int) -> None:
    data = data_of(300_000)
    with RangeServer(Knobs(fail_first=3, fail_status=status, retry_after="0")) as srv:
        url = srv.put("/obj", data)
        res = download(url, tmp_path / "out", config=small_cfg(), implementation=impl)
    assert (tmp_path / "out").read_bytes() == data
    assert res.retries >= 1


def test_404_is_final_with_status(impl: str, tmp_path: Path) -> None:
    with RangeServer() as srv:
        with pytest.raises(errors.HTTPStatusError) as ei:
            download(srv.url("/missing"), tmp_path / "out", config=small_cfg(), implementation=impl)
        assert srv.gets == 1
    assert ei.value.status == 404
    assert "secretsig123" not in str(ei.value) and "secretsig123" not in repr(ei.value.__dict__)
    assert not (tmp_path / "out").exists() and no_temp_files(tmp_path)


def test_retries_exhausted(impl: str, tmp_path: Path) -> None:
    with RangeServer(Knobs(fail_first=100)) as srv:
        url = srv.put("/obj", b"x" * 10)
        with pytest.raises(errors.RetriesExhaustedError) as ei:
            download(url, tmp_path / "out", config=small_cfg(max_attempts=3), implementation=impl)
    assert ei.value.attempts == 3
    assert isinstance(ei.value.__cause__, errors.HTTPStatusError)
    assert no_temp_files(tmp_path)


def test_truncated_bodies_resume_from_last_byte(impl: str, tmp_path: Path) -> None:
    data = data_of(640 * 1024)
    with RangeServer(Knobs(truncate_at=10_000, truncate_times=6)) as srv:
        url = srv.put("/obj", data)
        res = download(url, tmp_path / "out", size=len(data), config=small_cfg(), implementation=impl)
        resumed = [s.headers["Range"] for s in srv.seen if s.headers.get("Range", "").split("=")[1].split("-")[0]
                   not in {str(i * 65536) for i in range(10)}]
    assert (tmp_path / "out").read_bytes() == data
    assert res.retries >= 6
    assert resumed, "a retry must resume from the first unwritten byte, not restart the range"


def test_content_length_mismatch_is_short_body(impl: str, tmp_path: Path) -> None:
    with RangeServer(Knobs(wrong_length=True)) as srv:
        url = srv.put("/obj", data_of(1000))
        with pytest.raises(errors.RangeNotSupportedError, match="Content-Length"):
            download(url, tmp_path / "out", size=1000, config=small_cfg(max_attempts=2, read_timeout=1.0),
                     implementation=impl)
    assert no_temp_files(tmp_path)


def test_stall_past_read_timeout_then_recover(impl: str, tmp_path: Path) -> None:
    data = data_of(100_000)
    with RangeServer(Knobs(stall_seconds=1.5, stall_times=1)) as srv:
        url = srv.put("/obj", data)
        res = download(url, tmp_path / "out", size=len(data), config=small_cfg(read_timeout=0.5, concurrency=1),
                       implementation=impl)
    assert (tmp_path / "out").read_bytes() == data
    assert res.retries >= 1


def test_object_changed_mid_download(impl: str, tmp_path: Path) -> None:
    data = data_of(640 * 1024)
    with RangeServer(Knobs(change_after=3)) as srv:
        url = srv.put("/obj", data)
        with pytest.raises(errors.SourceChangedError):
            download(url, tmp_path / "out", config=small_cfg(concurrency=1), implementation=impl)
    assert not (tmp_path / "out").exists() and no_temp_files(tmp_path)


def test_error_document_with_200_caught_by_md5(impl: str, tmp_path: Path) -> None:
    data = data_of(5000)
    import hashlib
    with RangeServer(Knobs(error_doc_200=True)) as srv:
        url = srv.put("/obj", data)
        with pytest.raises(errors.DfrepoError):
            download(url, tmp_path / "out", size=len(data), md5=hashlib.md5(data).hexdigest(),
                     config=small_cfg(max_attempts=1), implementation=impl)
    assert not (tmp_path / "out").exists() and no_temp_files(tmp_path)


def test_md5_mismatch(impl: str, tmp_path: Path) -> None:
    with RangeServer() as srv:
        url = srv.put("/obj", data_of(5000))
        with pytest.raises(errors.ChecksumMismatchError):
            download(url, tmp_path / "out", md5="0" * 32, config=small_cfg(), implementation=impl)
    assert not (tmp_path / "out").exists() and no_temp_files(tmp_path)


def test_existing_destination_untouched_on_failure(impl: str, tmp_path: Path) -> None:
    (tmp_path / "out").write_bytes(b"previous model")
    with RangeServer(Knobs(fail_first=100, fail_status=403)) as srv:
        url = srv.put("/obj", data_of(100))
        with pytest.raises(errors.HTTPStatusError):
            download(url, tmp_path / "out", config=small_cfg(), implementation=impl)
    assert (tmp_path / "out").read_bytes() == b"previous model"


def test_connection_cut_mid_range_recovers(impl: str, tmp_path: Path) -> None:
    data = data_of(1_000_000)
    with RangeServer() as srv, FaultProxy(srv.port) as fp:
        srv.put("/obj", data)
        fp.cut_after(150_000, times=3)
        url = f"http://127.0.0.1:{fp.port}/obj?sig=abc"
        res = download(url, tmp_path / "out", config=small_cfg(range_size=512 * 1024), implementation=impl)
    assert (tmp_path / "out").read_bytes() == data
    assert res.retries >= 1


def test_connect_failure_is_retried_then_exhausted(impl: str, tmp_path: Path) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(errors.RetriesExhaustedError):
        download(f"http://127.0.0.1:{port}/x", tmp_path / "out", config=small_cfg(max_attempts=2),
                 implementation=impl)
    assert no_temp_files(tmp_path)


class DevFullFS(FileSystem):
    """Every file the engine writes is /dev/full: each pwrite fails with ENOSPC."""

    def create_temp(self, dest: Path) -> tuple[int, str]:
        return os.open("/dev/full", os.O_WRONLY), str(dest) + ".never-created"


def test_enospc_via_dev_full(impl: str, tmp_path: Path) -> None:
    """pwrite into /dev/full fails with ENOSPC; it must surface as OSError, not be retried."""
    with RangeServer() as srv:
        url = srv.put("/obj", data_of(100_000))
        req = DownloadRequest(url=url, dest=tmp_path / "out", size=100_000)
        with Downloader(small_cfg(preallocate=False), implementation=impl, fs=DevFullFS()) as dl:
            with pytest.raises(OSError) as ei:
                dl.download_many([req])
        assert srv.gets <= 4
    assert ei.value.errno == errno.ENOSPC
    assert not (tmp_path / "out").exists()


def test_enospc_on_tiny_tmpfs(impl: str, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.system(f"mount -t tmpfs -o size=256k tmpfs {mnt} 2>/dev/null") != 0:
        pytest.skip("cannot mount tmpfs here")
    try:
        with RangeServer() as srv:
            url = srv.put("/obj", data_of(2_000_000))
            with pytest.raises(OSError) as ei:
                download(url, mnt / "out", config=small_cfg(), implementation=impl)
        assert ei.value.errno == errno.ENOSPC
        assert os.listdir(mnt) == []
    finally:
        os.system(f"umount {mnt}")


def test_many_files_one_pool(impl: str, tmp_path: Path) -> None:
    blobs = {f"/m/{i}.bin": data_of(1000 + i * 977, seed=i) for i in range(40)}
    with RangeServer() as srv:
        reqs = [DownloadRequest(url=srv.put(p, d), dest=tmp_path / p.lstrip("/"), size=len(d))
                for p, d in blobs.items()]
        seen: list[tuple[int, int]] = []
        with Downloader(small_cfg(), implementation=impl) as dl:
            results = dl.download_many(reqs, progress=lambda d, t: seen.append((d, t)))
    assert len(results) == 40
    for p, d in blobs.items():
        assert (tmp_path / p.lstrip("/")).read_bytes() == d
    assert seen[-1] == (sum(map(len, blobs.values())), sum(map(len, blobs.values())))


def test_one_failure_fails_the_batch_and_cleans_up(impl: str, tmp_path: Path) -> None:
    with RangeServer() as srv:
        good = [DownloadRequest(url=srv.put(f"/g{i}", data_of(50_000)), dest=tmp_path / f"g{i}") for i in range(5)]
        bad = DownloadRequest(url=srv.url("/missing"), dest=tmp_path / "bad")
        with Downloader(small_cfg(), implementation=impl) as dl:
            with pytest.raises(errors.HTTPStatusError):
                dl.download_many(good + [bad])
    assert no_temp_files(tmp_path)
    assert not (tmp_path / "bad").exists()


def test_proxy_absolute_form(impl: str, tmp_path: Path) -> None:
    """Through a proxy the request line is absolute-form (what dfdaemon expects)."""
    data = data_of(200_000)
    with RangeServer() as origin, RangeServer() as proxy:
        origin.put("/obj", data)
        proxy.objects, proxy.etags = origin.objects, origin.etags  # the "proxy" serves the same objects
        res = download(origin.url("/obj"), tmp_path / "out", proxy=f"http://127.0.0.1:{proxy.port}",
                       config=small_cfg(), implementation=impl)
        assert origin.gets == 0
        assert all(s.path.startswith(f"http://127.0.0.1:{origin.port}/obj?") for s in proxy.seen)
    assert (tmp_path / "out").read_bytes() == data
    assert res.via == "proxy"


def test_errors_pickle_and_redact() -> None:
    url = "https://bucket.s3.amazonaws.com/k?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA"
    for err in [
        errors.HTTPStatusError("x", status=503, url=url, error_type="backend"),
        errors.IncompleteDownloadError("x", expected=5, received=3, url=url),
        errors.RetriesExhaustedError("x", attempts=3, url=url),
        errors.ConfigError("x", source="file", key="proxy"),
        errors.SourceChangedError("x", url=url, byte_range=(0, 9)),
    ]:
        clone = pickle.loads(pickle.dumps(err))
        assert type(clone) is type(err) and clone.__dict__ == err.__dict__
        assert "deadbeef" not in repr(err.__dict__) and "AKIA" not in repr(err.__dict__)
    assert redact_url(url) == "https://bucket.s3.amazonaws.com/k?<redacted>"
    assert redact_url("http://user:pw@h:81/p") == "http://h:81/p"


def test_config_validation() -> None:
    with pytest.raises(errors.ConfigError):
        TransferConfig(concurrency=0)
    with pytest.raises(errors.ConfigError):
        TransferConfig(io_mode="bogus")  # type: ignore[arg-type]
    cfg = TransferConfig().with_overrides({"range_size": "8MiB", "fsync": "false", "concurrency": "3"})
    assert (cfg.range_size, cfg.fsync, cfg.concurrency) == (8 * MiB, False, 3)


@pytest.mark.skipif("cython" not in IMPLS, reason="compiled core not built")
@pytest.mark.parametrize("mode", ["recv", "splice", "readinto"])
def test_compiled_io_modes(tmp_path: Path, mode: str) -> None:
    data = data_of(3 * 1024 * 1024 + 5)
    with RangeServer() as srv:
        url = srv.put("/obj", data)
        download(url, tmp_path / "out", config=small_cfg(io_mode=mode, range_size=1024 * 1024),
                 implementation="cython")
    assert (tmp_path / "out").read_bytes() == data


def test_which_implementation_ran() -> None:
    import dfrepo.engine.picker as core
    expected = "python" if os.environ.get("DFREPO_NO_EXTENSIONS") == "1" else "cython"
    if expected == "cython" and "cython" not in IMPLS:
        pytest.skip("extension not built")
    assert core.IMPLEMENTATION == expected


def test_retry_after_forms() -> None:
    import email.utils
    import time as _time

    from dfrepo.engine.retry import retry_after_seconds as _retry_after_seconds

    assert _retry_after_seconds("3") == 3.0
    assert _retry_after_seconds(None) is None and _retry_after_seconds("soon") is None
    future = email.utils.formatdate(_time.time() + 30, usegmt=True)
    assert 25 <= (_retry_after_seconds(future) or 0) <= 31
    past = email.utils.formatdate(_time.time() - 30, usegmt=True)
    assert _retry_after_seconds(past) == 0.0


def test_proxy_https_origin_is_forwarded_not_tunnelled(impl: str, tmp_path: Path) -> None:
    """An https origin through the (plain-HTTP) Dragonfly proxy: absolute-form GET, never CONNECT."""
    data = data_of(300_000)
    with RangeServer() as proxy:
        proxy.put("/bucket/obj", data)
        url = "https://bucket-host.example:8443/bucket/obj?X-Amz-Signature=secretsig123"
        res = download(url, tmp_path / "out", proxy=f"http://127.0.0.1:{proxy.port}", config=small_cfg(),
                       implementation=impl)
        assert [s.method for s in proxy.seen] == ["GET"] * len(proxy.seen)
        assert all(s.path.startswith("https://bucket-host.example:8443/bucket/obj?") for s in proxy.seen)
        assert {s.headers.get("Host") for s in proxy.seen} == {"bucket-host.example:8443"}
    assert (tmp_path / "out").read_bytes() == data
    assert res.via == "proxy"


# ------------------------------------------------------------------ range answers and planning


@pytest.mark.parametrize("known", [True, False])
def test_legacy_200_with_content_range_is_a_range_answer(impl: str, tmp_path: Path, known: bool) -> None:
    """dfdaemon before v1.3.11 answered P2P ranges with 200 + Content-Range: accepted as a range."""
    data = data_of(64 * 1024 * 5 + 11)
    with RangeServer(Knobs(legacy_range_200=True)) as srv:
        url = srv.put("/obj", data)
        res = download(url, tmp_path / "out", size=len(data) if known else None, config=small_cfg(),
                       implementation=impl)
        assert all(r is not None for r in srv.ranges), "every request was a range request"
    assert (tmp_path / "out").read_bytes() == data
    assert res.requests == 5  # 5 ranges of 64 KiB, the 11-byte tail merged into the last one


def test_legacy_200_with_wrong_content_range_is_refused(impl: str, tmp_path: Path) -> None:
    with RangeServer(Knobs(legacy_range_200=True, bad_content_range=True)) as srv:
        url = srv.put("/obj", data_of(300_000))
        with pytest.raises(errors.RangeNotSupportedError, match="Content-Range"):
            download(url, tmp_path / "out", size=300_000, config=small_cfg(), implementation=impl)
    assert not (tmp_path / "out").exists() and no_temp_files(tmp_path)


def test_unknown_size_single_file_uses_every_connection(impl: str, tmp_path: Path) -> None:
    """The first range is the probe; the rest is queued before its body is copied, so one
    file of unknown size is fetched with full concurrency (workers sized after planning)."""
    data = data_of(64 * 1024 * 16)
    with RangeServer(Knobs(stall_seconds=0.5)) as srv:
        url = srv.put("/obj", data)
        res = download(url, tmp_path / "out", config=small_cfg(concurrency=4), implementation=impl)
        first = srv.ranges[0]
    assert (tmp_path / "out").read_bytes() == data
    assert first == f"bytes=0-{64 * 1024 - 1}", "the probe is the first range, not a 1-byte request"
    assert res.requests == 16
    # Before, one worker did everything (max 1); now the other workers join once the probe
    # answered (all 4 unless the machine is too busy to start them within the stall).
    assert 2 <= srv.max_active <= 4


def test_no_short_tail_range(impl: str, tmp_path: Path) -> None:
    data = data_of(64 * 1024 * 3 + 1)
    with RangeServer() as srv:
        url = srv.put("/obj", data)
        download(url, tmp_path / "out", size=len(data), config=small_cfg(), implementation=impl)
        assert srv.ranges[-1] != f"bytes={len(data) - 1}-{len(data) - 1}"
        assert len(srv.ranges) == 3
    assert (tmp_path / "out").read_bytes() == data


def test_broken_probe_body_resumes_as_a_range(impl: str, tmp_path: Path) -> None:
    data = data_of(64 * 1024 * 4)
    with RangeServer(Knobs(truncate_at=10_000, truncate_times=1)) as srv:
        url = srv.put("/obj", data)
        res = download(url, tmp_path / "out", config=small_cfg(concurrency=1), implementation=impl)
        assert srv.ranges[0] == f"bytes=0-{64 * 1024 - 1}"
        assert f"bytes=10000-{64 * 1024 - 1}" in srv.ranges
    assert (tmp_path / "out").read_bytes() == data
    assert res.retries == 1


def _peer_cfg(srv: RangeServer, **kw: object) -> object:
    from dfrepo.dragonfly import DragonflyConfig

    return DragonflyConfig(proxy=f"http://127.0.0.1:{srv.port}", fallback_direct=False, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("known", [True, False])
def test_through_a_peer_one_get_per_file_by_default(impl: str, tmp_path: Path, known: bool) -> None:
    """peer_ranges off (the default): one plain GET per file; the daemon fetches pieces in parallel."""
    data = data_of(9 * MiB + 5)
    with RangeServer() as srv:
        url = srv.put("/obj", data)
        download(url, tmp_path / "out", size=len(data) if known else None, config=small_cfg(),
                 dragonfly=_peer_cfg(srv), implementation=impl)
        assert srv.ranges == [None]
    assert (tmp_path / "out").read_bytes() == data


def test_through_a_peer_ranges_are_piece_aligned_and_never_small(impl: str, tmp_path: Path) -> None:
    """peer_ranges on: ranges on piece boundaries (4 MiB automatic pieces for 17 MiB), none
    of <= 4 MiB — so two pieces each (one 4 MiB piece is still "small") — and the
    1 MiB + 5 B tail joins the range before it."""
    data = data_of(17 * MiB + 5)
    with RangeServer() as srv:
        url = srv.put("/obj", data)
        download(url, tmp_path / "out", size=len(data), config=small_cfg(range_size=1 * MiB),
                 dragonfly=_peer_cfg(srv, peer_ranges=True), implementation=impl)
        assert sorted(srv.ranges, key=str) == [f"bytes=0-{8 * MiB - 1}", f"bytes={8 * MiB}-{len(data) - 1}"]
    assert (tmp_path / "out").read_bytes() == data


def test_through_a_peer_small_objects_are_one_plain_get(impl: str, tmp_path: Path) -> None:
    data = data_of(3 * MiB)
    with RangeServer() as srv:
        url = srv.put("/obj", data)
        download(url, tmp_path / "out", size=len(data), config=small_cfg(range_size=1 * MiB),
                 dragonfly=_peer_cfg(srv, peer_ranges=True), implementation=impl)
        assert srv.ranges == [None]
    assert (tmp_path / "out").read_bytes() == data


def test_through_a_peer_whole_get_resumes_with_a_range(impl: str, tmp_path: Path) -> None:
    data = data_of(6 * MiB)
    with RangeServer(Knobs(truncate_at=MiB, truncate_times=1)) as srv:
        url = srv.put("/obj", data)
        res = download(url, tmp_path / "out", size=len(data), config=small_cfg(),
                       dragonfly=_peer_cfg(srv), implementation=impl)
        assert srv.ranges == [None, f"bytes={MiB}-{len(data) - 1}"]
    assert (tmp_path / "out").read_bytes() == data and res.retries == 1


def test_default_concurrency_is_adaptive_from_a_start_that_depends_on_the_batch() -> None:
    from dfrepo.engine.settings import INITIAL_CONCURRENCY, PEER_FILES_IN_FLIGHT

    cfg = TransferConfig()
    assert cfg.concurrency is None and cfg.adaptive
    assert cfg.initial_workers() == INITIAL_CONCURRENCY == 8
    assert cfg.initial_workers(files_through_peer=True) == PEER_FILES_IN_FLIGHT == 16
    assert cfg.max_workers == cfg.max_concurrency == 32
    fixed = TransferConfig(concurrency=3)
    assert not fixed.adaptive, "a set value is used as given"
    assert fixed.initial_workers(files_through_peer=True) == fixed.max_workers == 3
    assert TransferConfig().with_overrides({"concurrency": "auto"}).concurrency is None
    assert TransferConfig().with_overrides({"concurrency": "7"}).concurrency == 7
    with pytest.raises(errors.ConfigError):
        TransferConfig().with_overrides({"concurrency": "many"})


def test_whole_files_through_a_peer_keep_sixteen_in_flight(impl: str, tmp_path: Path) -> None:
    """One GET per file through a peer: 16 files in flight by default (each is one request
    whose pieces the daemon fetches in parallel), not the 4 ranges used against an origin."""
    with RangeServer(Knobs(stall_seconds=0.5)) as srv:
        reqs = [DownloadRequest(url=srv.put(f"/f{i}", data_of(1000, seed=i)), dest=tmp_path / f"f{i}", size=1000)
                for i in range(20)]
        with Downloader(TransferConfig(fsync=False), dragonfly=_peer_cfg(srv), implementation=impl) as dl:
            dl.download_many(reqs)
            assert dl.workers == 16
        # The server saw more at once than the 4 a direct batch would use (how many exactly
        # depends on thread start-up on a busy machine).
        assert 4 < srv.max_active <= 16
    assert all((tmp_path / f"f{i}").read_bytes() == data_of(1000, seed=i) for i in range(20))
