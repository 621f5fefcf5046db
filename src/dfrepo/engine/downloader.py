"""Verified, atomic, parallel downloads: probe, plan, fetch, commit.

One set of worker threads serves every file of a batch, so a model directory of a
thousand small files keeps its connections busy just like one large file does. Each
worker owns one reused buffer; the byte mover (:mod:`dfrepo._fastio`, or its twin)
copies response bodies into the destination with ``pwrite`` at their final offsets.

A file becomes visible under its final name only after every byte arrived, the size
(and the store's MD5, when listed) checked out and the data was fsynced; otherwise its
file is removed and the destination is untouched.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..errors import DfrepoError, HTTPStatusError
from ..objects import Signed
from ..values import normalize_etag
from . import exchange as ex
from .body import Cursor, WritableBuffer, new_buffer, open_body, release
from .commit import check_free_space, commit, sync_directories
from .concurrency import AdaptiveLimit
from .fs import FileSystem
from .jobs import (
    UNAUTHORIZED,
    DownloadRequest,
    DownloadResult,
    FileJob,
    ProgressCallback,
    Publish,
)
from .picker import get_copy_body
from .plan import Span, plan_spans
from .proxyenv import DirectProxies
from .retry import RetryPolicy, as_dfrepo_error, exhausted, retryable, throttled
from .scheduler import BatchProgress, Scheduler, Task
from .settings import TransferConfig
from .transport import RETRYABLE_EXCEPTIONS, Response, Transport

if TYPE_CHECKING:
    from ..dragonfly.config import DragonflyConfig
    from .daemon import DaemonRoute

log = logging.getLogger("dfrepo")

_RETRY_ON: tuple[type[BaseException], ...] = (DfrepoError, *RETRYABLE_EXCEPTIONS)


class Downloader:
    """Download many files through one set of pools and one set of workers.

    :param config: transfer settings.
    :param transport: pools to use (shared with the caller); one is made when None.
    :param dragonfly: adds the Dragonfly headers (P2P opt-in, filters, version evidence in
        the task identity) and routes through its proxy (or dfdaemon's gRPC socket).
    :param implementation: ``"cython"``, ``"python"`` or None for the default pick.
    :param publish: ``rename`` (temp file beside each destination) or ``in_place``
        (destinations inside the caller's private stage directory).
    :param fs: the file-system seam (tests inject faults through it).
    :param direct_proxies: the environment's proxies for direct requests (curl's rules).
    """

    def __init__(
        self,
        config: TransferConfig | None = None,
        *,
        transport: Transport | None = None,
        dragonfly: DragonflyConfig | None = None,
        implementation: str | None = None,
        publish: Publish = "rename",
        fs: FileSystem | None = None,
        direct_proxies: DirectProxies | None = None,
    ) -> None:
        self.config = config or TransferConfig()
        self.dragonfly = dragonfly
        self.publish: Publish = publish
        self.fs = fs or FileSystem()
        self.retry = RetryPolicy(self.config.max_attempts, self.config.backoff_base, self.config.backoff_max)
        self._own_transport = transport is None
        if transport is None:
            transport = Transport(self.config, proxy=dragonfly.proxy if dragonfly else None,
                                  fallback_direct=dragonfly.fallback_direct if dragonfly else True,
                                  direct_proxies=direct_proxies)
        self.transport = transport
        self.limit: AdaptiveLimit | None = None
        """Requests in flight: made by the first batch, kept across batches."""
        self.workers = 0
        """Threads the last batch started (at most the limit it reached)."""
        self.route: DaemonRoute | None = None
        if dragonfly is not None and dragonfly.transport != "proxy":
            from .daemon import DaemonRoute

            self.route = DaemonRoute(dragonfly, timeout=max(self.config.read_timeout * 30, 600.0))
        self._copy_body, self.implementation = get_copy_body(implementation)
        # Measured (benchmarks/results): splice moves socket pages into the page cache with one
        # copy fewer than recv + pwrite; it falls back to recv where a file system cannot splice.
        self._mode = "splice" if self.config.io_mode == "auto" else self.config.io_mode
        self._direct_io = self.implementation == "cython" and self._mode != "readinto"
        self._local = threading.local()

    @property
    def via(self) -> str:
        """``grpc`` (dfdaemon's socket), ``proxy`` or ``direct`` — what serves requests now."""
        return "grpc" if self.route is not None and self.route.active else self.transport.via

    def close(self) -> None:
        if self.route is not None:
            self.route.close()
        if self._own_transport:
            self.transport.clear()

    def __enter__(self) -> Downloader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- a batch ------------------------------------------------------------------------------

    def download_many(
        self,
        requests: Iterable[DownloadRequest],
        *,
        progress: ProgressCallback | None = None,
    ) -> list[DownloadResult]:
        """Fetch every request; all succeed, or the first error is raised and no partial
        file of any request is left behind (files already completed stay)."""
        reqs = list(requests)
        if not reqs:
            return []
        if self.config.check_space:
            check_free_space(self.fs, reqs)
        jobs = [FileJob(r, ex.base_headers(r, self.dragonfly), self.fs, self.publish) for r in reqs]
        known = sum(j.size or 0 for j in jobs)
        state = BatchProgress(progress, known if all(j.size is not None for j in jobs) else 0)
        tasks: list[Task] = []
        try:
            for job in jobs:
                planned = self._initial_tasks(job)
                job.pending = len(planned)
                tasks.extend(planned)
        except BaseException:
            for job in jobs:
                job.discard()
            raise
        if self.limit is None:
            whole = self._whole_files_via_peer or any(j.via_daemon for j in jobs)
            self.limit = AdaptiveLimit(self.config.initial_workers(files_through_peer=whole),
                                       self.config.max_workers, adaptive=self.config.adaptive)
        sched = Scheduler(tasks, self.limit, lambda task: self._run(task, sched, state))
        sched.run_all()
        self.workers = sched.threads_started
        for job in jobs:
            if job.result is None:
                job.discard()
        if sched.error is not None:
            raise sched.error
        if self.config.fsync and self.publish == "rename":  # new entries durable; in_place: the caller's job
            sync_directories(self.fs, (j.req.dest for j in jobs))
        return [j.result for j in jobs if j.result is not None]

    def _initial_tasks(self, job: FileJob) -> list[Task]:
        if self.route is not None and self.route.active:
            job.via_daemon = True  # the daemon writes the file; one task per file
            return [(job, None)]
        job.open()
        return [(job, None)] if job.size is None else self._plan(job)

    @property
    def _via_peer(self) -> bool:
        """Requests go through a Dragonfly peer right now (not fallen back to direct)."""
        return self.dragonfly is not None and self.transport.via == "proxy"

    @property
    def _whole_files_via_peer(self) -> bool:
        """Through a peer, one GET per file (the daemon fetches the pieces in parallel)."""
        return self._via_peer and not (self.dragonfly is not None and self.dragonfly.peer_ranges)

    def _plan(self, job: FileJob, offset: int = 0) -> list[Task]:
        """The file's request tasks (:func:`~dfrepo.engine.plan.plan_spans`); an empty file
        is one task ``(0, -1)`` that fetches nothing."""
        if offset == 0:
            self._allocate(job)
        df = self.dragonfly
        spans = plan_spans(job.size or 0, range_size=self.config.range_size, via_peer=self._via_peer,
                           peer_ranges=bool(df and df.peer_ranges), piece_length=df.piece_length if df else None,
                           offset=offset, connections=self.config.max_workers)
        return [(job, span) for span in spans]

    def _allocate(self, job: FileJob) -> None:
        if self.config.preallocate:
            self.fs.allocate(job.fd, job.size or 0)

    # -- one task -----------------------------------------------------------------------------

    def _run(self, task: Task, sched: Scheduler, state: BatchProgress) -> None:
        job, span = task
        try:
            if job.error is None:
                if job.via_daemon:
                    self._fetch_via_daemon(job, sched, state)
                elif span is None:
                    self._probe(job, sched, state)
                elif span.end >= 0:
                    self._fetch_span(job, span, sched, state)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            job.error = as_dfrepo_error(exc, job.req.url)
            sched.fail(job.error)
        if sched.finished_one(job) == 0 and job.error is None and job.result is None:
            try:
                self._finish(job)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                job.error = as_dfrepo_error(exc, job.req.url)
                sched.fail(job.error)

    def _buffer(self) -> WritableBuffer:
        """This worker thread's reused buffer (mapped on its first body, resident once used)."""
        buf: WritableBuffer | None = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = new_buffer(self.config.buffer_size)
        return buf

    def _copy(self, resp: Response, job: FileJob, offset: int, length: int,
              cursor: Cursor, sched: Scheduler, state: BatchProgress, rng: tuple[int, int] | None) -> int:
        """Copy *resp*'s body into *job*'s file at *offset* and release the connection."""
        buf = self._buffer()

        def advance(n: int) -> None:
            sched.record(n)
            state.advance(n)

        body = open_body(resp, length, direct=self._direct_io, chunk=len(buf))
        done = self._copy_body(body, job.fd, offset, length, buf, cursor, advance, self._mode, job.url, rng,
                               job.write_lock)
        release(resp, body)
        return done

    def _probe(self, job: FileJob, sched: Scheduler, state: BatchProgress) -> None:
        """Fetch a file of unknown size: the first request tells the size.

        Through a peer with ``peer_ranges`` off, one plain GET streams the whole file (a
        ``Range`` of ≤ 4 MiB would not even go P2P). Otherwise the first range of
        ``range_size`` bytes is the probe: its ``Content-Range`` gives the size, the other
        ranges are queued for idle workers *before* this one copies its own body, so the
        file is fetched with full concurrency from the first round trip on. HEAD is not
        used: Dragonfly never routes it P2P and presigned URLs are method-bound. A server
        that ignores ``Range`` answers 200: that body is the download.
        """
        whole = self._whole_files_via_peer
        first = self.config.range_size
        attempt = 0
        while True:
            signed, auth_headers = job.auth
            url = signed.url
            job.requests += 1
            resp = None
            try:
                headers = dict(auth_headers) if whole else {**auth_headers, "Range": f"bytes=0-{first - 1}"}
                resp = self.transport.request(url, headers)
                ex.note_peer(job, resp, self.dragonfly)
                answer = None if whole else ex.range_answer(resp, url)
                if answer is not None:
                    job.size = ex.check_first_range(job, resp, answer, first)
                    job.etag = job.etag or normalize_etag(resp.headers.get("ETag"))
                    state.add_total(job.size)
                    end = answer[1]
                    self._allocate(job)
                    sched.push(job, self._plan(job, offset=end + 1))
                    break
                if resp.status == 200:
                    self._whole_body(job, resp, sched, state)
                    return
                peer_range_error = (resp.status == 500 and attempt == 0
                                    and resp.headers.get("X-Dragonfly-Error-Type") == "dfdaemon")
                if not whole and (resp.status == 416 or peer_range_error):
                    # Zero-byte objects cannot satisfy a range (the origin says 416, a
                    # Dragonfly peer a 500 "dfdaemon" range error): fetch without Range.
                    resp.drain_conn()
                    resp.release_conn()
                    resp = self.transport.request(url, auth_headers)
                    job.requests += 1
                    if resp.status == 200:
                        self._whole_body(job, resp, sched, state)
                        return
                raise ex.status_error(resp, url, None)
            except _RETRY_ON as exc:
                ex.close_quietly(resp)
                if self._failed_attempt(job, exc, attempt, signed, None, sched):
                    continue
            attempt += 1
            job.retries += 1
            self.retry.sleep(attempt, resp)
        # The probe's own body: a connection that breaks here resumes as an ordinary range.
        cursor = Cursor()
        try:
            self._copy(resp, job, 0, end + 1, cursor, sched, state, (0, end))
        except BaseException as exc:
            ex.close_quietly(resp)
            if not retryable(exc):
                raise
            job.retries += 1
            self._fetch_span(job, Span(cursor.written, end, True), sched, state)

    def _failed_attempt(self, job: FileJob, exc: BaseException, attempt: int, signed: Signed,
                        rng: tuple[int, int] | None, sched: Scheduler) -> bool:
        """Raise the final error if *exc* ends the request; note throttling either way.
        True = the file was authorized afresh (URL and headers): retry at once (not counted
        as an attempt)."""
        if (isinstance(exc, HTTPStatusError) and exc.status in UNAUTHORIZED
                and job.refresh(signed)):
            log.info("dfrepo: %s was refused (HTTP %d); continuing with fresh credentials",
                     job.req.dest.name, exc.status)
            return True
        if throttled(exc):
            sched.throttled()
        if self.retry.gives_up(exc, attempt):
            raise exhausted(exc, attempt, signed.url, rng)
        return False

    def _whole_body(self, job: FileJob, resp: Response, sched: Scheduler,
                    state: BatchProgress) -> None:
        """A plain 200 answer of unknown length (no Range sent, or the server ignored it):
        stream the body once on this connection."""
        ex.check_encoding(resp, job.req.url)
        ex.check_etag(job, resp)
        length_header = resp.headers.get("Content-Length")
        length = int(length_header) if length_header is not None else -1
        if length >= 0:
            state.add_total(length)
        try:
            done = self._copy(resp, job, 0, length, Cursor(), sched, state, None)
        except BaseException:
            ex.close_quietly(resp)
            raise
        job.size = done
        self._finish(job)

    def _fetch_span(self, job: FileJob, span: Span, sched: Scheduler, state: BatchProgress) -> None:
        """Fetch one planned span; a retry resumes from the last byte written (as a range)."""
        start, end = span.start, span.end
        pos = start
        attempt = 0
        while True:
            signed, auth_headers = job.auth
            url = signed.url
            cursor = Cursor()
            resp = None
            ranged = span.ranged or pos > start
            headers = {**auth_headers, "Range": f"bytes={pos}-{end}"} if ranged else dict(auth_headers)
            if job.etag:
                headers["If-Match"] = f'"{job.etag}"'
            job.requests += 1
            try:
                resp = self.transport.request(url, headers)
                ex.note_peer(job, resp, self.dragonfly)
                if ranged:
                    ex.check_range(job, resp, pos, end)
                else:
                    ex.check_whole(job, resp)
                self._copy(resp, job, pos, end - pos + 1, cursor, sched, state, (pos, end))
                return
            except _RETRY_ON as exc:
                ex.close_quietly(resp)
                pos += cursor.written
                if self._failed_attempt(job, exc, attempt, signed, (start, end), sched):
                    continue
            attempt += 1
            job.retries += 1
            self.retry.sleep(attempt, resp)

    def _fetch_via_daemon(self, job: FileJob, sched: Scheduler, state: BatchProgress) -> None:
        assert self.route is not None

        def fall_back(reason: str) -> None:
            self.transport.fallback_reason = self.transport.fallback_reason or reason
            log.warning("dfrepo: %s; falling back to the %s", reason,
                        "proxy" if self.transport.via == "proxy" else "origin")
            job.via_daemon = False
            job.open()
            sched.push(job, [(job, None)] if job.size is None else self._plan(job))

        if self.route.fetch(job, self.retry, fall_back):
            state.advance(job.size or 0)
            self._finish(job)

    def _finish(self, job: FileJob) -> None:
        size = commit(job, fsync=self.config.fsync, verify_checksum=self.config.verify_checksum)
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

