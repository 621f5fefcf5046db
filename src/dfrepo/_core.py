"""Pick the byte-moving implementation: the compiled core or its pure-Python twin.

``DFREPO_NO_EXTENSIONS=1`` forces the twin; ``DFREPO_REQUIRE_EXTENSION=1`` (CI, wheel
tests) makes a missing or broken extension an ImportError instead of a silent fallback.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Protocol


class CopyBody(Protocol):
    def __call__(
        self,
        resp: Any,
        fd: int,
        offset: int,
        length: int,
        buf: bytearray,
        cursor: Any,
        progress: Callable[[int], object] | None = ...,
        mode: str = ...,
        url: str | None = ...,
        byte_range: tuple[int, int] | None = ...,
    ) -> int: ...


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _load() -> tuple[CopyBody, str]:
    if _truthy("DFREPO_NO_EXTENSIONS"):
        if _truthy("DFREPO_REQUIRE_EXTENSION"):
            raise ImportError("DFREPO_NO_EXTENSIONS and DFREPO_REQUIRE_EXTENSION are both set")
        from . import _fastio_py as impl
    else:
        try:
            from . import _fastio as impl  # type: ignore[no-redef,attr-defined]
        except ImportError:
            if _truthy("DFREPO_REQUIRE_EXTENSION"):
                raise
            from . import _fastio_py as impl  # type: ignore[no-redef]
    return impl.copy_body, impl.IMPLEMENTATION


copy_body, IMPLEMENTATION = _load()


def get_copy_body(implementation: str | None = None) -> tuple[CopyBody, str]:
    """Return (copy_body, name) for ``"cython"``, ``"python"`` or None (the default pick)."""
    if implementation is None or implementation == IMPLEMENTATION:
        return copy_body, IMPLEMENTATION
    if implementation == "python":
        from . import _fastio_py

        return _fastio_py.copy_body, "python"
    if implementation == "cython":
        from . import _fastio  # raises ImportError when the extension is not built

        return _fastio.copy_body, "cython"
    raise ValueError(f"unknown implementation {implementation!r}")
