"""Downloads through dfdaemon's gRPC API: the daemon writes (hard-links) the file itself.

Used for ``transport = grpc | auto`` (:class:`dfrepo.dragonfly.DragonflyConfig`). No payload
byte passes through this process; dfrepo checks what the daemon delivered and publishes
it like any other download. A socket that stays unavailable falls back like an
unreachable proxy: to HTTP (proxy, then origin) when ``fallback_direct`` is on.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import HTTPStatusError, ProxyUnavailableError, SourceChangedError
from .jobs import UNAUTHORIZED, FileJob
from .retry import RetryPolicy

if TYPE_CHECKING:
    from ..dragonfly.config import DragonflyConfig
    from ..dragonfly.daemon_grpc import DaemonGrpc

log = logging.getLogger("dfrepo")


class DaemonRoute:
    """The gRPC socket while it is usable; ``daemon`` is None after a fallback."""

    def __init__(self, dragonfly: DragonflyConfig, *, timeout: float) -> None:
        self.dragonfly = dragonfly
        self.daemon: DaemonGrpc | None = None
        self.reason: str | None = None
        self._lock = threading.Lock()
        self._open(timeout)

    def _open(self, timeout: float) -> None:
        """``auto`` uses the socket when it answers a health check and the stubs import,
        else HTTP (the reason is logged once); ``grpc`` insists: an unusable socket is a
        clear error before anything is fetched."""
        from ..dragonfly.daemon_grpc import DaemonGrpc, grpc_available

        dragonfly = self.dragonfly
        why = grpc_available()
        daemon = None
        if why is None:
            daemon = DaemonGrpc(dragonfly.socket, dragonfly, timeout=timeout)
            why = daemon.health()
        if why is None:
            self.daemon = daemon
            return
        if daemon is not None:
            daemon.close()
        if dragonfly.transport == "grpc":
            raise ProxyUnavailableError(f"transport 'grpc': {why}")
        self.reason = why
        log.warning("dfrepo: dfdaemon gRPC not used (%s); using the %s", why,
                    "proxy" if dragonfly.proxy else "origin directly")

    @property
    def active(self) -> bool:
        return self.daemon is not None

    def close(self) -> None:
        if self.daemon is not None:
            self.daemon.close()

    def fetch(self, job: FileJob, retry: RetryPolicy, fall_back: Callable[[str], None]) -> bool:
        """Have the daemon write *job*'s file beside its destination and check it.

        :returns: False when the socket became unusable and *fall_back* was called
            (the job is then the HTTP path's); True when the file is ready to commit.
        """
        from ..dragonfly import check_task_id, task_id_for_request
        from ..dragonfly.daemon_grpc import GrpcUnavailable, unavailable

        daemon = self.daemon
        assert daemon is not None
        req = job.req
        out = req.dest.parent / f".{req.dest.name[:80]}.{secrets.token_hex(6)}.dfrepo-daemon"
        job.fs.makedirs(req.dest.parent)
        attempt = 0
        while True:
            signed = job.auth[0]
            job.requests += 1
            try:
                got = daemon.download(signed.url, out, version=req.version or req.etag,
                                      headers={**self.dragonfly.headers, **signed.headers})
                break
            except HTTPStatusError as exc:
                # The origin refused the daemon's request (an expired signature or token):
                # the same task, authorized afresh, as on the HTTP path.
                if exc.status in UNAUTHORIZED and job.refresh(signed):
                    log.info("dfrepo: %s was refused (HTTP %d); continuing with fresh credentials",
                             req.dest.name, exc.status)
                    continue
                raise
            except GrpcUnavailable as exc:
                if attempt + 1 >= retry.max_attempts:
                    if not self.dragonfly.fallback_direct:
                        raise unavailable(daemon.socket_path, str(exc), req.url) from None
                    self._stop(f"dfdaemon gRPC unavailable ({exc})")
                    fall_back(self.reason or "")
                    return False
                attempt += 1
                job.retries += 1
                retry.sleep(attempt, None)
        job.path = str(out)  # removed by discard() if a check below fails
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
        return True

    def _stop(self, reason: str) -> None:
        """Stop using the socket for every file from now on."""
        with self._lock:
            if self.daemon is not None:
                self.reason = reason
                self.daemon = None
