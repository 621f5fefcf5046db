"""Shared pytest setup. Real-server fixtures live in tests/servers/ (a plugin)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The stand-in Dragonfly peer is a test fixture, not part of the wheel.
sys.path.insert(0, str(ROOT / "peer"))

pytest_plugins = ["servers.fixtures"] if (ROOT / "tests" / "servers" / "fixtures.py").exists() else []
# Fails the run if a known secret or a signature-shaped value appears in captured output.
pytest_plugins.append("secrets_guard")
