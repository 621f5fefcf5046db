"""Python entry points: an in-process peer (:class:`StandinPeer`) and a subprocess one (:class:`PeerProcess`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from .server import PeerConfig, PeerCore, PeerServer
from .taskid import Canonicalization

__all__ = ["StandinPeer", "PeerProcess", "AdminClient"]

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class AdminClient:
    """Talks to a peer's admin API (``/_dfpeer/...``) over loopback HTTP."""

    url: str

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(f"{self.url}/_dfpeer/{path}", data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        with _NO_PROXY.open(request, timeout=30) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        """``GET /_dfpeer/stats``: counters and per-task summary."""
        return dict(self._call("GET", "stats"))

    def reset_stats(self) -> None:
        """``POST /_dfpeer/reset-stats``."""
        self._call("POST", "reset-stats", {})

    def clear_tasks(self) -> int:
        """``DELETE /_dfpeer/tasks``: drop the whole cache; returns how many tasks were dropped."""
        return int(self._call("DELETE", "tasks")["dropped"])

    def set_faults(self, **knobs: Any) -> dict[str, Any]:
        """``POST /_dfpeer/faults`` (see README for the knobs)."""
        return dict(self._call("POST", "faults", knobs))

    def clear_faults(self) -> None:
        """``DELETE /_dfpeer/faults``."""
        self._call("DELETE", "faults")


class StandinPeer(AdminClient):
    """A stand-in dfdaemon proxy running in this process, on a background thread.

    >>> with StandinPeer(tmp_dir, rules=(r"/models/",)) as peer:   # doctest: +SKIP
    ...     proxy = f"http://127.0.0.1:{peer.port}"

    ``stats()`` etc. read the in-process state directly (no HTTP round trip).
    For benchmarks prefer :class:`PeerProcess`: an in-process server competes
    with the client under test for the GIL.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        parent: str | None = None,
        rules: Sequence[str] = (),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        canonicalization: Canonicalization = "B",
        verify_origin: bool = False,
        ca_file: str | None = None,
        concurrent_pieces: int = 8,
        disable_back_to_source: bool = False,
        legacy_range_200: bool = False,
        small_to_source: bool = True,
    ) -> None:
        self.config = PeerConfig(
            data_dir=Path(data_dir),
            host=host,
            port=port,
            parent=parent,
            rules=tuple(rules),
            canonicalization=canonicalization,
            verify_origin=verify_origin,
            ca_file=ca_file,
            concurrent_pieces=concurrent_pieces,
            disable_back_to_source=disable_back_to_source,
            legacy_range_200=legacy_range_200,
            small_to_source=small_to_source,
        )
        self.core = PeerCore(self.config)
        self._server: PeerServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.url = ""

    def start(self) -> StandinPeer:
        """Bind and start serving; returns self."""
        self._server = PeerServer(self.core)
        self.port = int(self._server.server_address[1])
        self.url = f"http://{self.config.host}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name=f"dfpeer-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and end every open client connection."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server.close_all()
        self.core.upstream.close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = None

    def __enter__(self) -> StandinPeer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # In-process shortcuts (same results as the HTTP admin API).
    def stats(self) -> dict[str, Any]:
        """Counters and per-task summary."""
        return self.core.stats_snapshot()

    def reset_stats(self) -> None:
        """Zero the counters."""
        self.core.stats.reset()

    def clear_tasks(self) -> int:
        """Drop the whole cache."""
        return self.core.store.clear()

    def set_faults(self, **knobs: Any) -> dict[str, Any]:
        """Set fault knobs (see README)."""
        self.core.faults.update(knobs)
        return self.core.faults.snapshot()

    def clear_faults(self) -> None:
        """Remove every fault."""
        self.core.faults.clear()


class PeerProcess(AdminClient):
    """``python -m dfpeer`` as a child process; use as a context manager.

    Stats and faults go through the HTTP admin API.  Only the process started
    here is ever signalled (by PID).  ``legacy_range_200`` and ``small_to_source``
    map to ``--legacy-range-200`` and ``--no-small-to-source``; any other flag of
    ``python -m dfpeer`` goes in ``extra_args``.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        parent: str | None = None,
        rules: Sequence[str] = (),
        *,
        host: str = "127.0.0.1",
        legacy_range_200: bool = False,
        small_to_source: bool = True,
        extra_args: Sequence[str] = (),
        python: str = sys.executable,
        startup_timeout: float = 15.0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.parent = parent
        self.rules = tuple(rules)
        self.host = host
        self.legacy_range_200 = legacy_range_200
        self.small_to_source = small_to_source
        self.extra_args = tuple(extra_args)
        self.python = python
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.url = ""

    def start(self) -> PeerProcess:
        """Spawn the peer and wait until its ready file names the bound port."""
        ready = Path(tempfile.mkdtemp(prefix="dfpeer-ready-")) / "port"
        args = [self.python, "-m", "dfpeer", "--host", self.host, "--port", "0",
                "--data-dir", str(self.data_dir), "--ready-file", str(ready)]
        if self.parent:
            args += ["--parent", self.parent]
        for rule in self.rules:
            args += ["--rule", rule]
        if self.legacy_range_200:
            args.append("--legacy-range-200")
        if not self.small_to_source:
            args.append("--no-small-to-source")
        args += list(self.extra_args)
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = package_root + os.pathsep + env.get("PYTHONPATH", "")
        self.process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + self.startup_timeout
        while not ready.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"dfpeer exited with status {self.process.returncode}")
            if time.monotonic() > deadline:
                self.close()
                raise TimeoutError("dfpeer did not become ready")
            time.sleep(0.02)
        self.port = int(ready.read_text().strip())
        ready.unlink()
        ready.parent.rmdir()
        self.url = f"http://{self.host}:{self.port}"
        return self

    def close(self) -> None:
        """Terminate the child (SIGTERM, then SIGKILL after 5 s)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def __enter__(self) -> PeerProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
