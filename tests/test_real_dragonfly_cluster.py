"""Smoke tests of the *real* Dragonfly cluster fixture (scheduler v2.5.1 + dfdaemon 1.5.10).

Topology (``dragonfly_cluster``): scheduler on 127.0.0.1, seed peer 127.0.0.10 (``type: super``),
peers 127.0.0.21 and 127.0.0.22, each daemon with its own ports, storage and logs; origin is the
``nginx_origin`` fixture (answers ranges with 206). Requests go to a peer's HTTP proxy in absolute
form with ``X-Dragonfly-Use-P2P: true``, over plain ``http.client`` (no proxy environment).

Where the bytes came from is proven by the daemons' own counters
(``dragonfly_client_download_traffic{type=BACK_TO_SOURCE|REMOTE_PEER|LOCAL_PEER}`` on each
``:metrics/metrics``), the scheduler's log (peers registered per host) and nginx's access log
(what reached the origin, with the Range header of each request). Everything asserted below was
observed on this machine first; the docstrings record the observations.

Observed once for all tests:

* Response header names arrive Title-Cased on the wire (hyper ``title_case_headers``):
  ``X-Dragonfly-Task-Id`` (not ``-ID``), ``X-Dragonfly-Server-Ip``,
  ``X-Dragonfly-Task-Download-Finished``, and the origin's ``ETag`` becomes ``Etag``. A P2P
  response carries the origin headers captured when the task was created (Server, Date,
  Last-Modified, Etag, Content-Type), ``Content-Length`` of the whole object, no ``Accept-Ranges``.
* The task ID of a plain URL (no tag, application, piece-length header, query) is
  ``sha256(url + "STANDARD")``; piece length is 4 MiB for a 24 MiB object (6 pieces).
* Each peer that lacks the task's metadata sends one ``Range: bytes=0-0`` GET to the origin (nginx
  answers 206, 1 byte); the seed does too when the scheduler triggers it.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import time
import uuid
from dataclasses import dataclass

import pytest

from servers.dragonfly import DfdaemonHandle, DragonflyCluster
from servers.nginx import AccessEntry, NginxOrigin

pytestmark = pytest.mark.servers

MiB = 1024 * 1024
PIECE = 4 * MiB
SIZE = 24 * MiB
P2P = {"X-Dragonfly-Use-P2P": "true"}
TIMEOUT = 120.0
#: Counters are updated right after the body is sent; give them a moment before reading.
SETTLE = 0.5


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]  # as received, original case
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    @property
    def names(self) -> set[str]:
        return {k for k, _ in self.headers}


def proxy_get(
    daemon: DfdaemonHandle, url: str, headers: dict[str, str] | None = None, *, method: str = "GET"
) -> Reply:
    """Absolute-form request to the daemon's proxy (http.client: no env proxies, no retries)."""
    conn = http.client.HTTPConnection(daemon.ip, daemon.proxy_port, timeout=TIMEOUT)
    try:
        conn.request(method, url, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return Reply(resp.status, resp.getheaders(), body)
    finally:
        conn.close()


def put_object(origin: NginxOrigin, prefix: str, size: int = SIZE) -> tuple[str, str, bytes]:
    data = os.urandom(size)
    name = f"{prefix}-{uuid.uuid4().hex[:10]}.bin"
    (origin.root / name).write_bytes(data)
    return name, origin.url(name), data


def origin_log(origin: NginxOrigin, name: str) -> list[AccessEntry]:
    return [e for e in origin.access_entries() if e.request.split(" ")[1:2] == [f"/{name}"]]


def piece_range(i: int) -> str:
    return f"bytes={i * PIECE}-{(i + 1) * PIECE - 1}"


class Snapshot:
    """Traffic counters of every daemon, registrations per host and origin log length."""

    def __init__(self, cluster: DragonflyCluster, origin: NginxOrigin, name: str) -> None:
        time.sleep(SETTLE)
        self.traffic = {d.name: d.traffic() for d in cluster.daemons}
        self.upload = {d.name: d.upload_traffic() for d in cluster.daemons}
        self.registered = cluster.registered_peers_by_host()
        self.origin_len = len(origin_log(origin, name))
        self.cluster, self.origin, self.name = cluster, origin, name

    def delta(self) -> tuple[dict[str, dict[str, int]], dict[str, int], dict[str, int], list[AccessEntry]]:
        """(traffic delta by daemon, upload delta, registrations delta by host id, new origin entries)."""
        now = Snapshot(self.cluster, self.origin, self.name)
        traffic = {
            n: {t: now.traffic[n][t] - self.traffic[n][t] for t in now.traffic[n]} for n in now.traffic
        }
        upload = {n: now.upload[n] - self.upload[n] for n in now.upload}
        hosts = set(now.registered) | set(self.registered)
        registered = {h: now.registered.get(h, 0) - self.registered.get(h, 0) for h in hosts}
        registered = {h: c for h, c in registered.items() if c}
        return traffic, upload, registered, origin_log(self.origin, self.name)[self.origin_len :]


def no_traffic() -> dict[str, int]:
    return {"BACK_TO_SOURCE": 0, "REMOTE_PEER": 0, "LOCAL_PEER": 0}


# ---------------------------------------------------------------------------------------------


def test_cluster_topology(dragonfly_cluster: DragonflyCluster) -> None:
    """The fixture's cluster: separate loopback addresses, host IDs, sockets, seed known.

    Observed: cluster start ~30.4 s (scheduler ready 0.1 s; each dfdaemon ~3.7 s to listen, it
    samples system info first; then the scheduler's first seed refresh at exactly scheduler
    start + 30 s). Host IDs: seed ``127.0.0.10-dfrepo-seed-seed`` (seed peers get ``-seed``),
    peers ``127.0.0.21-dfrepo-peer-1``/``127.0.0.22-dfrepo-peer-2``. The seed-known signal: grpc-go
    channel lines for the seed's upload address in the scheduler's grpc.log at the 30 s tick and no
    "failed to check the healthy for seed peer" in core.log.
    """
    c = dragonfly_cluster
    assert c.seed is not None and len(c.peers) == 2
    assert [d.ip for d in c.daemons] == ["127.0.0.10", "127.0.0.21", "127.0.0.22"]
    assert c.seed.host_id == "127.0.0.10-dfrepo-seed-seed"
    assert [p.host_id for p in c.peers] == ["127.0.0.21-dfrepo-peer-1", "127.0.0.22-dfrepo-peer-2"]
    for d in c.daemons:
        assert d.is_alive() and d.healthy(), d.log_tail()
        assert d.proxy == f"http://{d.ip}:{d.proxy_port}"
        assert d.socket_path.is_socket() and len(str(d.socket_path)) < 108
        assert d.log_path.is_file()
        assert (d.storage_dir / "content" / "tasks").is_dir()
    assert c.scheduler.is_alive() and c.scheduler.healthy()
    assert c.scheduler.announced_hosts() >= {d.host_id for d in c.daemons}
    checks = c.scheduler.seed_health_checks(c.seed.upload_addr)
    assert checks and checks[0][1], checks
    assert c.started_in >= 29.0 and c.timings["seed_known"] >= 29.0, c.timings


def test_full_object_cold_remote_local(dragonfly_cluster: DragonflyCluster, nginx_origin: NginxOrigin) -> None:
    """24 MiB through peer1 (cold), then peer2, then peer1 again.

    Observed, peer1 cold (~0.6 s): 200, byte-exact, ``X-Dragonfly-Task-Id`` = sha256(url+"STANDARD"),
    ``X-Dragonfly-Server-Ip: 127.0.0.21``. The scheduler triggered the seed ("super seed peer
    triggers download task"): the *seed* went back to source (its BACK_TO_SOURCE +24 MiB) and
    peer1 got every piece from the seed (REMOTE_PEER +24 MiB, BACK_TO_SOURCE 0). Origin saw two
    ``bytes=0-0`` stats (peer1's and the seed's) and the 6 piece-aligned 4 MiB ranges, once each.
    Scheduler registrations: peer1 +1, seed +1 (core.log "receive RegisterPeerRequest" per hostID;
    ``dragonfly_scheduler_register_peer_total{host_type="normal"|"super",priority="LEVEL6",
    task_type="STANDARD"}`` +1 each; ``dragonfly_scheduler_traffic{type="BACK_TO_SOURCE",
    host_type="super"}`` +24 MiB).

    peer2 (~0.1 s): 200, byte-exact, REMOTE_PEER +24 MiB (scheduler host_traffic showed it came
    from both the seed and peer1), origin saw only its ``bytes=0-0`` stat; registrations peer2 +1.

    peer1 again (~0.01 s): 200, byte-exact, LOCAL_PEER +24 MiB, header
    ``X-Dragonfly-Task-Download-Finished: true``, nothing to the origin, and *no* new registration
    with the scheduler (a full local hit does not announce a peer).
    """
    c, origin = dragonfly_cluster, nginx_origin
    assert c.seed is not None
    peer1, peer2 = c.peers
    name, url, data = put_object(origin, "full")

    # -- peer1, cold ---------------------------------------------------------------------------
    reg = "dragonfly_scheduler_register_peer_total"
    sched_before = (c.scheduler_metric(reg, host_type="normal"), c.scheduler_metric(reg, host_type="super"))
    b2s_before = c.scheduler_metric("dragonfly_scheduler_traffic", type="BACK_TO_SOURCE", host_type="super")
    snap = Snapshot(c, origin, name)
    r = proxy_get(peer1, url, P2P)
    assert r.status == 200
    assert len(r.body) == SIZE and r.body == data
    task_id = r.header("X-Dragonfly-Task-ID")
    assert task_id == hashlib.sha256((url + "STANDARD").encode()).hexdigest()
    assert {"X-Dragonfly-Task-Id", "X-Dragonfly-Server-Ip"} <= r.names, r.headers  # exact wire casing
    assert r.header("X-Dragonfly-Server-IP") == peer1.ip
    assert r.header("Content-Length") == str(SIZE)
    assert r.header("X-Dragonfly-Task-Download-Finished") is None
    traffic, upload, registered, new = snap.delta()
    assert traffic["seed"] == {**no_traffic(), "BACK_TO_SOURCE": SIZE}
    assert traffic["peer1"] == {**no_traffic(), "REMOTE_PEER": SIZE}
    assert traffic["peer2"] == no_traffic()
    assert upload["seed"] == SIZE
    assert registered == {peer1.host_id: 1, c.seed.host_id: 1}
    sched_after = (c.scheduler_metric(reg, host_type="normal"), c.scheduler_metric(reg, host_type="super"))
    assert (sched_after[0] - sched_before[0], sched_after[1] - sched_before[1]) == (1, 1)
    b2s = c.scheduler_metric("dragonfly_scheduler_traffic", type="BACK_TO_SOURCE", host_type="super")
    assert b2s - b2s_before == SIZE
    stats = [e for e in new if e.range == "bytes=0-0"]
    pieces = [e for e in new if e.range != "bytes=0-0"]
    assert len(stats) == 2 and all(e.status == 206 and e.body_bytes == 1 for e in stats), new
    assert sorted(e.range for e in pieces) == sorted(piece_range(i) for i in range(SIZE // PIECE)), new
    assert all(e.status == 206 and e.body_bytes == PIECE for e in pieces)
    for d in (c.seed, peer1):
        content = d.task_content_path(task_id)
        assert content.is_file() and content.read_bytes() == data, d.name
    assert not peer2.task_content_path(task_id).exists()

    # -- peer2: from the peers, not from the origin ---------------------------------------------
    snap = Snapshot(c, origin, name)
    r = proxy_get(peer2, url, P2P)
    assert r.status == 200 and r.body == data
    assert r.header("X-Dragonfly-Task-Id") == task_id and r.header("X-Dragonfly-Server-Ip") == peer2.ip
    traffic, upload, registered, new = snap.delta()
    assert traffic["peer2"] == {**no_traffic(), "REMOTE_PEER": SIZE}
    assert traffic["seed"] == no_traffic() and traffic["peer1"] == no_traffic()
    assert upload["seed"] + upload["peer1"] == SIZE
    assert registered == {peer2.host_id: 1}
    assert [(e.range, e.status, e.body_bytes) for e in new] == [("bytes=0-0", 206, 1)]  # no second download
    assert peer2.task_content_path(task_id).read_bytes() == data

    # -- peer1 again: local cache ---------------------------------------------------------------
    snap = Snapshot(c, origin, name)
    r = proxy_get(peer1, url, P2P)
    assert r.status == 200 and r.body == data
    assert r.header("X-Dragonfly-Task-Download-Finished") == "true"
    assert "X-Dragonfly-Task-Download-Finished" in r.names
    traffic, upload, registered, new = snap.delta()
    assert traffic["peer1"] == {**no_traffic(), "LOCAL_PEER": SIZE}
    assert traffic["seed"] == no_traffic() and traffic["peer2"] == no_traffic()
    assert new == []
    assert registered == {}


def test_range_6mib_through_proxy(dragonfly_cluster: DragonflyCluster, nginx_origin: NginxOrigin) -> None:
    """A 6 MiB range (> 4 MiB, so it is scheduled P2P) of a cold 24 MiB object.

    Observed, piece-aligned ``bytes=4194304-10485759`` via peer1 (~0.6 s): **206**,
    ``Content-Range: bytes 4194304-10485759/25165824``, ``Content-Length: 6291456``, byte-exact.
    The seed was triggered with the *range*: it fetched only the two covering pieces from the
    origin (BACK_TO_SOURCE +8 MiB), peer1 got them from the seed (REMOTE_PEER +8 MiB); origin saw
    two ``bytes=0-0`` stats and ``bytes=4194304-8388607``, ``bytes=8388608-12582911``.
    Then an unaligned 6 MiB range ``bytes=5242883-11534338`` via peer2: 206, exact Content-Range,
    REMOTE_PEER +8 MiB (same two pieces), only a stat reached the origin.
    """
    c, origin = dragonfly_cluster, nginx_origin
    assert c.seed is not None
    peer1, peer2 = c.peers
    name, url, data = put_object(origin, "range6")

    start, end = 4 * MiB, 10 * MiB - 1
    snap = Snapshot(c, origin, name)
    r = proxy_get(peer1, url, {**P2P, "Range": f"bytes={start}-{end}"})
    assert r.status == 206
    assert r.header("Content-Range") == f"bytes {start}-{end}/{SIZE}"
    assert r.header("Content-Length") == str(end - start + 1)
    assert r.body == data[start : end + 1]
    assert r.header("X-Dragonfly-Task-Id") == hashlib.sha256((url + "STANDARD").encode()).hexdigest()
    traffic, _, registered, new = snap.delta()
    assert traffic["seed"] == {**no_traffic(), "BACK_TO_SOURCE": 2 * PIECE}
    assert traffic["peer1"] == {**no_traffic(), "REMOTE_PEER": 2 * PIECE}
    assert registered == {peer1.host_id: 1, c.seed.host_id: 1}
    assert sorted(e.range for e in new) == sorted(["bytes=0-0", "bytes=0-0", piece_range(1), piece_range(2)]), new

    start, end = 5 * MiB + 3, 11 * MiB + 2
    snap = Snapshot(c, origin, name)
    r = proxy_get(peer2, url, {**P2P, "Range": f"bytes={start}-{end}"})
    assert r.status == 206
    assert r.header("Content-Range") == f"bytes {start}-{end}/{SIZE}"
    assert r.body == data[start : end + 1]
    traffic, _, registered, new = snap.delta()
    assert traffic["peer2"] == {**no_traffic(), "REMOTE_PEER": 2 * PIECE}
    assert traffic["seed"] == no_traffic() and traffic["peer1"] == no_traffic()
    assert registered == {peer2.host_id: 1}
    assert [e.range for e in new] == ["bytes=0-0"]


def test_small_range_goes_to_origin(dragonfly_cluster: DragonflyCluster, nginx_origin: NginxOrigin) -> None:
    """A range of <= 4 MiB skips the scheduler and is fetched from the origin by the peer itself.

    Observed, ``bytes=1048576-2097151`` (1 MiB) of a cold 24 MiB object via peer1 (~0.01 s):
    206, ``Content-Range: bytes 1048576-2097151/25165824``, byte-exact; peer1 BACK_TO_SOURCE
    +4 MiB: the origin saw a ``bytes=0-0`` stat and then the whole covering *piece*
    ``bytes=0-4194303`` (not the client's range); no peer registered with the scheduler and the
    seed did nothing.
    """
    c, origin = dragonfly_cluster, nginx_origin
    peer1 = c.peers[0]
    name, url, data = put_object(origin, "range1")
    start, end = MiB, 2 * MiB - 1
    snap = Snapshot(c, origin, name)
    r = proxy_get(peer1, url, {**P2P, "Range": f"bytes={start}-{end}"})
    assert r.status == 206
    assert r.header("Content-Range") == f"bytes {start}-{end}/{SIZE}"
    assert r.body == data[start : end + 1]
    traffic, _, registered, new = snap.delta()
    assert traffic["peer1"] == {**no_traffic(), "BACK_TO_SOURCE": PIECE}
    assert traffic["seed"] == no_traffic() and traffic["peer2"] == no_traffic()
    assert registered == {}
    assert [(e.range, e.body_bytes) for e in new] == [("bytes=0-0", 1), (piece_range(0), PIECE)]


def test_full_get_after_range_on_same_peer(dragonfly_cluster: DragonflyCluster, nginx_origin: NginxOrigin) -> None:
    """A finished *range* download marks the task finished on that peer.

    Observed: after a 6 MiB range via peer2 (pieces 1-2 cached), a full GET via peer2 answered
    200, byte-exact, **with** ``X-Dragonfly-Task-Download-Finished: true`` although 4 of 6 pieces
    were missing; peer2 registered metadata-only with the scheduler (seed not triggered) and
    fetched the 4 missing pieces itself from the origin (BACK_TO_SOURCE +16 MiB, no stat),
    LOCAL_PEER +8 MiB. So mixing ranges and full GETs of one URL on one peer sends the rest to the
    origin directly, not through the seed.
    """
    c, origin = dragonfly_cluster, nginx_origin
    peer2 = c.peers[1]
    name, url, data = put_object(origin, "rangefull")
    r = proxy_get(peer2, url, {**P2P, "Range": f"bytes={4 * MiB}-{10 * MiB - 1}"})
    assert r.status == 206 and r.body == data[4 * MiB : 10 * MiB]
    snap = Snapshot(c, origin, name)
    r = proxy_get(peer2, url, P2P)
    assert r.status == 200 and r.body == data
    assert r.header("X-Dragonfly-Task-Download-Finished") == "true"
    traffic, _, registered, new = snap.delta()
    assert traffic["peer2"] == {"BACK_TO_SOURCE": 4 * PIECE, "REMOTE_PEER": 0, "LOCAL_PEER": 2 * PIECE}
    assert traffic["seed"] == no_traffic()
    assert registered == {peer2.host_id: 1}
    assert sorted(e.range for e in new) == sorted(piece_range(i) for i in (0, 3, 4, 5)), new


def test_passthrough_and_origin_errors(dragonfly_cluster: DragonflyCluster, nginx_origin: NginxOrigin) -> None:
    """What is *not* P2P, and an origin error on the P2P path.

    Observed: HEAD (even with ``X-Dragonfly-Use-P2P: true``) and a GET without the header are
    passed to the origin: nginx's own headers (``ETag``, ``Accept-Ranges: bytes``), no
    ``X-Dragonfly-*`` header, no traffic counted. A P2P GET of a missing object: 404 with the
    origin's headers plus ``X-Dragonfly-Error-Type: backend`` and an empty body
    (``Content-Length: 0``).
    """
    c, origin = dragonfly_cluster, nginx_origin
    peer1 = c.peers[0]
    name, url, data = put_object(origin, "pass", size=MiB)
    before = peer1.traffic()
    r = proxy_get(peer1, url, P2P, method="HEAD")
    assert r.status == 200 and r.body == b""
    assert r.header("Accept-Ranges") == "bytes" and "ETag" in r.names
    assert not any(k.lower().startswith("x-dragonfly-") for k in r.names)
    r = proxy_get(peer1, url)
    assert r.status == 200 and r.body == data
    assert not any(k.lower().startswith("x-dragonfly-") for k in r.names)
    time.sleep(SETTLE)
    assert peer1.traffic() == before
    assert [e.range for e in origin_log(origin, name)] == ["", ""]

    r = proxy_get(peer1, origin.url(f"missing-{uuid.uuid4().hex}.bin"), P2P)
    assert r.status == 404
    assert r.header("X-Dragonfly-Error-Type") == "backend"
    assert r.body == b"" and r.header("Content-Length") == "0"


def test_kill_and_restart_peer(dragonfly_cluster: DragonflyCluster, nginx_origin: NginxOrigin) -> None:
    """SIGKILL peer1 and restart it with the same config (runs last: it empties peer1's cache).

    Observed: peer1 served pieces to peer2 over its storage TCP port just before; after the kill
    that port stays in TIME_WAIT and, since dfdaemon's storage TCP server binds without
    SO_REUSEADDR, a restart on the same port exits at once with "Error: Address already in use
    (os error 98)" (seen when developing this fixture). ``restart()`` moves only such a port
    (``port_changes``); the proxy, upload, health and metrics ports stay. Restart to healthy ~3.7 s.
    ``storage.keep`` is false (upstream default): the cache is gone, the counters restart from 0,
    and the object comes back from the other peers (REMOTE_PEER = whole object).
    """
    c, origin = dragonfly_cluster, nginx_origin
    peer1, peer2 = c.peers
    name, url, data = put_object(origin, "restart")
    r = proxy_get(peer1, url, P2P)
    assert r.status == 200 and r.body == data
    task_id = r.header("X-Dragonfly-Task-Id")
    assert task_id is not None and peer1.task_content_path(task_id).is_file()
    snap = Snapshot(c, origin, name)
    r = proxy_get(peer2, url, P2P)
    assert r.status == 200 and r.body == data
    _, upload, _, _ = snap.delta()
    assert upload["seed"] + upload["peer1"] == SIZE
    ports, pid = dict(peer1.ports), peer1.pid

    peer1.kill()
    assert not peer1.is_alive() and not peer1.healthy()
    storage_busy = not peer1._port_bindable("storage_tcp", ports["storage_tcp"])
    t0 = time.monotonic()
    peer1.restart()
    took = time.monotonic() - t0
    assert took < 30
    assert peer1.is_alive() and peer1.healthy() and peer1.pid != pid
    moved = [n for n, _, _ in peer1.port_changes]
    assert moved == (["storage_tcp"] if storage_busy else []), (peer1.port_changes, upload)
    assert {n: p for n, p in peer1.ports.items() if n != "storage_tcp"} == {
        n: p for n, p in ports.items() if n != "storage_tcp"
    }
    print(f"restart: {took:.1f}s, storage port busy after kill: {storage_busy}, peer1 uploaded {upload['peer1']} B")
    assert not peer1.task_content_path(task_id).exists()  # storage.keep: false

    r = proxy_get(peer1, url, P2P)
    assert r.status == 200 and r.body == data
    time.sleep(SETTLE)
    assert peer1.traffic() == {**no_traffic(), "REMOTE_PEER": SIZE}
