"""Azurite (the Azure Blob emulator from npm) for tests, telemetry disabled, on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .procs import LOOPBACK, REPO_ROOT, ManagedProcess, clean_env, free_port, http_status, port_open

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient

__all__ = ["AZURITE_ACCOUNT", "AZURITE_KEY", "AzuriteServer", "azurite_binary", "start_azurite"]

AZURITE_ACCOUNT = "devstoreaccount1"
# The well-known development key every Azurite instance accepts (public, documented by Microsoft).
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass
class AzuriteServer:
    """A running ``azurite-blob``."""

    process: ManagedProcess
    port: int
    data_dir: Path
    host: str = LOOPBACK
    account: str = AZURITE_ACCOUNT
    key: str = AZURITE_KEY

    @property
    def endpoint(self) -> str:
        """Blob endpoint including the account: ``http://127.0.0.1:PORT/devstoreaccount1``."""
        return f"http://{self.host}:{self.port}/{self.account}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account};"
            f"AccountKey={self.key};BlobEndpoint={self.endpoint};"
        )

    def service_client(self, **kwargs: Any) -> BlobServiceClient:
        """An ``azure.storage.blob.BlobServiceClient`` authenticated with the shared key."""
        from azure.storage.blob import BlobServiceClient

        kwargs.setdefault("proxies", {})
        return BlobServiceClient.from_connection_string(self.connection_string, **kwargs)

    def log(self) -> str:
        return self.process.log_text()

    def stop(self) -> None:
        self.process.stop()


def azurite_binary() -> Path | None:
    """``azurite-blob`` installed by scripts/bootstrap.sh (``.cache/npm``), else from PATH."""
    local = REPO_ROOT / ".cache" / "npm" / "node_modules" / ".bin" / "azurite-blob"
    if local.exists() and os.access(local, os.X_OK):
        return local
    found = shutil.which("azurite-blob")
    return Path(found) if found else None


def start_azurite(
    workdir: Path,
    *,
    cert: Path | None = None,
    key: Path | None = None,
    port: int | None = None,
    host: str = LOOPBACK,
    timeout: float = 30.0,
) -> AzuriteServer:
    """Start ``azurite-blob`` with telemetry disabled, disk persistence under ``workdir``.

    With ``cert``/``key`` it serves HTTPS (used for Triton ``as://``, which only speaks TLS);
    readiness is then checked on the TCP port only.
    """
    exe = azurite_binary()
    if exe is None:
        raise FileNotFoundError("azurite-blob not found; run scripts/bootstrap.sh (npm install azurite)")
    if shutil.which("node") is None:
        raise FileNotFoundError("node not found on PATH (needed by azurite-blob)")
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    port = port or free_port(host)
    argv: list[str | os.PathLike[str]] = [
        exe,
        "--blobHost", host,
        "--blobPort", str(port),
        "--location", data,
        "--disableTelemetry",
        "--skipApiVersionCheck",
        "--loose",
        "--debug", workdir / "azurite-debug.log",
    ]
    if cert is not None and key is not None:
        argv += ["--cert", cert, "--key", key]
    proc = ManagedProcess("azurite", argv, log_path=workdir / "azurite.log", env=clean_env(), cwd=workdir)
    scheme = "https" if cert is not None else "http"

    def ready() -> bool:
        if scheme == "https":
            return port_open(port, host)
        return http_status(f"http://{host}:{port}/{AZURITE_ACCOUNT}?comp=list") is not None

    proc.start(ready, timeout=timeout)
    return AzuriteServer(proc, port, data, host=host)
