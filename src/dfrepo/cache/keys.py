"""What identifies a cache entry: the object's identity without any URL signature."""

from __future__ import annotations

import hashlib
import json
import re
from urllib.parse import urlsplit, urlunsplit

from ..objects import RemoteObject
from ..values import normalize_etag

__all__ = ["KEY_RE", "cache_key", "identity"]

_KEY_VERSION = "dfrepo-cache-v1"
#: What a key looks like (names in the cache directory that are not keys are ignored).
KEY_RE = re.compile(r"^[0-9a-f]{64}$")


def identity(obj: RemoteObject) -> str:
    """Where the object lives, with no signature: ``source``, else the URL minus query."""
    if obj.source:
        return obj.source
    parts = urlsplit(obj.url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def cache_key(obj: RemoteObject) -> str | None:
    """The cache key of *obj*, or None when it has no version evidence (never cached).

    ``sha256`` of a canonical JSON array of (source, version, size, md5): no URL, no
    signature, no header takes part, so a freshly signed URL for the same object version
    maps to the same key, and a new version to a new key.
    """
    version = normalize_etag(obj.version)
    if version is None:
        return None
    payload = [_KEY_VERSION, identity(obj), version, int(obj.size), (obj.md5 or "").lower() or None]
    return hashlib.sha256(json.dumps(payload, separators=(",", ":")).encode("utf-8")).hexdigest()
