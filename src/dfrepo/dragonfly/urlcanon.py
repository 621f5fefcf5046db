"""The URL string dfdaemon hashes into a task ID (:func:`canonical_url`).

Two canonicalizations exist:

``"A"``
    dfdaemon up to 1.5.1: WHATWG parse, drop filtered keys, re-serialize the remaining
    pairs *in their original order* with ``application/x-www-form-urlencoded``
    escaping (``*`` kept, ``~`` -> ``%7E``); always rewritten, even with no filter.
``"B"`` (default)
    dfdaemon after client PR #2014, the Go scheduler/manager and dragonfly-sdk: an empty
    filter list hashes the raw URL string unchanged; otherwise segments containing
    ``;`` are dropped, the pairs are *sorted by key* (stable) and escaped like Go's
    ``url.QueryEscape`` (``~`` kept, ``*`` -> ``%2A``).

For presigned S3/GCS/Azure URLs all signature parameters are filtered, so both give the
same string (they can differ only when a *kept* parameter is out of key order or
contains ``*``, ``~`` or ``;``).  The WHATWG parse follows the Rust ``url`` crate that
dfdaemon uses (host lowercasing and IDNA, IPv6 compression, default ports, dot segments).

Pure functions, stdlib only; nothing here logs a URL's query.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal
from urllib.parse import unquote, urlsplit

from ..errors import ConfigError
from ..redact import redact_url

__all__ = ["DEFAULT_FILTERED_QUERY_PARAMS", "Canonicalization", "canonical_url"]

Canonicalization = Literal["A", "B"]

#: dfdaemon's built-in filter list (``dragonfly-client-util/src/http/query_params.rs``,
#: identical to Go ``idgen.DefaultFilteredQueryParams``), in upstream order.  Used when a
#: request carries no ``X-Dragonfly-Filtered-Query-Params``.  No Azure SAS keys.
DEFAULT_FILTERED_QUERY_PARAMS: tuple[str, ...] = (
    # S3
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
    "X-Amz-User-Agent",
    # GCS
    "X-Goog-Algorithm",
    "X-Goog-Credential",
    "X-Goog-Date",
    "X-Goog-Expires",
    "X-Goog-SignedHeaders",
    "X-Goog-Signature",
    # Alibaba OSS
    "OSSAccessKeyId",
    "Expires",
    "Signature",
    "SecurityToken",
    # Huawei OBS
    "AccessKeyId",
    "Signature",
    "Expires",
    "X-Obs-Date",
    "X-Obs-Security-Token",
    # Tencent COS
    "q-sign-algorithm",
    "q-ak",
    "q-sign-time",
    "q-key-time",
    "q-header-list",
    "q-url-param-list",
    "q-signature",
    "x-cos-security-token",
    # containerd
    "ns",
)
_SPECIAL_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443, "ftp": 21, "file": None}

# Bytes kept verbatim by the two query serializers (everything else is %XX, space is +).
_ALNUM = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_FORM_SAFE = frozenset(_ALNUM + b"*-._")  # WHATWG / Rust form_urlencoded byte_serialize
_GO_SAFE = frozenset(_ALNUM + b"-._~")  # Go url.QueryEscape
# WHATWG percent-encode sets (beyond C0 controls and bytes > 0x7E), as the Rust url crate.
_PATH_EXTRA = frozenset(b' "#<>?`{}')
_FRAGMENT_EXTRA = frozenset(b' "<>`')
_TAB_NEWLINE = re.compile(r"[\t\n\r]")

# --------------------------------------------------------------------------- URL parsing


def _strip_url(url: str) -> str:
    # WHATWG: trim leading/trailing C0 controls and spaces, remove all tabs and newlines.
    return _TAB_NEWLINE.sub("", url.strip("".join(map(chr, range(0x21)))))


def _encode_set(text: str, extra: frozenset[int]) -> str:
    """Percent-encode *text* (UTF-8) with a WHATWG set: C0, > 0x7E and *extra*."""
    return "".join(
        chr(b) if 0x20 <= b < 0x7F and b not in extra else f"%{b:02X}" for b in text.encode("utf-8", "surrogatepass")
    )


def _serialize(text: str, safe: frozenset[int]) -> str:
    return "".join(
        chr(b) if b in safe else ("+" if b == 0x20 else f"%{b:02X}") for b in text.encode("utf-8", "surrogatepass")
    )


def _form_decode(text: str) -> str:
    # form_urlencoded::parse: '+' is a space, %XX decoded (invalid escapes kept
    # literally), then UTF-8 decoded lossily (U+FFFD).
    return unquote(text.replace("+", " "), encoding="utf-8", errors="replace")


def _form_pairs(query: str) -> list[tuple[str, str]]:
    pairs = []
    for segment in query.split("&"):
        if not segment:
            continue
        key, _, value = segment.partition("=")
        pairs.append((_form_decode(key), _form_decode(value)))
    return pairs


def _ipv6(text: str) -> str:
    import ipaddress  # only for IPv6 literals; keeps the common path import-light

    try:
        packed = ipaddress.IPv6Address(text).packed
    except ValueError:
        raise ConfigError(f"invalid IPv6 host [{text}] in URL", source="url", key="url") from None
    groups = [packed[i] << 8 | packed[i + 1] for i in range(0, 16, 2)]
    # WHATWG: compress the first longest run of two or more zero groups; hex lowercase.
    best_start, best_len, i = -1, 1, 0
    while i < 8:
        if groups[i] == 0:
            j = i
            while j < 8 and groups[j] == 0:
                j += 1
            if j - i > best_len:
                best_start, best_len = i, j - i
            i = j
        else:
            i += 1
    if best_start < 0:
        return "[" + ":".join(f"{g:x}" for g in groups) + "]"
    head = ":".join(f"{g:x}" for g in groups[:best_start])
    tail = ":".join(f"{g:x}" for g in groups[best_start + best_len :])
    return f"[{head}::{tail}]"


def _host(raw: str, special: bool) -> str:
    if raw.startswith("["):
        if not raw.endswith("]"):
            raise ConfigError("invalid IPv6 host in URL", source="url", key="url")
        return _ipv6(raw[1:-1])
    if not special:
        return _encode_set(raw, frozenset())  # opaque host: kept as written
    try:
        host = unquote(raw, errors="strict") if "%" in raw else raw
    except UnicodeDecodeError:
        raise ConfigError("URL host is not valid UTF-8", source="url", key="url") from None
    if host.isascii():
        return host.lower()
    try:
        return host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise ConfigError("URL host cannot be converted to IDNA", source="url", key="url") from None


def _path(raw: str, special: bool) -> str:
    if not raw:
        return "/" if special else ""
    encoded = _encode_set(raw, _PATH_EXTRA)
    if not encoded.startswith("/"):
        return encoded  # opaque path of a non-special URL
    segments: list[str] = []
    parts = encoded[1:].split("/")
    for i, seg in enumerate(parts):
        last = i == len(parts) - 1
        low = seg.lower()
        if low in ("..", ".%2e", "%2e.", "%2e%2e"):
            if segments:
                segments.pop()
            if last:
                segments.append("")
        elif low in (".", "%2e"):
            if last:
                segments.append("")
        else:
            segments.append(seg)
    return "/" + "/".join(segments)


class _URL:
    """The pieces of a WHATWG-parsed absolute URL that the canonicalizations need."""

    __slots__ = ("base", "path", "query", "fragment")

    def __init__(self, url: str) -> None:
        url = _strip_url(url)
        scheme, sep, _ = url.partition(":")
        scheme = scheme.lower()
        special = scheme in _SPECIAL_PORTS
        if special:
            # WHATWG treats "\" like "/" before the query in special URLs.
            cut = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=len(url))
            url = url[:cut].replace("\\", "/") + url[cut:]
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ConfigError(f"cannot parse URL {redact_url(url)!r}", source="url", key="url") from None
        if not sep or not parts.scheme or not re.fullmatch(r"[a-z][a-z0-9+.\-]*", scheme):
            raise ConfigError(f"URL {redact_url(url)!r} is not absolute", source="url", key="url")
        userinfo, at, hostport = parts.netloc.rpartition("@")
        if special and not hostport and scheme != "file":
            raise ConfigError(f"URL {redact_url(url)!r} has no host", source="url", key="url")
        if hostport.startswith("["):
            raw_host = hostport[: hostport.find("]") + 1]
        else:
            raw_host = hostport.rpartition(":")[0] if ":" in hostport else hostport
        host = _host(raw_host, special)
        if port is not None and _SPECIAL_PORTS.get(scheme) != port:
            host += f":{port}"
        authority = (userinfo + "@" if at and userinfo else "") + host
        self.base = f"{scheme}://{authority}" if (parts.netloc or special) else f"{scheme}:"
        self.path = _path(parts.path, special)
        self.query: str | None = parts.query if "?" in url.split("#", 1)[0] else None
        self.fragment: str | None = _encode_set(parts.fragment, _FRAGMENT_EXTRA) if "#" in url else None

    def serialize(self, query: str | None) -> str:
        out = self.base + self.path
        if query is not None:
            out += "?" + query
        if self.fragment is not None:
            out += "#" + self.fragment
        # dfdaemon: "https://example.com/" -> "https://example.com".
        if self.path == "/" and out.endswith("/"):
            out = out.rstrip("/")
        return out


# --------------------------------------------------------------------------- public API


def canonical_url(
    url: str,
    filtered_query_params: Iterable[str] | None = None,
    *,
    canonicalization: Canonicalization = "B",
) -> str:
    """Return the string dfdaemon hashes for *url* (the filtered, canonical URL).

    :param filtered_query_params: query keys to drop (exact, case-sensitive match);
        ``None`` means dfdaemon's built-in :data:`DEFAULT_FILTERED_QUERY_PARAMS`.  An
        empty list is meaningful: under ``"B"`` it hashes the raw URL unchanged.
    :param canonicalization: ``"B"`` (dfdaemon after PR #2014, scheduler, SDK) or ``"A"``
        (dfdaemon <= 1.5.1).
    :raises ConfigError: the URL cannot be parsed (dfdaemon rejects it too).
    """
    filtered = frozenset(DEFAULT_FILTERED_QUERY_PARAMS if filtered_query_params is None else filtered_query_params)
    if canonicalization == "B":
        if not filtered:
            return url
        parsed = _URL(url)
        pairs = []
        for segment in (parsed.query or "").split("&"):
            if ";" not in segment:
                pairs.extend(_form_pairs(segment))
        kept = sorted((kv for kv in pairs if kv[0] not in filtered), key=lambda kv: kv[0])
        safe = _GO_SAFE
    elif canonicalization == "A":
        parsed = _URL(url)
        kept = [kv for kv in _form_pairs(parsed.query or "") if kv[0] not in filtered]
        safe = _FORM_SAFE
    else:
        raise ConfigError(f"unknown canonicalization {canonicalization!r} (use 'A' or 'B')", key="canonicalization")
    query = "&".join(_serialize(k, safe) + "=" + _serialize(v, safe) for k, v in kept) if kept else None
    return parsed.serialize(query)
