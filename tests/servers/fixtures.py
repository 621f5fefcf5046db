"""pytest fixtures for the real servers (loaded as a plugin by tests/conftest.py).

Session fixtures: ``seaweedfs``, ``moto_s3``, ``azurite``, ``azurite_tls``, ``fake_gcs``, ``nginx_origin``.
Function fixture: ``triton_server`` (a factory; every server it started is stopped at teardown).
A fixture whose binary is missing skips the test with the reason, or fails it when
``DFREPO_REQUIRE_SERVERS=1`` (scripts/test.sh; see tests/servers/require.py);
scripts/bootstrap.sh installs them all.
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
from .require import missing
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
    "start_dragonfly_or_fail",
    "triton_server",
]

S = TypeVar("S", bound="_Stoppable")


class _Stoppable(Protocol):
    def stop(self) -> None: ...


def _start_or_skip(what: str, start: Callable[[], S]) -> S:
    """``start()``; a missing binary (FileNotFoundError) skips the test, or fails it under
    ``DFREPO_REQUIRE_SERVERS=1`` (scripts/test.sh)."""
    try:
        return start()
    except FileNotFoundError as exc:
        problem = exc
    missing(what, problem)  # outside the except: no chained traceback


def _serve(what: str, start: Callable[[Path], S], workdir: Callable[[], Path]) -> Iterator[S]:
    """Body of a session server fixture: start in a fresh workdir, yield, stop."""
    server = _start_or_skip(what, lambda: start(workdir()))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """SeaweedFS ``weed mini`` (checks SigV4) behind a request-recording relay."""
    yield from _serve("SeaweedFS", start_seaweedfs, lambda: tmp_path_factory.mktemp("seaweedfs"))


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server (no signature checks) behind a request-recording relay."""
    yield from _serve("moto", start_moto, lambda: tmp_path_factory.mktemp("moto"))


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    """Azurite blob service over HTTP (telemetry disabled)."""
    yield from _serve("Azurite", start_azurite, lambda: tmp_path_factory.mktemp("azurite"))


@pytest.fixture(scope="session")
def azurite_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteTlsServer]:
    """Azurite over HTTPS on 127.0.0.x:443 for Triton ``as://`` (pass ``mounts=.triton_mounts()``)."""
    yield from _serve("Azurite (TLS)", start_azurite_tls, lambda: tmp_path_factory.mktemp("azurite-tls"))


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcsServer]:
    """fake-gcs-server over HTTP with a filesystem backend."""
    yield from _serve("fake-gcs-server", start_fake_gcs, lambda: tmp_path_factory.mktemp("fake-gcs"))


@pytest.fixture(scope="session")
def nginx_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxOrigin]:
    """nginx serving a writable directory (``.root``) with sendfile, keep-alive and ranges."""
    yield from _serve("nginx", start_nginx, lambda: tmp_path_factory.mktemp("nginx"))


def start_dragonfly_or_fail(workdir: Path, *, peers: int) -> DragonflyCluster:
    """:func:`start_dragonfly_cluster`; missing binaries *fail* the test (always, not only under
    ``DFREPO_REQUIRE_SERVERS=1``) with the instruction to run scripts/build-dragonfly.sh."""
    try:
        return start_dragonfly_cluster(workdir, peers=peers)
    except DragonflyBinariesMissing as exc:
        problem = str(exc)
    pytest.fail(problem, pytrace=False)  # outside the except: no chained traceback


@pytest.fixture(scope="session")
def dragonfly_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DragonflyCluster]:
    """Real Dragonfly: scheduler (127.0.0.1) + seed (127.0.0.10) + peers 127.0.0.21/.22.

    Returns after the scheduler knows the seed (>= 30 s: its seed refresh ticker). Missing
    binaries fail the test (run scripts/build-dragonfly.sh); logs stay in the workdir.
    """
    cluster = start_dragonfly_or_fail(tmp_path_factory.mktemp("dragonfly"), peers=2)
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
