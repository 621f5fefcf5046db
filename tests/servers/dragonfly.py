"""A real Dragonfly cluster on loopback: scheduler + seed peer + N peers (no manager, no Redis).

The binaries come from ``scripts/build-dragonfly.sh`` (built once per machine, outside the
checkout, versions pinned in ``scripts/dragonfly-versions.env``). Missing binaries raise
:class:`DragonflyBinariesMissing`, which the ``dragonfly_cluster`` fixture turns into a test
*failure* (not a skip) telling you to run the script.

Topology and why each setting is there (schemas read from the upstream sources of the pinned
versions: ``d7y.io/dragonfly/v2@v2.5.1`` ``scheduler/config/*.go``, ``cmd/scheduler``, and crate
``dragonfly-client-config`` 1.5.10 ``src/dfdaemon.rs`` + ``dragonfly-client`` 1.5.10
``src/bin/dfdaemon/main.rs``):

* scheduler on 127.0.0.1 (``server.listenIP``/``advertiseIP``; defaults are 0.0.0.0 and the first
  non-loopback IP), a free gRPC port, ``job.enable: false`` (the job queue needs Redis),
  ``manager`` omitted (then the scheduler reads its *local dynconfig*, passed explicitly with
  ``--dynconfig``: its default ``/etc/dragonfly/dynconfig.yaml`` is also the daemon's default path,
  with another schema), ``metrics.enable`` on a free port with ``enableHost`` (per-host traffic).
* every daemon on its own loopback address (seed 127.0.0.10, peers 127.0.0.21, .22, ...): the
  same address is ``host.ip`` and the ``ip`` of every listener (upload gRPC, proxy, health,
  metrics, stats, storage TCP/QUIC), each port picked free on that address; its own
  ``host.hostname``, ``download.server.socketPath`` (short: unix paths are limited to 107 bytes),
  ``storage.dir``, ``server.cacheDir``, ``server.pluginDir``, ``--log-dir`` and ``--dynconfig``
  (``scheduler: {addrs: [...]}``: the daemon health-checks these schedulers at start and exits if
  none answers).
* ``backend.enableHickoryDNS: false`` (system resolver; origins are IP literals anyway).
* ``gc.policy.diskThreshold``: with it set, dfdaemon measures *its own* content directory against
  that size instead of the whole (shared) file system, so it neither evicts because the shared disk
  is 80 % full nor lets tests fill it (``content_linux.rs`` ``available_space``/``total_space``).
* ``server.adaptiveRateLimit: null``: 1.5.10 sheds gRPC requests when the *machine's* memory use
  exceeds 90 % (BBR limiter, on by default); on a shared CI box that would make tests flaky.
* seed: ``seedPeer: {enable: true, type: super}``; its host ID gets a ``-seed`` suffix.

The scheduler refreshes its seed-peer list on a fixed 30 s ticker that starts with the process
(``SeedPeerRefreshInterval`` is a Go constant in ``scheduler/resource/standard/seed_peer.go``; no
setting changes it) and the first tick is 30 s after start, so a cluster start costs >= 30 s.
Until then the first peer of a task goes back to the origin itself. The refresh health-checks each
announced seed (gRPC ``grpc.health.v1.Health/Check`` on its upload port) and puts the healthy ones
in its hash ring. In a manager-less scheduler nothing else dials a seed before the first download,
so grpc-go's channel lines for the seed's address in the scheduler's ``grpc.log`` ("Channel created
for target ..." then "Channel deleted"), with no "failed to check the healthy for seed peer" error
in ``core.log``, are the "seed is known" signal used here. (The ``grpc_zap`` "finished client unary
call" line would be nicer but is logged at debug for code OK.)
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .procs import REPO_ROOT, ManagedProcess, ServerStartError, clean_env, free_port, http_status, port_open

__all__ = [
    "DEFAULT_FIRST_PEER_IP",
    "DEFAULT_SEED_IP",
    "DfdaemonHandle",
    "DragonflyBinaries",
    "DragonflyBinariesMissing",
    "DragonflyCluster",
    "MetricSample",
    "SchedulerHandle",
    "dragonfly_home",
    "dragonfly_versions",
    "find_dragonfly_binaries",
    "parse_prometheus",
    "start_dragonfly_cluster",
]

VERSIONS_FILE = REPO_ROOT / "scripts" / "dragonfly-versions.env"
DEFAULT_SEED_IP = "127.0.0.10"
DEFAULT_FIRST_PEER_IP = "127.0.0.21"
SCHEDULER_IP = "127.0.0.1"
#: The scheduler's seed refresh period (Go constant, not configurable in v2.5.1).
SEED_REFRESH_INTERVAL = 30.0
#: Traffic types of ``dragonfly_client_download_traffic`` (proto ``TrafficType`` names).
TRAFFIC_TYPES = ("BACK_TO_SOURCE", "REMOTE_PEER", "LOCAL_PEER")
_MAX_UNIX_PATH = 100  # sun_path is 108 bytes incl. NUL; keep a margin

_BUILD_HINT = (
    "run scripts/build-dragonfly.sh (builds the pinned scheduler and dfdaemon once per machine, "
    "outside the checkout; the dfdaemon Rust build takes tens of minutes)"
)


# -- binaries ------------------------------------------------------------------------------


class DragonflyBinariesMissing(RuntimeError):
    """The pinned Dragonfly binaries are not built on this machine (message says how to build)."""


@dataclass(frozen=True)
class DragonflyBinaries:
    home: Path
    client_version: str
    scheduler_version: str

    @property
    def bin_dir(self) -> Path:
        return self.home / "bin"

    @property
    def scheduler(self) -> Path:
        return self.bin_dir / "scheduler"

    @property
    def dfdaemon(self) -> Path:
        return self.bin_dir / "dfdaemon"

    @property
    def dfget(self) -> Path:
        return self.bin_dir / "dfget"


def dragonfly_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """``KEY=value`` pairs of ``scripts/dragonfly-versions.env`` (comments and blanks ignored)."""
    out: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or "=" not in line:
            continue
        key, value = line.split("=", 1)
        out[key.strip().removeprefix("export ").strip()] = value.strip().strip("'\"")
    return out


def dragonfly_home(versions: Mapping[str, str] | None = None) -> Path:
    """Where build-dragonfly.sh installs: ``$DFREPO_DRAGONFLY_HOME`` or the per-machine cache."""
    env = os.environ.get("DFREPO_DRAGONFLY_HOME")
    if env:
        return Path(env)
    v = versions if versions is not None else dragonfly_versions()
    return Path.home() / ".cache" / "dfrepo" / (
        f"dragonfly-{v['DRAGONFLY_CLIENT_VERSION']}-{v['DRAGONFLY_SCHEDULER_VERSION']}"
    )


def find_dragonfly_binaries() -> DragonflyBinaries:
    """The built binaries, or :class:`DragonflyBinariesMissing` naming what is missing."""
    versions = dragonfly_versions()
    bins = DragonflyBinaries(
        dragonfly_home(versions),
        versions["DRAGONFLY_CLIENT_VERSION"],
        versions["DRAGONFLY_SCHEDULER_VERSION"],
    )
    missing = []
    # The build script writes a .done marker after each successful build; a binary without
    # its marker is a build that is still running or was interrupted.
    for exe, marker in ((bins.scheduler, ".scheduler.done"), (bins.dfdaemon, ".client.done")):
        if not (exe.is_file() and os.access(exe, os.X_OK)):
            missing.append(str(exe))
        elif not (bins.home / marker).is_file():
            missing.append(f"{bins.home / marker} (build still running or interrupted?)")
    if missing:
        raise DragonflyBinariesMissing(
            f"Dragonfly binaries (dfdaemon {bins.client_version}, scheduler {bins.scheduler_version}) "
            f"missing: {', '.join(missing)}; {_BUILD_HINT}"
        )
    return bins


# -- prometheus text ------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricSample:
    name: str
    labels: Mapping[str, str]
    value: float


_SAMPLE_RE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$")
_LABEL_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> list[MetricSample]:
    """Samples of a Prometheus text exposition (comments skipped, NaN kept as float nan)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line)
        if not m:
            continue
        name, raw_labels, raw_value = m.groups()
        labels = {
            k: v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
            for k, v in _LABEL_RE.findall(raw_labels or "")
        }
        try:
            value = float(raw_value)
        except ValueError:
            continue
        out.append(MetricSample(name, labels, value))
    return out


def _sum_metric(samples: Iterable[MetricSample], name: str, labels: Mapping[str, str]) -> float:
    return sum(
        s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def _http_get_text(url: str, timeout: float = 5.0) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as resp:
        return resp.read().decode("utf-8", errors="replace")


# -- small helpers ---------------------------------------------------------------------------


def _write_config(path: Path, data: Mapping[str, Any]) -> None:
    """YAML is a superset of JSON: both serde_yaml and viper read this, no PyYAML needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def _free_udp_port(host: str, avoid: set[int]) -> int:
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in avoid:
            return port
    raise ServerStartError(f"no free UDP port on {host}")


def _free_ports(host: str, names: Sequence[str]) -> dict[str, int]:
    """Distinct free TCP ports on ``host`` (free_port's picks could repeat once released)."""
    out: dict[str, int] = {}
    for name in names:
        for _ in range(100):
            port = free_port(host)
            if port not in out.values():
                out[name] = port
                break
        else:
            raise ServerStartError(f"no free TCP port on {host}")
    return out


def _grpc_health_serving(addr: str, timeout: float = 2.0) -> bool:
    """``grpc.health.v1.Health/Check`` with an empty service name answers SERVING.

    Uses grpcio's generic unary call with raw bytes (no generated stubs needed): the request
    ``HealthCheckRequest{}`` is empty and ``HealthCheckResponse{status: SERVING}`` is ``08 01``.
    Without grpcio installed, an open port is taken as ready.
    """
    try:
        import grpc
    except ImportError:  # pragma: no cover - grpcio is in the test extras
        host, _, port = addr.rpartition(":")
        return port_open(int(port), host)
    try:
        with grpc.insecure_channel(addr, options=[("grpc.enable_http_proxy", 0)]) as channel:
            check = channel.unary_unary("/grpc.health.v1.Health/Check")
            return bytes(check(b"", timeout=timeout)) == b"\x08\x01"
    except grpc.RpcError:
        return False


_CHANNEL_CREATED_RE = re.compile(r'^\[core\]\[Channel #(\d+)\] Channel created for target "([^"]+)"$')
_CHANNEL_DELETED_RE = re.compile(r"^\[core\]\[Channel #(\d+)\] Channel deleted$")
_GO_TS = "%Y-%m-%d %H:%M:%S.%f"


def _ts_plus(ts: str, seconds: float) -> str:
    """A zap timestamp (``2026-12-02 08:55:40.683``) plus ``seconds``, same format."""
    try:
        t = datetime.datetime.strptime(ts, _GO_TS) + datetime.timedelta(seconds=seconds)
    except ValueError:
        return ts
    return t.strftime(_GO_TS)[:-3]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"(no {path})"


def _json_lines(path: Path) -> Iterable[dict[str, Any]]:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            yield json.loads(line)
        except ValueError:
            continue


# -- scheduler -------------------------------------------------------------------------------


@dataclass
class SchedulerHandle:
    """The running scheduler (gRPC on ``ip:port``, Prometheus on ``ip:metrics_port``)."""

    process: ManagedProcess
    ip: str
    port: int
    metrics_port: int
    workdir: Path
    config_path: Path
    dynconfig_path: Path
    log_dir: Path

    @property
    def addr(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.ip}:{self.metrics_port}/metrics"

    @property
    def core_log_path(self) -> Path:
        return self.log_dir / "scheduler" / "core.log"

    @property
    def grpc_log_path(self) -> Path:
        return self.log_dir / "scheduler" / "grpc.log"

    @property
    def log_path(self) -> Path:
        return self.core_log_path

    def is_alive(self) -> bool:
        return self.process.alive()

    def core_log_tail(self, lines: int = 40) -> str:
        return f"--- {self.core_log_path} (tail) ---\n{_tail(self.core_log_path, lines)}"

    def healthy(self) -> bool:
        return _grpc_health_serving(self.addr)

    def metrics(self) -> list[MetricSample]:
        return parse_prometheus(_http_get_text(self.metrics_url))

    def metric(self, name: str, **labels: str) -> float:
        """Sum of ``name`` over samples whose labels include ``labels`` (0.0 if absent)."""
        return _sum_metric(self.metrics(), name, labels)

    def registered_peers_total(self, **labels: str) -> float:
        """``dragonfly_scheduler_register_peer_total`` (labels priority, task_type, host_type)."""
        return self.metric("dragonfly_scheduler_register_peer_total", **labels)

    def registered_peers_by_host(self) -> dict[str, int]:
        """Peers registered per host ID, from core.log "receive RegisterPeerRequest" lines.

        The scheduler's metric has no host label; the log line carries ``hostID``. Every
        download (every proxy request, every range) registers a new peer.
        """
        counts: dict[str, int] = {}
        for rec in _json_lines(self.core_log_path):
            if str(rec.get("msg", "")).startswith("receive RegisterPeerRequest"):
                host = str(rec.get("hostID", ""))
                counts[host] = counts.get(host, 0) + 1
        return counts

    def announced_hosts(self) -> set[str]:
        """Host IDs the scheduler logged an AnnounceHost request for."""
        hosts = set()
        for rec in _json_lines(self.core_log_path):
            if str(rec.get("msg", "")).startswith("announce host request"):
                hosts.add(str(rec.get("hostID", "")))
        return hosts

    def seed_health_checks(self, seed_addr: str) -> list[tuple[str, bool]]:
        """The scheduler's seed-refresh health checks of ``seed_addr`` as ``(start_ts, ok)``.

        The refresh (``seed_peer.go`` ``refresh``) dials each announced seed's upload address,
        calls ``grpc.health.v1.Health/Check`` and closes the channel; on failure core.log gets
        "failed to check the healthy for seed peer <addr>: ..." (after the close). Its
        ``grpc_zap`` client line is logged at *debug* for code OK, so at info the check is seen
        through grpc-go's own channel lines in grpc.log ("Channel created for target" ... "Channel
        deleted"). Before any download nothing else in the scheduler dials a seed. At debug level
        the "finished client unary call" line (code OK) is taken as well.
        """
        created: dict[str, str] = {}
        spans: list[tuple[str, str]] = []
        debug_ok: list[str] = []
        for rec in _json_lines(self.grpc_log_path):
            msg = str(rec.get("msg", ""))
            ts = str(rec.get("ts", ""))
            m = _CHANNEL_CREATED_RE.match(msg)
            if m and m.group(2) == seed_addr:
                created[m.group(1)] = ts
                continue
            m = _CHANNEL_DELETED_RE.match(msg)
            if m and m.group(1) in created:
                spans.append((created.pop(m.group(1)), ts))
                continue
            if (
                msg == "finished client unary call"
                and rec.get("grpc.service") == "grpc.health.v1.Health"
                and rec.get("grpc.code") == "OK"
            ):
                debug_ok.append(ts)
        failures = [
            str(rec.get("ts", ""))
            for rec in _json_lines(self.core_log_path)
            if str(rec.get("msg", "")).startswith(f"failed to check the healthy for seed peer {seed_addr}")
        ]
        out = []
        for start, end in spans:
            # A failure is logged right after the channel is closed, before the next tick (30 s).
            ok = not any(start <= f <= _ts_plus(end, 5.0) for f in failures)
            out.append((start, ok))
        out.extend((ts, True) for ts in debug_ok)
        return sorted(out)

    def seed_known(self, seed_addr: str) -> bool:
        """True once a seed-refresh health check of ``seed_addr`` succeeded (seed in hash ring)."""
        return any(ok for _, ok in self.seed_health_checks(seed_addr))

    def stop(self) -> None:
        self.process.stop()


# -- dfdaemon --------------------------------------------------------------------------------


@dataclass
class DfdaemonHandle:
    """One dfdaemon (seed or peer) with its own loopback address, ports, storage and logs."""

    name: str
    ip: str
    hostname: str
    is_seed: bool
    ports: dict[str, int]
    workdir: Path
    config_path: Path
    dynconfig_path: Path
    storage_dir: Path
    log_dir: Path
    socket_path: Path
    binary: Path
    log_level: str
    env: dict[str, str]
    config_options: dict[str, Any] = field(default_factory=dict)
    process: ManagedProcess | None = None
    restarts: int = 0
    port_changes: list[tuple[str, int, int]] = field(default_factory=list)

    # -- addresses -------------------------------------------------------------------------
    @property
    def host_id(self) -> str:
        """``{ip}-{hostname}``; seed peers add ``-seed`` (dragonfly-client-util IDGenerator)."""
        base = f"{self.ip}-{self.hostname}"
        return f"{base}-seed" if self.is_seed else base

    @property
    def proxy_port(self) -> int:
        return self.ports["proxy"]

    @property
    def proxy(self) -> str:
        return f"http://{self.ip}:{self.proxy_port}"

    @property
    def url(self) -> str:
        """The proxy URL under the stand-in peer's name for it (``StandinPeer.url``), so a
        test can take either peer."""
        return self.proxy

    @property
    def upload_addr(self) -> str:
        return f"{self.ip}:{self.ports['upload']}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.ip}:{self.ports['metrics']}/metrics"

    @property
    def health_url(self) -> str:
        return f"http://{self.ip}:{self.ports['health']}/healthy"

    @property
    def log_path(self) -> Path:
        """dfdaemon's own log (``--log-dir``/dfdaemon.log); stdout/stderr go to ``stdout_path``."""
        return self.log_dir / "dfdaemon.log"

    @property
    def stdout_path(self) -> Path:
        return self.workdir / "stdout.log"

    def task_content_path(self, task_id: str) -> Path:
        """Where the task's content lives (``content_linux.rs`` ``get_task_path``)."""
        return self.storage_dir / "content" / "tasks" / task_id[:3] / task_id

    # -- state -----------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def is_alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def healthy(self) -> bool:
        return http_status(self.health_url, timeout=1.0) == 200

    def metrics(self) -> list[MetricSample]:
        return parse_prometheus(_http_get_text(self.metrics_url))

    def metric(self, name: str, **labels: str) -> float:
        """Sum of ``name`` over samples whose labels include ``labels`` (0.0 if absent)."""
        return _sum_metric(self.metrics(), name, labels)

    def traffic(self) -> dict[str, int]:
        """``dragonfly_client_download_traffic`` bytes by ``type`` (all three keys present)."""
        samples = self.metrics()
        out = {t: 0 for t in TRAFFIC_TYPES}
        for s in samples:
            if s.name == "dragonfly_client_download_traffic":
                typ = s.labels.get("type", "")
                out[typ] = out.get(typ, 0) + int(s.value)
        return out

    def upload_traffic(self) -> int:
        return int(self.metric("dragonfly_client_upload_traffic"))

    def reset_metrics(self) -> None:
        """``DELETE /metrics``: dfdaemon resets its custom counters (metric crate handler)."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(urllib.request.Request(self.metrics_url, method="DELETE"), timeout=5) as resp:
            resp.read()

    def local_tasks(self, timeout: float = 30.0) -> list[str]:
        """IDs of every task this daemon stores (gRPC ``ListLocalTasks``)."""
        import grpc
        from dragonfly_api import dfdaemon_pb2, dfdaemon_pb2_grpc

        with grpc.insecure_channel(f"unix://{self.socket_path}",
                                   options=[("grpc.default_authority", "localhost")]) as channel:
            stub = dfdaemon_pb2_grpc.DfdaemonDownloadStub(channel)
            reply = stub.ListLocalTasks(dfdaemon_pb2.ListLocalTasksRequest(), timeout=timeout)
        return [t.task_id for t in reply.tasks]

    def delete_task(self, task_id: str, timeout: float = 30.0) -> bool:
        """Forget one task on this daemon (gRPC ``DeleteLocalTask`` on its socket): benchmarks
        free disk between rounds. False when the daemon did not have it."""
        import grpc
        from dragonfly_api import dfdaemon_pb2, dfdaemon_pb2_grpc

        with grpc.insecure_channel(f"unix://{self.socket_path}",
                                   options=[("grpc.default_authority", "localhost")]) as channel:
            stub = dfdaemon_pb2_grpc.DfdaemonDownloadStub(channel)
            try:
                stub.DeleteLocalTask(dfdaemon_pb2.DeleteLocalTaskRequest(task_id=task_id), timeout=timeout)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    return False
                raise
        return True

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return (
            f"--- {self.log_path} (tail) ---\n{_tail(self.log_path, lines)}\n"
            f"--- {self.stdout_path} (tail) ---\n{_tail(self.stdout_path, 15)}"
        )

    # -- lifecycle -------------------------------------------------------------------------
    def argv(self) -> list[str]:
        return [
            str(self.binary),
            "--config",
            str(self.config_path),
            "--dynconfig",
            str(self.dynconfig_path),
            "--log-dir",
            str(self.log_dir),
            "--log-level",
            self.log_level,
        ]

    def spawn(self) -> DfdaemonHandle:
        """Start the process without waiting (see :meth:`wait_healthy`)."""
        if self.is_alive():
            raise RuntimeError(f"{self.name} already running")
        proc = ManagedProcess(self.name, self.argv(), log_path=self.stdout_path, env=self.env, cwd=self.workdir)
        self.process = proc
        proc.start()
        return self

    def wait_healthy(self, *, timeout: float = 60.0) -> DfdaemonHandle:
        """Wait until ``GET /healthy`` answers 200; on early exit or timeout stop and raise."""
        assert self.process is not None
        try:
            self.process.wait_ready(self.healthy, timeout=timeout)
        except ServerStartError as exc:
            raise ServerStartError(f"{exc}\n{self.log_tail()}") from None
        return self

    def start(self, *, timeout: float = 60.0) -> DfdaemonHandle:
        """Spawn and wait until ``GET /healthy`` answers 200 (bounded)."""
        return self.spawn().wait_healthy(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL the daemon's process group (fault injection); no cleanup by the daemon."""
        proc = self.process
        if proc is None or proc.pid is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait(10)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def restart(self, *, timeout: float = 60.0, reassign_busy_ports: bool = True) -> DfdaemonHandle:
        """Stop (if running) and start again with the same config and dirs; wait healthy.

        dfdaemon 1.5.10's storage TCP server binds *without* SO_REUSEADDR
        (``dragonfly-client-storage`` ``server/tcp.rs``), so after a kill its port stays busy
        while the kernel holds the served connections in TIME_WAIT (up to 60 s) and the restarted
        daemon exits with "Address already in use". With ``reassign_busy_ports`` such a port is
        replaced by a free one (storage ports reach other peers in-band, through the upload
        gRPC SyncPieces stream, so nothing else has to know); otherwise the restart waits for it
        (<= 75 s). Replaced ports are recorded in ``port_changes``. With ``storage.keep: false``
        (the default) the restarted daemon starts with an empty cache.
        """
        self.stop()
        self.restarts += 1
        busy = [name for name, port in self.ports.items() if not self._port_bindable(name, port)]
        if busy and reassign_busy_ports:
            taken = set(self.ports.values())
            for name in busy:
                if name == "storage_quic":
                    new = _free_udp_port(self.ip, taken)
                else:
                    new = next(p for p in (free_port(self.ip) for _ in range(100)) if p not in taken)
                taken.add(new)
                self.port_changes.append((name, self.ports[name], new))
                self.ports[name] = new
            _write_config(self.config_path, _daemon_config(self, **self.config_options))
        elif busy:
            deadline = time.monotonic() + 75.0
            while any(not self._port_bindable(n, self.ports[n]) for n in busy):
                if time.monotonic() >= deadline:
                    raise ServerStartError(f"{self.name}: ports {busy} still busy after 75s")
                time.sleep(0.5)
        return self.start(timeout=timeout)

    def _port_bindable(self, name: str, port: int) -> bool:
        """Can the daemon bind this port now? The storage TCP server binds without
        SO_REUSEADDR; the other TCP listeners (tokio/tonic/hyper) set it, so TIME_WAIT
        connections do not block them and only a real listener would."""
        kind = socket.SOCK_DGRAM if name == "storage_quic" else socket.SOCK_STREAM
        with socket.socket(socket.AF_INET, kind) as s:
            if kind == socket.SOCK_STREAM and name != "storage_tcp":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((self.ip, port))
            except OSError:
                return False
            return True

    def __repr__(self) -> str:
        return f"DfdaemonHandle({self.name!r}, host_id={self.host_id!r}, proxy={self.proxy!r}, pid={self.pid})"


# -- cluster ---------------------------------------------------------------------------------


@dataclass
class DragonflyCluster:
    """Scheduler + optional seed + peers; :meth:`stop` stops peers, seed, then scheduler."""

    workdir: Path
    binaries: DragonflyBinaries
    scheduler: SchedulerHandle
    seed: DfdaemonHandle | None
    peers: list[DfdaemonHandle]
    socket_dir: Path
    started_in: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def daemons(self) -> list[DfdaemonHandle]:
        return ([self.seed] if self.seed is not None else []) + list(self.peers)

    def daemon_by_host_id(self, host_id: str) -> DfdaemonHandle:
        for d in self.daemons:
            if d.host_id == host_id:
                return d
        raise KeyError(host_id)

    def scheduler_metrics(self) -> list[MetricSample]:
        """All samples of the scheduler's Prometheus endpoint."""
        return self.scheduler.metrics()

    def scheduler_metric(self, name: str, **labels: str) -> float:
        """Sum of scheduler metric ``name`` over samples whose labels include ``labels``."""
        return self.scheduler.metric(name, **labels)

    def peer_count_registered(self) -> float:
        """Total peers registered with the scheduler (``dragonfly_scheduler_register_peer_total``)."""
        return self.scheduler.registered_peers_total()

    def registered_peers_by_host(self) -> dict[str, int]:
        return self.scheduler.registered_peers_by_host()

    def forget_all(self) -> int:
        """Delete every task on every daemon (benchmarks: free the disk between rounds)."""
        return sum(d.delete_task(t) for d in self.daemons for t in d.local_tasks())

    def forget(self, task_ids: Iterable[str]) -> int:
        """Delete these tasks on every daemon that has them; how many copies were removed."""
        ids = [t for t in task_ids if t]
        return sum(d.delete_task(t) for d in self.daemons for t in ids)

    def traffic(self) -> dict[str, dict[str, int]]:
        return {d.name: d.traffic() for d in self.daemons}

    def describe(self) -> str:
        s = self.scheduler
        lines = [f"scheduler {s.addr} (metrics {s.metrics_url}) log {s.log_dir}"]
        for d in self.daemons:
            lines.append(f"{d.name} {d.host_id} proxy {d.proxy} ports {d.ports} log {d.log_path}")
        return "\n".join(lines)

    def stop(self) -> None:
        for d in reversed(self.peers):
            d.stop()
        if self.seed is not None:
            self.seed.stop()
        self.scheduler.stop()
        # Only the socket dir we created under /tmp is removed; workdir (logs) stays.
        if self.socket_dir != self.workdir / "sock" and self.socket_dir.is_dir():
            shutil.rmtree(self.socket_dir, ignore_errors=True)

    def __enter__(self) -> DragonflyCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _scheduler_config(workdir: Path, port: int, metrics_port: int, log_level: str) -> dict[str, Any]:
    return {
        "server": {
            "listenIP": SCHEDULER_IP,
            "advertiseIP": SCHEDULER_IP,
            "port": port,
            "advertisePort": port,
            "host": "dfrepo-scheduler",
            "logDir": str(workdir / "log"),
            "pluginDir": str(workdir / "plugins"),
            "logLevel": log_level,
        },
        # No manager key at all: Manager.Addr stays nil -> local dynconfig.
        # No database.redis.addrs: no Redis client, no persistent(-cache) resources.
        "job": {"enable": False},
        "metrics": {"enable": True, "addr": f"{SCHEDULER_IP}:{metrics_port}", "enableHost": True},
    }


def _scheduler_dynconfig() -> dict[str, Any]:
    # The defaults of NewLocalDynconfigData (scheduler/config/dynconfig_local.go), written out.
    return {
        "seedPeerClusterConfig": {"loadLimit": 2000},
        "schedulerClusterConfig": {"candidateParentLimit": 3, "filterParentLimit": 15},
        "schedulerClusterClientConfig": {"loadLimit": 200},
    }


_DAEMON_PORTS = ("upload", "proxy", "metrics", "health", "stats", "storage_tcp")


def _daemon_config(
    d: DfdaemonHandle, *, disk_threshold: str, keep_storage: bool, proxy_rules: Any
) -> dict[str, Any]:
    ip, p = d.ip, d.ports
    cfg: dict[str, Any] = {
        "host": {"ip": ip, "hostname": d.hostname},
        "server": {
            "pluginDir": str(d.workdir / "plugins"),
            "cacheDir": str(d.workdir / "cache"),
            "adaptiveRateLimit": None,
        },
        "download": {"server": {"socketPath": str(d.socket_path)}},
        "upload": {"server": {"ip": ip, "port": p["upload"]}},
        "seedPeer": {"enable": d.is_seed, "type": "super" if d.is_seed else "normal"},
        "storage": {
            "server": {"ip": ip, "tcpPort": p["storage_tcp"], "quicPort": p["storage_quic"]},
            "dir": str(d.storage_dir),
            "keep": keep_storage,
        },
        "gc": {
            "policy": {
                "diskThreshold": disk_threshold,
                "diskHighThresholdPercent": 90,
                "diskLowThresholdPercent": 70,
            }
        },
        "proxy": {"server": {"ip": ip, "port": p["proxy"]}},
        "backend": {"enableHickoryDNS": False},
        "health": {"server": {"ip": ip, "port": p["health"]}},
        "metrics": {"server": {"ip": ip, "port": p["metrics"]}},
        "stats": {"server": {"ip": ip, "port": p["stats"]}},
    }
    if proxy_rules is not None:
        cfg["proxy"]["rules"] = proxy_rules
    return cfg


def _socket_dir(workdir: Path) -> Path:
    candidate = workdir / "sock"
    if len(str(candidate / "dfrepo-peer-99.sock")) <= _MAX_UNIX_PATH:
        candidate.mkdir(parents=True, exist_ok=True)
        return candidate
    return Path(tempfile.mkdtemp(prefix="dfc-", dir="/tmp"))


def _wait(what: str, check: Any, timeout: float, log: Any, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() >= deadline:
            raise ServerStartError(f"{what}: not after {timeout:.0f}s\n{log()}")
        time.sleep(interval)


def _new_daemon(
    name: str,
    ip: str,
    hostname: str,
    *,
    is_seed: bool,
    workdir: Path,
    socket_dir: Path,
    binaries: DragonflyBinaries,
    scheduler_addr: str,
    log_level: str,
    env: dict[str, str],
    disk_threshold: str,
    keep_storage: bool,
    proxy_rules: Any,
) -> DfdaemonHandle:
    dwork = workdir / name
    dwork.mkdir(parents=True, exist_ok=True)
    ports = _free_ports(ip, _DAEMON_PORTS)
    ports["storage_quic"] = _free_udp_port(ip, set(ports.values()))
    d = DfdaemonHandle(
        name=name,
        ip=ip,
        hostname=hostname,
        is_seed=is_seed,
        ports=ports,
        workdir=dwork,
        config_path=dwork / "dfdaemon.yaml",
        dynconfig_path=dwork / "dynconfig.yaml",
        storage_dir=dwork / "storage",
        log_dir=dwork / "log",
        socket_path=socket_dir / f"{name}.sock",
        binary=binaries.dfdaemon,
        log_level=log_level,
        env=env,
        config_options={
            "disk_threshold": disk_threshold,
            "keep_storage": keep_storage,
            "proxy_rules": proxy_rules,
        },
    )
    _write_config(d.config_path, _daemon_config(d, **d.config_options))
    _write_config(d.dynconfig_path, {"scheduler": {"addrs": [scheduler_addr]}})
    return d


def start_dragonfly_cluster(
    workdir: Path,
    peers: int = 2,
    *,
    seed: bool = True,
    seed_ip: str = DEFAULT_SEED_IP,
    first_peer_ip: str = DEFAULT_FIRST_PEER_IP,
    peer_ips: Sequence[str] | None = None,
    log_level: str = "info",
    log_levels: Mapping[str, str] | None = None,
    scheduler_log_level: str = "info",
    disk_threshold: str = "20GiB",
    keep_storage: bool = False,
    proxy_rules: Any = None,
    wait_seed_known: bool = True,
    timeout: float = 60.0,
    seed_known_timeout: float = 2 * SEED_REFRESH_INTERVAL + 15,
) -> DragonflyCluster:
    """Start scheduler, seed (``seed=True``) and ``peers`` normal peers; return when usable.

    ``peers`` daemons get ``peer_ips`` or ``first_peer_ip`` + 0, 1, ... (last octet). Daemons are
    named ``seed``, ``peer1``, ``peer2``, ...; ``log_levels`` overrides ``log_level`` by name (only
    one daemon may run at ``trace``: each binds 127.0.0.1:6669 for tokio-console).
    ``disk_threshold`` bounds each daemon's own cache for GC (percentages 90/70 of it);
    ``keep_storage`` is ``storage.keep`` (upstream default false: a restart wipes the cache).
    ``proxy_rules`` is ``proxy.rules`` (default none: only ``X-Dragonfly-Use-P2P: true`` GETs go P2P).
    With ``wait_seed_known`` it returns only after the scheduler health-checked the seed (>= 30 s
    after the scheduler started). Raises :class:`DragonflyBinariesMissing` or
    :class:`ServerStartError` (with log tails); whatever started is stopped on failure, logs stay.
    """
    if peers < 0:
        raise ValueError("peers must be >= 0")
    names = ["seed"] + [f"peer{i + 1}" for i in range(peers)]
    levels = {name: (log_levels or {}).get(name, log_level).lower() for name in names}
    if sum(1 for lv in levels.values() if lv == "trace") > 1:
        raise ValueError("only one dfdaemon may log at trace (each binds 127.0.0.1:6669 for tokio-console)")
    binaries = find_dragonfly_binaries()
    t_start = time.monotonic()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    socket_dir = _socket_dir(workdir)
    if peer_ips is None:
        a, b, c, last = (int(x) for x in first_peer_ip.split("."))
        peer_ips = [f"{a}.{b}.{c}.{last + i}" for i in range(peers)]
    elif len(peer_ips) != peers:
        raise ValueError("len(peer_ips) must equal peers")
    env = clean_env(drop_prefixes=("DFDAEMON_", "RUST_LOG", "SCHEDULER_", "DFGET_"))

    # 1. scheduler
    swork = workdir / "scheduler"
    sport = free_port(SCHEDULER_IP)
    smetrics = free_port(SCHEDULER_IP)
    while smetrics == sport:
        smetrics = free_port(SCHEDULER_IP)
    sched = SchedulerHandle(
        process=ManagedProcess(
            "dragonfly-scheduler",
            [binaries.scheduler, "--config", swork / "scheduler.yaml", "--dynconfig", swork / "dynconfig.yaml"],
            log_path=swork / "stdout.log",
            env=env,
            cwd=swork,
        ),
        ip=SCHEDULER_IP,
        port=sport,
        metrics_port=smetrics,
        workdir=swork,
        config_path=swork / "scheduler.yaml",
        dynconfig_path=swork / "dynconfig.yaml",
        log_dir=swork / "log",
    )
    _write_config(sched.config_path, _scheduler_config(swork, sport, smetrics, scheduler_log_level))
    _write_config(sched.dynconfig_path, _scheduler_dynconfig())

    cluster = DragonflyCluster(workdir, binaries, sched, None, [], socket_dir)
    common: dict[str, Any] = dict(
        workdir=workdir,
        socket_dir=socket_dir,
        binaries=binaries,
        scheduler_addr=sched.addr,
        env=env,
        disk_threshold=disk_threshold,
        keep_storage=keep_storage,
        proxy_rules=proxy_rules,
    )
    try:
        try:
            sched.process.start(
                lambda: port_open(sport, SCHEDULER_IP)
                and sched.healthy()
                and http_status(sched.metrics_url) == 200,
                timeout=timeout,
            )
        except ServerStartError as exc:
            tail = _tail(sched.core_log_path)
            raise ServerStartError(f"{exc}\n--- {sched.core_log_path} (tail) ---\n{tail}") from None
        t_sched = time.monotonic()
        cluster.timings["scheduler_ready"] = t_sched - t_start

        # 2. seed: healthy, then announced to the scheduler.
        seed_d: DfdaemonHandle | None = None
        if seed:
            seed_d = cluster.seed = _new_daemon(
                "seed", seed_ip, "dfrepo-seed", is_seed=True, log_level=levels["seed"], **common
            )
            seed_d.start(timeout=timeout)
            cluster.timings["seed_healthy"] = time.monotonic() - t_start
            _wait(
                f"scheduler never logged AnnounceHost for seed {seed_d.host_id}",
                lambda: seed_d.host_id in sched.announced_hosts(),
                15.0,
                lambda: f"{sched.core_log_tail()}\n{seed_d.log_tail()}",
            )

        # 3. peers are spawned now (a dfdaemon spends ~3.5 s sampling system info before it
        #    listens) but waited for only after the seed is known: readiness order is kept.
        for i, ip in enumerate(peer_ips):
            name = f"peer{i + 1}"
            cluster.peers.append(
                _new_daemon(name, ip, f"dfrepo-peer-{i + 1}", is_seed=False, log_level=levels[name], **common)
            )
        for d in cluster.peers:
            d.spawn()

        # 4. the scheduler knows the seed: its refresh ticks every 30 s from scheduler start; the
        #    first tick after the seed announced itself health-checks it and adds it to the ring.
        if seed_d is not None and wait_seed_known:
            addr = seed_d.upload_addr
            _wait(
                f"scheduler did not health-check seed {addr} (refresh every {SEED_REFRESH_INTERVAL:.0f}s)",
                lambda: sched.seed_known(addr),
                seed_known_timeout,
                lambda: f"--- {sched.grpc_log_path} (tail) ---\n{_tail(sched.grpc_log_path)}\n"
                + sched.core_log_tail(),
                interval=0.25,
            )
            # A failure line would follow the channel close; the ring is swapped in right after
            # the check loop. Look again after a moment.
            time.sleep(0.3)
            if not sched.seed_known(addr):
                raise ServerStartError(f"scheduler failed to health-check seed {addr}\n{sched.core_log_tail()}")
            cluster.timings["seed_known"] = time.monotonic() - t_start

        # 5. peers healthy and announced.
        for d in cluster.peers:
            d.wait_healthy(timeout=timeout)
        for d in cluster.peers:
            _wait(
                f"scheduler never logged AnnounceHost for {d.host_id}",
                lambda d=d: d.host_id in sched.announced_hosts(),  # type: ignore[misc]
                15.0,
                lambda d=d: f"{sched.core_log_tail()}\n{d.log_tail()}",  # type: ignore[misc]
            )
        cluster.timings["peers_ready"] = time.monotonic() - t_start
    except BaseException:
        cluster.stop()
        raise
    cluster.started_in = time.monotonic() - t_start
    (workdir / "cluster.txt").write_text(cluster.describe() + "\n")
    return cluster
