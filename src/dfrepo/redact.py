"""Secret hygiene: what a URL may show in a message, a log line or a cache sidecar.

Presigned URLs carry their signature in the query and a proxy URL may carry a password
in its userinfo, so nothing dfrepo raises, logs or writes keeps either.  A removed query
is marked ``?<redacted>`` (so a reader knows there was one); userinfo and fragment are
dropped silently.

* :func:`redact_url`: one URL, parsed and rebuilt (host and port only, no userinfo).
* :func:`redact_inline`: one URL-like string, edited as text, so nested forms such as
  Triton's ``s3://http://host:port/bucket/key`` stay intact.
* :func:`redact_urls`: every URL inside free text (daemon messages, tracebacks).

Stdlib only; imports nothing from dfrepo (:mod:`dfrepo.errors` builds on it).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["REDACTED_QUERY", "redact_inline", "redact_url", "redact_urls"]

#: What replaces a removed query string.
REDACTED_QUERY = "?<redacted>"

_USERINFO_RE = re.compile(r"(://)[^/@\s]*@")
# A URL in free text: a scheme, "://", then everything up to a blank or a quote.
_URL_IN_TEXT_RE = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"]*")


def _drop_query(text: str) -> str:
    head, sep, _query = text.partition("?")
    return head + (REDACTED_QUERY if sep else "")


def redact_url(url: str | None) -> str:
    """Return *url* without query, fragment or userinfo; safe for logs and messages.

    >>> redact_url("https://u:p@h.example/b/k?X-Amz-Signature=abc")
    'https://h.example/b/k?<redacted>'
    """
    if not url:
        return ""
    if url.startswith(("s3://", "gs://", "as://", "file://")):
        # Repository locations (Triton's s3://http://host:port/... nests a URL): keep the
        # text, drop anything after "?" (locations carry no secrets otherwise).
        return _drop_query(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if not parts.scheme or not parts.netloc:
        # Not a URL (a path, a location string): still drop anything after "?".
        return _drop_query(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host + (f":{port}" if port else "")
    clean = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return clean + (REDACTED_QUERY if parts.query else "")


def redact_inline(text: str) -> str:
    """Drop userinfo, query and fragment from a URL-like string *without* re-parsing it,
    so nested forms such as Triton's ``s3://http://host:port/bucket/key`` stay intact
    (:func:`redact_url` would fold them)."""
    text = _USERINFO_RE.sub(r"\1", text)
    return _drop_query(text.partition("#")[0])


def redact_urls(text: str) -> str:
    """*text* with every URL in it passed through :func:`redact_inline`.

    >>> redact_urls("GET https://u:p@h/b/k?sig=abc failed")
    'GET https://h/b/k?<redacted> failed'
    """
    return _URL_IN_TEXT_RE.sub(lambda m: redact_inline(m.group(0)), text)
