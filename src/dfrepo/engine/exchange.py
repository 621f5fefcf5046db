"""One request/response exchange: the headers dfrepo sends and the checks every answer
must pass before a byte of its body is written."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from .._version import __version__
from ..errors import (
    DfrepoError,
    HTTPStatusError,
    RangeNotSupportedError,
    SourceChangedError,
)
from ..redact import redact_url
from ..values import normalize_etag
from .jobs import DownloadRequest, FileJob
from .transport import Response

if TYPE_CHECKING:
    from ..dragonfly.config import DragonflyConfig

log = logging.getLogger("dfrepo")

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
#: dfdaemon marks the errors it produces with this header (see :func:`status_error`).
ERROR_TYPE_HEADER = "X-Dragonfly-Error-Type"
_WHERE = {"backend": "origin (via Dragonfly)", "proxy": "Dragonfly proxy", "dfdaemon": "Dragonfly peer"}


def base_headers(req: DownloadRequest, dragonfly: DragonflyConfig | None) -> dict[str, str]:
    """Headers of every request for *req*: identity encoding, our User-Agent, and the
    Dragonfly headers (P2P opt-in, filters, version evidence) when a peer is configured."""
    headers = {"Accept-Encoding": "identity", "User-Agent": f"dfrepo/{__version__}"}
    if dragonfly is not None:
        from ..dragonfly import request_headers

        headers.update(request_headers(dragonfly, req.url, version=req.version or req.etag))
    return headers


def range_answer(resp: Response, url: str) -> tuple[int, int, int | None] | None:
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


def check_range(job: FileJob, resp: Response, start: int, end: int) -> None:
    """The answer to ``Range: bytes=start-end`` carries exactly those bytes of this version."""
    url = job.req.url
    if resp.status == 412:
        raise SourceChangedError("object changed during download (If-Match failed)", url=url,
                                 byte_range=(start, end))
    if resp.status not in (200, 206):
        raise status_error(resp, url, (start, end))
    answer = range_answer(resp, url)
    if answer is None:
        raise RangeNotSupportedError("server ignored the Range header (200 instead of 206)", url=url,
                                     byte_range=(start, end))
    check_encoding(resp, url)
    if answer != (start, end, job.size):
        raise RangeNotSupportedError(
            f"Content-Range {resp.headers.get('Content-Range')!r} does not match the request "
            f"bytes {start}-{end}/{job.size}", url=url, byte_range=(start, end))
    check_length(resp, end - start + 1, url, (start, end))
    check_etag(job, resp)


def check_whole(job: FileJob, resp: Response) -> None:
    """A plain GET of a file whose size is known (a small object, or one GET per file
    through the peer): 200 with exactly that many bytes."""
    url = job.req.url
    size = job.size or 0
    if resp.status == 412:
        raise SourceChangedError("object changed during download (If-Match failed)", url=url)
    if resp.status != 200:
        raise status_error(resp, url, (0, size - 1))
    check_encoding(resp, url)
    length = resp.headers.get("Content-Length")
    if length is not None and int(length) != size:
        raise SourceChangedError(f"object is {length} bytes now, the listing said {size}", url=url)
    check_etag(job, resp)


def check_first_range(job: FileJob, resp: Response, answer: tuple[int, int, int | None],
                      asked: int) -> int:
    """The probe's range answer (``bytes=0-asked-1``) is sane; returns the object's size."""
    url = job.req.url
    start, end, total = answer
    if start != 0 or total is None or end != min(asked, total) - 1:
        raise RangeNotSupportedError(
            f"bad Content-Range {resp.headers.get('Content-Range')!r} for the first range", url=url)
    check_encoding(resp, url)
    check_length(resp, end + 1, url, (0, end))
    check_etag(job, resp)
    return total


def check_length(resp: Response, want: int, url: str, rng: tuple[int, int]) -> None:
    length = resp.headers.get("Content-Length")
    if length is not None and int(length) != want:
        raise RangeNotSupportedError(
            f"Content-Length {length} does not match the range length {want}", url=url, byte_range=rng)


def check_etag(job: FileJob, resp: Response) -> None:
    got = normalize_etag(resp.headers.get("ETag"))
    if job.etag and got and got != job.etag:
        raise SourceChangedError(
            "object changed during download: ETag differs from the listing/probe", url=job.req.url)


def check_encoding(resp: Response, url: str) -> None:
    """Bodies are stored as sent: an object stored with ``Content-Encoding: gzip`` (S3 and
    GCS return it whatever ``Accept-Encoding`` says) lands on disk as the stored bytes, as
    Triton's own S3/GCS download keeps them; the listing's size and MD5 are of those bytes."""
    enc = resp.headers.get("Content-Encoding", "identity").strip().lower()
    if enc not in ("", "identity"):
        log.debug("dfrepo: keeping the stored %s-encoded bytes of %s as they are", enc, redact_url(url))


def status_error(resp: Response, url: str, rng: tuple[int, int] | None) -> HTTPStatusError:
    """An unexpected status as an error naming who answered (origin, proxy, peer).

    ``X-Dragonfly-Error-Type`` (any case) says who: ``backend``, the origin answered
    non-2xx before streaming started (the proxy drops the body, so Azure's
    ``x-ms-error-code`` header is all the detail there is, and is quoted); ``proxy``, the
    proxy itself refused (rate limit, auth, block list, request building); ``dfdaemon``,
    an internal peer error (always retryable, see :attr:`HTTPStatusError.retryable`).
    An unknown type is kept as sent (at most 40 characters).
    """
    raw = (resp.headers.get(ERROR_TYPE_HEADER) or "").strip()
    error_type = (raw.lower() if raw.lower() in _WHERE else raw[:40]) or None
    where = _WHERE.get(error_type or "", "server")
    code = resp.headers.get("x-ms-error-code") if error_type == "backend" else None
    detail = f" ({code[:80]})" if code else ""
    return HTTPStatusError(f"{where} answered HTTP {resp.status}{detail} for {redact_url(url)}",
                           status=resp.status, url=url, byte_range=rng, error_type=error_type)


def note_peer(job: FileJob, resp: Response, dragonfly: DragonflyConfig | None) -> None:
    """Record which Dragonfly task served *job* (first answer only) and compare it with
    the task ID dfrepo predicts for the same request."""
    task = resp.headers.get("X-Dragonfly-Task-ID")
    if not task or job.task_id is not None:
        return
    job.task_id = task
    finished = resp.headers.get("X-Dragonfly-Task-Download-Finished", "").lower() == "true"
    job.source = "peer-cache" if finished else "peer"
    if dragonfly is not None:
        from ..dragonfly import check_task_id, task_id_for_request

        try:
            job.predicted_task_id = task_id_for_request(job.url, job.headers)
            check_task_id(job.predicted_task_id, resp.headers, job.url)
        except DfrepoError:  # Defensive: a prediction problem must not fail a download
            log.debug("dfrepo: could not predict the task id", exc_info=True)


def close_quietly(resp: Response | None) -> None:
    """Drop a response whose body will not be read (its connection is not reused)."""
    if resp is None:
        return
    try:
        resp.close()
        resp.release_conn()
    except Exception:  # noqa: BLE001 - Defensive: a broken connection is dropped anyway
        log.debug("dfrepo: closing a failed response raised", exc_info=True)
