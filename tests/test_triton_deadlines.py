"""Issue #15, "Triton must never hang": every repository-agent action has a deadline.

Triton holds its repository-manager lock while an agent's LOAD runs, so one stuck pull
used to freeze every later load, unload, index request and the shutdown. Now:

* the worker answers an action still running at its ``worker_deadline`` (the deadline
  minus a margin) with ``UNAVAILABLE`` and ``retire``; the shim replaces that worker once
  its other actions are answered;
* a worker that cannot even do that (frozen) is killed by the shim at the deadline;
  actions of other models that were in flight on it get an error saying why;
* the worker starts without tritonserver's inherited descriptors.

The first half drives the real shim with ``fake_triton`` (test_triton_bridge.py); the
second half runs a real tritonserver. Every wait is bounded; processes are stopped by pid.
"""

from __future__ import annotations

import ast
import glob
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dfrepo.triton import install_agent
from dfrepo.triton._protocol import HELLO, read_frame, write_frame
from faultservers import FaultProxy, Knobs, RangeServer
from faultservers.fault_proxy import close_pair
from servers.procs import wait_until
from servers.triton import dfrepo_workers_of
from test_triton_bridge import FAKE_TRITON_C, ROOT, SHIM_SOURCE, build_shim

AGENTS_MODULE = "dfrepo_deadline_agents"
AGENTS_SOURCE = textwrap.dedent(
    '''
    import json, os, signal, threading, time, urllib.request
    from dfrepo.triton import RepoAgent

    def _note(ctx):
        path = ctx.parameters.get("pidfile")
        if path:
            with open(path, "a") as f:
                f.write("%s %d %s\\n" % (ctx.action, os.getpid(), ctx.model_name))

    class HangAgent(RepoAgent):
        """Hangs in the action parameters['hang_in'] (default LOAD), as parameters['how'] says:
        'sleep' (parameters['sleep'] s, default an hour), 'stop' (SIGSTOP: the whole worker
        freezes) or 'trickle' (reads parameters['url'] into the acquired dir, byte by byte)."""
        name = "hang"
        def _act(self, ctx):
            _note(ctx)
            if ctx.action != ctx.parameters.get("hang_in", "LOAD"):
                return None
            how = ctx.parameters.get("how", "sleep")
            if how == "stop":
                os.kill(os.getpid(), signal.SIGSTOP)
            elif how == "trickle":
                dest = ctx.acquire_dir()
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                with opener.open(ctx.parameters["url"], timeout=30) as resp, \\
                        open(os.path.join(dest, "weights.bin"), "wb") as out:
                    while True:
                        chunk = resp.read(1)
                        if not chunk:
                            break
                        out.write(chunk)
            time.sleep(float(ctx.parameters.get("sleep", "3600")))
            return None
        def load(self, ctx): return self._act(ctx)
        def load_complete(self, ctx): self._act(ctx)
        def load_fail(self, ctx): self._act(ctx)
        def unload(self, ctx): self._act(ctx)
        def unload_complete(self, ctx): self._act(ctx)

    class FdAgent(RepoAgent):
        """Writes the worker's and its parent's open descriptors to parameters['out']."""
        name = "fds"
        def load(self, ctx):
            for t in threading.enumerate():  # its /tmp scan holds a directory fd for a moment
                if t.name == "dfrepo-stage-sweep":
                    t.join(30)
            def fds(pid):
                found = {}
                for n in os.listdir("/proc/%d/fd" % pid):
                    try:
                        found[n] = os.readlink("/proc/%d/fd/%s" % (pid, n))
                    except OSError:
                        pass
                return found
            report = {"worker": fds(os.getpid()), "parent": fds(os.getppid())}
            with open(ctx.parameters["out"], "w") as f:
                json.dump(report, f)
            return None
    '''
)

HANG = f"{AGENTS_MODULE}:HangAgent"
FDS = f"{AGENTS_MODULE}:FdAgent"


@pytest.fixture(scope="module")
def deadline_agents(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("deadline_agents")
    (d / f"{AGENTS_MODULE}.py").write_text(AGENTS_SOURCE)
    return d


def _alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"




@pytest.fixture
def pidfile(tmp_path: Path) -> Iterator[Path]:
    """Where the test agents note (action, worker pid, model); at teardown any worker still
    listed there is killed by its pid (a frozen one outlives its parent otherwise)."""
    path = tmp_path / "pids"
    yield path
    for _, pid, _ in _pids(path):
        try:
            if _alive(pid) and b"dfrepo.triton.worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _pids(pidfile: Path) -> list[tuple[str, int, str]]:
    """(action, worker pid, model) lines the test agents wrote."""
    if not pidfile.exists():
        return []
    out = []
    for line in pidfile.read_text().splitlines():
        action, pid, model = line.split()
        out.append((action, int(pid), model))
    return out


# ---------------------------------------------------------------------------------------
# The real shim in fake_triton
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory, deadline_agents: Path) -> tuple[Path, Path]:
    """(fake_triton executable, installed shim whose worker imports the test agents)."""
    if not (ROOT / "tests" / "test_triton_bridge.py").exists() or not SHIM_SOURCE.exists():
        pytest.skip("the shim sources are not in this checkout")
    d = tmp_path_factory.mktemp("fake_triton_deadlines")
    (d / "fake_triton.c").write_text(FAKE_TRITON_C)
    exe = d / "fake_triton"
    try:
        subprocess.run(["gcc", "-O1", "-rdynamic", "-o", str(exe), str(d / "fake_triton.c"), "-ldl",
                        "-lpthread"], check=True, timeout=120)
    except FileNotFoundError:
        pytest.skip("gcc is needed for the fake Triton")
    lib = install_agent(d / "repoagents", "dragonfly", shim=build_shim(d), sys_path=[str(deadline_agents)])
    return exe, lib


class FakeTriton:
    """fake_triton driven line by line; every answer is awaited with a bound."""

    def __init__(self, fake: tuple[Path, Path], log: Path, env: dict[str, str] | None = None,
                 pass_fds: tuple[int, ...] = ()) -> None:
        exe, lib = fake
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen([str(exe), str(lib)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True, pass_fds=pass_fds,
                                     env=dict(os.environ, **(env or {})))
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))

    def send(self, *lines: str) -> None:
        assert self.proc.stdin is not None
        for line in lines:
            self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def answer(self, timeout: float = 30.0) -> str:
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"fake_triton gave no answer within {timeout} s; its log:\n"
                                 f"{self.log()[-3000:]}") from None

    def cmd(self, line: str, timeout: float = 30.0) -> str:
        self.send(line)
        return self.answer(timeout)

    def timed(self, line: str, timeout: float = 30.0) -> tuple[str, float]:
        t0 = time.monotonic()
        out = self.cmd(line, timeout)
        return out, time.monotonic() - t0

    def model(self, idx: int, location: str, **params: str) -> None:
        self.send(f"model {idx} FILESYSTEM {location}", *(f"param {idx} {k} {v}" for k, v in params.items()))

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.cmd("fini", timeout=30) == "fini ok"
                assert self.cmd("children") == "children 0"
            finally:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
        self._log.close()


@pytest.fixture
def ft(fake: tuple[Path, Path], tmp_path: Path) -> Iterator[Callable[..., FakeTriton]]:
    started: list[FakeTriton] = []

    def start(env: dict[str, str] | None = None, pass_fds: tuple[int, ...] = ()) -> FakeTriton:
        f = FakeTriton(fake, tmp_path / f"fake-{len(started)}.log", env, pass_fds)
        started.append(f)
        return f

    yield start
    for f in started:
        f.close()


def test_frozen_worker_is_killed_at_the_deadline(ft: Callable[..., FakeTriton], pidfile: Path) -> None:
    f = ft()
    f.model(0, "/models/frozen", **{"dfrepo.agent": HANG, "how": "stop", "pidfile": str(pidfile),
                                    "dfrepo.load_timeout": "2"})
    out, dt = f.timed("action 0 LOAD")
    print(f"\n[deadline] frozen worker: LOAD failed after {dt:.2f} s (deadline 2 s)")
    assert re.fullmatch(
        r"result 0 err 4 dfrepo agent: LOAD of model 'frozen' did not finish within its deadline of "
        r"2 s \(set by the agent parameter dfrepo\.load_timeout\); the Python worker \(pid \d+\) was "
        r"stopped and a new one takes the next action", out), out
    assert 2.0 <= dt < 4.5  # includes starting the worker
    frozen = _pids(pidfile)[0][1]
    assert f"(pid {frozen})" in out
    assert not _alive(frozen) and f.cmd("children") == "children 0"  # killed and reaped
    # the next action gets a fresh worker
    f.model(1, "/models/fine", **{"dfrepo.agent": HANG, "hang_in": "NONE", "pidfile": str(pidfile)})
    assert f.cmd("action 1 LOAD") == "result 1 ok 0 /models/fine"
    assert _pids(pidfile)[-1][1] != frozen and f.cmd("children") == "children 1"
    assert "LOAD of model 'frozen' did not finish within its deadline of 2 s: killing the Python worker" in f.log()


def test_worker_gives_up_first_with_its_own_message(ft: Callable[..., FakeTriton], pidfile: Path) -> None:
    f = ft()
    f.model(7, "/models/warm")
    assert f.cmd("action 7 LOAD") == "result 7 ok 0 /models/warm"  # the worker is up: dt is the action's
    f.model(0, "/models/sleepy", **{"dfrepo.agent": HANG, "pidfile": str(pidfile), "dfrepo.load_timeout": "3"})
    out, dt = f.timed("action 0 LOAD")
    print(f"\n[deadline] stuck action: the worker gave up after {dt:.2f} s (deadline 3 s, margin 1 s)")
    assert re.fullmatch(
        r"result 0 err 4 dfrepo agent 'hang': LOAD of model 'sleepy' did not finish within its deadline "
        r"of 3 s \(set by the agent parameter dfrepo\.load_timeout\); gave up after 2\.\d s and the "
        r"Python worker \(pid \d+\) is replaced", out), out
    assert 2.0 <= dt < 2.9  # before the shim's own deadline
    first = _pids(pidfile)[0][1]
    assert not _alive(first) and f.cmd("children") == "children 0"
    assert f.cmd("action 0 LOAD_FAIL") == "result 0 ok 0 /models/sleepy"
    assert _pids(pidfile)[-1] == ("LOAD_FAIL", _pids(pidfile)[-1][1], "sleepy")
    assert _pids(pidfile)[-1][1] != first


def test_deadlines_from_the_environment(ft: Callable[..., FakeTriton], pidfile: Path) -> None:
    f = ft(env={"DFREPO_AGENT_LOAD_TIMEOUT": "2.5", "DFREPO_AGENT_ACTION_TIMEOUT": "1.5"})
    f.model(0, "/models/u", **{"dfrepo.agent": HANG, "hang_in": "UNLOAD", "how": "stop",
                               "pidfile": str(pidfile)})
    assert f.cmd("action 0 LOAD") == "result 0 ok 0 /models/u"
    assert f.cmd("action 0 LOAD_COMPLETE") == "result 0 ok 0 /models/u"
    out, dt = f.timed("action 0 UNLOAD")
    assert out.startswith("result 0 err 4 dfrepo agent: UNLOAD of model 'u' did not finish within its "
                          "deadline of 1.5 s (set by DFREPO_AGENT_ACTION_TIMEOUT); the Python worker"), out
    assert 1.5 <= dt < 3.0
    f.model(2, "/models/warm")
    assert f.cmd("action 2 LOAD") == "result 2 ok 0 /models/warm"  # a new worker, started
    f.model(1, "/models/l", **{"dfrepo.agent": HANG, "pidfile": str(pidfile)})
    out, dt = f.timed("action 1 LOAD")
    assert "LOAD of model 'l' did not finish within its deadline of 2.5 s (set by DFREPO_AGENT_LOAD_TIMEOUT)" \
        in out and out.startswith("result 1 err 4 "), out
    assert 1.5 <= dt < 2.5  # the worker answered, a margin (1 s) before the shim's deadline


def test_unusable_deadline_settings(ft: Callable[..., FakeTriton]) -> None:
    f = ft(env={"DFREPO_AGENT_LOAD_TIMEOUT": "forever"})
    f.model(0, "/models/p", **{"dfrepo.load_timeout": "soon"})
    assert f.cmd("action 0 LOAD") == ("result 0 err 3 dfrepo agent: the agent parameter dfrepo.load_timeout "
                                      "of model 'p' must be a number of seconds > 0, got \"soon\"")
    f.model(1, "/models/q", **{"dfrepo.action_timeout": "-1"})  # checked on the LOAD already
    assert f.cmd("action 1 LOAD").startswith("result 1 err 3 dfrepo agent: the agent parameter "
                                              "dfrepo.action_timeout of model 'q' must be")
    # a bad environment value falls back to the default, said once in the log
    f.model(2, "/models/r")
    assert f.cmd("action 2 LOAD") == "result 2 ok 0 /models/r"
    assert f.cmd("action 2 LOAD") == "result 2 ok 0 /models/r"
    assert f.log().count('ignoring DFREPO_AGENT_LOAD_TIMEOUT="forever"') == 1


def test_other_models_get_their_answer_when_the_worker_gives_up(ft: Callable[..., FakeTriton], pidfile: Path) -> None:
    f = ft()
    f.model(0, "/models/a", **{"dfrepo.agent": HANG, "pidfile": str(pidfile), "dfrepo.load_timeout": "3"})
    f.model(1, "/models/b", **{"dfrepo.agent": HANG, "sleep": "3.5", "pidfile": str(pidfile)})
    f.send("parallel 0 1 LOAD")
    elapsed, a, b = (f.answer() for _ in range(3))
    assert a.startswith("result 0 err 4 dfrepo agent 'hang': LOAD of model 'a' did not finish within its "
                        "deadline of 3 s"), a
    assert b == "result 1 ok 0 /models/b"  # answered by the retired worker, not cut off
    assert 3.4 <= float(elapsed.split()[1]) < 6
    (_, pid_a, _), (_, pid_b, _) = sorted(_pids(pidfile), key=lambda t: t[2])
    assert pid_a == pid_b and not _alive(pid_a)  # stopped once b was answered
    assert f.cmd("children") == "children 0"
    f.model(2, "/models/c", **{"dfrepo.agent": HANG, "hang_in": "NONE", "pidfile": str(pidfile)})
    assert f.cmd("action 2 LOAD") == "result 2 ok 0 /models/c"
    assert _pids(pidfile)[-1][1] != pid_a


def test_other_models_get_a_clear_error_when_the_worker_is_killed(ft: Callable[..., FakeTriton], pidfile: Path) -> None:
    f = ft()
    f.model(0, "/models/a", **{"dfrepo.agent": HANG, "how": "stop", "pidfile": str(pidfile),
                               "dfrepo.load_timeout": "2"})
    f.model(1, "/models/b", **{"dfrepo.agent": HANG, "sleep": "1", "pidfile": str(pidfile)})
    f.send("parallel 0 1 LOAD")
    elapsed, a, b = (f.answer() for _ in range(3))
    assert a.startswith("result 0 err 4 dfrepo agent: LOAD of model 'a' did not finish within its deadline "
                        "of 2 s"), a
    # b's thread was frozen with the rest of the worker: it gets the reason, not "died"
    assert re.fullmatch(r"result 1 err 4 dfrepo agent: LOAD of model 'b' was interrupted and did not "
                        r"complete: LOAD of model 'a' did not finish within its deadline of 2 s", b), b
    assert 2.0 <= float(elapsed.split()[1]) < 5
    assert f.cmd("children") == "children 0"


def test_new_worker_removes_stages_of_killed_pulls(ft: Callable[..., FakeTriton]) -> None:
    """A worker killed at its deadline cannot remove its pull's staging dir; the next one does
    (only for processes that are gone)."""
    gone = _dead_pid()
    tag = os.urandom(4).hex()
    dead = Path(f"/tmp/.folderDL{tag}.dfrepo-stage-{gone}-x")
    live = Path(f"/tmp/.folderDL{tag}.dfrepo-stage-{os.getpid()}-x")
    for d in (dead, live):
        (d / "1").mkdir(parents=True)
        (d / "1" / "weights.bin").write_bytes(b"partial")
    try:
        f = ft()
        f.model(0, "/models/m")
        assert f.cmd("action 0 LOAD") == "result 0 ok 0 /models/m"
        assert wait_until(lambda: not dead.exists(), 10)
        assert live.exists()
    finally:
        for d in (dead, live):
            if d.exists():
                shutil.rmtree(d)


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait(10)
    return proc.pid


# ---------------------------------------------------------------------------------------
# Inherited descriptors
# ---------------------------------------------------------------------------------------


def _marker_fd(path: Path) -> int:
    """An inheritable (non-CLOEXEC) descriptor of ``path``, as a careless host has them."""
    path.write_text("not for the worker")
    fd = os.open(path, os.O_RDONLY)
    os.set_inheritable(fd, True)
    return fd


def _check_fds(report: dict[str, dict[str, str]], marker: Path, *, parent_has_it: bool = True) -> None:
    worker = {int(k): v for k, v in report["worker"].items()}
    parent = {int(k): v for k, v in report["parent"].items()}
    print(f"\n[deadline] worker fds: {worker}")
    if parent_has_it:
        assert str(marker) in parent.values()  # the host really has it open, inheritable
    assert str(marker) not in worker.values()
    extra = {fd: target for fd, target in worker.items() if fd > 2}
    # only its control socket and the action socket(s); nothing the host has open
    assert all(target.startswith("socket:") for target in extra.values()), extra
    assert not set(extra.values()) & set(parent.values()), extra


def test_worker_does_not_inherit_the_hosts_descriptors(ft: Callable[..., FakeTriton], tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    fd = _marker_fd(marker)
    try:
        f = ft(pass_fds=(fd,))
    finally:
        os.close(fd)
    f.model(0, "/models/fds", **{"dfrepo.agent": FDS, "out": str(tmp_path / "fds.json")})
    assert f.cmd("action 0 LOAD") == "result 0 ok 0 /models/fds"
    _check_fds(json.loads((tmp_path / "fds.json").read_text()), marker)


def _bootstrap_source() -> str:
    """The BOOTSTRAP string literal of agent_shim.c, as Python text."""
    text = SHIM_SOURCE.read_text()
    body = text.split("static const char BOOTSTRAP[] =", 1)[1].split(";\n", 1)[0]
    return "".join(ast.literal_eval(piece) for piece in re.findall(r'"(?:[^"\\]|\\.)*"', body))


def test_bootstrap_closes_inherited_descriptors_without_closefrom(deadline_agents: Path, tmp_path: Path) -> None:
    """The fallback for a glibc without posix_spawn_file_actions_addclosefrom_np."""
    marker = tmp_path / "marker"
    fd = _marker_fd(marker)
    ctl, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    # No install record here (""): the agent directory the record would name is given as the
    # bootstrap would export it.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(deadline_agents)]),
               DFREPO_AGENT_PATHS=str(deadline_agents))
    proc = subprocess.Popen([sys.executable, "-c", _bootstrap_source(), "", str(theirs.fileno()), "close-fds"],
                            pass_fds=[theirs.fileno(), fd], env=env)
    os.close(fd)
    theirs.close()
    try:
        ctl.settimeout(30)
        assert ctl.recv(64).startswith(HELLO)
        ours, chan = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with ours:
            ours.settimeout(30)
            socket.send_fds(ctl, [b"C"], [chan.fileno()])
            chan.close()
            out = tmp_path / "fds.json"
            write_frame(ours, {"v": 1, "action": "LOAD", "model": "0x1", "artifact_type": "FILESYSTEM",
                               "location": "/m", "parameters": {"dfrepo.agent": FDS, "out": str(out)},
                               "config": None})
            assert read_frame(ours) == {"op": "done", "ok": True, "location": None}
        # the parent is this test process, which closed its copy after the spawn
        _check_fds(json.loads(out.read_text()), marker, parent_has_it=False)
    finally:
        ctl.close()  # EOF: the worker exits
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# ---------------------------------------------------------------------------------------
# Real tritonserver
# ---------------------------------------------------------------------------------------

AGENT = "dragonfly"


def _triton_available() -> bool:
    try:
        from servers.triton import triton_home
    except ImportError:
        return False
    return triton_home() is not None


triton = pytest.mark.skipif(not _triton_available(), reason="prepared Triton not found; run scripts/bootstrap.sh")


@pytest.fixture(scope="module")
def repoagents(tmp_path_factory: pytest.TempPathFactory, deadline_agents: Path) -> Path:
    d = tmp_path_factory.mktemp("deadline_repoagents")
    install_agent(d / "dir", AGENT, shim=build_shim(d), sys_path=[str(deadline_agents)])
    return d / "dir"




class _Timed(threading.Thread):
    """Run ``fn`` in a thread; remember its result and when it finished."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.started = time.monotonic()
        self.finished: float | None = None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        self.finished = time.monotonic()

    def outcome(self, timeout: float) -> Any:
        self.join(timeout)
        assert not self.is_alive(), f"still waiting after {timeout} s"
        if self.error is not None:
            raise self.error
        return self.result


def _stop_cleanly(server: Any, pids: list[int]) -> float:
    """Stop tritonserver (SIGTERM, bounded); check it exited by itself and left no worker."""
    t0 = time.monotonic()
    code = server.stop()
    dt = time.monotonic() - t0
    assert code == 0 and dt < 15, (code, dt, server.log()[-3000:])
    assert wait_until(lambda: not any(_alive(p) for p in pids), 10), [p for p in pids if _alive(p)]
    return dt


@triton
@pytest.mark.triton
def test_trickling_load_fails_at_its_deadline_and_triton_stays_responsive(
        triton_server: Any, repoagents: Path, tmp_path: Path, pidfile: Path) -> None:
    from servers.models import make_toy_model

    deadline = 6.0
    repo = tmp_path / "repo"
    with RangeServer(Knobs(trickle_bytes_per_s=20)) as origin:
        origin.put("/models/stuck/weights.bin", os.urandom(1 << 20))  # 1 MiB at 20 B/s: forever
        url = origin.url("/models/stuck/weights.bin")
        make_toy_model(repo, "stuck", agent=AGENT, agent_params={
            "dfrepo.agent": HANG, "how": "trickle", "url": url, "pidfile": str(pidfile)})
        make_toy_model(repo, "good", add=2.0)
        server = triton_server(str(repo), repoagent_dir=str(repoagents),
                               env={"DFREPO_AGENT_LOAD_TIMEOUT": f"{deadline:g}"})
        tpid = server.process.pid

        load = _Timed(lambda: server.load("stuck", timeout=deadline + 60))
        load.start()
        assert wait_until(lambda: bool(_pids(pidfile)), 15), server.log()[-3000:]
        assert wait_until(lambda: origin.gets >= 1, 10)  # the trickle has begun
        stuck_pid = _pids(pidfile)[0][1]
        assert server.is_live()
        index = _Timed(server.repository_index)
        index.start()
        good = _Timed(lambda: server.load("good", timeout=deadline + 60))  # waits for Triton's lock
        good.start()
        status, body = load.outcome(deadline + 60)
        assert load.finished is not None
        took = load.finished - load.started
        print(f"\n[deadline] trickling LOAD failed after {took:.2f} s (deadline {deadline:g} s)")
        assert status != 200 and "failed to load 'stuck'" in body
        assert deadline - 1.5 <= took < deadline + 3
        lines = [ln for ln in server.log().splitlines() if "LOAD of model 'stuck'" in ln]
        assert lines, server.log()[-3000:]
        assert (f"LOAD of model 'stuck' did not finish within its deadline of {deadline:g} s "
                "(set by DFREPO_AGENT_LOAD_TIMEOUT)") in lines[-1]
        assert url.split("?")[0] not in server.log() and "secretsig123" not in server.log()
        # the stuck worker is gone; Triton is fine
        assert wait_until(lambda: not _alive(stuck_pid), 10)
        entries = index.outcome(30)
        assert index.finished is not None and index.finished < load.finished + 5
        print(f"[deadline] repository index asked during the stuck LOAD answered after "
              f"{index.finished - index.started:.2f} s ({index.finished - load.finished:+.2f} s from "
              f"the LOAD's answer)")
        assert {e["name"] for e in entries} == {"stuck", "good"}
        assert not server.is_ready("stuck")
        assert good.outcome(deadline + 60)[0] == 200 and good.finished is not None
        print(f"[deadline] a second model's LOAD asked during the stuck one answered after "
              f"{good.finished - good.started:.2f} s ({good.finished - load.finished:+.2f} s from the "
              f"stuck LOAD's answer)")
        assert server.infer_fp32("good", "INPUT0", [1, 2, 3, 4], "OUTPUT0") == [3.0, 4.0, 5.0, 6.0]
        # the model can be tried again: a fresh worker takes it (and its deadline holds again)
        assert server.load("stuck", timeout=deadline + 60)[0] != 200
        pids = sorted({p for _, p, _ in _pids(pidfile)})
        assert len(pids) >= 2 and stuck_pid in pids
        assert len(dfrepo_workers_of(tpid)) <= 1
        dt = _stop_cleanly(server, pids)
        print(f"[deadline] tritonserver stopped in {dt:.2f} s; workers {pids} gone")


@triton
@pytest.mark.triton
def test_frozen_worker_is_killed_at_its_deadline_in_triton(triton_server: Any, repoagents: Path,
                                                            tmp_path: Path, pidfile: Path) -> None:
    from servers.models import make_toy_model

    repo = tmp_path / "repo"
    make_toy_model(repo, "frozen", agent=AGENT, agent_params={
        "dfrepo.agent": HANG, "how": "stop", "pidfile": str(pidfile), "dfrepo.load_timeout": "4"})
    make_toy_model(repo, "good", add=1.0, agent=AGENT, agent_params={
        "dfrepo.agent": HANG, "hang_in": "NONE", "pidfile": str(pidfile)})
    server = triton_server(str(repo), repoagent_dir=str(repoagents))
    t0 = time.monotonic()
    status, body = server.load("frozen", timeout=60)
    took = time.monotonic() - t0
    print(f"\n[deadline] frozen worker in Triton: LOAD failed after {took:.2f} s (deadline 4 s)")
    assert status != 200 and 4.0 <= took < 7.0
    line = [ln for ln in server.log().splitlines() if "LOAD of model 'frozen'" in ln][-1]
    assert ("dfrepo agent: LOAD of model 'frozen' did not finish within its deadline of 4 s (set by the "
            "agent parameter dfrepo.load_timeout); the Python worker (pid ") in line
    frozen = _pids(pidfile)[0][1]
    assert not _alive(frozen)
    assert server.repository_index()
    assert server.load("good")[0] == 200 and server.is_ready("good")
    assert server.infer_fp32("good", "INPUT0", [0, 0, 0, 0], "OUTPUT0") == [1.0] * 4
    workers = dfrepo_workers_of(server.process.pid)
    assert len(workers) == 1 and workers[0] != frozen
    _stop_cleanly(server, sorted({p for _, p, _ in _pids(pidfile)}))


@triton
@pytest.mark.triton
def test_worker_in_triton_has_only_its_own_descriptors(triton_server: Any, repoagents: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """tritonserver with an inheritable descriptor (opened by a wrapper, fd 9)."""
    from servers.models import make_toy_model
    from servers.triton import triton_home

    real = triton_home()
    assert real is not None
    home = tmp_path / "triton-home"
    (home / "bin").mkdir(parents=True)
    for name in ("backends", "caches", "lib"):
        if (real / name).exists():
            (home / name).symlink_to((real / name).resolve())
    marker = tmp_path / "marker"
    marker.write_text("tritonserver's, not the worker's")
    wrapper = home / "bin" / "tritonserver"
    wrapper.write_text(f"#!/bin/sh\nexec 9<'{marker}'\nexec '{real / 'bin' / 'tritonserver'}' \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("DFREPO_TRITON_HOME", str(home))

    repo = tmp_path / "repo"
    out = tmp_path / "fds.json"
    make_toy_model(repo, "fds", agent=AGENT, agent_params={"dfrepo.agent": FDS, "out": str(out)})
    server = triton_server(str(repo), repoagent_dir=str(repoagents))
    assert server.load("fds")[0] == 200, server.log()[-3000:]
    _check_fds(json.loads(out.read_text()), marker)


# ---------------------------------------------------------------------------------------
# The built-in agent: a real pull through a Dragonfly peer whose answers trickle
# ---------------------------------------------------------------------------------------


class TrickleProxy(FaultProxy):
    """A relay whose bytes from the target reach the client one at a time, forever."""

    def __init__(self, target_port: int, bytes_per_s: float = 20) -> None:
        super().__init__(target_port)
        self.delay = 1.0 / bytes_per_s

    def _pump(self, src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        try:
            from_target = src.getpeername() == self.target
        except OSError:
            from_target = False
        if not from_target:
            super()._pump(src, dst, limit)
            return
        try:
            while not self._stop.is_set():
                data = src.recv(65536)
                if not data:
                    break
                for i in range(len(data)):
                    if self._stop.wait(self.delay):
                        return
                    dst.sendall(data[i:i + 1])
        except OSError:
            pass
        finally:
            close_pair(src, dst)


@triton
@pytest.mark.triton
@pytest.mark.servers
def test_dragonfly_pull_through_a_trickling_peer_is_cut_at_its_deadline(
        triton_server: Any, seaweedfs: Any, repoagents: Path, tmp_path: Path) -> None:
    from dfpeer import StandinPeer
    from servers.models import make_toy_model
    from servers.upload import upload_tree_s3

    deadline = 8.0
    src = tmp_path / "src"
    with StandinPeer(tmp_path / "peer") as peer, TrickleProxy(peer.port) as slow:
        make_toy_model(src, "slowpeer", add=3.0, payload_bytes=1 << 20, agent=AGENT, agent_params={
            "proxy": f"http://127.0.0.1:{slow.port}", "fallback": "false", "cache": "off",
            "dfrepo.load_timeout": f"{deadline:g}"})
        make_toy_model(src, "fastpeer", add=4.0, payload_bytes=1 << 20, agent=AGENT, agent_params={
            "proxy": peer.url, "cache": "off"})
        upload_tree_s3(seaweedfs, "deadlines", "repo", src)
        env = {**seaweedfs.triton_env(), "DFREPO_CACHE_DIR": str(tmp_path / "cache"),
               "DFREPO_MODEL_PARAMETERS": "proxy,fallback,cache"}  # the operator lets models pick
        server = triton_server(seaweedfs.s3_url("deadlines", "repo"), repoagent_dir=str(repoagents), env=env)
        t0 = time.monotonic()
        status, body = server.load("slowpeer", timeout=deadline + 60)
        took = time.monotonic() - t0
        print(f"\n[deadline] dragonfly pull through a trickling peer: LOAD failed after {took:.2f} s "
              f"(deadline {deadline:g} s)")
        assert status != 200 and took < deadline + 3, (status, took)
        assert slow.connections >= 1  # the pull really went through the trickle
        line = [ln for ln in server.log().splitlines() if "LOAD of model 'slowpeer'" in ln][-1]
        assert (f"dfrepo agent 'dragonfly': LOAD of model 'slowpeer' did not finish within its deadline "
                f"of {deadline:g} s (set by the agent parameter dfrepo.load_timeout)") in line, line
        assert "X-Amz-Signature" not in server.log()
        pid = int(re.search(r"Python worker \(pid (\d+)\)", line).group(1))  # type: ignore[union-attr]
        assert wait_until(lambda: not _alive(pid), 10)
        # the abandoned pull's staging dir went with it
        assert glob.glob(f"/tmp/.folder*.dfrepo-stage-{pid}-*") == []
        # a real pull right after works (a fresh worker)
        assert server.load("fastpeer", timeout=120)[0] == 200, server.log()[-3000:]
        assert server.infer_fp32("fastpeer", "INPUT0", [1, 1, 1, 1], "OUTPUT0") == [5.0] * 4
        _stop_cleanly(server, [pid])
