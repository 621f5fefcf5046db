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

__all__ = [
    "AZURITE_ACCOUNT",
    "AZURITE_KEY",
    "AzuriteServer",
    "AzuriteTlsServer",
    "azurite_binary",
    "start_azurite",
    "start_azurite_tls",
]

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
        "--blobHost",
        host,
        "--blobPort",
        str(port),
        "--location",
        data,
        "--disableTelemetry",
        "--skipApiVersionCheck",
        "--loose",
        "--debug",
        workdir / "azurite-debug.log",
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


# ------------------------------------------------------------------------------------------
# TLS variant for Triton as:// (Triton always dials https://<account>.blob.core.windows.net:443)
# ------------------------------------------------------------------------------------------
AZURE_BLOB_HOST = f"{AZURITE_ACCOUNT}.blob.core.windows.net"
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@dataclass
class AzuriteTlsServer(AzuriteServer):
    """Azurite over HTTPS on ``<random 127.0.0.x>:443`` with a throw-away test CA.

    Python clients use ``endpoint`` (``https://127.0.0.x:443/devstoreaccount1``, verified with
    ``ca_file``). Triton reaches it as ``as://devstoreaccount1/...`` only inside a private mount
    namespace where ``triton_mounts()`` is bind-mounted: a hosts file mapping
    devstoreaccount1.blob.core.windows.net to 127.0.0.x and a CA bundle that trusts the test CA
    (the vendored libcurl reads /etc/ssl/certs/ca-certificates.crt). Nothing outside changes.
    """

    ca_file: Path = Path()
    hosts_file: Path = Path()
    ca_bundle: Path = Path()

    @property
    def endpoint(self) -> str:
        return f"https://{self.host}:{self.port}/{self.account}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=https;AccountName={self.account};"
            f"AccountKey={self.key};BlobEndpoint={self.endpoint};"
        )

    def service_client(self, **kwargs: Any) -> BlobServiceClient:
        kwargs.setdefault("connection_verify", str(self.ca_file))
        return super().service_client(**kwargs)

    def triton_env(self) -> dict[str, str]:
        return {"AZURE_STORAGE_ACCOUNT": self.account, "AZURE_STORAGE_KEY": self.key}

    def triton_mounts(self) -> dict[str, Path]:
        """Bind mounts (target -> source) for the Triton process's private mount namespace."""
        return {"/etc/hosts": self.hosts_file, str(SYSTEM_CA_BUNDLE): self.ca_bundle}


def _free_loopback_443() -> str:
    """A 127.0.0.x address (x random) whose port 443 is free; all of 127/8 is loopback."""
    import random
    import socket

    rng = random.Random()
    for _ in range(100):
        ip = f"127.0.{rng.randrange(1, 255)}.{rng.randrange(2, 255)}"
        with socket.socket() as s:
            try:
                s.bind((ip, 443))
            except OSError:
                continue
            return ip
    raise FileNotFoundError("no 127.x.y.z address with a free port 443 (or binding 443 not allowed)")


def _write_test_pki(workdir: Path, ip: str) -> tuple[Path, Path, Path]:
    """Create a CA and a server certificate for the blob host name and ``ip``; (ca, cert, key)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dfrepo test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, AZURE_BLOB_HOST)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(AZURE_BLOB_HOST), x509.IPAddress(ipaddress.ip_address(ip))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_file, cert_file, key_file = workdir / "ca.pem", workdir / "server.pem", workdir / "server.key"
    ca_file.write_bytes(ca_cert.public_bytes(pem))
    cert_file.write_bytes(cert.public_bytes(pem))
    key_file.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return ca_file, cert_file, key_file


def start_azurite_tls(workdir: Path, *, timeout: float = 30.0) -> AzuriteTlsServer:
    """Start Azurite over HTTPS on 127.0.0.x:443 and write the hosts/CA files for Triton."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        raise FileNotFoundError("the as:// setup needs root (port 443, unshare -m, mount --bind)")
    workdir.mkdir(parents=True, exist_ok=True)
    ip = _free_loopback_443()
    ca_file, cert_file, key_file = _write_test_pki(workdir, ip)
    hosts = workdir / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n::1 localhost\n{ip} {AZURE_BLOB_HOST}\n")
    bundle = workdir / "ca-certificates.crt"
    system = SYSTEM_CA_BUNDLE.read_bytes() if SYSTEM_CA_BUNDLE.is_file() else b""
    bundle.write_bytes(system + b"\n" + ca_file.read_bytes())
    plain = start_azurite(workdir, cert=cert_file, key=key_file, port=443, host=ip, timeout=timeout)
    return AzuriteTlsServer(
        plain.process, plain.port, plain.data_dir, host=ip, ca_file=ca_file, hosts_file=hosts, ca_bundle=bundle
    )
