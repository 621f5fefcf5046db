"""Pick the byte mover: the compiled core (:mod:`dfrepo._fastio`) or its pure-Python twin.

``DFREPO_NO_EXTENSIONS=1`` forces the twin; ``DFREPO_REQUIRE_EXTENSION=1`` (CI, wheel
tests) makes a missing or broken extension an ImportError instead of a silent fallback.
Both implement the contract in ``dfrepo/_fastio.pyi``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import ModuleType

from ..values import TRUE_WORDS

CopyBody = Callable[..., int]
"""``copy_body`` of either implementation. Its one signature is ``dfrepo/_fastio.pyi`` (the
twin implements it; tests/test_package.py holds the stub, the twin and the compiled
function's signature equal)."""


def _env_on(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in TRUE_WORDS


def _compiled() -> ModuleType:
    from .. import _fastio  # raises ImportError when the extension is not built

    return _fastio


def _twin() -> ModuleType:
    from .. import _fastio_py

    return _fastio_py


def _load() -> ModuleType:
    if _env_on("DFREPO_NO_EXTENSIONS"):
        if _env_on("DFREPO_REQUIRE_EXTENSION"):
            raise ImportError("DFREPO_NO_EXTENSIONS and DFREPO_REQUIRE_EXTENSION are both set")
        return _twin()
    try:
        return _compiled()
    except ImportError:
        if _env_on("DFREPO_REQUIRE_EXTENSION"):
            raise
        return _twin()


_DEFAULT = _load()
IMPLEMENTATION: str = _DEFAULT.IMPLEMENTATION


def get_copy_body(implementation: str | None = None) -> tuple[CopyBody, str]:
    """Return (copy_body, name) for ``"cython"``, ``"python"`` or None (the default pick)."""
    if implementation is None or implementation == IMPLEMENTATION:
        impl = _DEFAULT
    elif implementation == "python":
        impl = _twin()
    elif implementation == "cython":
        impl = _compiled()
    else:
        raise ValueError(f"unknown implementation {implementation!r}")
    copy: CopyBody = impl.copy_body
    return copy, str(impl.IMPLEMENTATION)
