"""pytest fixtures for the real servers (loaded as a plugin by tests/conftest.py).

Session fixtures: ``seaweedfs``, ``moto_s3``, ``azurite``, ``azurite_tls``, ``fake_gcs``, ``nginx_origin``.
Function fixture: ``triton_server`` (a factory; every server it started is stopped at teardown).
A fixture whose binary is missing skips the test with the reason; scripts/bootstrap.sh
installs them all.
Session fixture ``dragonfly_cluster`` (real scheduler + seed peer + 2 peers, tests/servers/dragonfly.py)
is the exception: missing Dragonfly binaries *fail* the test, with the instruction to run
scripts/build-dragonfly.sh.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

import pytest

from .azure import AzuriteServer, AzuriteTlsServer, start_azurite, start_azurite_tls
from .dragonfly import DragonflyBinariesMissing, DragonflyCluster, start_dragonfly_cluster
from .gcs import FakeGcsServer, start_fake_gcs
from .nginx import NginxOrigin, start_nginx
from .s3 import S3Server, start_moto, start_seaweedfs
from .triton import TritonHandle, start_triton

__all__ = [
    "TritonFactory",
    "azurite",
    "azurite_tls",
    "dragonfly_cluster",
    "fake_gcs",
    "moto_s3",
    "nginx_origin",
    "seaweedfs",
    "triton_server",
]

T = TypeVar("T")


def _start_or_skip(what: str, start: Callable[[], T]) -> T:
    try:
        return start()
    except FileNotFoundError as exc:
        pytest.skip(f"{what} unavailable: {exc}")


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """SeaweedFS ``weed mini`` (checks SigV4) behind a request-recording relay."""
    server = _start_or_skip("SeaweedFS", lambda: start_seaweedfs(tmp_path_factory.mktemp("seaweedfs")))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server (no signature checks) behind a request-recording relay."""
    server = _start_or_skip("moto", lambda: start_moto(tmp_path_factory.mktemp("moto")))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    """Azurite blob service over HTTP (telemetry disabled)."""
    server = _start_or_skip("Azurite", lambda: start_azurite(tmp_path_factory.mktemp("azurite")))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def azurite_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteTlsServer]:
    """Azurite over HTTPS on 127.0.0.x:443 for Triton ``as://`` (pass ``mounts=.triton_mounts()``)."""
    server = _start_or_skip("Azurite (TLS)", lambda: start_azurite_tls(tmp_path_factory.mktemp("azurite-tls")))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcsServer]:
    """fake-gcs-server over HTTP with a filesystem backend."""
    server = _start_or_skip("fake-gcs-server", lambda: start_fake_gcs(tmp_path_factory.mktemp("fake-gcs")))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def nginx_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxOrigin]:
    """nginx serving a writable directory (``.root``) with sendfile, keep-alive and ranges."""
    server = _start_or_skip("nginx", lambda: start_nginx(tmp_path_factory.mktemp("nginx")))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def dragonfly_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DragonflyCluster]:
    """Real Dragonfly: scheduler (127.0.0.1) + seed (127.0.0.10) + peers 127.0.0.21/.22.

    Returns after the scheduler knows the seed (>= 30 s: its seed refresh ticker). Missing
    binaries fail the test (run scripts/build-dragonfly.sh); logs stay in the workdir.
    """
    missing = ""
    try:
        cluster = start_dragonfly_cluster(tmp_path_factory.mktemp("dragonfly"), peers=2)
    except DragonflyBinariesMissing as exc:
        missing = str(exc)
    if missing:
        pytest.fail(missing, pytrace=False)  # outside the except: no chained traceback
    try:
        yield cluster
    finally:
        cluster.stop()


class TritonFactory(Protocol):
    """Signature of the ``triton_server`` fixture's value."""

    def __call__(
        self,
        model_repository: str,
        *,
        repoagent_dir: str | None = None,
        env: Mapping[str, str] | None = None,
        explicit: bool = True,
        extra_args: Sequence[str] = (),
        wait: bool = True,
        timeout: float = 60.0,
        mounts: Mapping[str, str | os.PathLike[str]] | None = None,
        version: str | None = None,
    ) -> TritonHandle: ...


@pytest.fixture
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonFactory]:
    """Factory starting tritonserver processes; all of them are stopped at teardown.

    ``version`` picks another prepared Triton build (``scripts/triton-versions.env``, e.g.
    "2.36.0"); a build bootstrap has not prepared skips the test, like a missing default one.
    """
    handles: list[TritonHandle] = []
    workdir: list[Path] = []

    def start(
        model_repository: str,
        *,
        repoagent_dir: str | None = None,
        env: Mapping[str, str] | None = None,
        explicit: bool = True,
        extra_args: Sequence[str] = (),
        wait: bool = True,
        timeout: float = 60.0,
        mounts: Mapping[str, str | os.PathLike[str]] | None = None,
        version: str | None = None,
    ) -> TritonHandle:
        if not workdir:
            workdir.append(tmp_path_factory.mktemp("triton"))

        def launch() -> TritonHandle:
            return start_triton(
                workdir[0],
                str(model_repository),
                repoagent_dir=repoagent_dir,
                env=env,
                explicit=explicit,
                extra_args=extra_args,
                wait=False,
                mounts=mounts,
                version=version,
            )

        handle = _start_or_skip("Triton", launch)
        handles.append(handle)
        if wait:
            handle.process.wait_ready(handle.is_live, timeout=timeout)
        return handle

    try:
        yield start
    finally:
        for handle in reversed(handles):
            handle.stop()
