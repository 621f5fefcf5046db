"""pytest setup for ``benchmarks/``: the real-server fixtures, the stand-in peer, scale.

``DFREPO_BENCH_SCALE=smoke`` (default; seconds, small sizes, part of CI via
``pytest benchmarks/ -m smoke``) or ``full`` (1-4 GiB objects; minutes).
``pytest --bench-scale=full`` does the same as the environment variable.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for p in (ROOT / "tests", ROOT / "peer", BENCH):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

pytest_plugins = ["servers.fixtures"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dfrepo benchmarks")
    group.addoption("--bench-scale", choices=("smoke", "full"), default=None,
                    help="benchmark sizes (default: $DFREPO_BENCH_SCALE or smoke)")


def pytest_configure(config: pytest.Config) -> None:
    choice = config.getoption("--bench-scale", default=None)
    if choice:
        os.environ["DFREPO_BENCH_SCALE"] = choice
    config.addinivalue_line("markers", "smoke: small benchmark run included in the default suite")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    try:
        import _harness

        out = _harness.write_summary()
        if out is not None:
            print(f"\nbenchmark summary: {out}")
    except Exception as exc:  # noqa: BLE001 - the summary must never fail the run
        print(f"\nbenchmark summary not written: {exc}")


@pytest.fixture(scope="session")
def bench_scale() -> dict:
    import _harness

    return _harness.scale()


@pytest.fixture(scope="session")
def tmpfs_dir():
    import _harness

    d = _harness.scratch_dir("tmpfs")
    try:
        yield d
    finally:
        _harness.clear_outputs([d])


@pytest.fixture(scope="session")
def hugetmpfs_dir(bench_scale):
    """A tmpfs of our own mounted with ``huge=within_size``: the page cache in 2 MiB folios.

    On the default tmpfs (4 KiB pages) the kernel spends more CPU allocating and charging
    pages than copying bytes into them; this destination shows what a transfer costs when
    the page allocator is not the bottleneck. Mounting needs root (``CAP_SYS_ADMIN``)."""
    import subprocess

    import _harness
    from servers.require import missing

    d = _harness.scratch_dir("disk")
    size = 2 * bench_scale["large"] + 256 * _harness.MiB
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},huge=within_size,mode=0700",
                           "dfrepo-bench", str(d)], capture_output=True, text=True)
    if proc.returncode != 0:
        d.rmdir()
        missing("a huge-page tmpfs (mount -t tmpfs -o huge=within_size, as root)",
                proc.stderr.strip() or f"mount exited {proc.returncode}", hint="")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=False)
        d.rmdir()


@pytest.fixture(scope="session")
def disk_dir():
    import _harness

    d = _harness.scratch_dir("disk")
    try:
        yield d
    finally:
        _harness.clear_outputs([d])


@pytest.fixture(scope="session")
def bench_bucket(seaweedfs):
    """A bucket on SeaweedFS, addressed directly (the recording relay is a Python thread
    in this process; throughput runs bypass it)."""
    client = seaweedfs.client(direct=True)
    name = "bench"
    try:
        client.head_bucket(Bucket=name)
    except Exception:  # noqa: BLE001
        client.create_bucket(Bucket=name)
    return client, name



@pytest.fixture(scope="session")
def real_cluster(tmp_path_factory):
    """The real Dragonfly for benchmarks: scheduler + seed + four peers (fan-out up to N=4).
    Missing binaries fail the benchmark (run scripts/build-dragonfly.sh)."""
    from servers.fixtures import start_dragonfly_or_fail

    cluster = start_dragonfly_or_fail(tmp_path_factory.mktemp("bench-dragonfly"), peers=4)
    try:
        yield cluster
    finally:
        cluster.stop()
