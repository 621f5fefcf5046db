"""Turn a proxied response's status into an :class:`~dfrepo.errors.HTTPStatusError`.

dfdaemon marks the errors it produces with ``X-Dragonfly-Error-Type``:

``backend``
    the origin answered non-2xx before streaming started.  The status and headers are the
    origin's, but the **body is empty** (the proxy drops it), so the status is all there
    is; Azure's ``x-ms-error-code`` header is quoted when present.  500 with no origin
    status means the origin could not be reached.
``proxy``
    the proxy itself refused: 429 rate limit, 401/400 basic auth, 403 block list, 400/500
    request building (e.g. a piece length below 4 MiB).
``dfdaemon``
    an internal peer error (no Content-Length from the origin, no space, bad range...).
    Always retryable, as in the official SDKs.

Retryable (:attr:`HTTPStatusError.retryable`): 5xx, 408, 429, or error type ``dfdaemon``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from ..errors import HTTPStatusError, redact_url
from .taskid import _header

__all__ = ["ERROR_TYPE_HEADER", "classify_response", "note_direct_fallback"]

log = logging.getLogger("dfrepo.dragonfly")

ERROR_TYPE_HEADER = "X-Dragonfly-Error-Type"
_KNOWN_TYPES = ("backend", "proxy", "dfdaemon")


def classify_response(status: int, headers: Mapping[str, str], url: str) -> HTTPStatusError | None:
    """Return None for a 2xx response, else the error to raise (URL redacted).

    :param headers: the response headers (any mapping; looked up case-insensitively).
    """
    if 200 <= status < 300:
        return None
    raw = _header(headers, ERROR_TYPE_HEADER)
    error_type = None
    if raw:
        error_type = raw.lower() if raw.lower() in _KNOWN_TYPES else raw[:40]
    where = redact_url(url)
    if error_type == "backend":
        code = _header(headers, "x-ms-error-code")
        detail = f" ({code[:80]})" if code else ""
        message = f"origin answered HTTP {status}{detail} for {where} (via Dragonfly peer; body withheld)"
    elif error_type == "proxy":
        message = f"Dragonfly proxy refused the request for {where}: HTTP {status}"
    elif error_type == "dfdaemon":
        message = f"Dragonfly peer failed internally on {where}: HTTP {status}"
    elif error_type:
        message = f"HTTP {status} for {where} (Dragonfly error type {error_type!r})"
    else:
        message = f"HTTP {status} for {where}"
    return HTTPStatusError(message, status=status, url=url, error_type=error_type)


_fallback_lock = threading.Lock()
_fallback_noted: set[str] = set()


def note_direct_fallback(proxy: str | None, reason: str) -> bool:
    """Log, once per proxy per process, that downloads go direct because *reason*.

    Returns True the first time (when it logged).  *reason* must hold no secret (use an
    exception's class name or errno text, not a URL).
    """
    key = redact_url(proxy) or "<none>"
    with _fallback_lock:
        if key in _fallback_noted:
            return False
        _fallback_noted.add(key)
    log.warning("Dragonfly proxy %s unreachable (%s); downloading directly from the origin", key, reason)
    return True
