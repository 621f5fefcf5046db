"""When to retry, how long to wait, and how errors leave the engine (classified, scrubbed)."""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass

from ..errors import (
    DfrepoError,
    HTTPStatusError,
    IncompleteDownloadError,
    RetriesExhaustedError,
    TransferError,
)
from ..redact import redact_url
from .transport import RETRYABLE_EXCEPTIONS, Response

#: Statuses that mean "too many requests from you": the adaptive limit backs off.
THROTTLE_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts per request and the exponential backoff (with jitter) between them."""

    max_attempts: int
    backoff_base: float
    backoff_max: float

    def delay(self, attempt: int, retry_after: str | None = None, jitter: float | None = None) -> float:
        """Seconds to wait before attempt *attempt* (1 = the first retry).

        ``backoff_base * 2**(attempt-1)`` capped at ``backoff_max``, scaled by a jitter in
        [0.5, 1); a ``Retry-After`` is honoured up to ``backoff_max``."""
        base = min(self.backoff_max, self.backoff_base * 2.0 ** (attempt - 1))
        base *= 0.5 + (random.random() if jitter is None else jitter) / 2
        wait = retry_after_seconds(retry_after)
        if wait is not None:
            base = max(base, min(wait, self.backoff_max))
        return base

    def sleep(self, attempt: int, resp: Response | None) -> None:
        time.sleep(self.delay(attempt, resp.headers.get("Retry-After") if resp is not None else None))

    def gives_up(self, exc: BaseException, attempt: int) -> bool:
        """True when *exc* on attempt *attempt* (0-based) ends the request."""
        return not retryable(exc) or attempt + 1 >= self.max_attempts


def retryable(exc: BaseException) -> bool:
    """The same request may succeed: a broken/stalled connection or a retryable status."""
    if isinstance(exc, HTTPStatusError):
        return exc.retryable
    return isinstance(exc, (IncompleteDownloadError, *RETRYABLE_EXCEPTIONS))


def throttled(exc: BaseException) -> bool:
    """The server asked for fewer requests (429, 503, S3 SlowDown)."""
    return isinstance(exc, HTTPStatusError) and exc.status in THROTTLE_STATUSES


def exhausted(exc: BaseException, attempt: int, url: str, rng: tuple[int, int] | None) -> BaseException:
    """The error to raise after attempt *attempt* failed with *exc* and retrying stops."""
    if not retryable(exc):
        return as_dfrepo_error(exc, url)
    err = RetriesExhaustedError(
        f"gave up after {attempt + 1} attempts: {describe(exc)}", attempts=attempt + 1, url=url, byte_range=rng)
    err.__cause__ = scrub(exc)
    return err


def retry_after_seconds(value: str | None) -> float | None:
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


def as_dfrepo_error(exc: BaseException, url: str) -> BaseException:
    """Keep dfrepo errors, OS errors (disk) and interrupts; wrap anything else."""
    if isinstance(exc, (DfrepoError, KeyboardInterrupt, SystemExit)):
        return exc
    if isinstance(exc, OSError) and not isinstance(exc, RETRYABLE_EXCEPTIONS):
        return exc
    err = TransferError(f"download failed: {describe(exc)}", url=url)
    err.__cause__ = scrub(exc)
    return err


def scrub(exc: BaseException) -> BaseException:
    """Redact the ``url`` urllib3 keeps on its exceptions (``ReadTimeoutError.url`` is the
    full presigned URL) along the cause/context chain; dfrepo errors are already clean."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        url = getattr(cur, "url", None)
        if not isinstance(cur, DfrepoError) and isinstance(url, str):
            try:
                setattr(cur, "url", redact_url(url))  # noqa: B010 - urllib3 errors carry an untyped url
            except AttributeError:  # Defensive: a read-only attribute
                pass
        cur = cur.__cause__ or cur.__context__
    return exc


def describe(exc: BaseException) -> str:
    if isinstance(exc, DfrepoError):
        return str(exc)
    # urllib3/socket messages can embed the full URL; keep only the class name.
    return exc.__class__.__name__
