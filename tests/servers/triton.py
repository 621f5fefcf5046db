"""Real NVIDIA Triton (``tritonserver`` from the nvidia-pytriton wheel) on CPU, for e2e tests.

scripts/bootstrap.sh prepares ``.cache/triton`` exactly as pytriton does (tree copy without the
python stubs, the stub for this Python placed in ``backends/python``), and every other build of
``scripts/triton-versions.env`` in ``.cache/triton-<major.minor>`` the same way from its own
wheel. Each server gets its own free ports on 127.0.0.1, its own log file and its own
python-backend shared-memory prefix, so several can run side by side on one machine.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import sys
import sysconfig
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .procs import LOOPBACK, REPO_ROOT, ManagedProcess, clean_env, free_port, http_status

__all__ = ["TritonHandle", "start_triton", "triton_builds", "triton_home", "triton_libs"]

VERSIONS_FILE = REPO_ROOT / "scripts" / "triton-versions.env"

# Variables that would let a test's Triton reach real clouds or pick up the developer's keys.
_DROP_PREFIXES = (
    "AWS_",
    "GOOGLE_",
    "AZURE_",
    "CLOUD_STORAGE_EMULATOR",
    "GCE_METADATA",
    "TRITON_CLOUD_CREDENTIAL_PATH",
    "TRITON_AWS_",
    "TRITON_GCS_",
    "TRITON_AZURE_",
)


def triton_builds() -> dict[str, str]:
    """Triton version -> nvidia-pytriton version, from ``scripts/triton-versions.env``."""
    match = re.search(r'^TRITON_BUILDS="([^"]*)"', VERSIONS_FILE.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"TRITON_BUILDS missing from {VERSIONS_FILE}")
    return dict(build.split("=", 1) for build in match.group(1).split())


def _pytriton_version() -> str | None:
    try:
        return importlib.metadata.version("nvidia-pytriton")
    except importlib.metadata.PackageNotFoundError:
        return None


def triton_home(version: str | None = None) -> Path | None:
    """A prepared Triton tree, or None if bootstrap has not prepared it.

    ``version`` None: ``.cache/triton`` (``$DFREPO_TRITON_HOME`` overrides), the build of the
    nvidia-pytriton pinned in the venv. A Triton version of ``scripts/triton-versions.env``
    ("2.36.0"): ``.cache/triton`` if the venv's nvidia-pytriton is that build, else
    ``.cache/triton-2.36``.
    """
    if version is None:
        home = Path(os.environ.get("DFREPO_TRITON_HOME", REPO_ROOT / ".cache" / "triton"))
    else:
        builds = triton_builds()
        if version not in builds:
            raise ValueError(f"Triton {version} is not in {VERSIONS_FILE} ({sorted(builds)})")
        if builds[version] == _pytriton_version():
            home = REPO_ROOT / ".cache" / "triton"
        else:
            home = REPO_ROOT / ".cache" / f"triton-{version.rsplit('.', 1)[0]}"
            stamp = home / ".prepared"
            if not stamp.is_file() or f"pytriton={builds[version]} " not in stamp.read_text():
                return None
    exe = home / "bin" / "tritonserver"
    stub = home / "backends" / "python" / "triton_python_backend_stub"
    return home if exe.is_file() and stub.is_file() else None


def triton_libs(home: Path) -> Path | None:
    """``nvidia_pytriton.libs`` (libtritonserver, vendored curl/ssl, ...) of the tree ``home``.

    Its ``lib`` (a link into the venv for ``.cache/triton``, a copy for the other builds);
    only the default tree falls back to the venv's ``nvidia_pytriton.libs``, which belong to
    the pinned build.
    """
    candidates = [home / "lib"]
    stamp = home / ".prepared"
    if not (stamp.is_file() and stamp.read_text().startswith("triton=")):  # not another build's tree
        candidates.append(Path(sysconfig.get_paths()["purelib"]) / "nvidia_pytriton.libs")
    for candidate in candidates:
        if (candidate / ".").is_dir() and any(candidate.glob("libtritonserver*")):
            return candidate
    return None


@dataclass
class TritonHandle:
    """A running tritonserver and small HTTP helpers for the v2 protocol."""

    process: ManagedProcess
    http_port: int
    grpc_port: int
    metrics_port: int
    model_repository: str
    host: str = LOOPBACK
    env: dict[str, str] = field(default_factory=dict, repr=False)

    # -- addresses -------------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    # -- process ---------------------------------------------------------------------------
    def log(self) -> str:
        """Everything tritonserver (and the python stubs, and repository agents) printed."""
        return self.process.log_text()

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def wait_exit(self, timeout: float) -> int | None:
        """Wait for the server to exit on its own (e.g. bad credentials); status or None."""
        return self.process.wait(timeout)

    def stop(self) -> int | None:
        """SIGTERM (Triton unloads models, ``--exit-timeout-secs=5``), SIGKILL if it hangs."""
        return self.process.stop(grace=20.0)

    # -- HTTP ------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, *, timeout: float = 120.0) -> tuple[int, str]:
        """One HTTP request to the server; ``(status, body text)``, error statuses included."""
        data = None
        headers = {}
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.http_url + path, data=data, method=method, headers=headers)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=timeout) as resp:
                return int(resp.status), resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode(errors="replace")

    def server_version(self) -> str:
        """The version ``GET /v2`` reports (e.g. "2.36.0")."""
        status, text = self.request("GET", "/v2")
        if status != 200:
            raise RuntimeError(f"GET /v2 failed: {status} {text}")
        return str(json.loads(text)["version"])

    def is_live(self) -> bool:
        return http_status(self.http_url + "/v2/health/live") == 200

    def is_ready(self, name: str, version: str | int | None = None) -> bool:
        """``GET /v2/models/NAME[/versions/V]/ready`` is 200."""
        path = f"/v2/models/{_q(name)}" + (f"/versions/{version}" if version is not None else "") + "/ready"
        return http_status(self.http_url + path) == 200

    def load(self, name: str, config: Mapping[str, Any] | None = None, *, timeout: float = 300.0) -> tuple[int, str]:
        """``POST /v2/repository/models/NAME/load``, optionally overriding config.pbtxt.

        ``config`` is the model configuration as a JSON object (same field names as the
        protobuf JSON mapping, e.g. ``{"backend": "python", "model_repository_agents":
        {"agents": [{"name": "dragonfly", "parameters": {"k": "v"}}]}}``); Triton then ignores
        the repository's config.pbtxt.
        """
        body: dict[str, Any] = {}
        if config is not None:
            body = {"parameters": {"config": json.dumps(config)}}
        return self.request("POST", f"/v2/repository/models/{_q(name)}/load", body, timeout=timeout)

    def unload(self, name: str, *, unload_dependents: bool = False, timeout: float = 120.0) -> tuple[int, str]:
        """``POST /v2/repository/models/NAME/unload`` (returns once Triton has started unloading)."""
        body = {"parameters": {"unload_dependents": unload_dependents}}
        return self.request("POST", f"/v2/repository/models/{_q(name)}/unload", body, timeout=timeout)

    def repository_index(self) -> list[dict[str, Any]]:
        """``POST /v2/repository/index``: name, version, state, reason of every model."""
        status, text = self.request("POST", "/v2/repository/index", {})
        if status != 200:
            raise RuntimeError(f"repository index failed: {status} {text}")
        result: list[dict[str, Any]] = json.loads(text)
        return result

    def infer_fp32(self, name: str, input_name: str, values: Sequence[float], output_name: str) -> list[float]:
        """One FP32 inference over JSON; the 1-D input has shape ``[len(values)]``."""
        body = {
            "inputs": [{"name": input_name, "shape": [len(values)], "datatype": "FP32", "data": list(values)}],
            "outputs": [{"name": output_name}],
        }
        status, text = self.request("POST", f"/v2/models/{_q(name)}/infer", body, timeout=60.0)
        if status != 200:
            raise RuntimeError(f"inference on {name!r} failed: HTTP {status}: {text}")
        outputs = json.loads(text)["outputs"]
        for out in outputs:
            if out["name"] == output_name:
                return [float(v) for v in out["data"]]
        raise RuntimeError(f"output {output_name!r} missing from response: {text}")


def _in_private_mounts(
    argv: Sequence[str | os.PathLike[str]], mounts: Mapping[str, os.PathLike[str] | str]
) -> list[str | os.PathLike[str]]:
    """Wrap ``argv`` so it runs in a new mount namespace with ``mounts`` bind-mounted."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        raise FileNotFoundError("bind mounts for Triton need root and unshare (util-linux)")
    script = 'set -e; while [ "$1" != "--" ]; do mount --bind "$1" "$2"; shift 2; done; shift; exec "$@"'
    pairs: list[str | os.PathLike[str]] = []
    for target, source in mounts.items():
        pairs += [os.fspath(source), target]
    return [unshare, "-m", "--propagation", "private", "sh", "-c", script, "sh", *pairs, "--", *argv]


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def start_triton(
    workdir: Path,
    model_repository: str,
    *,
    repoagent_dir: str | None = None,
    env: Mapping[str, str] | None = None,
    explicit: bool = True,
    extra_args: Sequence[str] = (),
    wait: bool = True,
    timeout: float = 60.0,
    mounts: Mapping[str, os.PathLike[str] | str] | None = None,
    version: str | None = None,
) -> TritonHandle:
    """Start tritonserver on 127.0.0.1 and (if ``wait``) block until ``/v2/health/live`` is 200.

    In non-explicit mode Triton loads every model before its HTTP endpoint comes up, so
    "live" also means "initial loading finished" (failed models leave the server up, because
    of ``--exit-on-error=false``). If the process exits first, :class:`ServerStartError` carries
    the log tail; with ``wait=False`` the caller inspects ``returncode``/``log()`` itself.

    ``mounts`` (target -> source) runs Triton in a private mount namespace (``unshare -m``,
    root only) with those files bind-mounted, e.g. a hosts file and CA bundle for ``as://``.

    ``version`` (a Triton version of ``scripts/triton-versions.env``, e.g. "2.36.0") runs that
    build instead of the default ``.cache/triton`` (see :func:`triton_home`).
    """
    home = triton_home(version)
    if home is None:
        where = ".cache/triton" + (f" for Triton {version}" if version else "")
        raise FileNotFoundError(f"prepared Triton not found ({where}); run scripts/bootstrap.sh")
    libs = triton_libs(home)
    if libs is None:
        raise FileNotFoundError(f"nvidia_pytriton.libs not found for {home} (pip package nvidia-pytriton)")
    workdir.mkdir(parents=True, exist_ok=True)
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    while len({http_port, grpc_port, metrics_port}) < 3:
        grpc_port, metrics_port = free_port(), free_port()

    venv_bin = str(Path(sys.prefix) / "bin")
    base = clean_env(drop_prefixes=_DROP_PREFIXES)
    ld = [str(libs)] + ([base["LD_LIBRARY_PATH"]] if base.get("LD_LIBRARY_PATH") else [])
    base.update(
        {
            "LD_LIBRARY_PATH": os.pathsep.join(ld),
            # The python stub embeds libpython and takes sys.prefix from the first python3 on PATH.
            "PATH": os.pathsep.join([venv_bin, base.get("PATH", "/usr/bin:/bin")]),
            "VIRTUAL_ENV": sys.prefix,
            "GCE_METADATA_ROOT": "127.0.0.1:9",
            "AWS_EC2_METADATA_DISABLED": "true",
            "PYTHONNOUSERSITE": "1",
        }
    )
    base.pop("PYTHONHOME", None)
    if env:
        base.update(env)

    argv: list[str | os.PathLike[str]] = [
        home / "bin" / "tritonserver",
        f"--model-repository={model_repository}",
        f"--backend-directory={home / 'backends'}",
        f"--cache-directory={home / 'caches'}",
        f"--http-address={LOOPBACK}",
        f"--grpc-address={LOOPBACK}",
        f"--metrics-address={LOOPBACK}",
        f"--http-port={http_port}",
        f"--grpc-port={grpc_port}",
        f"--metrics-port={metrics_port}",
        "--exit-on-error=false",
        "--strict-readiness=true",
        "--exit-timeout-secs=5",
        "--allow-gpu-metrics=false",
        # Unique shared-memory names, so concurrent servers' python stubs never collide.
        f"--backend-config=python,shm-region-prefix-name=dfrepo{os.getpid()}p{http_port}_",
        f"--model-control-mode={'explicit' if explicit else 'none'}",
    ]
    if repoagent_dir is not None:
        argv.append(f"--repoagent-directory={repoagent_dir}")
    argv.extend(extra_args)
    if mounts:
        argv = _in_private_mounts(argv, mounts)

    log_path = workdir / f"tritonserver-{http_port}.log"
    proc = ManagedProcess("tritonserver", argv, log_path=log_path, env=base, cwd=workdir)
    handle = TritonHandle(proc, http_port, grpc_port, metrics_port, model_repository, env=base)
    proc.start()
    if wait:
        proc.wait_ready(handle.is_live, timeout=timeout)
    return handle


def dfrepo_workers_of(pid: int) -> list[int]:
    """Live dfrepo agent workers (``dfrepo.triton.worker``) whose parent is process *pid*."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if b"dfrepo.triton.worker" in cmd and fields[0] != "Z" and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found
