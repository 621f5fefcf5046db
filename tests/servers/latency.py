"""A delaying reverse proxy on 127.0.0.1: a fixed time-to-first-byte added to every request.

The proxy is ``latency_proxy/main.go`` (standard library only; kernel netem is not available
everywhere the tests run). It is built with ``go build`` once per machine and per source,
outside the checkout — ``$DFREPO_LATENCY_PROXY_HOME`` or ``~/.cache/dfrepo/latency-proxy`` —
under the hash of its source and the Go version, so every clone on the machine reuses it and
an edit builds a new one. Each client connection gets its own upstream connection (kept
alive as long as the client's), every request head is held for the delay and then forwarded
byte for byte (``Host`` untouched: S3 signatures and presigned URLs stay valid), and the
responses are spliced socket to socket.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .procs import LOOPBACK, ManagedProcess, clean_env, free_port, port_open, which

__all__ = ["LatencyProxy", "build_latency_proxy", "go_binary", "start_latency_proxy"]

SOURCE = Path(__file__).resolve().parent / "latency_proxy" / "main.go"


def go_binary() -> Path | None:
    """``go`` on PATH, else the official tarball's /usr/local/go/bin/go."""
    found = which("go")
    if found is None and os.access("/usr/local/go/bin/go", os.X_OK):
        found = Path("/usr/local/go/bin/go")
    return found


def _home() -> Path:
    env = os.environ.get("DFREPO_LATENCY_PROXY_HOME")
    return Path(env) if env else Path.home() / ".cache" / "dfrepo" / "latency-proxy"


def build_latency_proxy(timeout: float = 300.0) -> Path:
    """The proxy binary for the current source, built now if this machine has none yet."""
    go = go_binary()
    if go is None:
        raise FileNotFoundError("go not found (needed to build tests/servers/latency_proxy); install Go")
    env = clean_env({"CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOPROXY": "off", "GOFLAGS": ""})
    version = subprocess.run([go, "env", "GOVERSION"], check=True, capture_output=True, text=True,
                             env=env, timeout=60).stdout.strip()
    digest = hashlib.sha256(SOURCE.read_bytes() + b"\0" + version.encode()).hexdigest()[:16]
    home = _home()
    out = home / digest / "latency-proxy"
    if out.is_file():
        return out
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:  # one build at a time per machine
        fcntl.flock(lock, fcntl.LOCK_EX)
        if out.is_file():
            return out
        tmp = home / f"{digest}.tmp.{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            # One file, no go.mod: nothing to fetch (GOPROXY=off makes sure of that).
            proc = subprocess.run([go, "build", "-trimpath", "-o", tmp / "latency-proxy", SOURCE.name],
                                  cwd=SOURCE.parent, env=env, capture_output=True, text=True, timeout=timeout)
            if proc.returncode != 0:
                raise RuntimeError(f"go build of {SOURCE} failed:\n{proc.stdout}{proc.stderr}")
            (tmp / "SOURCE_SHA256").write_text(f"{digest} {version}\n")
            os.replace(tmp, home / digest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


@dataclass
class LatencyProxy:
    """A running proxy: ``base_url`` forwards to ``upstream`` with ``delay_s`` per request."""

    process: ManagedProcess
    port: int
    stats_port: int
    upstream: str
    delay_s: float
    host: str = LOOPBACK

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def stats(self) -> dict[str, Any]:
        """Counters: connections, open, requests, head_bytes, response_bytes (of closed
        connections), errors, delay_ms."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://{self.host}:{self.stats_port}/stats", timeout=5) as resp:
            data: dict[str, Any] = json.loads(resp.read())
        return data

    def cpu_seconds(self) -> float:
        """user + system CPU time of the proxy process so far (from /proc)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.stop()


def start_latency_proxy(workdir: Path, upstream: str, *, delay_ms: float = 30.0,
                        timeout: float = 15.0) -> LatencyProxy:
    """Start the proxy on a free loopback port in front of ``upstream`` (``host:port``)."""
    exe = build_latency_proxy()
    workdir.mkdir(parents=True, exist_ok=True)
    port, stats_port = free_port(), free_port()
    proc = ManagedProcess(
        "latency-proxy",
        [exe, "-listen", f"{LOOPBACK}:{port}", "-stats", f"{LOOPBACK}:{stats_port}",
         "-upstream", upstream, "-delay", f"{delay_ms}ms"],
        log_path=workdir / "latency-proxy.log",
        env=clean_env(),
        cwd=workdir,
    )
    # The stats listener opens after the proxy's own: probing it adds no connection to the counters.
    proc.start(lambda: port_open(stats_port), timeout=timeout)
    return LatencyProxy(proc, port, stats_port, upstream, delay_ms / 1000)
