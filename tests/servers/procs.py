"""Managed subprocesses for the real-server fixtures.

Everything a fixture needs to run a server it does not trust to clean up after itself:
free-port picking on 127.0.0.1, a child started in its own session (so the whole process
group can be signalled) that dies with the test process, its output captured in a log file,
readiness polling with a bounded timeout, and a stop that escalates SIGTERM -> SIGKILL.
Only processes started here are ever signalled, and only by their own process group id.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

__all__ = [
    "LOOPBACK",
    "REPO_ROOT",
    "ManagedProcess",
    "ServerStartError",
    "free_port",
    "free_port_with_offset",
    "http_status",
    "port_open",
    "venv_bin",
    "which",
]

LOOPBACK = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[2]

_PR_SET_PDEATHSIG = 1


class ServerStartError(RuntimeError):
    """A managed server exited early or did not become ready in time (message has its log tail)."""


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port on ``host`` that nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_port_with_offset(offset: int, host: str = LOOPBACK, attempts: int = 200) -> int:
    """Return a free port ``p`` such that ``p + offset`` is free too.

    SeaweedFS derives gRPC ports as HTTP port + 10000 (and some of its components ignore the
    explicit gRPC flags), so both must be free.
    """
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as a:
            a.bind((host, 0))
            port = int(a.getsockname()[1])
            if port + offset > 65535:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as b:
                try:
                    b.bind((host, port + offset))
                except OSError:
                    continue
                return port
    raise ServerStartError(f"no free port pair (p, p+{offset}) on {host} after {attempts} tries")


def port_open(port: int, host: str = LOOPBACK, timeout: float = 0.2) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_status(url: str, *, method: str = "GET", timeout: float = 2.0) -> int | None:
    """Status code of a request to ``url`` (error statuses included), or None if unreachable.

    Proxies from the environment are bypassed: every server here is on loopback.
    """
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(url, method=method)
    try:
        with opener.open(req, timeout=timeout) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return int(exc.code)
    except (OSError, ValueError):
        return None


def venv_bin(name: str) -> Path | None:
    """Path of executable ``name`` in the running interpreter's environment, if present."""
    for base in (Path(sys.prefix) / "bin", Path(sys.executable).parent):
        candidate = base / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def which(name: str) -> Path | None:
    """``shutil.which`` that also looks in /usr/sbin and /sbin (nginx lives there)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")
    return Path(found) if found else None


def _child_setup() -> None:  # pragma: no cover - runs in the forked child
    """Make the child die with the test process even if pytest is killed outright."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class ManagedProcess:
    """One server process: started in its own session, logged to a file, stopped by PID.

    ``ready`` is polled until it returns True; if the process exits first, or ``timeout``
    passes, the process is stopped and :class:`ServerStartError` raised with the log tail.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = [os.fspath(a) for a in argv]
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, ready: Callable[[], bool] | None = None, *, timeout: float = 30.0) -> ManagedProcess:
        """Spawn the process, then wait for ``ready`` (if given) for at most ``timeout`` s."""
        if self.proc is not None:
            raise RuntimeError(f"{self.name} already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=_child_setup,
            )
        if ready is not None:
            self.wait_ready(ready, timeout=timeout)
        return self

    def wait_ready(self, ready: Callable[[], bool], *, timeout: float) -> None:
        """Poll ``ready`` until true; stop the process and raise on early exit or timeout."""
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            if self.returncode is not None:
                self.stop()
                raise ServerStartError(
                    f"{self.name} exited with status {self.returncode} before it was ready\n"
                    f"--- {self.log_path} (tail) ---\n{self.log_tail()}"
                )
            if ready():
                return
            if time.monotonic() >= deadline:
                self.stop()
                raise ServerStartError(
                    f"{self.name} not ready after {timeout:.0f}s\n--- {self.log_path} (tail) ---\n{self.log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def returncode(self) -> int | None:
        """Exit status once the process has ended, else None."""
        return self.proc.poll() if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the process to end on its own; its status, or None on timeout."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, *, grace: float = 15.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``grace`` s; idempotent."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            self._signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                self._signal_group(proc.pid, signal.SIGKILL)
                proc.wait(10)
        # Helpers left in the group (e.g. the Triton python stub) go too; the group id is
        # the leader's PID, which is ours, and the kernel does not reuse it while members live.
        self._signal_group(proc.pid, signal.SIGKILL)
        return proc.returncode

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    # -- logs ------------------------------------------------------------------------------
    def log_text(self) -> str:
        """The whole captured stdout+stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __repr__(self) -> str:
        return f"ManagedProcess({self.name!r}, pid={self.pid}, returncode={self.returncode})"


def clean_env(extra: Mapping[str, str] | None = None, *, drop_prefixes: Iterable[str] = ()) -> dict[str, str]:
    """``os.environ`` without proxy settings and variables starting with ``drop_prefixes``."""
    drop = tuple(drop_prefixes)
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in {"http_proxy", "https_proxy", "all_proxy", "no_proxy"} and not k.startswith(drop)
    }
    if extra:
        env.update(extra)
    return env


__all__ += ["clean_env"]


def wait_until(predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.05) -> bool:
    """Poll *predicate* until it is true or *timeout* seconds passed; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
