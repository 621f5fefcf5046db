"""Parsing of setting values that arrive as text: sizes, booleans, ETags.

Every edge (environment, ``dragonfly_config.json``, Triton agent parameters, CLI flags)
hands strings to these functions, so a value means the same thing wherever it is set.
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["FALSE_WORDS", "TRUE_WORDS", "normalize_etag", "parse_bool", "parse_size"]

#: Spellings accepted for a true / false switch (case-insensitive).
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})

_SIZE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([A-Za-z]*)\s*")
_PREFIXES = "kmgtpe"


def _units(bare: Literal["binary", "decimal"]) -> dict[str, int]:
    units = {"": 1, "b": 1}
    for i, p in enumerate(_PREFIXES, start=1):
        units[p + "i"] = units[p + "ib"] = 1024**i
        units[p + "b"] = 1000**i
        units[p] = 1024**i if bare == "binary" else 1000**i
    return units


_BINARY = _units("binary")
_DECIMAL = _units("decimal")


def parse_size(text: str | int, *, bare: Literal["binary", "decimal"] = "binary") -> int:
    """Bytes from ``1048576``, ``"8MiB"``, ``"20GB"`` (decimal), ``"64m"``.

    ``KiB``/``MiB``... are powers of 1024 and ``KB``/``MB``... powers of 1000 everywhere. A
    bare prefix (``"64m"``) is binary for dfrepo's own settings; ``bare="decimal"`` reads it
    as dfdaemon's ``bytesize`` parser does (Dragonfly headers such as the piece length).

    :raises ValueError: not a size (or negative).
    """
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"not a size: {text!r}")
        return text
    m = _SIZE_RE.fullmatch(str(text))
    units = _BINARY if bare == "binary" else _DECIMAL
    unit = m.group(2).lower() if m else ""
    if not m or unit not in units:
        raise ValueError(f"not a size: {text!r}")
    return int(float(m.group(1)) * units[unit])


def parse_bool(text: str) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (any case).

    :raises ValueError: anything else.
    """
    lowered = text.strip().lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise ValueError(f"not a boolean: {text!r}")


def normalize_etag(value: str | None) -> str | None:
    """An ETag (or object version) without quotes, ``W/`` prefix and surrounding blanks, so
    a value read from a listing and from a response header compare equal; None if empty."""
    if value is None:
        return None
    v = value.strip()
    if v[:2] in ("W/", "w/"):
        v = v[2:]
    return v.strip('"').strip() or None
