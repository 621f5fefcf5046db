"""Dragonfly task IDs, computed exactly as dfdaemon computes them.

dfdaemon names every download a *task*; peers share pieces of the same task.  For a
proxied GET the ID is (``dragonfly-client-util`` ``id_generator``)::

    sha256_hex(canonical_url(url, filtered_query_params)
               + tag + application + revision + str(piece_length) + "STANDARD")

where a missing (or empty) part adds nothing, or, when the request carries
``X-Dragonfly-Content-For-Calculating-Task-ID: <c>``, simply ``sha256_hex(c)``.  The URL
part and its two canonicalizations live in :mod:`.urlcanon`.  Not modelled: OCI
blob-digest IDs (``X-Dragonfly-Enable-Task-ID-Based-Blob-Digest``), which only apply to
registry URLs.

Pure functions, stdlib only; nothing here logs a URL's query.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping

from ..errors import ConfigError
from ..redact import redact_url
from ..values import parse_size
from .urlcanon import Canonicalization, canonical_url

__all__ = [
    "TASK_ID_HEADER",
    "check_task_id",
    "parse_byte_size",
    "task_id",
    "task_id_for_request",
]

log = logging.getLogger("dfrepo.dragonfly")

TASK_ID_HEADER = "X-Dragonfly-Task-ID"


def task_id(
    url: str,
    *,
    tag: str | None = None,
    application: str | None = None,
    piece_length: int | None = None,
    filtered_query_params: Iterable[str] | None = None,
    revision: str | None = None,
    content: str | None = None,
    canonicalization: Canonicalization = "B",
) -> str:
    """Return the 64-hex task ID dfdaemon gives a proxied (STANDARD) download of *url*.

    :param tag: ``X-Dragonfly-Tag`` (empty = absent).
    :param application: ``X-Dragonfly-Application`` (empty = absent).
    :param piece_length: ``X-Dragonfly-Piece-Length`` in bytes (hashed as decimal).
    :param filtered_query_params: keys dropped from the URL; ``None`` = dfdaemon's default
        list (what it uses when no ``X-Dragonfly-Filtered-Query-Params`` is sent).
    :param revision: Hugging Face/ModelScope revision (never set on the proxy path).
    :param content: ``X-Dragonfly-Content-For-Calculating-Task-ID``; when given, the ID is
        ``sha256_hex(content)`` and every other argument is ignored.
    :param canonicalization: ``"B"`` (current) or ``"A"`` (dfdaemon <= 1.5.1).
    """
    if content is not None:
        return hashlib.sha256(content.encode("utf-8")).hexdigest()
    if piece_length is not None and (isinstance(piece_length, bool) or not isinstance(piece_length, int)):
        raise ConfigError("piece_length must be an int (bytes)", key="piece_length")
    h = hashlib.sha256(canonical_url(url, filtered_query_params, canonicalization=canonicalization).encode("utf-8"))
    for part in (tag, application, revision):
        if part:
            h.update(part.encode("utf-8"))
    if piece_length is not None:
        h.update(str(piece_length).encode("ascii"))
    h.update(b"STANDARD")
    return h.hexdigest()


def parse_byte_size(text: str) -> int | None:
    """Parse a ``bytesize`` string as dfdaemon does (``4194304``, ``4mib``, ``8MiB``, ``4mb``).

    Decimal units (``mb``) and bare prefixes (``m``) are powers of 1000, binary ones
    (``mib``) of 1024; a bare number is bytes (:func:`dfrepo.values.parse_size` with
    ``bare="decimal"``).  Returns ``None`` for an unparsable value (dfdaemon then ignores
    the header).
    """
    try:
        return parse_size(text, bare="decimal")
    except ValueError:
        return None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup in a plain dict or any case-insensitive mapping."""
    value = headers.get(name)
    if value is None:
        lname = name.lower()
        for key, val in headers.items():
            if key.lower() == lname:
                value = val
                break
    return None if value is None else str(value).strip()


def task_id_for_request(
    url: str,
    headers: Mapping[str, str],
    *,
    canonicalization: Canonicalization = "B",
) -> str:
    """Predict the task ID dfdaemon assigns to ``GET url`` sent with *headers*.

    Reads the headers the way the Rust proxy does: ``X-Dragonfly-Content-For-Calculating-Task-ID``
    wins; else ``X-Dragonfly-Tag``, ``-Application``, ``-Piece-Length`` (``bytesize``; an
    unparsable value is ignored) and ``X-Dragonfly-Filtered-Query-Params`` (comma-separated,
    each trimmed; absent = the default list).  The legacy ``X-Dragonfly-Filter`` header is
    ignored, as dfdaemon ignores it.  Assumes no operator ``proxy.rules[]`` entry with its
    own ``filteredQueryParams``/``redirect``/``useTLS`` matches the URL.
    """
    content = _header(headers, "X-Dragonfly-Content-For-Calculating-Task-ID")
    if content is not None:
        return task_id(url, content=content)
    raw_filter = _header(headers, "X-Dragonfly-Filtered-Query-Params")
    filtered = None if raw_filter is None else [item.strip() for item in raw_filter.split(",")]
    raw_piece = _header(headers, "X-Dragonfly-Piece-Length")
    return task_id(
        url,
        tag=_header(headers, "X-Dragonfly-Tag"),
        application=_header(headers, "X-Dragonfly-Application"),
        piece_length=parse_byte_size(raw_piece) if raw_piece is not None else None,
        filtered_query_params=filtered,
        canonicalization=canonicalization,
    )


def check_task_id(expected: str, response_headers: Mapping[str, str], url: str) -> bool:
    """Compare a predicted task ID with the peer's ``X-Dragonfly-Task-ID`` response header.

    Returns True only when the header is present and equal (case-insensitive).  A missing
    header (the response did not come through the P2P path) is logged at DEBUG; a
    different ID is logged as a WARNING with the redacted URL: the peer then uses another
    canonicalization, or an operator proxy rule rewrites the URL or its filter list, and
    objects may not be shared or invalidated as dfrepo expects.
    """
    got = _header(response_headers, TASK_ID_HEADER)
    if got is None:
        log.debug("no %s in the response for %s (not served through P2P)", TASK_ID_HEADER, redact_url(url))
        return False
    if got.lower() == expected.lower():
        return True
    log.warning(
        "Dragonfly task ID mismatch for %s: dfrepo computed %s, the peer reports %s "
        "(different URL canonicalization or an operator proxy rule?)",
        redact_url(url),
        expected,
        got,
    )
    return False
