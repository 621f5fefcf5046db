"""pytest plugin: fail the whole run if a known secret shows up in captured output.

For the whole session it collects every report section (captured stdout, stderr and
log, with the ``dfrepo`` logger at DEBUG so debug records are captured too) and every
failure repr.  At session end it searches them, and ``benchmarks/results/*.json``, for

* the fixtures' secrets: SeaweedFS/moto secret keys, Azurite's account key (read from
  the fixture objects when they were set up, and from ``tests/servers`` defaults),
  RangeServer's fake signature ``secretsig123``;
* signature-shaped query values: ``X-Amz-Signature=<hex>``, ``X-Goog-Signature=<hex>``,
  ``sig=<base64>`` (Azure SAS), ``X-Amz-Security-Token=<...>``, ``Authorization: Bearer <...>``.

Any hit turns the exit status into "tests failed" and prints where it was found (with
the secret itself masked).  Register with ``pytest_plugins = [..., "secrets_guard"]``.
``extra_secrets(...)`` lets a test add values it generated (presigned URLs' signatures).
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Signature-shaped values; group 1 is the secret part.  Short or obviously fake values
#: (``<redacted>``, ``abc``) do not match: a real one is long.
PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"X-Amz-Signature=([0-9a-fA-F]{16,})"),
    re.compile(r"X-Goog-Signature=([0-9a-fA-F]{16,})"),
    re.compile(r"[?&]sig=([A-Za-z0-9%+/=]{16,})"),
    re.compile(r"X-Amz-Security-Token=([A-Za-z0-9%+/=]{16,})"),
    re.compile(r"Bearer\s+([A-Za-z0-9._~+/=-]{16,})"),
)

STATIC_SECRETS = ("secretsig123",)

_FIXTURE_SECRET_ATTRS = {
    "seaweedfs": ("secret_key",),
    "moto_s3": ("secret_key",),
    "azurite": ("key",),
    "azurite_tls": ("key",),
}


def _default_secrets() -> set[str]:
    import inspect

    from servers.azure import AZURITE_KEY
    from servers.s3 import start_seaweedfs

    found = set(STATIC_SECRETS)
    found.add(AZURITE_KEY)
    default = inspect.signature(start_seaweedfs).parameters["secret_key"].default
    if isinstance(default, str):
        found.add(default)
    return found


@dataclass
class _State:
    secrets: set[str] = field(default_factory=_default_secrets)
    texts: list[tuple[str, str]] = field(default_factory=list)  # (where, text)
    findings: list[str] = field(default_factory=list)


_STATE = _State()


def extra_secrets(*values: str) -> None:
    """Add secret values (e.g. signatures a test minted) to search for at session end."""
    _STATE.secrets.update(v for v in values if v and len(v) >= 6)


def scan(text: str, secrets: Iterable[str]) -> list[str]:
    """Return masked descriptions of every secret / signature-shaped value in *text*."""
    hits = []
    for secret in secrets:
        if secret and secret in text:
            hits.append(f"known secret {secret[:3]}...({len(secret)} chars)")
    for pat in PATTERNS:
        for m in pat.finditer(text):
            value = m.group(1)
            hits.append(f"{pat.pattern.split('=')[0].split('(')[0]}=<{len(value)} chars: {value[:3]}...>")
    return hits


def pytest_configure(config: pytest.Config) -> None:
    logging.getLogger("dfrepo").setLevel(logging.DEBUG)


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest) -> Any:
    outcome = yield
    attrs = _FIXTURE_SECRET_ATTRS.get(fixturedef.argname)
    if attrs is None or outcome.excinfo is not None:
        return
    value = outcome.get_result()
    for attr in attrs:
        secret = getattr(value, attr, None)
        if isinstance(secret, str):
            extra_secrets(secret)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for title, content in report.sections:
        _STATE.texts.append((f"{report.nodeid} [{title}]", content))
    if report.failed and report.longrepr is not None:
        _STATE.texts.append((f"{report.nodeid} [failure repr]", str(report.longrepr)))


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed and report.longrepr is not None:
        _STATE.texts.append((f"{report.nodeid} [collection error]", str(report.longrepr)))


def _results_files() -> list[tuple[str, str]]:
    out = []
    for path in sorted(glob.glob(str(ROOT / "benchmarks" / "results" / "**" / "*.json"), recursive=True)):
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                out.append((os.path.relpath(path, ROOT), fh.read()))
        except OSError:
            continue
    return out


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    findings = []
    for where, text in [*_STATE.texts, *_results_files()]:
        for hit in scan(text, _STATE.secrets):
            findings.append(f"{where}: {hit}")
    _STATE.findings = findings
    if findings:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if _STATE.findings:
        terminalreporter.section("secrets guard", sep="=", red=True, bold=True)
        for line in sorted(set(_STATE.findings))[:100]:
            terminalreporter.line(f"SECRET LEAK: {line}", red=True)
        terminalreporter.line(f"{len(_STATE.findings)} leak(s) found; the run fails.", red=True)
    else:
        terminalreporter.write_sep("-", f"secrets guard: {len(_STATE.texts)} captured outputs clean")
