"""Skip, or fail, when a real component the tests need is missing on this machine.

A developer running plain ``pytest`` on a machine without (say) nginx gets a *skip* with the
reason. ``scripts/test.sh`` sets ``DFREPO_REQUIRE_SERVERS=1``: there every real server and tool
(SeaweedFS, moto, Azurite, fake-gcs-server, nginx, tritonserver, the Dragonfly binaries, gcc,
openssl, Go for the latency proxy) is required, and a missing one *fails* the test, so the suite cannot pass on nothing.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

__all__ = ["REQUIRE_SERVERS_ENV", "missing", "servers_required"]

REQUIRE_SERVERS_ENV = "DFREPO_REQUIRE_SERVERS"
_BOOTSTRAP_HINT = "run scripts/bootstrap.sh (it installs every server and tool the tests use)"


def servers_required() -> bool:
    """True under ``scripts/test.sh`` (``DFREPO_REQUIRE_SERVERS=1``)."""
    return os.environ.get(REQUIRE_SERVERS_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def missing(what: str, reason: object, *, hint: str = _BOOTSTRAP_HINT) -> NoReturn:
    """Skip the test because ``what`` is unavailable, or fail it when servers are required."""
    detail = str(reason)
    if hint and "scripts/" not in detail:  # the reason does not say what to run yet
        detail = f"{detail}; {hint}"
    if servers_required():
        pytest.fail(f"{what} is missing and {REQUIRE_SERVERS_ENV}=1 requires it: {detail}", pytrace=False)
    pytest.skip(f"{what} unavailable: {detail}")
