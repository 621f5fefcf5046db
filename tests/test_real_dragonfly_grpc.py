"""dfrepo's gRPC transport on the REAL dfdaemon: the daemon writes or hard-links the files.

``transport="grpc"`` sends ``DfdaemonDownload/DownloadTask`` on the node's unix socket with
``output_path`` inside dfrepo's stage and ``force_hard_link``: a local hit is one ``link()``
— the published file *is* the daemon's content file (same inode), no byte on any socket.
Cold and remote-peer downloads fill the file from the daemon; across file systems the daemon
copies. Same task identity as the proxy path.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import pytest

from dfrepo import errors
from dfrepo.dragonfly import DragonflyConfig
from dfrepo.engine.settings import TransferConfig
from dfrepo.pull import pull
from modelfiles import tree, upload

pytestmark = [pytest.mark.servers, pytest.mark.dragonfly]

MiB = 1024 * 1024
CFG = TransferConfig(fsync=False)


def _files(root: Path, seed: int, big: int = 20 * MiB) -> dict[str, bytes]:
    rnd = random.Random(seed)
    files = {"config.pbtxt": b'name: "g"\n', "1/model.py": b"# g\n", "1/weights.bin": rnd.randbytes(big)}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def _grpc(node: Any, **kw: Any) -> DragonflyConfig:
    return DragonflyConfig(transport="grpc", socket=str(node.socket_path), proxy=node.proxy,
                           fallback_direct=False, **kw)


def test_grpc_cold_remote_and_local_link(dragonfly_cluster, seaweedfs, s3env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    node_a, node_b = dragonfly_cluster.peers[0], dragonfly_cluster.peers[1]
    files = _files(tmp_path / "src", seed=41)
    upload(seaweedfs, "real-grpc", "repo/g", tmp_path / "src")
    url = seaweedfs.s3_url("real-grpc", "repo/g")

    # cold on node A through gRPC: byte-exact, task IDs as predicted (same as the proxy path)
    cold = pull(url, tmp_path / "a", env=s3env, dragonfly=_grpc(node_a), transfer=CFG)
    assert tree(tmp_path / "a") == files
    assert cold.via == "grpc"
    for r in cold.results:
        assert r.task_id and r.task_id == r.predicted_task_id, r.path

    # the proxy path names the same tasks
    via_proxy = pull(url, tmp_path / "p", env=s3env,
                     dragonfly=DragonflyConfig(proxy=node_a.proxy, fallback_direct=False), transfer=CFG)
    assert {r.path.name: r.task_id for r in via_proxy.results} == {r.path.name: r.task_id for r in cold.results}

    # remote-peer on node B through gRPC: no content GET of the weights at the origin
    seaweedfs.clear_log()
    before = node_b.traffic()
    remote = pull(url, tmp_path / "b", env=s3env, dragonfly=_grpc(node_b), transfer=CFG)
    assert tree(tmp_path / "b") == files
    weights_gets = [r for r in seaweedfs.requests() if r.method == "GET" and "weights.bin" in r.target
                    and r.headers.get("range", "").replace(" ", "") != "bytes=0-0"]
    assert weights_gets == []
    assert node_b.traffic().get("REMOTE_PEER", 0) - before.get("REMOTE_PEER", 0) >= len(files["1/weights.bin"])
    assert remote.via == "grpc"

    # local hit on node A: the published file IS the daemon's content file
    again = pull(url, tmp_path / "a2", env=s3env, dragonfly=_grpc(node_a), transfer=CFG)
    assert tree(tmp_path / "a2") == files
    weights = next(r for r in again.results if r.path.name == "weights.bin")
    assert weights.source == "peer-cache" and weights.delivery == "linked"
    content = node_a.task_content_path(weights.task_id)
    published = os.stat(tmp_path / "a2" / "1" / "weights.bin")
    assert published.st_ino == os.stat(content).st_ino and published.st_nlink >= 2
    assert again.bytes_linked == again.bytes and again.bytes_streamed == 0


def test_grpc_other_file_system_gets_a_copy(dragonfly_cluster, seaweedfs, s3env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """/dev/shm is tmpfs, the daemon's storage is not: the daemon copies instead of linking."""
    shm = Path("/dev/shm")
    if os.stat(shm).st_dev == os.stat(dragonfly_cluster.peers[0].storage_dir).st_dev:
        pytest.fail("need the destination on another file system than the daemon's storage")
    files = _files(tmp_path / "src", seed=42, big=9 * MiB)
    upload(seaweedfs, "real-grpc", "repo/copy", tmp_path / "src")
    dest = shm / f"dfrepo-grpc-copy-{os.getpid()}"
    try:
        res = pull(seaweedfs.s3_url("real-grpc", "repo/copy"), dest, env=s3env,
                   dragonfly=_grpc(dragonfly_cluster.peers[0]), transfer=CFG)
        assert tree(dest) == files
        assert res.via == "grpc" and res.bytes_copied == res.bytes and res.bytes_linked == 0
        assert os.stat(dest / "1" / "weights.bin").st_nlink == 1
    finally:
        import shutil

        shutil.rmtree(dest, ignore_errors=True)


def test_socket_absent_auto_uses_proxy_grpc_fails_clearly(dragonfly_cluster, seaweedfs, s3env, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    node = dragonfly_cluster.peers[0]
    files = _files(tmp_path / "src", seed=43, big=5 * MiB)
    upload(seaweedfs, "real-grpc", "repo/auto", tmp_path / "src")
    url = seaweedfs.s3_url("real-grpc", "repo/auto")
    missing = str(tmp_path / "no-daemon.sock")
    with caplog.at_level(logging.WARNING, logger="dfrepo"):
        res = pull(url, tmp_path / "auto", env=s3env, transfer=CFG,
                   dragonfly=DragonflyConfig(transport="auto", socket=missing, proxy=node.proxy,
                                             fallback_direct=False))
    assert tree(tmp_path / "auto") == files and res.via == "proxy"
    assert any("gRPC not used" in m and "no socket" in m for m in caplog.messages)
    with pytest.raises(errors.ProxyUnavailableError, match="no socket"):
        pull(url, tmp_path / "grpc", env=s3env, transfer=CFG,
             dragonfly=DragonflyConfig(transport="grpc", socket=missing, proxy=node.proxy))
    assert not (tmp_path / "grpc").exists()


def test_grpc_origin_error_is_an_http_status_error(dragonfly_cluster, seaweedfs, s3env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A presigned URL the origin refuses (wrong secret): the daemon's INTERNAL error with the
    origin's status becomes the same HTTPStatusError as on the proxy path, redacted."""
    from dfrepo.dragonfly.daemon_grpc import DaemonGrpc

    node = dragonfly_cluster.peers[0]
    daemon = DaemonGrpc(str(node.socket_path), DragonflyConfig())
    try:
        bad = f"{seaweedfs.endpoint}/real-grpc/nope/missing.bin?X-Amz-Signature=deadbeefsecret"
        with pytest.raises(errors.HTTPStatusError) as ei:
            daemon.download(bad, tmp_path / "out")
    finally:
        daemon.close()
    assert ei.value.status in (403, 404)
    assert "deadbeefsecret" not in str(ei.value) and not (tmp_path / "out").exists()


@pytest.mark.parametrize("fallback", [True, False])
def test_daemon_killed_mid_grpc_download(dragonfly_cluster, seaweedfs, s3env, tmp_path: Path, fallback: bool) -> None:  # type: ignore[no-untyped-def]
    """The daemon dies while it streams pieces to dfrepo over gRPC: the same rules as the
    proxy path — fallback on: the pull finishes over HTTP (proxy down -> origin), byte-exact;
    fallback off: ProxyUnavailableError. Nothing partial is visible either way."""
    import threading
    import time

    node = dragonfly_cluster.peers[1]
    files = _files(tmp_path / "src", seed=50 + fallback, big=192 * MiB)
    upload(seaweedfs, "real-grpc", f"repo/kill-{fallback}", tmp_path / "src")
    dest = tmp_path / "out"
    stop = threading.Event()

    def killer() -> None:
        # Kill once the daemon has started writing the weights into dfrepo's stage.
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                parts = [p for p in tmp_path.rglob("*.dfrepo-daemon") if p.stat().st_size > 0]
            except FileNotFoundError:  # a stage appeared or vanished while we looked
                parts = []
            if parts:
                node.kill()
                return
            time.sleep(0.01)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    cfg = DragonflyConfig(transport="grpc", socket=str(node.socket_path), proxy=node.proxy,
                          fallback_direct=fallback)
    transfer = TransferConfig(fsync=False, max_attempts=2, backoff_base=0.05)
    try:
        if fallback:
            res = pull(seaweedfs.s3_url("real-grpc", f"repo/kill-{fallback}"), dest, env=s3env,
                       dragonfly=cfg, transfer=transfer)
            assert not node.is_alive(), "the daemon was killed during the pull"
            assert tree(dest) == files
            assert res.via == "direct" and res.fallback_reason
        else:
            with pytest.raises(errors.DfrepoError) as ei:
                pull(seaweedfs.s3_url("real-grpc", f"repo/kill-{fallback}"), dest, env=s3env,
                     dragonfly=cfg, transfer=transfer)
            assert not node.is_alive()
            assert isinstance(ei.value, (errors.ProxyUnavailableError, errors.TransferError)), ei.value
            assert "X-Amz-Signature" not in str(ei.value)
            assert not dest.exists()
        leftovers = [p for p in tmp_path.rglob("*") if "dfrepo-stage" in p.name or p.name.endswith(
            (".dfrepo-part", ".dfrepo-daemon"))]
        assert leftovers == []
    finally:
        stop.set()
        thread.join()
        node.restart()
