"""Task IDs exactly as the Rust dfdaemon computes them (reference: dragonfly-proxy.md §2).

This is the stand-in peer's *own* implementation, written independently of
``dfrepo.dragonfly.taskid`` so that a test comparing the two is meaningful.

Two URL canonicalizations exist (§2.2):

* ``"A"``: dfdaemon <= v1.5.1 (WHATWG parse, filtered pairs re-serialized in
  their original order with ``form_urlencoded``).
* ``"B"``: dfdaemon after client PR #2014, the Go scheduler and dragonfly-sdk
  (``;`` segments dropped, pairs sorted by key, Go ``url.QueryEscape``; an empty
  filter list hashes the raw URL unchanged).  This is the default.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection
from typing import Literal
from urllib.parse import SplitResult, unquote_plus, urlsplit

__all__ = [
    "DEFAULT_FILTERED_QUERY_PARAMS",
    "MIN_PIECE_LENGTH",
    "MAX_PIECE_LENGTH",
    "Canonicalization",
    "canonical_url",
    "canonical_url_a",
    "canonical_url_b",
    "task_id",
    "content_task_id",
    "blob_digest_task_id",
    "parse_bytesize",
    "auto_piece_length",
]

Canonicalization = Literal["A", "B"]

#: Built-in filter list (`dragonfly-client-util/src/http/query_params.rs`, §2.3).
DEFAULT_FILTERED_QUERY_PARAMS: tuple[str, ...] = (
    # S3
    "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
    "X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Security-Token", "X-Amz-User-Agent",
    # GCS
    "X-Goog-Algorithm", "X-Goog-Credential", "X-Goog-Date", "X-Goog-Expires",
    "X-Goog-SignedHeaders", "X-Goog-Signature",
    # OSS
    "OSSAccessKeyId", "Expires", "Signature", "SecurityToken",
    # OBS
    "AccessKeyId", "Signature", "Expires", "X-Obs-Date", "X-Obs-Security-Token",
    # COS
    "q-sign-algorithm", "q-ak", "q-sign-time", "q-key-time", "q-header-list",
    "q-url-param-list", "q-signature", "x-cos-security-token",
    # containerd
    "ns",
)

MIN_PIECE_LENGTH = 4 * 1024 * 1024
MAX_PIECE_LENGTH = 64 * 1024 * 1024

_ALNUM = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
# WHATWG application/x-www-form-urlencoded serializer (Rust form_urlencoded): keeps *-._
_FORM_KEEP = frozenset(_ALNUM + b"*-._")
# Go url.QueryEscape: keeps -._~
_GO_KEEP = frozenset(_ALNUM + b"-._~")
# WHATWG path percent-encode set (on top of C0 controls and non-ASCII).
_PATH_ENCODE = frozenset(b' "#<>?`{}')
# WHATWG fragment percent-encode set.
_FRAGMENT_ENCODE = frozenset(b' "<>`')
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443, "ftp": 21}


def _escape(text: str, keep: frozenset[int]) -> str:
    """Percent-encode UTF-8 bytes of *text* not in *keep*; space becomes ``+``."""
    out: list[str] = []
    for byte in text.encode("utf-8"):
        if byte in keep:
            out.append(chr(byte))
        elif byte == 0x20:
            out.append("+")
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def _encode_set(text: str, extra: frozenset[int]) -> str:
    """WHATWG percent-encode: C0 controls, DEL, non-ASCII and *extra*; ``%`` kept."""
    out: list[str] = []
    for byte in text.encode("utf-8"):
        if byte <= 0x20 or byte >= 0x7F or byte in extra:
            out.append(f"%{byte:02X}")
        else:
            out.append(chr(byte))
    return "".join(out)


_SINGLE_DOT = {".", "%2e"}
_DOUBLE_DOT = {"..", ".%2e", "%2e.", "%2e%2e"}


def _whatwg_path(raw: str) -> str:
    """Percent-encode a path and resolve dot segments the way WHATWG URL does."""
    encoded = _encode_set(raw or "/", _PATH_ENCODE)
    body = encoded[1:] if encoded.startswith("/") else encoded
    segments = body.split("/")
    result: list[str] = []
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        lowered = segment.lower()
        if lowered in _DOUBLE_DOT:
            if result:
                result.pop()
            if index == last:
                result.append("")  # "/a/b/.." -> "/a/"
        elif lowered in _SINGLE_DOT:
            if index == last:
                result.append("")  # "/a/." -> "/a/"
        else:
            result.append(segment)
    return "/" + "/".join(result)


def _origin_prefix(parts: SplitResult) -> str:
    """``scheme://[userinfo@]host[:port]`` with lowercase host and no default port."""
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = parts.port
    if port is not None and _DEFAULT_PORTS.get(scheme) != port:
        host = f"{host}:{port}"
    userinfo, at, _ = parts.netloc.rpartition("@")
    return f"{scheme}://{userinfo}{at}{host}"


def _decode_pair(segment: str) -> tuple[str, str]:
    name, _, value = segment.partition("=")
    return unquote_plus(name, errors="replace"), unquote_plus(value, errors="replace")


def _finish(url: str, parts: SplitResult, path: str, query: str) -> str:
    text = _origin_prefix(parts) + path
    if query:
        text += "?" + query
    if "#" in url:
        text += "#" + _encode_set(parts.fragment, _FRAGMENT_ENCODE)
    if path == "/" and text.endswith("/"):
        text = text.rstrip("/")
    return text


def canonical_url_a(url: str, filtered: Collection[str]) -> str:
    """Canonical URL of dfdaemon <= v1.5.1 (generation A, §2.2)."""
    parts = urlsplit(url)
    drop = set(filtered)
    pairs = [
        _decode_pair(segment)
        for segment in parts.query.split("&")
        if segment
    ]
    kept = [(k, v) for k, v in pairs if k not in drop]
    query = "&".join(f"{_escape(k, _FORM_KEEP)}={_escape(v, _FORM_KEEP)}" for k, v in kept)
    return _finish(url, parts, _whatwg_path(parts.path), query)


def canonical_url_b(url: str, filtered: Collection[str]) -> str:
    """Canonical URL after client PR #2014 (generation B, §2.2)."""
    if not filtered:
        return url
    parts = urlsplit(url)
    drop = set(filtered)
    pairs = [
        _decode_pair(segment)
        for segment in parts.query.split("&")
        if segment and ";" not in segment
    ]
    kept = sorted(((k, v) for k, v in pairs if k not in drop), key=lambda kv: kv[0])
    query = "&".join(f"{_escape(k, _GO_KEEP)}={_escape(v, _GO_KEEP)}" for k, v in kept)
    return _finish(url, parts, _whatwg_path(parts.path), query)


def canonical_url(url: str, filtered: Collection[str], canonicalization: Canonicalization = "B") -> str:
    """Dispatch to :func:`canonical_url_a` or :func:`canonical_url_b`."""
    if canonicalization == "A":
        return canonical_url_a(url, filtered)
    if canonicalization == "B":
        return canonical_url_b(url, filtered)
    raise ValueError(f"unknown canonicalization {canonicalization!r}")


def content_task_id(content: str) -> str:
    """Task ID for ``X-Dragonfly-Content-For-Calculating-Task-ID``: ``sha256_hex(content)``."""
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


_BLOB_RE = re.compile(
    r"/v2/.+/(?:blobs|manifests)/(?:sha256:([0-9a-fA-F]{64})|sha512:([0-9a-fA-F]{128})|crc32:([0-9a-fA-F]{8}))$"
)


def blob_digest_task_id(url: str) -> str | None:
    """Digest hex of an OCI blob/manifest URL (``…/v2/<name>/blobs/<alg>:<hex>``), else None."""
    match = _BLOB_RE.search(urlsplit(url).path)
    if match is None:
        return None
    return next(group for group in match.groups() if group).lower()


def task_id(
    url: str,
    *,
    piece_length: int | None = None,
    tag: str | None = None,
    application: str | None = None,
    filtered: Collection[str] = (),
    revision: str | None = None,
    content: str | None = None,
    canonicalization: Canonicalization = "B",
) -> str:
    """``sha256_hex(canonical_url + tag + application + revision + str(piece_length) + "STANDARD")``.

    Missing or empty parts add nothing.  *content* short-circuits everything
    (``X-Dragonfly-Content-For-Calculating-Task-ID``).
    """
    if content is not None:
        return content_task_id(content)
    digest = hashlib.sha256(canonical_url(url, filtered, canonicalization).encode("utf-8"))
    for part in (tag, application, revision):
        if part:
            digest.update(part.encode("utf-8"))
    if piece_length is not None:
        digest.update(str(piece_length).encode("ascii"))
    digest.update(b"STANDARD")
    return digest.hexdigest()


_BYTESIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1 << 10, "ki": 1 << 10,
    "m": 1000**2, "mb": 1000**2, "mib": 1 << 20, "mi": 1 << 20,
    "g": 1000**3, "gb": 1000**3, "gib": 1 << 30, "gi": 1 << 30,
    "t": 1000**4, "tb": 1000**4, "tib": 1 << 40, "ti": 1 << 40,
}


def parse_bytesize(text: str) -> int | None:
    """Parse a ``bytesize`` string (``4194304``, ``4mib``, ``8MiB``, ``4mb``); None if unparsable."""
    match = _BYTESIZE_RE.match(text)
    if match is None:
        return None
    unit = _UNITS.get(match.group(2).lower())
    if unit is None:
        return None
    return int(float(match.group(1)) * unit) if "." in match.group(1) else int(match.group(1)) * unit


def auto_piece_length(content_length: int) -> int:
    """``next_power_of_two(content_length // 500)`` clamped to [4 MiB, 64 MiB] (§3.4)."""
    wanted = max(content_length // 500, 1)
    power = 1 << (wanted - 1).bit_length()
    return min(max(power, MIN_PIECE_LENGTH), MAX_PIECE_LENGTH)
