"""What the engine is asked to fetch, what it reports, and one file's state in flight."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..objects import Resign, Signed
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
    refresh: Resign | None = field(default=None, repr=False, compare=False)
    """Authorizes the same object afresh (a store's re-signer): a :class:`~dfrepo.objects.Signed`
    URL and the headers that replace ``headers`` (a new bearer token, or none when the URL
    carries the signature). When a request is refused as unauthorized (400/401/403: the
    signature or token expired), the file continues with both; the Dragonfly task identity
    does not change (signature parameters are filtered out of it, credential headers are
    not part of it)."""


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


#: Fresh authorizations (URL + headers) for one file at most (one that is refused at once
#: again is not a matter of expiry).
MAX_REFRESHES = 3
#: Statuses with which stores refuse an expired signature (S3/Azure 403, GCS 400, 401).
UNAUTHORIZED = frozenset({400, 401, 403})


class FileJob:
    """Shared state of one file while its requests are in flight."""

    def __init__(self, req: DownloadRequest, headers: Mapping[str, str], fs: FileSystem,
                 publish: Publish) -> None:
        self.req = req
        self._base = dict(headers)
        self._auth = self._authorized(Signed(req.url, dict(req.headers)))
        self.refreshes = 0
        self._lock = threading.Lock()
        self.write_lock = threading.Lock()
        """Held by the byte mover around each write into :attr:`fd`: the requests filling
        one file take turns in user space (a futex wait) rather than spinning on the
        file's inode lock in the kernel, which burnt a fifth of the CPU on loopback."""
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

    def _authorized(self, signed: Signed) -> tuple[Signed, dict[str, str]]:
        return signed, {**self._base, **signed.headers}

    @property
    def auth(self) -> tuple[Signed, dict[str, str]]:
        """``(signed, headers)`` for the next request, read together: the authorization in
        use (re-signed when one expired) and the full request headers that go with it
        (the engine's and Dragonfly's, then the authorization's own). The dict is shared:
        copy it before adding to it."""
        return self._auth

    @property
    def url(self) -> str:
        """The URL requests use now."""
        return self._auth[0].url

    @property
    def headers(self) -> dict[str, str]:
        """The request headers in use now (see :attr:`auth`)."""
        return self._auth[1]

    def refresh(self, failed: Signed) -> bool:
        """After a request authorized by *failed* was refused as unauthorized: authorize
        the file afresh, URL and headers (once per failure, however many ranges saw it).
        False when there is no re-signer or it was used :data:`MAX_REFRESHES` times."""
        if self.req.refresh is None:
            return False
        with self._lock:
            if self._auth[0] is not failed:
                return True  # another range of this file was authorized afresh already
            if self.refreshes >= MAX_REFRESHES:
                return False
            self.refreshes += 1
            fresh = self.req.refresh()
            if not isinstance(fresh, Signed):  # an untyped caller's presigner returning a str
                raise TypeError(f"DownloadRequest.refresh must return dfrepo.Signed, not {type(fresh).__name__}")
            self._auth = self._authorized(fresh)
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
