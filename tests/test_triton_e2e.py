"""End to end: real tritonserver + dfrepo's ``dragonfly`` agent + stand-in Dragonfly peers.

Acceptance of the "Triton repository agent" issue and the Triton rows of "Reliability".
Every model goes object store -> stand-in peer -> dfrepo (in the agent's worker, a child of
tritonserver) -> Triton's acquired ``/tmp/folderXXXXXX`` -> python backend.

Topology (all on 127.0.0.1, everything stopped by the fixtures that started it):

* node A: one shared tritonserver (explicit model control) on ``s3://`` (SeaweedFS behind a
  recording relay), ``dragonfly_config.json`` -> peer A, ``cloud_credential.json`` (Triton
  schema), its own ``DFREPO_CACHE_DIR``. Every case on node A uses its own model names.
* node B: a second tritonserver, peer B with ``parent=`` peer A, its own cache dir.
* ``gs://`` (fake-gcs-server) and ``as://`` (Azurite over TLS in a private mount namespace)
  get their own tritonserver each.

Model payloads are 2-8 MiB (toy python-backend models that verify the SHA-256 of their
weights at initialize, so a wrong or partial download fails the load).
"""

from __future__ import annotations

import ctypes
import glob
import json
import os
import re
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import pytest

pytestmark = [pytest.mark.triton, pytest.mark.servers]

from dfpeer import PeerProcess, StandinPeer
from dfrepo.triton.install import install_agent
from servers.models import make_toy_model
from servers.procs import wait_until
from servers.require import missing
from servers.triton import TritonHandle, start_triton, triton_home
from servers.upload import upload_tree_azure, upload_tree_gcs, upload_tree_s3

MiB = 1 << 20
AGENT = "dragonfly"
BUCKET = "e2e-models"
PREFIX = "repo"
X = [1.0, 2.0, 3.0, 4.0]


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def _removed(path: str) -> Callable[[], bool]:
    return lambda: not os.path.exists(path)


def _tmp_folders() -> set[str]:
    """Triton's acquired model dirs (``mkdtemp("/tmp/folderXXXXXX")``)."""
    return set(glob.glob("/tmp/folder*"))


def _stage_dirs() -> set[str]:
    """dfrepo's staging dirs next to an acquired dir (``.folderXXXXXX.dfrepo-stage-*``)."""
    return set(glob.glob("/tmp/.*.dfrepo-stage-*")) | set(glob.glob("/tmp/folder*/.*dfrepo-stage*"))


def _foreign_folder(path: str, name: str) -> bool:
    """A ``/tmp/folder*`` that holds some other model: acquired by another Triton on this
    machine (parallel runs from other checkouts share /tmp) or for another model. An empty or
    vanished dir is not foreign."""
    try:
        config = (Path(path) / "config.pbtxt").read_text(errors="replace")
    except OSError:
        return False
    return f"name: {json.dumps(name)}" not in config


def _stage_dirs_of(acquired: Iterable[str]) -> set[str]:
    """The staging dirs of these acquired dirs only: /tmp is shared with every other Triton
    on the machine (parallel runs from other checkouts stage there too)."""
    acquired = list(acquired)
    prefixes = tuple(f".{Path(a).name}.dfrepo-stage-" for a in acquired)
    return {d for d in _stage_dirs()
            if Path(d).name.startswith(prefixes) or any(d.startswith(a + "/") for a in acquired)}


def _children(pid: int) -> list[int]:
    """Live (non-zombie) processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _counts(pid: int) -> dict[str, int]:
    return {
        "threads": len(os.listdir(f"/proc/{pid}/task")),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "children": len(_children(pid)),
        "tmp_folders": len(_tmp_folders()),
        "stage_dirs": len(_stage_dirs()),
    }


def _acquired_dir(triton: TritonHandle, name: str) -> str:
    """The dir the toy model initialized from (printed by its model.py), last load."""
    found = re.findall(rf"\[toy_model {re.escape(name)}\] initialize repo=(\S+)", triton.log())
    assert found, f"no initialize line for {name}"
    return str(found[-1])


def _agent_error(triton: TritonHandle, name: str) -> str:
    """The one-line dfrepo failure message Triton logged for model ``name``."""
    lines = [ln for ln in triton.log().splitlines() if f"LOAD of model '{name}'" in ln]
    assert lines, f"no dfrepo message for {name} in the log:\n{triton.log()[-3000:]}"
    return lines[-1]


def _model_gets(s3: Any, model: str) -> tuple[list[str], list[str]]:
    """(GETs of model files that came from the Dragonfly peer, GETs by anyone else).

    config.pbtxt is excluded: Triton core reads it itself before any agent runs. The peer's
    stat and piece requests carry dfrepo's ``X-Dragonfly-*`` headers (dfdaemon forwards them).
    """
    by_peer: list[str] = []
    by_others: list[str] = []
    head = f"/{BUCKET}/{PREFIX}/{model}/"
    for req in s3.requests():
        path = req.target.split("?", 1)[0]
        if req.method != "GET" or not path.startswith(head) or path.endswith("/"):
            continue
        if path.endswith("/config.pbtxt"):
            continue
        (by_peer if "x-dragonfly-use-p2p" in req.headers else by_others).append(path)
    return by_peer, by_others


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _FolderWatch:
    """Record every ``/tmp/folder*`` directory created while the block runs (inotify).

    Polling can miss it: on an early agent error Triton creates and deletes the acquired
    dir within a few milliseconds.
    """

    _IN_CREATE, _IN_MOVED_TO, _IN_ISDIR = 0x100, 0x80, 0x40000000
    _EVENT = struct.Struct("iIII")

    def __init__(self) -> None:
        self.before = _tmp_folders()
        self.seen: set[str] = set()
        self._stop = threading.Event()
        libc = ctypes.CDLL(None, use_errno=True)
        self._fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0 or libc.inotify_add_watch(self._fd, b"/tmp", self._IN_CREATE | self._IN_MOVED_TO) < 0:
            raise OSError(ctypes.get_errno(), "inotify on /tmp")
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _drain(self) -> None:
        try:
            data = os.read(self._fd, 1 << 16)
        except BlockingIOError:
            return
        offset = 0
        while offset + self._EVENT.size <= len(data):
            _wd, mask, _cookie, length = self._EVENT.unpack_from(data, offset)
            name = data[offset + self._EVENT.size: offset + self._EVENT.size + length].split(b"\0", 1)[0]
            offset += self._EVENT.size + length
            if mask & self._IN_ISDIR and name.startswith(b"folder"):
                self.seen.add("/tmp/" + name.decode())

    def _run(self) -> None:
        while not self._stop.is_set():
            select.select([self._fd], [], [], 0.05)
            self._drain()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.1)
        self._stop.set()
        self._thread.join()
        self._drain()
        os.close(self._fd)


class _NoSecretsRepr:
    """The store fixture without its secret key in ``repr`` (pytest prints test arguments)."""

    def __init__(self, server: Any) -> None:
        self._server = server

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)

    def __repr__(self) -> str:
        return f"<{self._server.kind} at {self._server.endpoint}>"


@dataclass
class Node:
    """One tritonserver 'node' with its peer and its agent files."""

    triton: TritonHandle
    peer: Any
    dragonfly_config: Path
    credentials: Path | None
    cache_dir: Path
    repo_url: str
    loaded: set[str] = field(default_factory=set)

    def load_ok(self, name: str) -> float:
        t0 = time.monotonic()
        status, body = self.triton.load(name)
        dt = time.monotonic() - t0
        assert status == 200, f"{name}: {status} {body}\n{self.triton.log()[-4000:]}"
        assert self.triton.is_ready(name)
        self.loaded.add(name)
        return dt

    def unload(self, name: str) -> None:
        status, body = self.triton.unload(name)
        assert status == 200, body
        assert wait_until(lambda: not self.triton.is_ready(name)), f"{name} still ready"
        self.loaded.discard(name)


def _write_json(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj))
    os.chmod(path, 0o600)
    return path


def _s3_creds(s3: Any, secret: str | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    entries: dict[str, Any] = {"": {"key_id": s3.access_key, "secret_key": secret or s3.secret_key,
                                    "region": s3.region}}
    entries.update(extra or {})
    return {"s3": entries}


# ------------------------------------------------------------------------------------------
# module fixtures: agent, peers, node A
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if triton_home() is None:
        missing("Triton", "prepared Triton not found in .cache/triton (or $DFREPO_TRITON_HOME)")
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def agents(work: Path) -> Path:
    """dfrepo's agent installed into a fresh repoagent dir (the shipped shim, this venv)."""
    lib = install_agent(work / "repoagents")
    assert lib.name == "libtritonrepoagent_dragonfly.so"
    return lib.parent.parent


@pytest.fixture(scope="module")
def peer_a(work: Path) -> Iterator[PeerProcess]:
    with PeerProcess(work / "peer-a") as peer:
        yield peer


@pytest.fixture(scope="module")
def node_a(work: Path, agents: Path, peer_a: PeerProcess, seaweedfs: Any) -> Iterator[Node]:
    d = work / "node-a"
    d.mkdir()
    cfg = _write_json(d / "dragonfly_config.json", {"proxy": peer_a.url})
    creds = _write_json(d / "cloud_credential.json", _s3_creds(seaweedfs))
    cache = d / "cache"
    # Only the credential file: Triton core and the agent both read it (no AWS_* variables).
    # The operator lets these test models pick their proxy and cache (a model may not, by default).
    env = {"TRITON_DRAGONFLY_CONFIG_PATH": str(cfg), "TRITON_CLOUD_CREDENTIAL_PATH": str(creds),
           "DFREPO_CACHE_DIR": str(cache), "AWS_EC2_METADATA_DISABLED": "true",
           "DFREPO_MODEL_PARAMETERS": "proxy,fallback,cache"}
    # The bucket must exist before Triton starts (it checks the repository).
    client = seaweedfs.client()
    try:
        client.head_bucket(Bucket=BUCKET)
    except Exception:  # noqa: BLE001
        client.create_bucket(Bucket=BUCKET)
    client.put_object(Bucket=BUCKET, Key=f"{PREFIX}/README", Body=b"dfrepo e2e\n")
    repo = seaweedfs.s3_url(BUCKET, PREFIX)
    triton = start_triton(d / "triton", repo, repoagent_dir=str(agents), env=env)
    node = Node(triton, peer_a, cfg, creds, cache, repo)
    try:
        yield node
    finally:
        triton.stop()


@pytest.fixture(scope="module")
def s3(seaweedfs: Any) -> Any:
    return _NoSecretsRepr(seaweedfs)


def _publish_s3(s3: Any, work: Path, name: str, *, add: float, size: int,
                params: dict[str, str] | None = None) -> Path:
    src = work / "src" / name
    make_toy_model(src, name, add=add, payload_bytes=size, agent=AGENT, agent_params=params)
    upload_tree_s3(s3, BUCKET, PREFIX, src)
    return src


# ------------------------------------------------------------------------------------------
# 1. s3:// through the peer
# ------------------------------------------------------------------------------------------
def test_s3_model_comes_only_through_the_peer(node_a: Node, s3: Any, work: Path) -> None:
    name = "e2e_s3"
    _publish_s3(s3, work, name, add=1.0, size=6 * MiB)
    s3.clear_log()
    node_a.peer.reset_stats()
    dt = node_a.load_ok(name)
    assert node_a.triton.infer_fp32(name, "INPUT0", X, "OUTPUT0") == [2.0, 3.0, 4.0, 5.0]
    assert _acquired_dir(node_a.triton, name).startswith("/tmp/folder")
    by_peer, by_others = _model_gets(s3, name)
    print(f"\n[e2e] s3 load {dt:.2f}s; model-file GETs at the store: {len(by_peer)} by the peer, "
          f"{len(by_others)} by others; peer stats origin={node_a.peer.stats()['origin_bytes']}")
    assert by_others == [], by_others
    for f in ("/1/weights.bin", "/1/model.py", "/labels.txt"):
        assert any(p.endswith(f) for p in by_peer), (f, by_peer)
    stats = node_a.peer.stats()
    assert stats["origin_bytes"] >= 6 * MiB
    assert stats["served_bytes"] >= 6 * MiB


# ------------------------------------------------------------------------------------------
# 2. gs:// through the peer
# ------------------------------------------------------------------------------------------
def test_gs_model_through_the_peer(fake_gcs: Any, agents: Path, peer_a: PeerProcess, work: Path) -> None:
    name = "e2e_gs"
    d = work / "node-gs"
    src = d / "src"
    make_toy_model(src, name, add=-1.0, payload_bytes=3 * MiB, agent=AGENT)
    upload_tree_gcs(fake_gcs, "e2e-gs", PREFIX, src)
    cfg = _write_json(d / "dragonfly_config.json", {"proxy": peer_a.url})
    # No credential file: a "gs" entry names a service-account key file, and the emulator is
    # anonymous; Triton core and the agent both use CLOUD_STORAGE_EMULATOR_ENDPOINT.
    env = {**fake_gcs.triton_env(), "TRITON_DRAGONFLY_CONFIG_PATH": str(cfg),
           "DFREPO_CACHE_DIR": str(d / "cache")}
    triton = start_triton(d / "triton", f"gs://e2e-gs/{PREFIX}", repoagent_dir=str(agents), env=env)
    try:
        peer_a.reset_stats()
        node = Node(triton, peer_a, cfg, None, d / "cache", f"gs://e2e-gs/{PREFIX}")
        dt = node.load_ok(name)
        assert triton.infer_fp32(name, "INPUT0", X, "OUTPUT0") == [0.0, 1.0, 2.0, 3.0]
        assert _acquired_dir(triton, name).startswith("/tmp/folder")
        stats = peer_a.stats()
        print(f"\n[e2e] gs load {dt:.2f}s; peer origin_bytes={stats['origin_bytes']}")
        assert stats["origin_bytes"] >= 3 * MiB and stats["served_bytes"] >= 3 * MiB
    finally:
        triton.stop()


# ------------------------------------------------------------------------------------------
# 3. as:// on Azurite over TLS (private mount namespace)
# ------------------------------------------------------------------------------------------
def _namespaced_python(work: Path, hosts: Path) -> Path:
    """A 'python' that runs in its own mount namespace with ``hosts`` as /etc/hosts.

    The peer must resolve ``devstoreaccount1.blob.core.windows.net`` like Triton does; the
    host's /etc/hosts is not touched. ``unshare`` and ``sh`` exec, so the PID PeerProcess
    signals is the python process itself.
    """
    wrapper = work / "python-in-ns"
    wrapper.write_text(
        "#!/bin/sh\n"
        "exec unshare -m --propagation private sh -c 'mount --bind \"$0\" /etc/hosts && exec \"$@\"' "
        f"'{hosts}' '{sys.executable}' \"$@\"\n"
    )
    wrapper.chmod(0o755)
    return wrapper


def test_as_model_through_the_peer_over_tls(azurite_tls: Any, agents: Path, work: Path) -> None:
    name = "e2e_as"
    d = work / "node-as"
    src = d / "src"
    make_toy_model(src, name, add=10.0, payload_bytes=3 * MiB, agent=AGENT)
    upload_tree_azure(azurite_tls, "e2e-as", PREFIX, src)
    python = _namespaced_python(d, azurite_tls.hosts_file)
    with PeerProcess(d / "peer", python=str(python)) as peer:
        cfg = _write_json(d / "dragonfly_config.json", {"proxy": peer.url})
        creds = _write_json(d / "cloud_credential.json",
                            {"as": {"": {"account_str": azurite_tls.account, "account_key": azurite_tls.key}}})
        env = {
            "TRITON_DRAGONFLY_CONFIG_PATH": str(cfg),
            "TRITON_CLOUD_CREDENTIAL_PATH": str(creds),
            "DFREPO_CACHE_DIR": str(d / "cache"),
            # The agent lists with azure-storage-blob (requests): trust the test CA. Triton's
            # vendored libcurl reads the bind-mounted system bundle.
            "REQUESTS_CA_BUNDLE": str(azurite_tls.ca_bundle),
            "SSL_CERT_FILE": str(azurite_tls.ca_bundle),
        }
        repo = f"as://{azurite_tls.account}/e2e-as/{PREFIX}"
        triton = start_triton(d / "triton", repo, repoagent_dir=str(agents), env=env,
                              mounts=azurite_tls.triton_mounts())
        try:
            node = Node(triton, peer, cfg, creds, d / "cache", repo)
            dt = node.load_ok(name)
            assert triton.infer_fp32(name, "INPUT0", X, "OUTPUT0") == [11.0, 12.0, 13.0, 14.0]
            stats = peer.stats()
            print(f"\n[e2e] as load {dt:.2f}s; peer origin_bytes={stats['origin_bytes']}")
            assert stats["origin_bytes"] >= 3 * MiB and stats["served_bytes"] >= 3 * MiB
            assert azurite_tls.key not in triton.log()
        finally:
            triton.stop()


# ------------------------------------------------------------------------------------------
# 3b. an ensemble whose version directory is empty (only an S3 "1/" marker) -- issue #15
# ------------------------------------------------------------------------------------------
def test_ensemble_with_empty_version_dir(node_a: Node, s3: Any, work: Path) -> None:
    step, ens = "e2e_ens_step", "e2e_ens"
    _publish_s3(s3, work, step, add=7.0, size=2 * MiB)
    src = work / "src" / ens / ens
    src.mkdir(parents=True)
    (src / "config.pbtxt").write_text("\n".join([
        f'name: "{ens}"', 'platform: "ensemble"', "max_batch_size: 0",
        'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]',
        'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]',
        f'ensemble_scheduling {{ step [ {{ model_name: "{step}" model_version: -1 '
        'input_map { key: "INPUT0" value: "INPUT0" } output_map { key: "OUTPUT0" value: "OUTPUT0" } } ] }',
        f'model_repository_agents {{ agents [ {{ name: "{AGENT}" }} ] }}', ""]))
    upload_tree_s3(s3, BUCKET, PREFIX, src.parent)
    s3.client().put_object(Bucket=BUCKET, Key=f"{PREFIX}/{ens}/1/", Body=b"")  # the empty version dir
    node_a.load_ok(step)
    node_a.load_ok(ens)  # Triton refuses an ensemble without a version directory
    assert node_a.triton.infer_fp32(ens, "INPUT0", X, "OUTPUT0") == [v + 7.0 for v in X]
    for name in (ens, step):
        node_a.unload(name)


# ------------------------------------------------------------------------------------------
# 4. unload + reload: persistent cache; with the cache off, a local hit at the peer
# ------------------------------------------------------------------------------------------
def test_reload_served_by_cache_or_peer(node_a: Node, s3: Any, work: Path) -> None:
    cached, uncached = "e2e_reload", "e2e_nocache"
    _publish_s3(s3, work, cached, add=3.0, size=4 * MiB)
    _publish_s3(s3, work, uncached, add=4.0, size=4 * MiB, params={"cache": "off"})
    peer = node_a.peer
    for name in (cached, uncached):
        node_a.load_ok(name)
        first_dir = _acquired_dir(node_a.triton, name)
        node_a.unload(name)
        # Triton removes the acquired dir after UNLOAD_COMPLETE.
        assert wait_until(_removed(first_dir)), first_dir
        peer.reset_stats()
        s3.clear_log()
        node_a.load_ok(name)
        add = 3.0 if name == cached else 4.0
        assert node_a.triton.infer_fp32(name, "INPUT0", X, "OUTPUT0") == [v + add for v in X]
        assert _acquired_dir(node_a.triton, name) != first_dir
        stats = peer.stats()
        by_peer, by_others = _model_gets(s3, name)
        print(f"\n[e2e] reload {name}: peer served={stats['served_bytes']} origin={stats['origin_bytes']} "
              f"local_hits={stats['local_hits']}; store GETs peer={len(by_peer)} others={len(by_others)}")
        assert stats["origin_bytes"] == 0
        assert by_others == []
        if name == cached:
            assert stats["served_bytes"] == 0 and stats["p2p_requests"] == 0  # all hard links
            assert by_peer == []
        else:
            assert stats["served_bytes"] >= 4 * MiB  # every byte again, from the peer's store
            assert stats["local_hits"] >= 1
    assert any((node_a.cache_dir / "objects").rglob("*.json"))


# ------------------------------------------------------------------------------------------
# 5. two models loading at the same time
# ------------------------------------------------------------------------------------------
def test_two_models_load_concurrently(node_a: Node, s3: Any, work: Path) -> None:
    names = {"e2e_con1": 5.0, "e2e_con2": 6.0}
    for name, add in names.items():
        _publish_s3(s3, work, name, add=add, size=4 * MiB, params={"cache": "off"})
    results: dict[str, tuple[int, str]] = {}
    barrier = threading.Barrier(len(names))

    def load(name: str) -> None:
        barrier.wait()
        results[name] = node_a.triton.load(name)

    threads = [threading.Thread(target=load, args=(n,)) for n in names]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    print(f"\n[e2e] two concurrent loads: {time.monotonic() - t0:.2f}s")
    for name, add in names.items():
        assert results[name][0] == 200, (name, results[name], node_a.triton.log()[-3000:])
        node_a.loaded.add(name)
        assert node_a.triton.is_ready(name)
        assert node_a.triton.infer_fp32(name, "INPUT0", X, "OUTPUT0") == [v + add for v in X]
    assert _acquired_dir(node_a.triton, "e2e_con1") != _acquired_dir(node_a.triton, "e2e_con2")


# ------------------------------------------------------------------------------------------
# 6. a second node: remote-peer hit
# ------------------------------------------------------------------------------------------
def test_second_node_gets_model_from_first_peer(node_a: Node, s3: Any, agents: Path,
                                                 work: Path) -> None:
    name = "e2e_nodeb"
    _publish_s3(s3, work, name, add=7.0, size=8 * MiB)
    node_a.load_ok(name)  # peer A now holds every piece
    d = work / "node-b"
    d.mkdir()
    with PeerProcess(d / "peer-b", parent=node_a.peer.url) as peer_b:
        cfg = _write_json(d / "dragonfly_config.json", {"proxy": peer_b.url})
        env = {"TRITON_DRAGONFLY_CONFIG_PATH": str(cfg), "TRITON_CLOUD_CREDENTIAL_PATH": str(node_a.credentials),
               "DFREPO_CACHE_DIR": str(d / "cache"), "AWS_EC2_METADATA_DISABLED": "true"}
        triton = start_triton(d / "triton", node_a.repo_url, repoagent_dir=str(agents), env=env)
        try:
            node_b = Node(triton, peer_b, cfg, node_a.credentials, d / "cache", node_a.repo_url)
            s3.clear_log()
            dt = node_b.load_ok(name)
            assert triton.infer_fp32(name, "INPUT0", X, "OUTPUT0") == [v + 7.0 for v in X]
            stats = peer_b.stats()
            by_peer, by_others = _model_gets(s3, name)
            print(f"\n[e2e] node B load {dt:.2f}s: peer B origin={stats['origin_bytes']} "
                  f"parent={stats['parent_bytes']} traffic={stats['traffic']}; store GETs "
                  f"peer={len(by_peer)} others={len(by_others)}")
            # Like the real dfdaemon, peer B fetches files of <= 4 MiB (config.pbtxt,
            # labels.txt, model.py: a few KiB here) from the origin itself; the weights
            # come from its parent.
            assert stats["direct_small"] >= 3
            assert stats["origin_bytes"] < 1 * MiB
            assert stats["parent_bytes"] >= 8 * MiB
            assert stats["parent_failures"] == 0
            assert by_others == []
        finally:
            triton.stop()


# ------------------------------------------------------------------------------------------
# 7. failures: clear message, model not ready, server up, acquired dir removed
# ------------------------------------------------------------------------------------------
def _load_fails(node: Node, name: str, *, expect: tuple[str, ...], absent: tuple[str, ...] = ()) -> str:
    stages_before = _stage_dirs()
    with _FolderWatch() as watch:
        status, body = node.triton.load(name)
    assert status != 200, body
    assert f"failed to load '{name}'" in body
    assert not node.triton.is_ready(name)
    line = _agent_error(node.triton, name)
    print(f"\n[e2e] {name}: {line.strip()}")
    for text in expect:
        assert text in line, (text, line)
    log = node.triton.log()
    for text in absent:
        assert text not in log, f"{name}: secret-like text in the Triton log"
    assert node.triton.is_live()
    # Triton acquired a dir for the model (the agent asks before pulling) and removed it.
    assert watch.seen, "no /tmp/folder* appeared during the failed load"

    def left_behind() -> list[str]:
        return sorted(p for p in watch.seen if os.path.exists(p) and not _foreign_folder(p, name))

    assert wait_until(lambda: not left_behind(), 10), f"acquired dirs left behind: {left_behind()}"
    ours = [p for p in watch.seen if not _foreign_folder(p, name)]
    assert _stage_dirs_of(ours) - stages_before == set()
    print(f"[e2e] {name}: acquired {sorted(watch.seen)}, removed")
    return line


def test_failures_fail_only_their_model(node_a: Node, s3: Any, work: Path) -> None:
    import secrets_guard

    good = "e2e_good"
    _publish_s3(s3, work, good, add=9.0, size=2 * MiB)
    node_a.load_ok(good)  # also makes Triton core cache its (good) credentials
    node_a.unload(good)

    # -- a) bad credentials for the agent only ------------------------------------------------
    # Triton core caches the credential file on first use (is_cached_); the agent reads it on
    # every LOAD. A longer entry for this one model with a wrong secret reaches only dfrepo.
    name = "e2e_badcred"
    _publish_s3(s3, work, name, add=1.0, size=2 * MiB)
    wrong = "wrong-secret-" + os.urandom(8).hex()
    secrets_guard.extra_secrets(wrong)
    location = f"{node_a.repo_url}/{name}"
    original = node_a.credentials.read_text()  # type: ignore[union-attr]
    _write_json(node_a.credentials,  # type: ignore[arg-type]
                _s3_creds(s3, extra={location: {"key_id": s3.access_key, "secret_key": wrong,
                                                       "region": s3.region}}))
    try:
        line = _load_fails(node_a, name, expect=("credential",), absent=(wrong, s3.secret_key))
    finally:
        node_a.credentials.write_text(original)  # type: ignore[union-attr]
    assert "dfrepo agent 'dragonfly': LOAD of model 'e2e_badcred'" in line

    # -- b) an object deleted between the listing and its download ---------------------------
    # A private in-process peer deletes weights.bin from the store right before it stats it
    # (the listing already saw it): the origin answers 404 through the peer.
    name = "e2e_missing"
    with StandinPeer(work / "peer-missing") as vanish:
        _publish_s3(s3, work, name, add=1.0, size=2 * MiB, params={"proxy": vanish.url, "cache": "off"})
        real_stat = vanish.core.stat
        client = s3.client()

        def stat(url: str, headers: Any) -> Any:
            if "/weights.bin" in url.split("?", 1)[0]:
                client.delete_object(Bucket=BUCKET, Key=f"{PREFIX}/{name}/1/weights.bin")
            return real_stat(url, headers)

        vanish.core.stat = stat  # type: ignore[method-assign]
        line = _load_fails(node_a, name, expect=("404",))
    assert "weights.bin" in line and "X-Amz-Signature" not in line

    # -- c) peer down, fallback off (agent parameters) ----------------------------------------
    name = "e2e_peerdown"
    dead = f"http://127.0.0.1:{_closed_port()}"
    _publish_s3(s3, work, name, add=1.0, size=2 * MiB,
                params={"proxy": dead, "fallback": "false", "cache": "off"})
    s3.clear_log()
    line = _load_fails(node_a, name, expect=(dead.split("//")[1],))
    assert _model_gets(s3, name) == ([], []), "fallback off, yet something fetched model files"

    # -- d) corrupt dragonfly_config.json (trailing comma) ------------------------------------
    name = "e2e_badcfg"
    _publish_s3(s3, work, name, add=1.0, size=2 * MiB)
    good_cfg = node_a.dragonfly_config.read_text()
    node_a.dragonfly_config.write_text(f'{{"proxy": "{node_a.peer.url}",}}')
    try:
        _load_fails(node_a, name, expect=(str(node_a.dragonfly_config),))
    finally:
        node_a.dragonfly_config.write_text(good_cfg)

    # -- the server is fine: another model loads and infers -----------------------------------
    node_a.load_ok(good)
    assert node_a.triton.infer_fp32(good, "INPUT0", X, "OUTPUT0") == [v + 9.0 for v in X]
    assert node_a.triton.returncode is None


# ------------------------------------------------------------------------------------------
# 8. leak check over load/unload cycles
# ------------------------------------------------------------------------------------------
def test_load_unload_cycles_do_not_leak(node_a: Node, s3: Any, work: Path) -> None:
    name, cycles = "e2e_leak", 5
    _publish_s3(s3, work, name, add=2.0, size=4 * MiB)
    pid = node_a.triton.process.pid
    assert pid is not None
    stable_children = len(_children(pid))  # stubs of the models other cases left loaded (+ worker)

    def cycle() -> str:
        node_a.load_ok(name)
        assert node_a.triton.infer_fp32(name, "INPUT0", X, "OUTPUT0") == [v + 2.0 for v in X]
        acquired = _acquired_dir(node_a.triton, name)
        node_a.unload(name)
        assert wait_until(_removed(acquired), 10), acquired
        return acquired

    warm = cycle()  # warm-up: Triton's lazily created pools, the worker, the cache entry
    assert wait_until(lambda: len(_children(pid)) <= stable_children, 15)
    before, folders_before = _counts(pid), _tmp_folders()
    dirs = [cycle() for _ in range(cycles)]
    assert wait_until(lambda: len(_children(pid)) <= before["children"], 15)
    time.sleep(0.5)
    after = _counts(pid)
    print(f"\n[e2e] leak check, {cycles} load/unload cycles of {name}: before={before} after={after}")
    assert len(set(dirs)) == cycles  # a fresh acquired dir each time, each one removed
    assert after["threads"] <= before["threads"] + 4, (before, after)
    assert after["fds"] <= before["fds"] + 4, (before, after)
    assert after["children"] <= before["children"], (before, after)

    def new_folders() -> set[str]:  # other Tritons on the machine may add theirs meanwhile
        return {p for p in _tmp_folders() - folders_before if not _foreign_folder(p, name)}

    assert wait_until(lambda: not new_folders(), 10), (before, after, new_folders())
    assert _stage_dirs_of([warm, *dirs]) == set()
