"""What a user installs: the wheel, in a clean venv, driving a real tritonserver.

The other Triton tests run the agent from the project's editable ``.venv``. Here the wheel is
built from this checkout's sources (``pip wheel``, build isolation: setuptools and Cython from
PyPI, as for a user), installed with the ``[s3]`` extra into a fresh ``python -m venv`` (not
editable, no project packages), and ``dfrepo install-agent`` of *that* venv installs the
shim. Triton then loads an ``s3://`` model from SeaweedFS through that agent: the worker must
be that venv's interpreter running the wheel's dfrepo with its compiled core
(``DFREPO_REQUIRE_EXTENSION=1``).

About 40 s (wheel build ~20 s, venv + install ~10 s with pip's cache, Triton ~5 s); needs
PyPI for the build requirements and boto3.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.triton, pytest.mark.servers, pytest.mark.slow]

from servers import models
from servers.procs import REPO_ROOT
from servers.triton import dfrepo_workers_of, triton_home
from servers.upload import upload_tree_s3

MiB = 1 << 20
X = [1.0, 2.0, 3.0, 4.0]


def _run(argv: list[str | os.PathLike[str]], *, timeout: float, cwd: Path | None = None) -> str:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV") and not k.startswith("DFREPO_")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    proc = subprocess.run([os.fspath(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, f"{argv}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _worker_of(pid: int) -> int:
    """The one live dfrepo worker whose parent is ``pid``."""
    found = dfrepo_workers_of(pid)
    assert len(found) == 1, found
    return found[0]


def _checkout_copy(dest: Path) -> Path:
    """This checkout's sources as git sees them (tracked + new, not ignored): no .venv, no
    build outputs, no in-tree generated C or .so."""
    if shutil.which("git") is None:
        pytest.skip("git is needed to list the checkout's sources")
    listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=REPO_ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, listing.decode().split("\0")):
        src = REPO_ROOT / rel
        if src.is_file():  # a deleted-but-tracked file is listed too
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def test_wheel_in_clean_venv_serves_triton(triton_server: Any, seaweedfs: Any, tmp_path: Path) -> None:
    if triton_home() is None:
        pytest.skip("prepared Triton not found in .cache/triton; run scripts/bootstrap.sh")
    t0 = time.monotonic()
    src = _checkout_copy(tmp_path / "src")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "dist", src], timeout=300)
    (wheel,) = (tmp_path / "dist").glob("dfrepo-*.whl")
    t_build = time.monotonic() - t0

    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", None) or sys.executable
    _run([base, "-m", "venv", venv], timeout=120)
    py = venv / "bin" / "python"
    _run([py, "-m", "pip", "install", "-q", f"{wheel}[s3]"], timeout=300)
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], timeout=30).strip())
    where = json.loads(_run([py, "-c", "import json, dfrepo, dfrepo._fastio as f, boto3; "
                                       "print(json.dumps([dfrepo.__file__, f.__file__]))"], timeout=60))
    assert all(Path(p).is_relative_to(site) for p in where), where  # the wheel's files, not the checkout's
    t_install = time.monotonic() - t0 - t_build

    agents = tmp_path / "repoagents"
    out = _run([venv / "bin" / "dfrepo", "install-agent", "--repoagent-dir", agents], timeout=60)
    lib = agents / "dragonfly" / "libtritonrepoagent_dragonfly.so"
    assert f"installed {lib}" in out
    record = json.loads((agents / "dragonfly" / "dfrepo_agent.json").read_text())
    assert Path(record["python"]).parent == venv / "bin" and record["sys_path"] == [str(site)], record

    name = "toy_wheel"
    models.make_toy_model(tmp_path / "model", name, add=4.0, payload_bytes=1 * MiB, agent="dragonfly")
    upload_tree_s3(seaweedfs, "wheel", "repo", tmp_path / "model")
    (tmp_path / "dragonfly.json").write_text("{}")  # no proxy: dfrepo fetches presigned URLs directly
    env = {**seaweedfs.triton_env(), "TRITON_DRAGONFLY_CONFIG_PATH": str(tmp_path / "dragonfly.json"),
           "DFREPO_CACHE_DIR": str(tmp_path / "cache"), "DFREPO_REQUIRE_EXTENSION": "1"}
    server = triton_server(seaweedfs.s3_url("wheel", "repo"), repoagent_dir=str(agents), env=env)
    seaweedfs.clear_log()
    status, body = server.load(name)
    assert status == 200, f"{body}\n{server.log()[-4000:]}"
    assert server.infer_fp32(name, "INPUT0", X, "OUTPUT0") == [5.0, 6.0, 7.0, 8.0]
    assert "initialize repo=/tmp/folder" in server.log()
    gets = [t for m, t in seaweedfs.request_log() if m == "GET" and t.split("?")[0].endswith("/weights.bin")]
    assert gets and all("X-Amz-Signature=" in t for t in gets), gets  # dfrepo's presigned GETs only

    # The worker is the clean venv's interpreter with the wheel's compiled core mapped.
    assert server.process.pid is not None
    worker = _worker_of(server.process.pid)
    argv0 = Path(f"/proc/{worker}").joinpath("cmdline").read_bytes().split(b"\0")[0].decode()
    assert argv0 == record["python"], argv0
    maps = Path(f"/proc/{worker}/maps").read_text()
    assert f"{site}/dfrepo/_fastio." in maps, "the worker did not map the wheel's compiled core"
    assert str(REPO_ROOT / "src") not in maps

    status, body = server.unload(name)
    assert status == 200, body
    print(f"\n[wheel] {wheel.name}: build {t_build:.0f}s, venv+install {t_install:.0f}s, "
          f"total {time.monotonic() - t0:.0f}s")
