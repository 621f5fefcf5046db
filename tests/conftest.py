"""Shared pytest setup. Real-server fixtures live in tests/servers/ (a plugin)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The stand-in Dragonfly peer is a test fixture, not part of the wheel.
sys.path.insert(0, str(ROOT / "peer"))

from implementations import IMPLS  # noqa: E402 - pytest puts this folder (tests/) on sys.path

# Real-server fixtures, then: fail the run if a known secret or a signature-shaped value
# appears in captured output.
pytest_plugins = ["servers.fixtures", "secrets_guard"]


@pytest.fixture
def s3env(seaweedfs, tmp_path: Path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Environment for pulls from the SeaweedFS fixture: its AWS_* keys, no credential
    file, and no Dragonfly config (tests pass their own DragonflyConfig)."""
    env = dict(os.environ)
    env.update(seaweedfs.triton_env())
    env.pop("TRITON_CLOUD_CREDENTIAL_PATH", None)
    env["TRITON_DRAGONFLY_CONFIG_PATH"] = str(tmp_path / "no-such-config.json")
    return env


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[object]:
    """A stand-in Dragonfly peer (peer/dfpeer, in this process) with its data under
    ``tmp_path/peer-data``; stopped after the test. Use ``.url`` as the proxy."""
    from dfpeer import StandinPeer

    with StandinPeer(tmp_path / "peer-data") as running:
        yield running


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest) -> str:
    """Each transfer-engine implementation of this run (tests/implementations.py)."""
    return request.param
