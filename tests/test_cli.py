"""The ``dfrepo`` command line: in-process ``main([...])`` and real ``python -m dfrepo`` runs."""

from __future__ import annotations

import io
import json
import os
import random
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dfrepo.cli import exit_code_for, main, scrub, summary_line
from dfrepo.pull import PullResult
from faultservers import RangeServer

SRC = str(Path(__file__).resolve().parents[1] / "src")
MiB = 1024 * 1024
SECRET_MARKERS = ("secretsig123", "Signature=", "Credential=", "X-Amz-Date=", "super-secret-key")


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DFREPO_CACHE_DIR", str(tmp_path / "default-cache"))
    monkeypatch.setenv("TRITON_DRAGONFLY_CONFIG_PATH", str(tmp_path / "no-dragonfly-config.json"))
    monkeypatch.delenv("TRITON_CLOUD_CREDENTIAL_PATH", raising=False)
    for var in ("DFREPO_PROXY", "DRAGONFLY_PROXY", "DFREPO_CACHE_MAX_BYTES", "DFREPO_CACHE"):
        monkeypatch.delenv(var, raising=False)


class Run:
    """Runs ``main`` and keeps every byte it printed, to check for leaked secrets."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.seen: list[str] = []

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = self.capsys.readouterr()
        self.seen += [out, err]
        return code, out, err


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Iterator[Run]:
    r = Run(capsys)
    yield r
    everything = "".join(r.seen)
    for marker in SECRET_MARKERS:
        assert marker not in everything, f"{marker!r} leaked into CLI output"
    assert "Traceback" not in everything


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("dfrepo: error: ")
    return lines[0]


def dead_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


# --------------------------------------------------------------------------- pure functions


def test_exit_code_mapping() -> None:
    from dfrepo import errors as e

    cases = {
        e.ConfigError("x"): 2, e.LocationError("x"): 2, e.UnsafePathError("x"): 2,
        e.CredentialsError("x"): 3, e.StoreError("x"): 4, e.ObjectNotFoundError("x"): 4,
        e.HTTPStatusError("x", status=404): 5, e.RetriesExhaustedError("x", attempts=3): 5,
        e.ChecksumMismatchError("x"): 5, e.ProxyUnavailableError("x"): 6,
        OSError(28, "No space left on device"): 7, PermissionError(13, "denied"): 7,
        e.CacheError("x"): 1, e.RepoAgentError("x"): 1, RuntimeError("x"): 1, KeyboardInterrupt(): 130,
    }
    for exc, code in cases.items():
        assert exit_code_for(exc) == code, exc


def test_scrub_redacts_urls_and_signatures() -> None:
    assert scrub("GET https://u:pw@h.example/b/k?X-Amz-Signature=abc&x=1 failed") == \
        "GET https://h.example/b/k?<redacted> failed"
    assert scrub("s3://http://127.0.0.1:9000/bucket/m") == "s3://http://127.0.0.1:9000/bucket/m"
    assert scrub("sv=2021&sig=abcd%2B") == "sv=2021&sig=<redacted>"


def test_summary_line_format() -> None:
    res = PullResult(location="s3://b/m", dest=Path("/d"), files=5, bytes=1024**3, seconds=2.31,
                     bytes_from_peer=1024**3, via="proxy")
    assert summary_line(res, "http://user:pw@127.0.0.1:4001") == (
        "pulled 5 files, 1.00 GiB in 2.31 s (443 MiB/s) \u2014 origin 0 B, peer 1.00 GiB, cache 0 B, "
        "via proxy http://127.0.0.1:4001")
    cached = PullResult(location="s3://b/m", dest=Path("/d"), files=1, bytes=2048, seconds=0.5,
                        bytes_from_cache=2048)
    assert summary_line(cached, None).endswith("origin 0 B, peer 0 B, cache 2.00 KiB, nothing downloaded")
    assert summary_line(cached, None).startswith("pulled 1 file, 2.00 KiB in 0.50 s (4 KiB/s)")


def test_progress_line_only_on_a_tty() -> None:
    from dfrepo._progress import Progress, make_progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert make_progress("m", quiet=False, stream=io.StringIO()) is None
    assert make_progress("m", quiet=True, stream=Tty()) is None
    stream = Tty()
    p = Progress("m", stream, plain=True)
    p(512 * 1024, 1024 * 1024)
    p(1024 * 1024, 1024 * 1024)
    p.close()
    text = stream.getvalue()
    assert "\rm: 1.00 MiB / 1.00 MiB 100.0%" in text and text.endswith("\r\x1b[K")


# --------------------------------------------------------------------------- usage errors


def test_help_and_usage_errors(run: Run) -> None:
    code, out, _ = run("--help")
    assert code == 0 and "exit codes:" in out and "Dragonfly proxy unreachable" in out
    code, out, err = run()
    assert code == 2 and out == "" and "dfrepo: error:" in err
    code, _, err = run("pull", "s3://only-location")
    assert code == 2 and "required" in err
    code, _, err = run("pull", "s3://", str(Path("/tmp/never")))
    assert code == 2 and "bucket" in one_error_line(err)
    code, out, err = run("pull", "S3://bucket/m", "/tmp/never", "--json")
    assert code == 2
    doc = json.loads(out)
    assert doc["error"]["type"] == "LocationError" and doc["error"]["exit_code"] == 2
    one_error_line(err)


def test_bad_dragonfly_config_is_a_usage_error(run: Run, tmp_path: Path) -> None:
    bad = tmp_path / "dragonfly_config.json"
    bad.write_text('{"proxy": "http://127.0.0.1:4001",}')
    code, _, err = run("pull", "s3://b/m", str(tmp_path / "d"), "--dragonfly-config", str(bad))
    assert code == 2 and "invalid JSON" in one_error_line(err)
    code, _, err = run("pull", "s3://b/m", str(tmp_path / "d"), "--dragonfly-config", str(tmp_path / "none.json"))
    assert code == 2 and "not found" in one_error_line(err)


# --------------------------------------------------------------------------- http(s) objects


def test_http_pull_json_and_exit_codes(run: Run, tmp_path: Path) -> None:
    data = random.Random(3).randbytes(3 * MiB + 5)
    with RangeServer() as srv:
        url = srv.put("/models/w.bin", data)
        code, out, err = run("pull", url, str(tmp_path / "dl") + "/", "--json", "--range-size", "1MiB",
                             "--concurrency", "3", "--no-cache")
        assert code == 0, err
        doc = json.loads(out)
        assert (tmp_path / "dl" / "w.bin").read_bytes() == data
        assert doc["files"] == 1 and doc["bytes"] == len(data) and doc["bytes_from_origin"] == len(data)
        assert doc["via"] == "direct" and doc["dest"] == str(tmp_path / "dl" / "w.bin")
        assert doc["location"] == srv.url("/models/w.bin", query="").rstrip("?") + "?<redacted>"
        assert {"seconds", "throughput", "requests", "retries", "implementation", "fallback_reason"} <= set(doc)
        # The first 1 MiB range is the probe, then 1 MiB ranges; the 5-byte tail joins the
        # last one: 3 GETs, and 3 connections at once — the options reached the engine.
        assert srv.gets == 3

        # human summary line
        code, out, err = run("pull", url, str(tmp_path / "w2.bin"))
        assert code == 0 and err == ""
        assert re.fullmatch(r"pulled 1 file, 3\.00 MiB in \d+\.\d\d s \(.+/s\) \u2014 origin 3\.00 MiB, "
                            r"peer 0 B, cache 0 B, direct\n", out), out

        code, out, err = run("pull", srv.url("/missing"), str(tmp_path / "x"), "--json")
        assert code == 5
        assert json.loads(out)["error"]["status"] == 404
        line = one_error_line(err)
        assert "404" in line and "/missing" in line

        code, out, err = run("pull", url, str(tmp_path / "y"), "--proxy", dead_port_url(), "--no-fallback")
        assert code == 6 and "unreachable" in one_error_line(err)

        # fallback allowed: a direct download, said so in the summary
        code, out, err = run("pull", url, str(tmp_path / "z"), "--proxy", dead_port_url())
        assert code == 0 and "direct (proxy http://127.0.0.1:" in out and "unreachable" in out

        code, _, err = run("pull", url, "/proc/dfrepo-no-such-dir/w.bin")
        assert code == 7
        one_error_line(err)
    assert not [p for p in tmp_path.rglob("*.dfrepo-part")]


def test_task_id_equals_the_peers(run: Run, tmp_path: Path) -> None:
    import dfpeer
    from dfpeer import StandinPeer

    data = os.urandom(300_000)
    with RangeServer() as srv, StandinPeer(tmp_path / "peer") as peer:
        url = srv.put("/models/m/1/model.onnx", data) + "&keepme=1"
        code, out, err = run("task-id", url, "--tag", "team-a")
        assert code == 0, err
        tid = out.strip()
        expected = dfpeer.task_id(url, tag="team-a", filtered=dfpeer.DEFAULT_FILTERED_QUERY_PARAMS)
        assert tid == expected
        # the peer itself computes the same ID for the real request
        code, _, err = run("pull", url, str(tmp_path / "model.onnx"), "--proxy", peer.url, "--tag", "team-a")
        assert code == 0, err
        assert (tmp_path / "model.onnx").read_bytes() == data
        assert tid in peer.stats()["tasks"]

        # version evidence, application and an extra filter all change the identity
        code, out, _ = run("task-id", url, "--tag", "team-a", "--version", '"etag1"', "--application", "app",
                           "--filter", "keepme", "--json")
        doc = json.loads(out)
        assert code == 0 and doc["task_id"] == dfpeer.task_id(
            url, tag="team-a@etag1", application="app",
            filtered=(*dfpeer.DEFAULT_FILTERED_QUERY_PARAMS, "keepme"))
        assert doc["headers"]["X-Dragonfly-Tag"] == "team-a@etag1" and doc["url"].endswith("?<redacted>")
        assert doc["task_id"] != tid


# --------------------------------------------------------------------------- install-agent


def test_install_agent(run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = run("install-agent", "--repoagent-dir", str(tmp_path / "agents"))
    assert code == 0, err
    lib = tmp_path / "agents" / "dragonfly" / "libtritonrepoagent_dragonfly.so"
    assert lib.exists() and str(lib) in out
    monkeypatch.setitem(sys.modules, "dfrepo.triton.install", None)
    code, _, err = run("install-agent", "--repoagent-dir", str(tmp_path / "agents2"))
    assert code == 1 and "not available" in one_error_line(err)


# --------------------------------------------------------------------------- the cache switch


def test_pull_honours_dfrepo_cache_as_the_agent_does(run: Run, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``$DFREPO_CACHE`` (on, off, a directory) picks the cache of ``dfrepo pull`` as it does
    the Triton agent's; ``--cache-dir`` and ``--no-cache`` beat it (a flag beats the
    environment)."""
    import importlib

    from dfrepo.triton.parameters import settings_for_model

    pull_module = importlib.import_module("dfrepo.pull")  # the name dfrepo.pull is the function

    src = tmp_path / "src"
    make_model(src, 1000)
    operator = tmp_path / "dragonfly_config.json"
    operator.write_text("{}")  # the agent's operator file: direct downloads
    seen: list[Any] = []
    real = pull_module.pull_with

    def spy(settings: Any, dest: Any, **kwargs: Any) -> Any:
        seen.append(settings.cache)
        return real(settings, dest, **kwargs)

    monkeypatch.setattr(pull_module, "pull_with", spy)

    def cache_dir(cache: Any) -> Path | None:
        return None if cache is None else Path(cache.root)

    def cli(name: str, switch: str | None, *flags: str) -> Path | None:
        if switch is None:
            monkeypatch.delenv("DFREPO_CACHE", raising=False)
        else:
            monkeypatch.setenv("DFREPO_CACHE", switch)
        code, _, err = run("pull", str(src), str(tmp_path / name), "-q", *flags)
        assert code == 0, err
        assert (tmp_path / name / "config.pbtxt").read_bytes() == b'name: "m"\n'
        return cache_dir(seen.pop())

    def agent(switch: str | None) -> Path | None:
        env = {**os.environ, "TRITON_DRAGONFLY_CONFIG_PATH": str(operator)}
        if switch is not None:
            env["DFREPO_CACHE"] = switch
        return cache_dir(settings_for_model("s3://b/m", {}, env=env).cache)

    default, elsewhere = tmp_path / "default-cache", tmp_path / "env-cache"
    for off in ("off", "OFF", "0", "false", "none"):
        assert cli(f"off-{off}", off) is None and agent(off) is None, off
    assert not default.exists(), "DFREPO_CACHE=off opened no cache"
    for i, (switch, expected) in enumerate([(None, default), ("on", default), (str(elsewhere), elsewhere)]):
        assert cli(f"on-{i}", switch) == agent(switch) == expected, switch
    # A flag beats the environment.
    named = tmp_path / "flag-cache"
    assert cli("flag-off", "off", "--cache-dir", str(named)) == named
    assert cli("flag-dir", str(elsewhere), "--cache-dir", str(named)) == named
    assert cli("no-cache", str(tmp_path / "unused"), "--no-cache") is None
    assert not (tmp_path / "unused").exists()


# --------------------------------------------------------------------------- object stores


def test_missing_credentials_exit_3(run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    code, _, err = run("ls", "s3://127.0.0.1:1/bucket/m")
    assert code == 3 and "credentials" in one_error_line(err)
    code, out, err = run("pull", "s3://127.0.0.1:1/bucket/m", str(tmp_path / "d"),
                         "--credentials", str(tmp_path / "cloud_credential.json"), "--json")
    assert code == 3 and json.loads(out)["error"]["type"] == "CredentialsError"
    one_error_line(err)


@pytest.fixture
def s3(seaweedfs, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    for key, value in seaweedfs.triton_env().items():
        monkeypatch.setenv(key, value)
    return seaweedfs


def make_model(root: Path, weights: int) -> dict[str, bytes]:
    rnd = random.Random(7)
    files = {"config.pbtxt": b'name: "m"\n', "1/model.py": b"# m\n", "1/weights.bin": rnd.randbytes(weights)}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


@pytest.mark.servers
def test_pull_from_s3_through_peer_then_cache(run: Run, s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from dfpeer import StandinPeer
    from servers.upload import upload_tree_s3

    files = make_model(tmp_path / "src", 2 * MiB)
    upload_tree_s3(s3, "cli-pull", "repo/m", tmp_path / "src")
    url = s3.s3_url("cli-pull", "repo/m")
    cache_dir = str(tmp_path / "cache")
    total = sum(map(len, files.values()))

    code, out, err = run("ls", url)
    assert code == 0, err
    rows = [ln.split() for ln in out.splitlines()]
    assert [(r[0], int(r[1])) for r in rows] == [(k, len(files[k])) for k in sorted(files)]
    assert all(len(r) == 3 and r[2] != "-" for r in rows)
    code, out, _ = run("ls", url, "--json")
    doc = json.loads(out)
    assert doc["files"] == 3 and doc["bytes"] == total and doc["location"].endswith("/cli-pull/repo/m")
    assert sorted(doc["objects"][0]) == ["crc32c", "md5", "rel_path", "size", "source", "version"]

    with StandinPeer(tmp_path / "peer") as peer:
        code, out, err = run("pull", url, str(tmp_path / "a"), "--proxy", peer.url, "--cache-dir", cache_dir,
                             "--range-size", "1MiB", "--json")
        assert code == 0, err
        doc = json.loads(out)
        assert doc["via"] == "proxy" and doc["files"] == 3 and doc["bytes"] == total
        assert doc["bytes_from_peer"] + doc["bytes_from_peer_cache"] == total and doc["bytes_from_cache"] == 0
        assert peer.stats()["origin_bytes"] >= len(files["1/weights.bin"])

        s3.clear_log()
        code, out, err = run("pull", url, str(tmp_path / "b"), "--proxy", peer.url, "--cache-dir", cache_dir)
        assert code == 0, err
        assert re.fullmatch(r"pulled 3 files, 2\.00 MiB in \S+ s \(.+\) \u2014 origin 0 B, peer 0 B, "
                            r"cache 2\.00 MiB, nothing downloaded\n", out), out
    assert not [p for m, p in s3.request_log() if m == "GET" and "list-type=" not in p]
    for rel, data in files.items():
        assert (tmp_path / "b" / rel).read_bytes() == data

    code, out, _ = run("cache", "du", "--cache-dir", cache_dir, "--json")
    assert code == 0 and json.loads(out)["entries"] == 3 and json.loads(out)["bytes"] == total
    code, out, _ = run("cache", "ls", "--cache-dir", cache_dir)
    assert code == 0 and len(out.splitlines()) == 3
    assert "/cli-pull/repo/m/1/weights.bin" in out and "http//" not in out
    # LRU: the second pull used 1/model.py, 1/weights.bin, config.pbtxt in that order
    code, out, _ = run("cache", "prune", "--cache-dir", cache_dir, "--max-bytes", "1MiB", "--json")
    assert code == 0 and json.loads(out) == {"root": cache_dir, "removed": 2, "freed_bytes": 2 * MiB + 4}
    code, out, _ = run("cache", "ls", "--cache-dir", cache_dir)
    assert out.rstrip().endswith("/cli-pull/repo/m/config.pbtxt")
    code, out, _ = run("cache", "clear", "--cache-dir", cache_dir)
    assert code == 0 and out == "removed 1 entry, freed 10 B\n"
    code, out, _ = run("cache", "du", "--cache-dir", cache_dir)
    assert code == 0 and out.startswith("0 entries, 0 B")

    # --no-cache leaves the (default) cache alone
    code, out, _ = run("pull", url, str(tmp_path / "c"), "--no-cache", "-q")
    assert code == 0 and out == ""
    assert not (tmp_path / "default-cache").exists()


@pytest.mark.servers
def test_missing_model_exit_4(run: Run, s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from servers.upload import upload_tree_s3

    make_model(tmp_path / "src", 1000)
    upload_tree_s3(s3, "cli-missing", "repo/m", tmp_path / "src")
    code, out, err = run("pull", s3.s3_url("cli-missing", "repo/nope"), str(tmp_path / "d"), "--json")
    assert code == 4 and json.loads(out)["error"]["type"] == "ObjectNotFoundError"
    one_error_line(err)
    assert not (tmp_path / "d").exists()


@pytest.mark.servers
def test_wrong_secret_exit_3_without_leaking_it(run: Run, s3, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from servers.upload import upload_tree_s3

    make_model(tmp_path / "src", 1000)
    upload_tree_s3(s3, "cli-creds", "repo/m", tmp_path / "src")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "super-secret-key")
    code, out, err = run("ls", s3.s3_url("cli-creds", "repo/m"), "--json")
    assert code == 3 and json.loads(out)["error"]["type"] == "CredentialsError"
    one_error_line(err)


# --------------------------------------------------------------------------- a real process


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DFREPO_", "DRAGONFLY_"))}
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_python_dash_m_dfrepo(tmp_path: Path) -> None:
    data = os.urandom(700_000)
    env = dict(_env(), DFREPO_CACHE_DIR=str(tmp_path / "cache"),
               TRITON_DRAGONFLY_CONFIG_PATH=str(tmp_path / "none.json"))
    with RangeServer() as srv:
        url = srv.put("/w.bin", data)
        ok = subprocess.run([sys.executable, "-m", "dfrepo", "pull", url, str(tmp_path / "w.bin"), "--json"],
                            check=False, capture_output=True, text=True, env=env, timeout=60)
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout)["bytes"] == len(data) and (tmp_path / "w.bin").read_bytes() == data
        assert ok.stderr == ""
        missing = subprocess.run([sys.executable, "-m", "dfrepo", "pull", srv.url("/nope"), str(tmp_path / "n")],
                                 check=False, capture_output=True, text=True, env=env, timeout=60)
    bad = subprocess.run([sys.executable, "-m", "dfrepo", "ls", "gs://"], check=False, capture_output=True, text=True,
                         env=env, timeout=60)
    assert missing.returncode == 5 and missing.stdout == ""
    assert re.fullmatch(r"dfrepo: error: .*404.*\n", missing.stderr), missing.stderr
    assert bad.returncode == 2 and bad.stderr.startswith("dfrepo: error: ") and bad.stderr.count("\n") == 1
    for text in (ok.stdout, ok.stderr, missing.stderr, bad.stderr):
        assert "secretsig123" not in text and "Traceback" not in text
