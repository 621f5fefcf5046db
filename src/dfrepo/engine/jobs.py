"""What the engine is asked to fetch, what it reports, and one file's state in flight."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..values import normalize_etag
from .fs import FileSystem

ProgressCallback = Callable[[int, int], object]
"""Called as ``progress(bytes_done, bytes_total)``; total is 0 while unknown."""

Publish = Literal["rename", "in_place"]
"""How a finished file becomes visible: ``rename`` = written to a temp file beside the
destination and renamed over it (the destination never holds a partial file);
``in_place`` = written at the destination itself, which must not exist — for callers that
write into a private stage directory that they publish with one rename of their own."""


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
    refresh: Callable[[], str] | None = field(default=None, repr=False, compare=False)
    """Signs a fresh URL for the same object (a store's presigner). When a request is
    refused as unauthorized (400/401/403: the signature expired), the file continues with a
    fresh URL; the Dragonfly task identity does not change (signature parameters are
    filtered out of it)."""


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


#: Fresh URLs signed for one file at most (a URL that is refused at once again is not a
#: matter of expiry).
MAX_REFRESHES = 3
#: Statuses with which stores refuse an expired signature (S3/Azure 403, GCS 400, 401).
UNAUTHORIZED = frozenset({400, 401, 403})


class FileJob:
    """Shared state of one file while its requests are in flight."""

    def __init__(self, req: DownloadRequest, headers: Mapping[str, str], fs: FileSystem,
                 publish: Publish) -> None:
        self.req = req
        self.url = req.url
        """The URL requests use now (re-signed when the first one expired)."""
        self.refreshes = 0
        self._lock = threading.Lock()
        self.headers = {**headers, **req.headers}
        self.size = req.size
        self.etag = normalize_etag(req.etag)
        self.fs = fs
        self.publish = publish
        self.fd = -1
        self.path: str | None = None
        """The file being written (a temp file, the destination itself, or the daemon's
        output); removed by :meth:`discard` unless the job finished."""
        self.pending = 0
        self.retries = 0
        self.requests = 0
        self.started = time.monotonic()
        self.source = "origin"
        self.task_id: str | None = None
        self.predicted_task_id: str | None = None
        self.via_daemon = False  # fetched through dfdaemon's gRPC API (no file of ours)
        self.delivery = "streamed"
        self.error: BaseException | None = None
        self.result: DownloadResult | None = None

    def refresh_url(self, failed_url: str) -> bool:
        """After *failed_url* was refused as unauthorized: sign a fresh URL (once per
        failure, however many ranges saw it). False when there is no presigner or it was
        used :data:`MAX_REFRESHES` times."""
        if self.req.refresh is None:
            return False
        with self._lock:
            if self.url != failed_url:
                return True  # another range of this file re-signed already
            if self.refreshes >= MAX_REFRESHES:
                return False
            self.url = self.req.refresh()
            self.refreshes += 1
            return True

    def open(self) -> None:
        dest = self.req.dest
        self.fs.makedirs(dest.parent)
        if self.publish == "in_place":
            self.fd, self.path = self.fs.create(dest), str(dest)
        else:
            self.fd, self.path = self.fs.create_temp(dest)

    def discard(self) -> None:
        """Close and remove the unfinished file (the destination stays as it was)."""
        if self.fd >= 0:
            self.fs.close(self.fd)
            self.fd = -1
        if self.path is not None:
            self.fs.unlink(self.path)
            self.path = None
