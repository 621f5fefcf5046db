"""Verified, atomic, parallel downloads: probe, plan ranges, fetch, fsync, rename.

One pool of worker threads serves every file of a batch, so a model directory of a
thousand small files keeps all connections busy just like one large file does. Each
worker owns one reused buffer; the compiled core copies response bodies into the
destination with ``pwrite`` at their final offsets.

A file becomes visible under its final name only after every byte arrived, the size
(and the store's MD5, when listed) checked out and the data was fsynced; otherwise its
temp file is removed and the destination is untouched.
"""

from __future__ import annotations

import collections
import email.utils
import functools
import hashlib
import logging
import os
import random
import re
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Mapping

import urllib3

from . import _core
from ._http import RETRYABLE_EXCEPTIONS, Transport
from ._version import __version__
from .dragonfly.config import DragonflyConfig
from .config import TransferConfig
from .rangeplan import Span, plan_spans
from .errors import (
    ChecksumMismatchError,
    DfrepoError,
    HTTPStatusError,
    IncompleteDownloadError,
    ProxyUnavailableError,
    RangeNotSupportedError,
    RetriesExhaustedError,
    SourceChangedError,
    TransferError,
    redact_url,
)

if TYPE_CHECKING:
    from .dragonfly.daemon_grpc import DaemonGrpc

log = logging.getLogger("dfrepo")

ProgressCallback = Callable[[int, int], object]
"""Called as ``progress(bytes_done, bytes_total)``; total is 0 while unknown."""

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


@dataclass(frozen=True)
class DownloadRequest:
    """One file to fetch. ``url`` and ``headers`` are secret (presigned)."""

    url: str = field(repr=False)
    dest: Path
    size: int | None = None
    etag: str | None = None
    md5: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    version: str | None = None
    """Store version evidence (ETag, GCS generation) folded into the Dragonfly task
    identity; defaults to ``etag``."""


@dataclass(frozen=True)
class DownloadResult:
    """What happened to one file."""

    path: Path
    size: int
    seconds: float
    retries: int
    requests: int
    implementation: str
    via: str
    source: str
    task_id: str | None = None
    """The peer's ``X-Dragonfly-Task-ID`` (None when no peer answered)."""
    delivery: str = "streamed"
    """How the bytes reached the file: ``streamed`` (HTTP body written by dfrepo),
    ``linked`` (dfdaemon hard-linked its content file: no byte moved) or ``copied``
    (dfdaemon copied its content file; gRPC transport)."""
    predicted_task_id: str | None = None
    """The task ID dfrepo computed for the same request; equal to ``task_id`` unless the
    peer canonicalizes differently or an operator rule rewrote the request (then a WARNING
    was logged)."""


@dataclass
class _Cursor:
    written: int = 0


def normalize_etag(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"') or None


class _FileJob:
    """Shared state of one file while its ranges are in flight."""

    def __init__(self, req: DownloadRequest, base_headers: Mapping[str, str]) -> None:
        self.req = req
        self.headers = {**base_headers, **req.headers}
        self.size = req.size
        self.etag = normalize_etag(req.etag)
        self.fd = -1
        self.tmp: str | None = None
        self.pending = 0
        self.retries = 0
        self.requests = 0
        self.started = time.monotonic()
        self.source = "origin"
        self.task_id: str | None = None
        self.predicted_task_id: str | None = None
        self.via_daemon = False  # fetched through dfdaemon's gRPC API (no temp file of ours)
        self.delivery = "streamed"
        self.error: BaseException | None = None
        self.result: DownloadResult | None = None

    def open_temp(self) -> None:
        dest = self.req.dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name[:80]}.", suffix=".dfrepo-part", dir=dest.parent)
        self.fd, self.tmp = fd, tmp

    def discard(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.tmp is not None:
            try:
                os.unlink(self.tmp)
            except FileNotFoundError:
                pass
            self.tmp = None


class Downloader:
    """Download many files through one set of pools and one worker pool.

    :param config: transfer settings.
    :param transport: pools to use (shared with the caller); one is made when None.
    :param dragonfly: a :class:`dfrepo.dragonfly.DragonflyConfig`; adds the Dragonfly
        headers (P2P opt-in, filters, version evidence in the task identity) and routes
        through its proxy.
    :param implementation: ``"cython"``, ``"python"`` or None for the default pick.
    """

    def __init__(
        self,
        config: TransferConfig | None = None,
        *,
        transport: Transport | None = None,
        dragonfly: object | None = None,
        implementation: str | None = None,
    ) -> None:
        self.config = config or TransferConfig()
        self.dragonfly = dragonfly
        self._own_transport = transport is None
        if transport is None:
            proxy = getattr(dragonfly, "proxy", None)
            fallback = bool(getattr(dragonfly, "fallback_direct", True))
            transport = Transport(self.config, proxy=proxy, fallback_direct=fallback)
        self.transport = transport
        self.workers = 0
        """Worker threads (requests in flight at most) of the last batch."""
        self.daemon: DaemonGrpc | None = None
        self.daemon_reason: str | None = None
        self._daemon_lock = threading.Lock()
        if dragonfly is not None and getattr(dragonfly, "transport", "proxy") != "proxy":
            self._open_daemon(dragonfly)
        self._copy_body, self.implementation = _core.get_copy_body(implementation)
        # Measured (benchmarks/results): splice moves socket pages into the page cache with one
        # copy fewer than recv + pwrite; it falls back to recv where a file system cannot splice.
        self._mode = "splice" if self.config.io_mode == "auto" else self.config.io_mode

    def _open_daemon(self, dragonfly: DragonflyConfig) -> None:
        """Connect to dfdaemon's gRPC socket for ``transport = grpc | auto``.

        ``auto`` uses it when the socket answers a health check and the stubs import, else
        the proxy (the reason is logged once); ``grpc`` insists: an unusable socket is a
        clear error before anything is fetched."""
        from .dragonfly.daemon_grpc import DaemonGrpc, grpc_available

        why = grpc_available()
        daemon = None
        if why is None:
            daemon = DaemonGrpc(dragonfly.socket, dragonfly, timeout=max(self.config.read_timeout * 30, 600.0))
            why = daemon.health()
        if why is None:
            self.daemon = daemon
            return
        if daemon is not None:
            daemon.close()
        if dragonfly.transport == "grpc":
            raise ProxyUnavailableError(f"transport 'grpc': {why}")
        self.daemon_reason = why
        log.warning("dfrepo: dfdaemon gRPC not used (%s); using the %s", why,
                    "proxy" if dragonfly.proxy else "origin directly")

    @property
    def via(self) -> str:
        """``grpc`` (dfdaemon's socket), ``proxy`` or ``direct`` — what serves requests now."""
        return "grpc" if self.daemon is not None else self.transport.via

    def close(self) -> None:
        if self.daemon is not None:
            self.daemon.close()
        if self._own_transport:
            self.transport.clear()

    def __enter__(self) -> Downloader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public -----------------------------------------------------------------------

    def download_many(
        self,
        requests: Iterable[DownloadRequest],
        *,
        progress: ProgressCallback | None = None,
    ) -> list[DownloadResult]:
        """Fetch every request; all succeed, or the first error is raised and no temp
        file of any request is left behind (files already completed stay)."""
        jobs = [_FileJob(r, self._base_headers(r)) for r in requests]
        if not jobs:
            return []
        known = sum(j.size or 0 for j in jobs)
        state = _BatchState(progress, known if all(j.size is not None for j in jobs) else 0)
        tasks: collections.deque[_Task] = collections.deque()
        try:
            for job in jobs:
                if self.daemon is not None:
                    job.via_daemon = True  # the daemon writes the file; one task per file
                    planned: list[_Task] = [(job, None)]
                else:
                    job.open_temp()
                    planned = [(job, None)] if job.size is None else self._plan(job)
                job.pending = len(planned)
                tasks.extend(planned)
        except BaseException:
            for job in jobs:
                job.discard()
            raise
        # Sized after planning: a file of unknown size is one probe task now, but its probe
        # plans the rest as soon as the size is known, and those ranges need workers then.
        unknown = self.daemon is None and any(job.size is None for job in jobs)
        whole_files = self.daemon is not None or self._whole_files_via_peer
        limit = self.config.workers(files_through_peer=whole_files)
        workers = limit if unknown else min(limit, max(1, len(tasks)))
        self.workers = workers
        sched = _Scheduler(tasks)
        threads = [
            threading.Thread(target=self._worker, args=(sched, state), name=f"dfrepo-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        failed = sched.error
        for job in jobs:
            if job.result is None:
                job.discard()
        if failed is not None:
            raise failed
        if self.config.fsync:  # make the renames durable: each directory once, not once per file
            for directory in sorted({j.req.dest.parent for j in jobs}):
                _fsync_dir(directory)
        return [j.result for j in jobs if j.result is not None]

    # -- planning -----------------------------------------------------------------------

    def _base_headers(self, req: DownloadRequest) -> dict[str, str]:
        headers = {"Accept-Encoding": "identity", "User-Agent": f"dfrepo/{__version__}"}
        if self.dragonfly is not None:
            from .dragonfly import request_headers

            version = req.version or req.etag
            headers.update(request_headers(self.dragonfly, req.url, version=version))  # type: ignore[arg-type]
        return headers

    @property
    def _via_peer(self) -> bool:
        """Requests go through a Dragonfly peer right now (not fallen back to direct)."""
        return self.dragonfly is not None and self.transport.via == "proxy"

    @property
    def _peer_ranges(self) -> bool:
        return bool(getattr(self.dragonfly, "peer_ranges", False))

    @property
    def _whole_files_via_peer(self) -> bool:
        """Through a peer, one GET per file (the daemon fetches the pieces in parallel)."""
        return self._via_peer and not self._peer_ranges

    def _preallocate(self, job: _FileJob) -> None:
        size = job.size or 0
        if self.config.preallocate and size > 0 and _filesystem_type(os.fstat(job.fd).st_dev) not in _NO_PREALLOC:
            try:
                os.posix_fallocate(job.fd, 0, size)
            except OSError as exc:
                if exc.errno not in (95, 22):  # EOPNOTSUPP, EINVAL: filesystem cannot; fine
                    raise

    def _plan(self, job: _FileJob, offset: int = 0) -> list[_Task]:
        """Split the file into request tasks (:func:`dfrepo.rangeplan.plan_spans`); an
        empty file is one task ``(0, -1)`` that fetches nothing."""
        size = job.size or 0
        if offset == 0:
            self._preallocate(job)
        spans = plan_spans(size, range_size=self.config.range_size, via_peer=self._via_peer,
                           peer_ranges=self._peer_ranges,
                           piece_length=getattr(self.dragonfly, "piece_length", None), offset=offset)
        return [(job, span) for span in spans]

    # -- worker ---------------------------------------------------------------------------

    def _worker(self, sched: _Scheduler, state: _BatchState) -> None:
        buf = bytearray(self.config.buffer_size)
        while (task := sched.next()) is not None:
            job, span = task
            try:
                if job.error is None:
                    if job.via_daemon:
                        self._fetch_via_daemon(job, sched, state)
                    elif span is None:
                        self._probe(job, sched, state, buf)
                    elif span.end >= 0:
                        self._fetch_span(job, span, buf, state)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                job.error = _as_dfrepo_error(exc, job.req.url)
                sched.fail(job.error)
            if sched.done_one(job) == 0 and job.error is None and job.result is None:
                try:
                    self._finish(job, state)
                except BaseException as exc:  # noqa: BLE001
                    job.error = _as_dfrepo_error(exc, job.req.url)
                    sched.fail(job.error)

    def _probe(self, job: _FileJob, sched: _Scheduler, state: _BatchState, buf: bytearray) -> None:
        """Fetch a file of unknown size: the first request tells the size.

        Through a peer with ``peer_ranges`` off, one plain GET streams the whole file (a
        ``Range`` of ≤ 4 MiB would not even go P2P). Otherwise the first range of
        ``range_size`` bytes is the probe: its ``Content-Range`` gives the size, the other
        ranges are queued for the idle workers *before* this one copies its own body, so
        the file is fetched with full concurrency from the first round trip on. HEAD is
        not used: Dragonfly never routes it P2P and presigned URLs are method-bound. A
        server that ignores ``Range`` answers 200: that body is the download.
        """
        url = job.req.url
        whole = self._whole_files_via_peer
        first = self.config.range_size
        attempt = 0
        while True:
            job.requests += 1
            resp = None
            try:
                headers = dict(job.headers) if whole else {**job.headers, "Range": f"bytes=0-{first - 1}"}
                resp = self.transport.request(url, headers)
                self._note_peer(job, resp)
                answer = None if whole else self._range_answer(resp, url)
                if answer is not None:
                    start, end, total = answer
                    if start != 0 or total is None or end != min(first, total) - 1:
                        raise RangeNotSupportedError(
                            f"bad Content-Range {resp.headers.get('Content-Range')!r} for the first range",
                            url=url)
                    self._check_encoding(resp, url)
                    self._check_length(resp, end + 1, url, (0, end))
                    self._check_etag(job, resp)
                    job.size = total
                    job.etag = job.etag or normalize_etag(resp.headers.get("ETag"))
                    state.add_total(total)
                    self._preallocate(job)
                    sched.push(job, self._plan(job, offset=end + 1))
                    break
                if resp.status == 200:
                    self._whole_body(job, resp, state, buf)
                    return
                peer_range_error = (resp.status == 500 and attempt == 0
                                    and resp.headers.get("X-Dragonfly-Error-Type") == "dfdaemon")
                if not whole and (resp.status == 416 or peer_range_error):
                    # Zero-byte objects cannot satisfy a range (the origin says 416, a
                    # Dragonfly peer a 500 "dfdaemon" range error): fetch without Range.
                    resp.drain_conn()
                    resp.release_conn()
                    resp = self.transport.request(url, job.headers)
                    job.requests += 1
                    if resp.status == 200:
                        self._whole_body(job, resp, state, buf)
                        return
                raise self._status_error(resp, url, None)
            except DfrepoError as exc:
                self._close(resp)
                if not self._retryable(exc) or attempt + 1 >= self.config.max_attempts:
                    raise self._exhausted(exc, attempt, url, None) if self._retryable(exc) else exc
            except RETRYABLE_EXCEPTIONS as exc:
                self._close(resp)
                if attempt + 1 >= self.config.max_attempts:
                    raise self._exhausted(exc, attempt, url, None) from exc
            attempt += 1
            job.retries += 1
            self._sleep(attempt, resp)
        # The probe's own body: a connection that breaks here resumes as an ordinary range.
        cursor = _Cursor()
        try:
            self._copy_body(resp, job.fd, 0, end + 1, buf, cursor, state.advance, self._mode, url, (0, end))
            resp.release_conn()
        except BaseException as exc:
            self._close(resp)
            if not (isinstance(exc, RETRYABLE_EXCEPTIONS) or self._retryable(exc)):
                raise
            job.retries += 1
            self._fetch_span(job, Span(cursor.written, end, True), buf, state)

    def _fetch_via_daemon(self, job: _FileJob, sched: _Scheduler, state: _BatchState) -> None:
        """Have dfdaemon write (hard-link, or copy) the file over gRPC; check and publish it.

        No payload byte passes through this process. A socket that stays unavailable
        after the retries falls back like an unreachable proxy: to the HTTP path (proxy,
        then origin) when ``fallback_direct`` is on, else :class:`ProxyUnavailableError`."""
        from .dragonfly import check_task_id, task_id_for_request
        from .dragonfly.daemon_grpc import GrpcUnavailable, unavailable

        daemon = self.daemon
        assert daemon is not None and self.dragonfly is not None
        req = job.req
        out = req.dest.parent / f".{req.dest.name[:80]}.{secrets.token_hex(6)}.dfrepo-daemon"
        req.dest.parent.mkdir(parents=True, exist_ok=True)
        headers = {**self.dragonfly.headers, **req.headers}
        attempt = 0
        while True:
            job.requests += 1
            try:
                got = daemon.download(req.url, out, version=req.version or req.etag, headers=headers)
                break
            except GrpcUnavailable as exc:
                if attempt + 1 >= self.config.max_attempts:
                    if not self.dragonfly.fallback_direct:
                        raise unavailable(daemon.socket_path, str(exc), req.url) from None
                    self._daemon_fallback(job, sched, f"dfdaemon gRPC unavailable ({exc})")
                    return
                attempt += 1
                job.retries += 1
                self._sleep(attempt, None)
        job.tmp = str(out)  # removed by discard() if a check below fails
        size = os.stat(out).st_size
        if size != got.content_length or (job.size is not None and size != job.size):
            raise SourceChangedError(
                f"dfdaemon delivered {size} bytes of {req.dest.name}; expected "
                f"{job.size if job.size is not None else got.content_length}", url=req.url)
        job.size = size
        job.task_id = got.task_id or None
        job.source = "peer-cache" if got.local_hit else "peer"
        job.delivery = "linked" if got.linked else "copied"
        job.predicted_task_id = task_id_for_request(req.url, job.headers)
        check_task_id(job.predicted_task_id, {"X-Dragonfly-Task-ID": got.task_id}, req.url)
        state.advance(size)
        self._finish(job, state)

    def _daemon_fallback(self, job: _FileJob, sched: _Scheduler, reason: str) -> None:
        """Stop using the gRPC socket (for every file from now on) and fetch *job* over HTTP."""
        with self._daemon_lock:
            if self.daemon is not None:
                self.daemon_reason = reason
                self.transport.fallback_reason = self.transport.fallback_reason or reason
                log.warning("dfrepo: %s; falling back to the %s", reason,
                            "proxy" if self.transport.via == "proxy" else "origin")
                self.daemon = None
        job.via_daemon = False
        job.open_temp()
        sched.push(job, [(job, None)] if job.size is None else self._plan(job))

    def _whole_body(self, job: _FileJob, resp: urllib3.BaseHTTPResponse, state: _BatchState,
                    buf: bytearray) -> None:
        """A plain 200 answer of unknown length (no Range sent, or the server ignored it):
        stream the body once on this connection."""
        self._check_encoding(resp, job.req.url)
        self._check_etag(job, resp)
        length_header = resp.headers.get("Content-Length")
        length = int(length_header) if length_header is not None else -1
        if length >= 0:
            state.add_total(length)
        cursor = _Cursor()
        try:
            done = self._copy_body(resp, job.fd, 0, length, buf, cursor, state.advance, self._mode,
                                   job.req.url, None)
        except BaseException:
            self._close(resp)
            raise
        resp.release_conn()
        job.size = done
        self._finish(job, state)

    def _fetch_span(self, job: _FileJob, span: Span, buf: bytearray, state: _BatchState) -> None:
        """Fetch one planned span; a retry resumes from the last byte written (as a range)."""
        url = job.req.url
        start, end = span.start, span.end
        pos = start
        attempt = 0
        while True:
            cursor = _Cursor()
            resp = None
            ranged = span.ranged or pos > start
            headers = {**job.headers, "Range": f"bytes={pos}-{end}"} if ranged else dict(job.headers)
            if job.etag:
                headers["If-Match"] = f'"{job.etag}"'
            job.requests += 1
            try:
                resp = self.transport.request(url, headers)
                self._note_peer(job, resp)
                if ranged:
                    self._check_range(job, resp, pos, end)
                else:
                    self._check_whole(job, resp)
                self._copy_body(resp, job.fd, pos, end - pos + 1, buf, cursor, state.advance,
                                self._mode, url, (pos, end))
                resp.release_conn()
                return
            except DfrepoError as exc:
                self._close(resp)
                pos += cursor.written
                if not self._retryable(exc) or attempt + 1 >= self.config.max_attempts:
                    raise (self._exhausted(exc, attempt, url, (start, end))
                           if self._retryable(exc) else exc)
            except RETRYABLE_EXCEPTIONS as exc:
                self._close(resp)
                pos += cursor.written
                if attempt + 1 >= self.config.max_attempts:
                    raise self._exhausted(exc, attempt, url, (start, end)) from exc
            attempt += 1
            job.retries += 1
            self._sleep(attempt, resp)

    # -- checks -----------------------------------------------------------------------------

    def _range_answer(self, resp: urllib3.BaseHTTPResponse, url: str) -> tuple[int, int, int | None] | None:
        """``(start, end, total or None)`` when *resp* answers a range: a 206, or a 200 that
        carries ``Content-Range`` — what dfdaemon before v1.3.11 sent for P2P ranges. None
        for any other status (a 200 without ``Content-Range`` ignored the range)."""
        got = resp.headers.get("Content-Range")
        if resp.status != 206 and not (resp.status == 200 and got):
            return None
        m = _CONTENT_RANGE.match(got or "")
        if not m:
            raise RangeNotSupportedError(f"unparsable Content-Range {got!r} in a range answer", url=url)
        return int(m.group(1)), int(m.group(2)), None if m.group(3) == "*" else int(m.group(3))

    def _check_range(self, job: _FileJob, resp: urllib3.BaseHTTPResponse, start: int, end: int) -> None:
        url = job.req.url
        if resp.status == 412:
            raise SourceChangedError("object changed during download (If-Match failed)", url=url,
                                     byte_range=(start, end))
        if resp.status not in (200, 206):
            raise self._status_error(resp, url, (start, end))
        answer = self._range_answer(resp, url)
        if answer is None:
            raise RangeNotSupportedError("server ignored the Range header (200 instead of 206)", url=url,
                                         byte_range=(start, end))
        self._check_encoding(resp, url)
        if answer != (start, end, job.size):
            raise RangeNotSupportedError(
                f"Content-Range {resp.headers.get('Content-Range')!r} does not match the request "
                f"bytes {start}-{end}/{job.size}", url=url, byte_range=(start, end))
        self._check_length(resp, end - start + 1, url, (start, end))
        self._check_etag(job, resp)

    def _check_whole(self, job: _FileJob, resp: urllib3.BaseHTTPResponse) -> None:
        """A plain GET of a file whose size is known (a small object, or one GET per file
        through the peer): 200 with exactly that many bytes."""
        url = job.req.url
        size = job.size or 0
        if resp.status == 412:
            raise SourceChangedError("object changed during download (If-Match failed)", url=url)
        if resp.status != 200:
            raise self._status_error(resp, url, (0, size - 1))
        self._check_encoding(resp, url)
        length = resp.headers.get("Content-Length")
        if length is not None and int(length) != size:
            raise SourceChangedError(
                f"object is {length} bytes now, the listing said {size}", url=url)
        self._check_etag(job, resp)

    @staticmethod
    def _check_length(resp: urllib3.BaseHTTPResponse, want: int, url: str, rng: tuple[int, int]) -> None:
        length = resp.headers.get("Content-Length")
        if length is not None and int(length) != want:
            raise RangeNotSupportedError(
                f"Content-Length {length} does not match the range length {want}", url=url, byte_range=rng)

    def _check_etag(self, job: _FileJob, resp: urllib3.BaseHTTPResponse) -> None:
        got = normalize_etag(resp.headers.get("ETag"))
        if job.etag and got and got != job.etag:
            raise SourceChangedError(
                "object changed during download: ETag differs from the listing/probe", url=job.req.url)

    @staticmethod
    def _check_encoding(resp: urllib3.BaseHTTPResponse, url: str) -> None:
        enc = resp.headers.get("Content-Encoding", "identity").strip().lower()
        if enc not in ("", "identity"):
            raise TransferError(f"server sent a {enc}-encoded body although identity was asked", url=url)

    def _note_peer(self, job: _FileJob, resp: urllib3.BaseHTTPResponse) -> None:
        task = resp.headers.get("X-Dragonfly-Task-ID")
        if not task or job.task_id is not None:
            return
        job.task_id = task
        finished = resp.headers.get("X-Dragonfly-Task-Download-Finished", "").lower() == "true"
        job.source = "peer-cache" if finished else "peer"
        if self.dragonfly is not None:
            from .dragonfly import check_task_id, task_id_for_request

            try:
                job.predicted_task_id = task_id_for_request(job.req.url, job.headers)
                check_task_id(job.predicted_task_id, resp.headers, job.req.url)
            except DfrepoError:  # Defensive: a prediction problem must not fail a download
                log.debug("dfrepo: could not predict the task id", exc_info=True)

    def _status_error(self, resp: urllib3.BaseHTTPResponse, url: str,
                      rng: tuple[int, int] | None) -> HTTPStatusError:
        error_type = resp.headers.get("X-Dragonfly-Error-Type")
        where = {"backend": "origin (via Dragonfly)", "proxy": "Dragonfly proxy",
                 "dfdaemon": "Dragonfly peer"}.get(error_type or "", "server")
        return HTTPStatusError(f"{where} answered HTTP {resp.status} for {redact_url(url)}",
                               status=resp.status, url=url, byte_range=rng, error_type=error_type)

    @staticmethod
    def _retryable(exc: BaseException) -> bool:
        if isinstance(exc, HTTPStatusError):
            return exc.retryable
        return isinstance(exc, IncompleteDownloadError)

    def _exhausted(self, exc: BaseException, attempt: int, url: str,
                   rng: tuple[int, int] | None) -> RetriesExhaustedError:
        err = RetriesExhaustedError(
            f"gave up after {attempt + 1} attempts: {_describe(exc)}", attempts=attempt + 1, url=url,
            byte_range=rng)
        err.__cause__ = _scrub(exc)
        return err

    def _sleep(self, attempt: int, resp: urllib3.BaseHTTPResponse | None) -> None:
        delay = min(self.config.backoff_max, self.config.backoff_base * (2 ** (attempt - 1)))
        delay *= 0.5 + random.random() / 2
        wait = _retry_after_seconds(resp.headers.get("Retry-After") if resp is not None else None)
        if wait is not None:
            delay = max(delay, min(wait, self.config.backoff_max))
        time.sleep(delay)

    @staticmethod
    def _close(resp: urllib3.BaseHTTPResponse | None) -> None:
        if resp is None:
            return
        try:
            resp.close()
            resp.release_conn()
        except Exception:  # noqa: BLE001 - Defensive: a broken connection is dropped anyway
            log.debug("dfrepo: closing a failed response raised", exc_info=True)

    # -- completion ---------------------------------------------------------------------

    def _finish(self, job: _FileJob, state: _BatchState) -> None:
        size = job.size or 0
        if job.via_daemon:
            # The daemon's file (maybe its own content file, hard-linked): read, never written.
            job.fd = os.open(job.tmp or "", os.O_RDONLY | os.O_CLOEXEC)
        else:
            st = os.fstat(job.fd)
            if st.st_size != size:
                os.ftruncate(job.fd, size)
        if job.req.md5 and self.config.verify_checksum:
            digest = _md5_of(job.fd, size)
            if digest != job.req.md5.lower():
                raise ChecksumMismatchError(
                    f"MD5 of the downloaded bytes does not match the listing for {job.req.dest.name}",
                    url=job.req.url)
        if self.config.fsync:
            os.fsync(job.fd)
        os.close(job.fd)
        job.fd = -1
        assert job.tmp is not None
        os.replace(job.tmp, job.req.dest)
        job.tmp = None
        job.result = DownloadResult(
            path=job.req.dest,
            size=size,
            seconds=time.monotonic() - job.started,
            retries=job.retries,
            requests=job.requests,
            implementation=self.implementation,
            via="grpc" if job.via_daemon else self.transport.via,
            source=job.source,
            task_id=job.task_id,
            predicted_task_id=job.predicted_task_id,
            delivery=job.delivery,
        )


_Task = tuple["_FileJob", "Span | None"]
"""One unit of work: a planned span of a file, or None = probe the file (size unknown)."""


class _Scheduler:
    """A work queue that running tasks can extend, with fail-fast cancellation."""

    def __init__(self, tasks: collections.deque[_Task]) -> None:
        self._tasks = tasks
        self._cond = threading.Condition()
        self._active = 0
        self.error: BaseException | None = None

    def next(self) -> _Task | None:
        with self._cond:
            while True:
                if self.error is None and self._tasks:
                    self._active += 1
                    return self._tasks.popleft()  # type: ignore[no-any-return]
                if self.error is not None or self._active == 0:
                    return None
                self._cond.wait()

    def push(self, job: _FileJob, tasks: list[_Task]) -> None:
        with self._cond:
            job.pending += len(tasks)
            self._tasks.extend(tasks)
            self._cond.notify_all()

    def done_one(self, job: _FileJob) -> int:
        with self._cond:
            self._active -= 1
            job.pending -= 1
            self._cond.notify_all()
            return job.pending

    def fail(self, exc: BaseException) -> None:
        with self._cond:
            if self.error is None:
                self.error = exc
            self._tasks.clear()
            self._cond.notify_all()


class _BatchState:
    def __init__(self, progress: ProgressCallback | None, total: int) -> None:
        self._progress = progress
        self._lock = threading.Lock()
        self.done = 0
        self.total = total

    def add_total(self, n: int) -> None:
        with self._lock:
            self.total += n

    def advance(self, n: int) -> None:
        if self._progress is None:
            return
        with self._lock:
            self.done += n
            done, total = self.done, self.total
        self._progress(done, total)


#: Memory file systems: fallocate there zero-fills real pages that pwrite then overwrites.
_NO_PREALLOC = frozenset({"tmpfs", "ramfs", "hugetlbfs"})


@functools.lru_cache(maxsize=64)
def _filesystem_type(st_dev: int) -> str:
    """The file system type of a device number, from /proc/self/mountinfo ("" if unknown)."""
    want = f"{os.major(st_dev)}:{os.minor(st_dev)}"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                fields_ = line.split()
                if len(fields_) > 3 and fields_[2] == want and " - " in line:
                    return line.split(" - ", 1)[1].split()[0]
    except OSError:  # Defensive: no /proc
        pass
    return ""


def _md5_of(fd: int, size: int) -> str:
    h = hashlib.md5(usedforsecurity=False)
    buf = bytearray(4 * 1024 * 1024)
    view = memoryview(buf)
    pos = 0
    while pos < size:
        n = os.preadv(fd, [view[: min(len(buf), size - pos)]], pos)
        if n <= 0:
            break
        h.update(view[:n])
        pos += n
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # Defensive: some filesystems refuse opening directories
        return
    try:
        os.fsync(dfd)
    except OSError:  # Defensive
        pass
    finally:
        os.close(dfd)


def _retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _as_dfrepo_error(exc: BaseException, url: str) -> BaseException:
    """Keep dfrepo errors, OS errors (disk) and interrupts; wrap anything else."""
    if isinstance(exc, (DfrepoError, KeyboardInterrupt, SystemExit)):
        return exc
    if isinstance(exc, OSError) and not isinstance(exc, RETRYABLE_EXCEPTIONS):
        return exc
    err = TransferError(f"download failed: {_describe(exc)}", url=url)
    err.__cause__ = _scrub(exc)
    return err


def _scrub(exc: BaseException) -> BaseException:
    """Redact the ``url`` urllib3 keeps on its exceptions (``ReadTimeoutError.url`` is the
    full presigned URL) along the cause/context chain; dfrepo errors are already clean."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if not isinstance(cur, DfrepoError) and isinstance(getattr(cur, "url", None), str):
            try:
                cur.url = redact_url(cur.url)  # type: ignore[attr-defined]
            except AttributeError:  # Defensive: a read-only attribute
                pass
        cur = cur.__cause__ or cur.__context__
    return exc


def _describe(exc: BaseException) -> str:
    if isinstance(exc, DfrepoError):
        return str(exc)
    # urllib3/socket messages can embed the full URL; keep only the class name.
    return exc.__class__.__name__


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    size: int | None = None,
    etag: str | None = None,
    md5: str | None = None,
    headers: Mapping[str, str] | None = None,
    config: TransferConfig | None = None,
    dragonfly: object | None = None,
    proxy: str | None = None,
    progress: ProgressCallback | None = None,
    implementation: str | None = None,
) -> DownloadResult:
    """Download one URL to *dest*, verified and atomically.

    :param url: the object's (presigned) URL. Never logged.
    :param dest: final path; written via a temp file in the same directory.
    :param size: the size when already known (skips the probe request).
    :param etag: expected ETag; sent as If-Match and checked on every response.
    :param md5: expected hex MD5 of the content, verified before the file appears.
    :param headers: extra request headers.
    :param config: :class:`TransferConfig`; defaults are tuned for multi-GB objects.
    :param dragonfly: a DragonflyConfig (proxy, headers, filters, task identity).
    :param proxy: shortcut for a plain HTTP proxy URL when no DragonflyConfig is given.
    :param progress: ``progress(done, total)``.
    :param implementation: force ``"cython"`` or ``"python"`` (tests, benchmarks).
    """
    cfg = config or TransferConfig()
    transport = None
    if dragonfly is None and proxy:
        transport = Transport(cfg, proxy=proxy, fallback_direct=False)
    req = DownloadRequest(url=url, dest=Path(dest), size=size, etag=etag, md5=md5, headers=dict(headers or {}))
    with Downloader(cfg, transport=transport, dragonfly=dragonfly, implementation=implementation) as dl:
        try:
            return dl.download_many([req], progress=progress)[0]
        finally:
            if transport is not None:
                transport.clear()
