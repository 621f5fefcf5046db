"""The transfer-engine implementations this run tests: the pure-Python twin always, the
compiled core when it is active (required when ``DFREPO_REQUIRE_EXTENSION=1``). The ``impl``
fixture (tests/conftest.py) runs a test once per entry."""

from __future__ import annotations

import os

import dfrepo

IMPLS = ["python"] + (["cython"] if dfrepo.implementation() == "cython" else [])
if os.environ.get("DFREPO_REQUIRE_EXTENSION") == "1":
    assert "cython" in IMPLS, "the compiled core must be built in this run"
