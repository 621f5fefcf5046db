"""dfrepo on the REAL Dragonfly: scheduler + seed peer + peers (``tests/servers/dragonfly.py``).

Every P2P claim dfrepo makes, proven on the daemon users run (dfdaemon and scheduler at the
versions pinned in ``scripts/dragonfly-versions.env``) against SeaweedFS (SigV4 presigned
URLs) behind a recording relay. Where the bytes came from is read from two witnesses that do
not trust dfrepo: the origin's own request log and each daemon's
``dragonfly_client_download_traffic`` metric.

Nodes: ``peers[0]`` is node A, ``peers[1]`` node B; both ask the scheduler, which hands the
first download of a task to the seed peer (it goes back to the origin) and later ones to
whoever holds the pieces.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dfrepo import errors
from dfrepo.dragonfly import DragonflyConfig
from dfrepo.engine.plan import SMALL_TO_SOURCE
from dfrepo.engine.settings import TransferConfig
from dfrepo.pull import pull
from modelfiles import make_model, tree, upload

pytestmark = [pytest.mark.servers, pytest.mark.dragonfly]

MiB = 1024 * 1024
CFG = TransferConfig(fsync=False)


def _model(root: Path, *, big: int, seed: int) -> dict[str, bytes]:
    """Two large files (P2P) and three small ones (≤ 4 MiB: straight to the origin)."""
    return make_model(root, weights=big, seed=seed, extra=SMALL_TO_SOURCE + 1)


def _origin_gets(s3: Any, prefix: str) -> list[tuple[str, str | None]]:
    """(file path, Range header) of every GET the store saw under *prefix*."""
    out = []
    for req in s3.requests():
        path = req.target.split("?", 1)[0]
        if req.method == "GET" and path.startswith(prefix) and not path.endswith("/"):
            out.append((path[len(prefix):], req.headers.get("range")))
    return out


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}


def _traffic(cluster: Any) -> dict[str, dict[str, int]]:
    nodes = {"seed": cluster.seed, "a": cluster.peers[0], "b": cluster.peers[1]}
    return {name: node.traffic() for name, node in nodes.items()}


def _large(files: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in files.items() if len(v) > SMALL_TO_SOURCE}


def test_model_through_real_peers_one_origin_copy(dragonfly_cluster, seaweedfs, s3env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Node A cold, node B with differently signed URLs, node A again: one origin copy of
    every large file, B served by peers, A's reload a local hit; task IDs as predicted."""
    cluster = dragonfly_cluster
    node_a, node_b = cluster.peers[0], cluster.peers[1]
    files = _model(tmp_path / "src", big=24 * MiB + 7, seed=11)
    upload(seaweedfs, "real-df", "repo/m", tmp_path / "src")
    prefix = "/real-df/repo/m/"
    large = _large(files)
    large_bytes = sum(map(len, large.values()))

    # ---- node A, cold
    seaweedfs.clear_log()
    t0 = _traffic(cluster)
    first = pull(seaweedfs.s3_url("real-df", "repo/m"), tmp_path / "a", env=s3env,
                 dragonfly=DragonflyConfig(proxy=node_a.proxy, fallback_direct=False), transfer=CFG)
    assert tree(tmp_path / "a") == files
    assert first.via == "proxy"
    for res in first.results:
        assert res.task_id, f"{res.path.name}: no X-Dragonfly-Task-ID: not served by the peer"
        assert res.task_id == res.predicted_task_id, f"{res.path.name}: dfrepo's task ID differs from the daemon's"
    t1 = _traffic(cluster)
    back_to_source = _delta(t1["seed"], t0["seed"]).get("BACK_TO_SOURCE", 0) \
        + _delta(t1["a"], t0["a"]).get("BACK_TO_SOURCE", 0)
    assert back_to_source >= large_bytes, f"the first download goes back to the origin once: {t0} -> {t1}"
    origin_first = _origin_gets(seaweedfs, prefix)
    assert {p for p, _ in origin_first} >= set(large), "the peers, not dfrepo, fetched from the store"

    # ---- node B: new presigned URLs (another signing second), same tasks
    time.sleep(1.1)
    seaweedfs.clear_log()
    second = pull(seaweedfs.s3_url("real-df", "repo/m"), tmp_path / "b", env=s3env,
                  dragonfly=DragonflyConfig(proxy=node_b.proxy, fallback_direct=False), transfer=CFG)
    assert tree(tmp_path / "b") == files
    assert {r.task_id for r in second.results} == {r.task_id for r in first.results}
    t2 = _traffic(cluster)
    gets_b = _origin_gets(seaweedfs, prefix)
    for path, rng in gets_b:
        if path in large:
            # dfdaemon's stat of a task it lacks: one 1-byte range GET, never content.
            assert rng == "bytes=0-0", f"second node fetched content of {path} from the origin ({rng})"
    small_refetched = sorted({p for p, _ in gets_b if p not in large})
    assert small_refetched == sorted(k for k in files if k not in large), \
        "files of <= 4 MiB are fetched from the origin by every node (dfdaemon's shortcut)"
    assert _delta(t2["b"], t1["b"]).get("REMOTE_PEER", 0) >= large_bytes
    assert _delta(t2["b"], t1["b"]).get("BACK_TO_SOURCE", 0) < large_bytes

    # ---- node A again: a local hit, nothing from the origin for large files
    seaweedfs.clear_log()
    again = pull(seaweedfs.s3_url("real-df", "repo/m"), tmp_path / "a2", env=s3env,
                 dragonfly=DragonflyConfig(proxy=node_a.proxy, fallback_direct=False), transfer=CFG)
    assert tree(tmp_path / "a2") == files
    t3 = _traffic(cluster)
    assert _delta(t3["a"], t2["a"]).get("LOCAL_PEER", 0) >= large_bytes
    assert not [p for p, _ in _origin_gets(seaweedfs, prefix) if p in large]
    assert again.bytes_from_peer_cache >= large_bytes


def test_ranges_through_real_peer_are_byte_exact(dragonfly_cluster, seaweedfs, s3env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """peer_ranges on: piece-aligned ranges of > 4 MiB; every range is P2P (one task)."""
    files = _model(tmp_path / "src", big=40 * MiB + 3, seed=12)
    upload(seaweedfs, "real-df", "repo/ranges", tmp_path / "src")
    res = pull(seaweedfs.s3_url("real-df", "repo/ranges"), tmp_path / "a", env=s3env,
               dragonfly=DragonflyConfig(proxy=dragonfly_cluster.peers[0].proxy, fallback_direct=False,
                                         peer_ranges=True),
               transfer=TransferConfig(fsync=False, range_size=8 * MiB, read_timeout=30.0))
    assert tree(tmp_path / "a") == files
    weights = next(r for r in res.results if r.path.name == "weights.bin")
    # 40 MiB in 8 MiB ranges, the 3-byte tail merged into the last. dfdaemon 1.5.10 can stall
    # a concurrent cold range until the read timeout (docs/real-dragonfly.md); the retry is
    # a request of its own, so count the planned ranges as requests minus retries.
    assert weights.requests - weights.retries == 5
    assert weights.task_id == weights.predicted_task_id


def test_overwritten_object_is_not_served_stale(dragonfly_cluster, seaweedfs, s3env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Same key, new bytes: the ETag is in the task's tag, so the cached task is not reused."""
    peer = dragonfly_cluster.peers[1]
    df = DragonflyConfig(proxy=peer.proxy, fallback_direct=False)
    old = _model(tmp_path / "v1", big=6 * MiB, seed=21)
    upload(seaweedfs, "real-df", "repo/stale", tmp_path / "v1")
    a = pull(seaweedfs.s3_url("real-df", "repo/stale"), tmp_path / "a", env=s3env, dragonfly=df, transfer=CFG)
    assert tree(tmp_path / "a") == old
    new = _model(tmp_path / "v2", big=6 * MiB, seed=22)
    upload(seaweedfs, "real-df", "repo/stale", tmp_path / "v2")
    b = pull(seaweedfs.s3_url("real-df", "repo/stale"), tmp_path / "b", env=s3env, dragonfly=df, transfer=CFG)
    assert tree(tmp_path / "b") == new
    ids_a = {r.path.name: r.task_id for r in a.results}
    ids_b = {r.path.name: r.task_id for r in b.results}
    assert ids_a["weights.bin"] != ids_b["weights.bin"]
    assert ids_a["config.pbtxt"] == ids_b["config.pbtxt"], "unchanged files keep their task"


@pytest.mark.parametrize("fallback", [True, False])
def test_peer_killed_mid_download(dragonfly_cluster, seaweedfs, s3env, tmp_path: Path, fallback: bool) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL the node's dfdaemon while dfrepo streams from it: with fallback the pull
    finishes from the origin, byte-exact; without, a clear ProxyUnavailableError and no
    destination. Nothing partial is visible either way."""
    peer = dragonfly_cluster.peers[1]
    files = _model(tmp_path / "src", big=160 * MiB, seed=30 + fallback)
    upload(seaweedfs, "real-df", f"repo/kill-{fallback}", tmp_path / "src")
    killed = threading.Event()

    def progress(done: int, total: int) -> None:
        if not killed.is_set() and total and done > 8 * MiB:
            killed.set()
            peer.kill()

    dest = tmp_path / "out"
    try:
        if fallback:
            res = pull(seaweedfs.s3_url("real-df", f"repo/kill-{fallback}"), dest, env=s3env,
                       dragonfly=DragonflyConfig(proxy=peer.proxy, fallback_direct=True),
                       transfer=TransferConfig(fsync=False, max_attempts=3, backoff_base=0.05),
                       progress=progress)
            assert killed.is_set()
            assert tree(dest) == files
            assert res.via == "direct" and res.fallback_reason
        else:
            with pytest.raises(errors.DfrepoError) as ei:
                pull(seaweedfs.s3_url("real-df", f"repo/kill-{fallback}"), dest, env=s3env,
                     dragonfly=DragonflyConfig(proxy=peer.proxy, fallback_direct=False),
                     transfer=TransferConfig(fsync=False, max_attempts=3, backoff_base=0.05),
                     progress=progress)
            assert killed.is_set()
            assert isinstance(ei.value, (errors.ProxyUnavailableError, errors.RetriesExhaustedError)), ei.value
            assert "X-Amz-Signature" not in str(ei.value)
            assert not dest.exists()
        assert not [p for p in tmp_path.rglob("*") if "dfrepo-stage" in p.name or p.name.endswith(".dfrepo-part")]
    finally:
        peer.restart()


# ------------------------------------------------------------------------------------------
# a real tritonserver loading through dfrepo's agent and the real dfdaemon
# ------------------------------------------------------------------------------------------
@pytest.mark.triton
@pytest.mark.parametrize("transport,cache", [("proxy", "off"), ("grpc", "on"), ("grpc", "off")])
def test_triton_loads_through_the_real_peer(dragonfly_cluster, seaweedfs, triton_server, tmp_path: Path,
                                            transport: str, cache: str) -> None:  # type: ignore[no-untyped-def]
    """Triton -> agent -> real dfdaemon (proxy or gRPC) -> SeaweedFS; inference right; the
    weights reached the store only through the Dragonfly daemons (never from Triton)."""
    import json
    import os

    from dfrepo.triton.install import install_agent
    from servers.models import make_toy_model
    from servers.upload import upload_tree_s3

    node = dragonfly_cluster.peers[0]
    name = f"real_{transport}_{cache}"
    src = tmp_path / "src"
    make_toy_model(src, name, add=3.0, payload_bytes=12 * MiB, agent="dragonfly",
                   agent_params={"cache": cache})
    client = seaweedfs.client()
    try:
        client.head_bucket(Bucket="real-triton")
    except Exception:  # noqa: BLE001
        client.create_bucket(Bucket="real-triton")
    upload_tree_s3(seaweedfs, "real-triton", "repo", src)
    agents = install_agent(tmp_path / "repoagents").parent.parent
    cfg = tmp_path / "dragonfly_config.json"
    cfg.write_text(json.dumps({"proxy": node.proxy, "transport": transport, "socket": str(node.socket_path),
                               "fallback_direct": False}))
    creds = tmp_path / "cloud_credential.json"
    creds.write_text(json.dumps({"s3": {"": {"key_id": seaweedfs.access_key, "secret_key": seaweedfs.secret_key,
                                             "region": seaweedfs.region}}}))
    os.chmod(creds, 0o600)
    env = {"TRITON_DRAGONFLY_CONFIG_PATH": str(cfg), "TRITON_CLOUD_CREDENTIAL_PATH": str(creds),
           "DFREPO_CACHE_DIR": str(tmp_path / "cache"), "AWS_EC2_METADATA_DISABLED": "true",
           "DFREPO_MODEL_PARAMETERS": "cache"}
    triton = triton_server(seaweedfs.s3_url("real-triton", "repo"), repoagent_dir=str(agents), env=env)
    seaweedfs.clear_log()
    before = _traffic(dragonfly_cluster)
    status, body = triton.load(name)
    assert status == 200, f"{body}\n{triton.log()[-3000:]}"
    assert triton.infer_fp32(name, "INPUT0", [1.0, 2.0, 3.0, 4.0], "OUTPUT0") == [4.0, 5.0, 6.0, 7.0]
    after = _traffic(dragonfly_cluster)
    moved = sum(_delta(after[k], before[k]).get(kind, 0) for k in after
                for kind in ("BACK_TO_SOURCE", "REMOTE_PEER"))
    assert moved >= 12 * MiB, f"the weights came through the daemons: {before} -> {after}"
    weights_by_others = [r for r in seaweedfs.requests()
                         if r.method == "GET" and f"{name}/1/weights.bin" in r.target
                         and "x-dragonfly-use-p2p" not in r.headers and transport == "proxy"]
    assert weights_by_others == [], "only the Dragonfly daemons fetch the weights from the store"


@pytest.fixture(params=["real", "standin"])
def any_peer(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """The same proxy API (``.url``) from the real dfdaemon and from the stand-in."""
    if request.param == "real":
        return request.getfixturevalue("dragonfly_cluster").peers[0]
    return request.getfixturevalue("peer")


def test_same_pull_on_the_real_and_the_standin_peer(any_peer, seaweedfs, s3env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Byte-exact, task IDs as predicted, small files one plain GET and large ones one GET
    per file — whichever peer answers."""
    files = _model(tmp_path / "src", big=9 * MiB, seed=60)
    upload(seaweedfs, "real-df", f"repo/either-{type(any_peer).__name__}", tmp_path / "src")
    res = pull(seaweedfs.s3_url("real-df", f"repo/either-{type(any_peer).__name__}"), tmp_path / "out", env=s3env,
               dragonfly=DragonflyConfig(proxy=any_peer.url, fallback_direct=False), transfer=CFG)
    assert tree(tmp_path / "out") == files and res.via == "proxy"
    assert res.requests == len(files)
    assert all(r.task_id and r.task_id == r.predicted_task_id for r in res.results)
