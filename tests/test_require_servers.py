"""A broken bootstrap must turn the real-server fixtures red under DFREPO_REQUIRE_SERVERS=1.

A tiny pytest run in a subprocess uses the real fixtures (tests/servers/fixtures.py) on a machine
made to look half-installed: no ``node`` on PATH (Azurite cannot run), a Triton home without
tritonserver, a Dragonfly home without binaries. Nothing is started; each case ends before a
process is spawned, so this takes a few seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from servers.require import REQUIRE_SERVERS_ENV

TESTS = Path(__file__).resolve().parent

CONFTEST = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
pytest_plugins = ["servers.fixtures"]
"""

NEEDS = """
def test_azurite(azurite):
    pass

def test_triton(triton_server, tmp_path):
    triton_server(str(tmp_path))

def test_dragonfly(dragonfly_cluster):
    pass
"""


def _run(tmp_path: Path, *, require: bool) -> tuple[int, str, dict[str, tuple[str, str]]]:
    """Exit status, output and ``{test: (outcome, message)}`` of the tiny run."""
    work = tmp_path / ("required" if require else "plain")
    work.mkdir()
    (work / "pytest.ini").write_text("[pytest]\n")
    (work / "conftest.py").write_text(CONFTEST)
    (work / "test_needs.py").write_text(NEEDS)
    env = {k: v for k, v in os.environ.items() if k != REQUIRE_SERVERS_ENV}
    env.update(
        PATH=str(work / "empty-bin"),  # no node (Azurite), nothing else either
        DFREPO_TRITON_HOME=str(work / "no-triton"),
        DFREPO_DRAGONFLY_HOME=str(work / "no-dragonfly"),
    )
    if require:
        env[REQUIRE_SERVERS_ENV] = "1"
    report = work / "report.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", f"--junitxml={report}",
         "test_needs.py"],
        cwd=work, env=env, capture_output=True, text=True, timeout=60,
    )
    outcomes: dict[str, tuple[str, str]] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome, message = child.tag, (child.get("message") or "") + (child.text or "")
        outcomes[case.get("name", "")] = (outcome, message)
    return proc.returncode, proc.stdout + proc.stderr, outcomes


def test_missing_servers_fail_when_required(tmp_path: Path) -> None:
    code, out, outcomes = _run(tmp_path, require=True)
    assert code == 1, out
    assert set(outcomes) == {"test_azurite", "test_triton", "test_dragonfly"}, out
    # red: errors in fixture setup (Azurite, Dragonfly), a failure in the test (Triton's factory)
    assert all(outcome in ("error", "failure") for outcome, _ in outcomes.values()), outcomes
    azurite, triton, dragonfly = (outcomes[f"test_{n}"][1] for n in ("azurite", "triton", "dragonfly"))
    assert f"Azurite is missing and {REQUIRE_SERVERS_ENV}=1 requires it" in azurite
    assert "node not found on PATH" in azurite and "scripts/bootstrap.sh" in azurite
    assert f"Triton is missing and {REQUIRE_SERVERS_ENV}=1 requires it" in triton
    assert "scripts/bootstrap.sh" in triton
    assert "Dragonfly binaries" in dragonfly and "scripts/build-dragonfly.sh" in dragonfly
    assert "skipped" not in out.splitlines()[-1], out


def test_missing_servers_skip_for_a_developer(tmp_path: Path) -> None:
    """Without the variable (plain pytest) a missing emulator or Triton is a skip with the
    reason; missing Dragonfly binaries fail even then."""
    code, out, outcomes = _run(tmp_path, require=False)
    assert code == 1, out
    assert outcomes["test_azurite"][0] == "skipped", outcomes
    assert "Azurite unavailable: node not found on PATH" in outcomes["test_azurite"][1]
    assert outcomes["test_triton"][0] == "skipped", outcomes
    assert "Triton unavailable" in outcomes["test_triton"][1]
    assert outcomes["test_dragonfly"][0] == "error", outcomes
    assert "Dragonfly binaries" in outcomes["test_dragonfly"][1]


@pytest.mark.parametrize("value", ["1", "true"])
def test_require_servers_reads_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    from servers.require import missing, servers_required

    monkeypatch.setenv(REQUIRE_SERVERS_ENV, value)
    assert servers_required()
    with pytest.raises(pytest.fail.Exception, match="nginx is missing"):
        missing("nginx", "nginx not found")
    monkeypatch.delenv(REQUIRE_SERVERS_ENV)
    with pytest.raises(pytest.skip.Exception, match="nginx unavailable: nginx not found; run scripts/bootstrap.sh"):
        missing("nginx", "nginx not found")
