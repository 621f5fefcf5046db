"""The repository-agent bridge without Triton.

* the Python worker over its real sockets (a Python stand-in plays the shim);
* the real C shim (built with gcc) driven by ``fake_triton``, a small C program that
  implements Triton's side of the repository-agent API and dlopens the shim the way
  Triton does (``RTLD_NOW | RTLD_LOCAL``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dfrepo.errors import ConfigError, RepoAgentError
from dfrepo.triton import (
    AGENT_PARAMETER,
    DragonflyAgent,
    LoadContext,
    install_agent,
)
from dfrepo.triton import dragonfly_agent as dragonfly_mod
from dfrepo.triton._protocol import HELLO, read_frame, write_frame
from dfrepo.triton.agent import resolve_agent_class
from dfrepo.triton.install import RECORD_NAME, find_shim
from dfrepo.triton.worker import one_line
from servers.require import missing

ROOT = Path(__file__).resolve().parent.parent
SHIM_SOURCE = ROOT / "src" / "dfrepo" / "triton" / "agent_shim.c"
LDSCRIPT = ROOT / "src" / "dfrepo" / "triton" / "agent.ldscript"

# Agents used by the shim and Triton tests; written to a temp dir that the worker gets
# on its sys.path (through the install record).
AGENTS_SOURCE = textwrap.dedent(
    '''
    import os, shutil, time
    from dfrepo.errors import RepoAgentError
    from dfrepo.triton import RepoAgent

    class CopyAgent(RepoAgent):
        """Redirect Triton to a copy of parameters['copy_from']."""
        name = "copy"
        def load(self, ctx):
            dest = ctx.acquire_dir()
            shutil.copytree(ctx.parameters["copy_from"], dest, dirs_exist_ok=True)
            return dest

    class FailAgent(RepoAgent):
        name = "fail"
        def load(self, ctx):
            raise RepoAgentError(
                "GET http://127.0.0.1:1/models/m/1/model.py?X-Amz-Signature=SECRET answered HTTP 403",
                code="NOT_FOUND")

    class SleepAgent(RepoAgent):
        name = "sleep"
        def load(self, ctx):
            time.sleep(float(ctx.parameters.get("sleep", "0.5")))

    class CrashAgent(RepoAgent):
        name = "crash"
        def load(self, ctx):
            os._exit(7)

    class PidAgent(RepoAgent):
        """Write the worker's pid to parameters['pidfile'] on every action."""
        name = "pid"
        def _note(self, ctx):
            with open(ctx.parameters["pidfile"], "a") as f:
                f.write("%s %d %s\\n" % (ctx.action, os.getpid(), ctx.location))
        def load(self, ctx): self._note(ctx)
        def load_complete(self, ctx): self._note(ctx)
        def unload(self, ctx): self._note(ctx)
        def unload_complete(self, ctx): self._note(ctx)

    class StatefulAgent(RepoAgent):
        """Fails LOAD_COMPLETE unless the same instance saw this model's LOAD."""
        name = "stateful"
        def load(self, ctx):
            self.seen = ctx.location
        def load_complete(self, ctx):
            if getattr(self, "seen", None) != ctx.location:
                raise RuntimeError("state lost")
    '''
)


@pytest.fixture(scope="session")
def agents_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("agents")
    (d / "dfrepo_test_agents.py").write_text(AGENTS_SOURCE)
    return d


def build_shim(out_dir: Path) -> Path:
    """The packaged shim if the wheel/editable build made one, else gcc it here."""
    try:
        return find_shim()
    except RepoAgentError:
        pass
    if shutil.which("gcc") is None:
        missing("gcc", "gcc is needed to build the repository-agent shim (apt package gcc)")
    out = out_dir / "_agent_shim.so"
    subprocess.run(
        ["gcc", "-O2", "-Wall", "-Werror", "-shared", "-fPIC", "-o", str(out), str(SHIM_SOURCE),
         f"-Wl,--version-script={LDSCRIPT}"],
        check=True,
    )
    return out


# ---------------------------------------------------------------------------------------
# Pure Python: contexts, selection, the built-in agent
# ---------------------------------------------------------------------------------------


def test_context_fields() -> None:
    ctx = LoadContext(action="LOAD", location="s3://h:9000/b/repo/densenet/", artifact_type="REMOTE_FILESYSTEM")
    assert ctx.model_name == "densenet" and ctx.is_remote and ctx.parameters == {}
    ctx = LoadContext(action="LOAD", location="/r/x", artifact_type="FILESYSTEM", model_config={"name": "y"})
    assert ctx.model_name == "y" and not ctx.is_remote
    with pytest.raises(RepoAgentError, match="only available while an action"):
        ctx.acquire_dir()
    calls = []
    ctx = LoadContext(action="LOAD", location="/r/x", artifact_type="FILESYSTEM",
                      acquire=lambda: calls.append(1) or "/tmp/folderX")
    assert ctx.acquire_dir() == ctx.acquire_dir() == "/tmp/folderX" and calls == [1]


def test_resolve_agent_class(agents_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(agents_dir))
    operator = {"DFREPO_AGENT_PATHS": str(agents_dir)}  # what the worker's bootstrap sets
    assert resolve_agent_class({}, env=operator) is DragonflyAgent
    assert resolve_agent_class({AGENT_PARAMETER: "dragonfly"}, env=operator) is DragonflyAgent
    assert resolve_agent_class({AGENT_PARAMETER: "dfrepo_test_agents:CopyAgent"}, env=operator).name == "copy"
    allow_any = {"DFREPO_MODEL_PARAMETERS": "dfrepo.agent"}
    for bad, match in [("nocolon", "must look like"), ("no_such_mod_xyz:A", "cannot import"),
                       ("dfrepo_test_agents:Missing", "has no"), ("os:path", "not a dfrepo")]:
        with pytest.raises(ConfigError, match=match):
            resolve_agent_class({AGENT_PARAMETER: bad}, env={**operator, **allow_any})


def test_one_line_redacts_and_flattens() -> None:
    text = "GET https://h/b/k?X-Amz-Signature=abc failed\n  Traceback line\n"
    assert one_line(text) == "GET https://h/b/k?<redacted> failed | Traceback line"


def test_dragonfly_agent_passes_local_through() -> None:
    ctx = LoadContext(action="LOAD", location="/models/m", artifact_type="FILESYSTEM")
    assert DragonflyAgent().load(ctx) is None  # no acquire: it would raise


def test_dragonfly_agent_pulls_remote(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[str, str, dict[str, str]]] = []
    monkeypatch.setattr(dragonfly_mod, "pull_model",
                        lambda loc, dest, *, parameters, model_config=None: calls.append((loc, dest, dict(parameters))))
    ctx = LoadContext(action="LOAD", location="s3://b/m", artifact_type="REMOTE_FILESYSTEM",
                      parameters={"proxy": "http://127.0.0.1:4001"}, acquire=lambda: str(tmp_path))
    assert DragonflyAgent().load(ctx) == str(tmp_path)
    assert calls == [("s3://b/m", str(tmp_path), {"proxy": "http://127.0.0.1:4001"})]


def test_pull_model_calls_repo_pull(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import importlib

    from dfrepo.cache import ModelCache
    from dfrepo.locations import S3Location

    pull_module = importlib.import_module("dfrepo.pull")  # the attribute dfrepo.pull is the function
    seen: dict[str, Any] = {}
    monkeypatch.setattr(pull_module, "pull_with", lambda settings, dest: seen.update(settings=settings, dest=dest))
    monkeypatch.setenv("TRITON_CLOUD_CREDENTIAL_PATH", str(tmp_path / "cred.json"))
    monkeypatch.setenv("DFREPO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TRITON_DRAGONFLY_CONFIG_PATH", raising=False)
    monkeypatch.delenv("DFREPO_CACHE", raising=False)
    monkeypatch.setenv("DFREPO_MODEL_PARAMETERS", "proxy,concurrency,cache")
    monkeypatch.setenv("DFREPO_ALLOW_DIRECT", "1")
    for var in ("DFREPO_PROXY", "DRAGONFLY_PROXY"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "cred.json").write_text("{}")
    dragonfly_mod.pull_model("s3://b/m", str(tmp_path), parameters={
        AGENT_PARAMETER: "dragonfly", "proxy": "http://127.0.0.1:4001", "concurrency": "4"})
    settings = seen["settings"]
    assert seen["dest"] == str(tmp_path)
    assert isinstance(settings.location, S3Location) and settings.location.display == "s3://b/m"
    assert settings.credential_path == str(tmp_path / "cred.json")
    assert settings.dragonfly.proxy == "http://127.0.0.1:4001" and settings.transfer.concurrency == 4
    assert isinstance(settings.cache, ModelCache)  # cache "on"
    # The persistent cache can be switched off per model or for the whole server.
    dragonfly_mod.pull_model("s3://b/m", str(tmp_path), parameters={"cache": "off"})
    assert seen["settings"].cache is None
    monkeypatch.setenv("DFREPO_CACHE", "off")
    dragonfly_mod.pull_model("s3://b/m", str(tmp_path), parameters={})
    assert seen["settings"].cache is None


def test_config_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from dfrepo import settings

    monkeypatch.delenv("TRITON_CLOUD_CREDENTIAL_PATH", raising=False)
    monkeypatch.setattr(settings, "DEFAULT_CREDENTIAL_PATH", str(tmp_path / "absent.json"))
    assert settings.credential_file(triton_defaults=True) is None  # default missing: env/SDK chains
    monkeypatch.setenv("TRITON_CLOUD_CREDENTIAL_PATH", str(tmp_path / "gone.json"))
    with pytest.raises(ConfigError, match="TRITON_CLOUD_CREDENTIAL_PATH"):
        settings.credential_file(triton_defaults=True)  # set explicitly: must exist
    (tmp_path / "c.json").write_text("{}")
    monkeypatch.setenv("TRITON_CLOUD_CREDENTIAL_PATH", str(tmp_path / "c.json"))
    assert settings.credential_file(triton_defaults=True) == str(tmp_path / "c.json")
    monkeypatch.setenv("TRITON_DRAGONFLY_CONFIG_PATH", str(tmp_path / "c.json"))
    assert settings.dragonfly_config_file(triton_defaults=True) == str(tmp_path / "c.json")


def test_install_agent_layout(tmp_path: Path) -> None:
    fake = tmp_path / "shim.so"
    fake.write_bytes(b"\x7fELF-not-really")
    lib = install_agent(tmp_path / "repoagents", "dragonfly", shim=fake, sys_path=[str(tmp_path)])
    assert lib == tmp_path / "repoagents" / "dragonfly" / "libtritonrepoagent_dragonfly.so"
    assert lib.read_bytes() == fake.read_bytes() and os.access(lib, os.X_OK)
    record = json.loads((lib.parent / RECORD_NAME).read_text())
    assert record["python"] == os.path.abspath(sys.executable)
    assert record["sys_path"][0] == str(ROOT / "src") and str(tmp_path) in record["sys_path"]
    with pytest.raises(RepoAgentError, match="invalid agent name"):
        install_agent(tmp_path, "a/b", shim=fake)


# ---------------------------------------------------------------------------------------
# The worker over its sockets (Python plays the shim)
# ---------------------------------------------------------------------------------------


class WorkerHarness:
    """Starts ``python -m dfrepo.triton.worker`` and speaks the shim's side of the protocol."""

    def __init__(self, agents_dir: Path, acquire_root: Path) -> None:
        self.ctl, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # What the shim's bootstrap does from the install record: the path, and the
        # operator's agent directory (where dfrepo.agent classes may come from).
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(agents_dir)]),
                   DFREPO_AGENT_PATHS=str(agents_dir))
        self.proc = subprocess.Popen([sys.executable, "-m", "dfrepo.triton.worker", str(theirs.fileno())],
                                     pass_fds=[theirs.fileno()], env=env)
        theirs.close()
        self.ctl.settimeout(30)
        hello = self.ctl.recv(64)
        assert hello.startswith(HELLO), hello
        self.acquire_root = acquire_root
        self.acquired: list[str] = []

    def action(self, action: str, location: str, parameters: dict[str, str] | None = None, *,
               model: str = "0x1", artifact: str = "FILESYSTEM", config: Any = None) -> dict[str, Any]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with ours:
            socket.send_fds(self.ctl, [b"C"], [theirs.fileno()])
            theirs.close()
            write_frame(ours, {"v": 1, "action": action, "model": model, "artifact_type": artifact,
                               "location": location, "parameters": parameters or {}, "config": config})
            while True:
                msg = read_frame(ours)
                if msg["op"] == "acquire":
                    path = self.acquire_root / f"folder{model}"
                    path.mkdir(exist_ok=True)
                    self.acquired.append(str(path))
                    write_frame(ours, {"ok": True, "path": str(path)})
                    continue
                return msg

    def close(self) -> int:
        self.ctl.close()  # EOF: the worker exits
        return self.proc.wait(10)


@pytest.fixture
def worker(agents_dir: Path, tmp_path: Path):
    harness = WorkerHarness(agents_dir, tmp_path)
    yield harness
    if harness.proc.poll() is None:
        harness.close()


def test_worker_round_trip_default_agent(worker: WorkerHarness) -> None:
    assert worker.action("LOAD", "/models/m") == {"op": "done", "ok": True, "location": None}
    assert worker.action("LOAD_COMPLETE", "/models/m")["ok"] is True
    assert worker.close() == 0


def test_worker_custom_agent_acquires_and_relocates(worker: WorkerHarness, tmp_path: Path) -> None:
    src = tmp_path / "src_model"
    (src / "1").mkdir(parents=True)
    (src / "config.pbtxt").write_text('name: "m"')
    reply = worker.action("LOAD", "s3://b/m", {AGENT_PARAMETER: "dfrepo_test_agents:CopyAgent",
                                                "copy_from": str(src)}, artifact="REMOTE_FILESYSTEM")
    assert reply["ok"] is True and reply["location"] == worker.acquired[0]
    assert (Path(reply["location"]) / "config.pbtxt").read_text() == 'name: "m"'


def test_worker_error_is_one_clear_line(worker: WorkerHarness) -> None:
    reply = worker.action("LOAD", "s3://b/repo/m", {AGENT_PARAMETER: "dfrepo_test_agents:FailAgent"},
                          artifact="REMOTE_FILESYSTEM", config={"name": "m"})
    assert reply["ok"] is False and reply["code"] == "NOT_FOUND"
    msg = reply["message"]
    assert "\n" not in msg and "SECRET" not in msg
    assert "dfrepo agent 'fail': LOAD of model 'm' (s3://b/repo/m) failed" in msg
    assert "http://127.0.0.1:1/models/m/1/model.py?<redacted> answered HTTP 403" in msg
    bad = worker.action("LOAD", "/m", {AGENT_PARAMETER: "no_such_module_q:X"})
    assert bad["code"] == "INVALID_ARG" and "cannot import 'no_such_module_q'" in bad["message"]


def test_worker_keeps_one_instance_per_model(worker: WorkerHarness) -> None:
    params = {AGENT_PARAMETER: "dfrepo_test_agents:StatefulAgent"}
    assert worker.action("LOAD", "/a", params, model="0xa")["ok"]
    assert worker.action("LOAD", "/b", params, model="0xb")["ok"]
    assert worker.action("LOAD_COMPLETE", "/a", params, model="0xa")["ok"]
    assert worker.action("LOAD_COMPLETE", "/b", params, model="0xb")["ok"]
    assert worker.action("UNLOAD_COMPLETE", "/a", params, model="0xa")["ok"]
    # after the terminal action the instance is gone: a stray action gets a fresh one
    assert "state lost" in worker.action("LOAD_COMPLETE", "/a", params, model="0xa")["message"]


def test_worker_runs_loads_of_different_models_concurrently(worker: WorkerHarness) -> None:
    params = {AGENT_PARAMETER: "dfrepo_test_agents:SleepAgent", "sleep": "0.6"}
    worker.action("LOAD", "/warm", {AGENT_PARAMETER: "dfrepo_test_agents:SleepAgent", "sleep": "0"})
    results: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda m=m: results.append(worker.action("LOAD", f"/{m}", params, model=m)))
               for m in ("0x1", "0x2")]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    assert [r["ok"] for r in results] == [True, True]
    assert elapsed < 1.1, f"two 0.6 s LOADs took {elapsed:.2f} s: not concurrent"


# ---------------------------------------------------------------------------------------
# The real C shim, loaded by a fake Triton
# ---------------------------------------------------------------------------------------

FAKE_TRITON_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <dirent.h>
#include <unistd.h>
typedef struct { int code; char* msg; } Err;
typedef struct { char* base; size_t size; } Msg;
typedef struct { int type; char loc[4096]; char acquired[4096]; int nparams;
  char keys[16][256]; char vals[16][1024]; char config[8192]; } Model;
static Err* mkerr(int code, const char* m) { Err* e = malloc(sizeof *e); e->code = code; e->msg = strdup(m); return e; }
Err* TRITONSERVER_ErrorNew(int code, const char* m) { return mkerr(code, m); }
const char* TRITONSERVER_ErrorMessage(Err* e) { return e->msg; }
void TRITONSERVER_ErrorDelete(Err* e) { if (e) { free(e->msg); free(e); } }
Err* TRITONSERVER_MessageSerializeToJson(Msg* m, const char** b, size_t* n) { *b = m->base; *n = m->size; return NULL; }
Err* TRITONSERVER_MessageDelete(Msg* m) { free(m->base); free(m); return NULL; }
static uint32_t api_minor = 1;
Err* TRITONREPOAGENT_ApiVersion(uint32_t* ma, uint32_t* mi) { *ma = 0; *mi = api_minor; return NULL; }
Err* TRITONREPOAGENT_ModelRepositoryLocation(void* a, Model* m, int* t, const char** l) { (void)a; *t = m->type; *l = m->loc; return NULL; }
Err* TRITONREPOAGENT_ModelRepositoryLocationAcquire(void* a, Model* m, int t, const char** l) {
  (void)a; if (t != 0) return mkerr(3, "Unexpected artifact type");
  if (!m->acquired[0]) { strcpy(m->acquired, "/tmp/folderXXXXXX"); if (!mkdtemp(m->acquired)) return mkerr(1, "mkdtemp failed"); }
  *l = m->acquired; return NULL; }
Err* TRITONREPOAGENT_ModelRepositoryUpdate(void* a, Model* m, int t, const char* l) { (void)a; m->type = t; snprintf(m->loc, sizeof m->loc, "%s", l); return NULL; }
Err* TRITONREPOAGENT_ModelParameterCount(void* a, Model* m, uint32_t* c) { (void)a; *c = (uint32_t)m->nparams; return NULL; }
Err* TRITONREPOAGENT_ModelParameter(void* a, Model* m, uint32_t i, const char** k, const char** v) { (void)a; *k = m->keys[i]; *v = m->vals[i]; return NULL; }
Err* TRITONREPOAGENT_ModelConfig(void* a, Model* m, uint32_t ver, Msg** out) { (void)a; if (ver != 1) return mkerr(3, "bad version");
  Msg* g = malloc(sizeof *g); g->base = strdup(m->config[0] ? m->config : "{}"); g->size = strlen(g->base); *out = g; return NULL; }
typedef Err* (*action_fn)(void*, Model*, int);
typedef Err* (*agent_fn)(void*);
static action_fn g_action; static agent_fn g_init, g_fini;
static Model models[8];
static const char* names[] = {"LOAD", "LOAD_COMPLETE", "LOAD_FAIL", "UNLOAD", "UNLOAD_COMPLETE"};
static int action_id(const char* s) { for (int i = 0; i < 5; i++) if (!strcmp(s, names[i])) return i; return 99; }
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static int children(void) {  /* live (non-zombie) child processes of this process */
  DIR* d = opendir("/proc"); struct dirent* e; int n = 0; char path[64], buf[512];
  while (d && (e = readdir(d))) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
    FILE* f = fopen(path, "r"); if (!f) continue;
    size_t r = fread(buf, 1, sizeof buf - 1, f); fclose(f); buf[r] = 0;
    char* p = strrchr(buf, ')'); char st; int ppid;
    if (p && sscanf(p + 1, " %c %d", &st, &ppid) == 2 && ppid == getpid() && st != 'Z') n++;
  }
  if (d) closedir(d);
  return n;
}
static void report(int id, Err* e) {
  if (e) { printf("result %d err %d %s\n", id, e->code, e->msg); TRITONSERVER_ErrorDelete(e); }
  else printf("result %d ok %d %s\n", id, models[id].type, models[id].loc); }
typedef struct { int id, act; Err* e; } Job;
static void* run_job(void* p) { Job* j = p; j->e = g_action((void*)0x1, &models[j->id], j->act); return NULL; }
int main(int argc, char** argv) {
  if (argc < 2) return 2;
  void* h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!h) { printf("dlopen-failed %s\n", dlerror()); return 3; }
  g_action = (action_fn)dlsym(h, "TRITONREPOAGENT_ModelAction");
  g_init = (agent_fn)dlsym(h, "TRITONREPOAGENT_Initialize");
  g_fini = (agent_fn)dlsym(h, "TRITONREPOAGENT_Finalize");
  char line[16384];
  while (fgets(line, sizeof line, stdin)) {
    line[strcspn(line, "\n")] = 0;
    char cmd[32] = {0}, a[1024] = {0}, b[4096] = {0}, c[8192] = {0}; int id = 0, id2 = 0, n = 0;
    sscanf(line, "%31s", cmd);
    if (!strcmp(cmd, "model")) { sscanf(line, "%*s %d %1023s %4095s", &id, a, b); memset(&models[id], 0, sizeof(Model));
      models[id].type = !strcmp(a, "REMOTE_FILESYSTEM"); snprintf(models[id].loc, 4096, "%s", b); }
    else if (!strcmp(cmd, "param")) { sscanf(line, "%*s %d %255s %1023s", &id, a, c); Model* m = &models[id];
      snprintf(m->keys[m->nparams], 256, "%s", a); snprintf(m->vals[m->nparams], 1024, "%s", c); m->nparams++; }
    else if (!strcmp(cmd, "config")) { sscanf(line, "%*s %d %8191[^\n]", &id, c); snprintf(models[id].config, 8192, "%s", c); }
    else if (!strcmp(cmd, "minor")) { sscanf(line, "%*s %u", &api_minor); }
    else if (!strcmp(cmd, "init")) { Err* e = g_init((void*)0x1);
      if (e) { printf("init err %d %s\n", e->code, e->msg); TRITONSERVER_ErrorDelete(e); } else printf("init ok\n"); }
    else if (!strcmp(cmd, "fini")) { Err* e = g_fini((void*)0x1); printf("fini %s\n", e ? "err" : "ok"); }
    else if (!strcmp(cmd, "action")) { sscanf(line, "%*s %d %1023s", &id, a); report(id, g_action((void*)0x1, &models[id], action_id(a))); }
    else if (!strcmp(cmd, "parallel")) { sscanf(line, "%*s %d %d %1023s", &id, &id2, a);
      Job j1 = {id, action_id(a), NULL}, j2 = {id2, action_id(a), NULL}; pthread_t t1, t2; double t0 = now();
      pthread_create(&t1, NULL, run_job, &j1); pthread_create(&t2, NULL, run_job, &j2);
      pthread_join(t1, NULL); pthread_join(t2, NULL);
      printf("elapsed %.6f\n", now() - t0); report(id, j1.e); report(id2, j2.e); }
    else if (!strcmp(cmd, "bench")) { sscanf(line, "%*s %d %1023s %d", &id, a, &n); int act = action_id(a); double t0 = now();
      for (int i = 0; i < n; i++) { Err* e = g_action((void*)0x1, &models[id], act); if (e) { report(id, e); break; } }
      printf("bench %.3f\n", (now() - t0) / n * 1e6); }
    else if (!strcmp(cmd, "children")) { printf("children %d\n", children()); }
    else if (!strcmp(cmd, "dlclose")) { printf("dlclose %d\n", dlclose(h)); }
    fflush(stdout);
  }
  return 0;
}
"""


@pytest.fixture(scope="session")
def fake_triton(tmp_path_factory: pytest.TempPathFactory, agents_dir: Path) -> tuple[Path, Path]:
    """(fake_triton executable, installed shim) -- the shim installed with an interpreter record."""
    if shutil.which("gcc") is None:
        missing("gcc", "gcc is needed for the fake Triton (apt package gcc)")
    d = tmp_path_factory.mktemp("fake_triton")
    src = d / "fake_triton.c"
    src.write_text(FAKE_TRITON_C)
    exe = d / "fake_triton"
    subprocess.run(["gcc", "-O1", "-rdynamic", "-o", str(exe), str(src), "-ldl", "-lpthread"], check=True)
    lib = install_agent(d / "repoagents", "dragonfly", shim=build_shim(d), sys_path=[str(agents_dir)])
    return exe, lib


def drive(fake: tuple[Path, Path], script: str, env: dict[str, str] | None = None,
          timeout: float = 60) -> list[str]:
    exe, lib = fake
    out = subprocess.run([str(exe), str(lib)], check=False, input=textwrap.dedent(script), capture_output=True,
                         text=True, timeout=timeout, env=dict(os.environ, **(env or {})))
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.splitlines()


def test_shim_exports_only_the_agent_api(fake_triton: tuple[Path, Path]) -> None:
    nm = shutil.which("nm")
    if nm is None:
        missing("nm", "nm not installed (apt package binutils, a dependency of gcc)")
    out = subprocess.run([nm, "-D", "--defined-only", str(fake_triton[1])], check=True, capture_output=True, text=True).stdout
    names = {line.split()[-1] for line in out.splitlines() if line.strip()}
    assert names == {"TRITONREPOAGENT_Initialize", "TRITONREPOAGENT_Finalize", "TRITONREPOAGENT_ModelAction"}


def test_shim_checks_api_version(fake_triton: tuple[Path, Path]) -> None:
    assert drive(fake_triton, "init\n") == ["init ok"]
    out = drive(fake_triton, "minor 0\ninit\n")
    assert out[0].startswith("init err 5 dfrepo agent: needs repository-agent API 0.x with minor >= 1")


def test_shim_relocates_through_python(fake_triton: tuple[Path, Path], tmp_path: Path) -> None:
    src = tmp_path / "copy"
    (src / "1").mkdir(parents=True)
    (src / "config.pbtxt").write_text("x")
    out = drive(fake_triton, f"""
        init
        model 0 REMOTE_FILESYSTEM s3://127.0.0.1:9/bucket/m
        param 0 dfrepo.agent dfrepo_test_agents:CopyAgent
        param 0 copy_from {src}
        config 0 {{"name":"m","backend":"python"}}
        action 0 LOAD
        action 0 LOAD_COMPLETE
        action 0 UNLOAD
        action 0 UNLOAD_COMPLETE
        fini
        """)
    loaded = out[1].split()
    assert loaded[:4] == ["result", "0", "ok", "0"] and loaded[4].startswith("/tmp/folder")
    assert (Path(loaded[4]) / "config.pbtxt").read_text() == "x"
    assert out[2:5] == [f"result 0 ok 0 {loaded[4]}"] * 3 and out[5] == "fini ok"
    shutil.rmtree(loaded[4])


def test_shim_carries_python_error(fake_triton: tuple[Path, Path]) -> None:
    out = drive(fake_triton, """
        model 0 REMOTE_FILESYSTEM s3://bucket/repo/m
        param 0 dfrepo.agent dfrepo_test_agents:FailAgent
        action 0 LOAD
        action 0 LOAD_FAIL
        model 1 FILESYSTEM /models/x
        param 1 dfrepo.agent not_a_module_q:Agent
        action 1 LOAD
        fini
        """)
    assert out[0] == ("result 0 err 2 dfrepo agent 'fail': LOAD of model 'm' (s3://bucket/repo/m) failed: "
                      "GET http://127.0.0.1:1/models/m/1/model.py?<redacted> answered HTTP 403")
    assert out[1] == "result 0 ok 1 s3://bucket/repo/m"
    assert out[2].startswith("result 1 err 3 ") and "cannot import 'not_a_module_q'" in out[2]


def test_shim_survives_worker_crash(fake_triton: tuple[Path, Path]) -> None:
    out = drive(fake_triton, """
        model 0 FILESYSTEM /models/a
        param 0 dfrepo.agent dfrepo_test_agents:CrashAgent
        action 0 LOAD
        children
        model 1 FILESYSTEM /models/b
        action 1 LOAD
        children
        fini
        children
        """)
    assert out[0].startswith("result 0 err 4 dfrepo agent: the Python worker (pid ")
    assert "died during LOAD of /models/a" in out[0]
    assert out[1] == "children 0"  # the dead worker was reaped, not left a zombie
    assert out[2:] == ["result 1 ok 0 /models/b", "children 1", "fini ok", "children 0"]


def test_shim_restarts_a_killed_worker(fake_triton: tuple[Path, Path], tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    exe, lib = fake_triton
    proc = subprocess.Popen([str(exe), str(lib)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin and proc.stdout

    def cmd(line: str, answer: bool = True) -> str:
        assert proc.stdin and proc.stdout
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
        return proc.stdout.readline().strip() if answer else ""

    cmd("model 0 FILESYSTEM /models/a", answer=False)
    cmd("param 0 dfrepo.agent dfrepo_test_agents:PidAgent", answer=False)
    cmd(f"param 0 pidfile {pidfile}", answer=False)
    assert cmd("action 0 LOAD") == "result 0 ok 0 /models/a"
    first = int(pidfile.read_text().split()[1])
    os.kill(first, signal.SIGKILL)
    time.sleep(0.2)
    assert cmd("action 0 LOAD_COMPLETE") == "result 0 ok 0 /models/a"
    second = int(pidfile.read_text().splitlines()[-1].split()[1])
    assert second != first
    assert cmd("fini") == "fini ok"
    assert not Path(f"/proc/{second}").exists()  # Finalize reaped the worker
    proc.stdin.close()
    assert proc.wait(10) == 0


def test_shim_reports_unusable_interpreter(fake_triton: tuple[Path, Path], tmp_path: Path) -> None:
    out = drive(fake_triton, "model 0 FILESYSTEM /m\naction 0 LOAD\n",
                env={"DFREPO_PYTHON": str(tmp_path / "no-python")})
    assert out[0].startswith("result 0 err 4 dfrepo agent: cannot start the Python worker")
    assert "DFREPO_PYTHON" in out[0]
    out = drive(fake_triton, "model 0 FILESYSTEM /m\naction 0 LOAD\n", env={"DFREPO_PYTHON": "/bin/false"})
    assert out[0].startswith("result 0 err 4 dfrepo agent: the Python worker '/bin/false' exited (exit status 1)")


def test_shim_runs_loads_concurrently(fake_triton: tuple[Path, Path]) -> None:
    out = drive(fake_triton, """
        model 0 FILESYSTEM /models/a
        param 0 dfrepo.agent dfrepo_test_agents:SleepAgent
        param 0 sleep 0.6
        model 1 FILESYSTEM /models/b
        param 1 dfrepo.agent dfrepo_test_agents:SleepAgent
        param 1 sleep 0.6
        model 2 FILESYSTEM /models/warm
        action 2 LOAD
        parallel 0 1 LOAD
        fini
        """)
    elapsed = float(out[1].split()[1])
    assert out[2:] == ["result 0 ok 0 /models/a", "result 1 ok 0 /models/b", "fini ok"]
    assert elapsed < 1.1, f"two 0.6 s LOADs took {elapsed:.2f} s through the shim"


def test_shim_noop_action_latency(fake_triton: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out = drive(fake_triton, """
        model 0 FILESYSTEM /models/a
        bench 0 LOAD_COMPLETE 1
        bench 0 LOAD_COMPLETE 300
        fini
        """)
    first_us, steady_us = float(out[0].split()[1]), float(out[1].split()[1])
    with capsys.disabled():
        print(f"\n[dfrepo-agent] worker start + first action {first_us / 1000:.1f} ms; "
              f"no-op action {steady_us:.0f} us")
    assert steady_us < 20_000


def test_shim_survives_dlclose_and_reopen(fake_triton: tuple[Path, Path]) -> None:
    out = drive(fake_triton, """
        init
        model 0 FILESYSTEM /models/a
        action 0 LOAD
        children
        fini
        children
        dlclose
        """)
    assert out == ["init ok", "result 0 ok 0 /models/a", "children 1", "fini ok", "children 0", "dlclose 0"]
