"""Keep object keys inside their model directory and destination paths inside theirs.

Every key a store lists passes :func:`safe_relpath`; every file a pull writes is placed
with :func:`safe_join`.  Refused: empty, absolute, ``.``/``..`` or empty segments,
backslashes, NUL and control characters, names over 255 bytes, paths over 4096 bytes,
and (for :func:`safe_join`) anything that resolves outside the destination through a
symlink.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import UnsafePathError

__all__ = ["CONTROL_CHARS", "MAX_NAME_BYTES", "MAX_PATH_BYTES", "safe_join", "safe_relpath"]

#: Longest file-name component accepted (bytes, UTF-8): Linux NAME_MAX.
MAX_NAME_BYTES = 255
#: Longest relative path accepted (bytes, UTF-8): Linux PATH_MAX.
MAX_PATH_BYTES = 4096
#: C0 control characters and DEL: refused in object keys and in location strings.
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def _check_relpath(rel: str, what: str) -> None:
    def bad(reason: str) -> UnsafePathError:
        shown = rel if len(rel) <= 200 else rel[:200] + "..."
        return UnsafePathError(f"unsafe {what} {shown!r}: {reason}", source="store", key=what)

    if not rel:
        raise bad("empty path")
    if "\x00" in rel:
        raise bad("contains NUL")
    if "\\" in rel:
        raise bad("contains a backslash")
    if rel.startswith("/"):
        raise bad("absolute path")
    try:
        encoded = rel.encode("utf-8")
    except UnicodeEncodeError:
        raise bad("not valid UTF-8") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise bad(f"longer than {MAX_PATH_BYTES} bytes")
    for seg in rel.split("/"):
        if seg == "":
            raise bad("empty path segment")
        if seg in (".", ".."):
            raise bad(f"{seg!r} segment")
        if len(seg.encode("utf-8")) > MAX_NAME_BYTES:
            raise bad(f"a name longer than {MAX_NAME_BYTES} bytes")
        if CONTROL_CHARS.search(seg):
            raise bad("contains a control character")


def safe_relpath(key: str, prefix: str) -> str:
    """Return *key* relative to the model-directory *prefix* (no leading/trailing ``/``).

    :raises UnsafePathError: the key is outside ``prefix/``, or the remainder is empty,
        absolute, has ``.``/``..``/empty segments, a backslash, NUL or control
        character, or a name over 255 bytes / a path over 4096 bytes.
    """
    prefix = prefix.strip("/")
    if prefix:
        head = prefix + "/"
        if not key.startswith(head):
            raise UnsafePathError(
                f"object key {key[:200]!r} is not inside the model directory {prefix!r}",
                source="store",
                key="key",
            )
        rel = key[len(head):]
    else:
        rel = key
    _check_relpath(rel, "object key")
    return rel


def safe_join(dest_dir: str | os.PathLike[str], relpath: str) -> Path:
    """Join *relpath* under *dest_dir*, guaranteeing the result stays inside it.

    The relative path is checked like :func:`safe_relpath`; then both sides are resolved
    (symlinks included) and the result must still lie under *dest_dir*.

    :raises UnsafePathError: the path is unsafe or would escape *dest_dir*.
    """
    _check_relpath(relpath, "relative path")
    base = Path(dest_dir)
    result = base.joinpath(*relpath.split("/"))
    real_base = os.path.realpath(base)
    real_result = os.path.realpath(result)
    if os.path.commonpath([real_base, real_result]) != real_base or real_result == real_base:
        raise UnsafePathError(
            f"relative path {relpath[:200]!r} escapes {str(base)!r} (through a symlink)",
            source="store",
            key="relative path",
        )
    return result
