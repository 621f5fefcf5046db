"""Helpers shared by the store back ends (no SDK imports)."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable

from ..errors import ConfigError, ObjectNotFoundError, UnsafePathError
from ..objects import RemoteObject
from ..safepaths import safe_relpath

#: SigV4 presigned URLs may live at most 7 days; dfrepo defaults to 15 minutes.
MAX_EXPIRY = 7 * 24 * 3600
DEFAULT_EXPIRY = 900
#: A URL is re-signed because its signature ran out mid-pull; the new one lives at least
#: this long (seconds) so that a very short ``expiry`` cannot turn the rest of the file
#: into a re-signing loop.
MIN_RESIGN_EXPIRY = 60

_HEX32 = re.compile(r"^[0-9a-f]{32}$")


def check_expiry(expiry: int) -> int:
    if isinstance(expiry, bool) or not isinstance(expiry, int) or not 1 <= expiry <= MAX_EXPIRY:
        raise ConfigError(f"expiry must be an integer number of seconds in 1..{MAX_EXPIRY}",
                          source="arg", key="expiry")
    return expiry


def resign_expiry(expiry: int) -> int:
    """Lifetime of a re-signed URL: *expiry*, but at least :data:`MIN_RESIGN_EXPIRY`."""
    return min(max(expiry, MIN_RESIGN_EXPIRY), MAX_EXPIRY)


def is_dir_marker(key: str, size: int) -> bool:
    """``dir/`` objects of size 0 that consoles and some tools create."""
    return key.endswith("/") and size == 0


def dir_entry(key: str, prefix: str, source: str) -> RemoteObject | None:
    """The directory entry for the marker *key* (``prefix/a/b/`` -> ``a/b``); None for the
    model directory's own marker (``prefix/``)."""
    name = key.rstrip("/")
    if name == prefix.strip("/"):
        return None
    return RemoteObject.directory(safe_relpath(name, prefix), source=source)


def s3_etag_md5(etag: str | None) -> str | None:
    """The ETag when it is a plain single-part MD5 (32 hex, no ``-N`` part count)."""
    if etag and _HEX32.match(etag.lower()):
        return etag.lower()
    return None


def b64_to_hex(value: str | bytes | bytearray | None) -> str | None:
    if not value:
        return None
    try:
        raw = base64.b64decode(value) if isinstance(value, str) else bytes(value)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 16 else None


def finish(objects: Iterable[RemoteObject], display: str) -> list[RemoteObject]:
    """Sort by rel_path, refuse file/dir clashes, refuse a listing without files.

    Directory entries are kept only when no file lies under them (the empty ones: the
    other directories are made for their files anyway); duplicates are dropped.
    """
    entries = list(objects)
    files = sorted((o for o in entries if not o.is_dir), key=lambda o: o.rel_path)
    if not files:
        raise ObjectNotFoundError(f"no objects under {display}/", status=404)
    paths = {o.rel_path for o in files}
    parents = {"/".join(o.rel_path.split("/")[:i])
               for o in files for i in range(1, o.rel_path.count("/") + 1)}
    dirs: dict[str, RemoteObject] = {}
    for d in entries:
        if d.is_dir and d.rel_path not in parents:
            dirs.setdefault(d.rel_path, d)
    for name in dirs:
        if name in paths:
            raise UnsafePathError(f"{display}: {name!r} is both a file and a directory",
                                  source="store", key="key")
    result = sorted([*files, *dirs.values()], key=lambda o: o.rel_path)
    for obj in result:
        parts = obj.rel_path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in paths:
                raise UnsafePathError(
                    f"{display}: {parent!r} is both a file and the directory of {obj.rel_path!r}",
                    source="store", key="key")
    return result
