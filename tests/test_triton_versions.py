"""The same agent on every Triton build of ``scripts/triton-versions.env`` (oldest to newest).

The repository-agent API (``TRITONREPOAGENT_ApiVersion`` 0.1) has not changed since 2021, but
what Triton hands the agent has: the model config JSON, the remote location string, when it
acquires and deletes the local directory. Each case starts that build's real tritonserver with
dfrepo's shim installed (this venv's worker), loads an ``s3://`` model from SeaweedFS through
the agent and a stand-in Dragonfly peer, runs an inference, unloads, and checks what the agent
must leave behind: nothing (acquired dir removed, worker stopped).

``scripts/bootstrap.sh`` prepares the builds (``.cache/triton`` and ``.cache/triton-<x.y>``);
a build it has not prepared is skipped with the reason.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.triton, pytest.mark.servers]

from dfpeer import PeerProcess
from dfrepo.triton.install import install_agent
from servers import models
from servers.procs import wait_until
from servers.triton import dfrepo_workers_of, triton_builds
from servers.upload import upload_tree_s3

AGENT = "dragonfly"
BUCKET = "versions"
X = [1.0, 2.0, 3.0, 4.0]
MiB = 1 << 20






@pytest.fixture(scope="module")
def agents(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged shim installed as ``dragonfly`` (worker: this venv's python)."""
    return install_agent(tmp_path_factory.mktemp("repoagents")).parent.parent


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerProcess]:
    with PeerProcess(tmp_path_factory.mktemp("peer")) as p:
        yield p


@pytest.mark.parametrize("version", sorted(triton_builds(), key=lambda v: tuple(map(int, v.split(".")))))
def test_agent_loads_s3_model_on_triton_version(
    version: str, triton_server: Any, seaweedfs: Any, agents: Path, peer: PeerProcess, tmp_path: Path
) -> None:
    tag = version.replace(".", "_")
    name, prefix, add = f"toy_{tag}", f"repo-{tag}", float(version.split(".")[1])
    # proxy comes only from the model's agent parameters (no dragonfly_config.json): GETs by
    # the peer at the store prove Triton passed the parameters through its config JSON.
    models.make_toy_model(tmp_path / "src", name, add=add, payload_bytes=2 * MiB, agent=AGENT,
                          agent_params={"proxy": peer.url, "cache": "off"})
    upload_tree_s3(seaweedfs, BUCKET, prefix, tmp_path / "src")
    env = {**seaweedfs.triton_env(), "TRITON_DRAGONFLY_CONFIG_PATH": str(tmp_path / "none.json"),
           "DFREPO_CACHE_DIR": str(tmp_path / "cache"),
           "DFREPO_MODEL_PARAMETERS": "proxy,cache"}  # the operator lets this model pick its peer
    (tmp_path / "none.json").write_text("{}")

    t0 = time.monotonic()
    server = triton_server(seaweedfs.s3_url(BUCKET, prefix), repoagent_dir=str(agents), env=env, version=version)
    assert server.server_version() == version
    seaweedfs.clear_log()
    status, body = server.load(name)
    assert status == 200, f"{body}\n{server.log()[-4000:]}"
    assert server.is_ready(name)
    assert server.infer_fp32(name, "INPUT0", X, "OUTPUT0") == [v + add for v in X]

    # The model came through the agent: Triton loaded it from its acquired local dir, and
    # every model file was fetched by the peer (dfrepo's headers), none by Triton's S3 client.
    found = re.findall(rf"\[toy_model {name}\] initialize repo=(\S+)", server.log())
    assert found and found[-1].startswith("/tmp/folder"), found
    acquired = found[-1]
    head = f"/{BUCKET}/{prefix}/{name}/"
    gets = [r for r in seaweedfs.requests() if r.method == "GET" and r.target.split("?")[0].startswith(head)
            and not r.target.split("?")[0].endswith(("/", "/config.pbtxt"))]
    by_peer = sorted(r.target.split("?")[0] for r in gets if "x-dragonfly-use-p2p" in r.headers)
    by_others = sorted(r.target.split("?")[0] for r in gets if "x-dragonfly-use-p2p" not in r.headers)
    assert by_others == [], by_others
    assert {head + f for f in ("1/weights.bin", "1/model.py", "labels.txt")} <= set(by_peer), by_peer
    pid = server.process.pid
    assert pid is not None and len(dfrepo_workers_of(pid)) == 1

    status, body = server.unload(name)
    assert status == 200, body
    assert wait_until(lambda: not server.is_ready(name))
    # UNLOAD_COMPLETE: Triton deletes the dir it gave the agent; the last model gone, the
    # worker stops.
    assert wait_until(lambda: not os.path.exists(acquired)), f"{acquired} left behind"
    assert wait_until(lambda: not dfrepo_workers_of(pid)), "dfrepo worker still running after the last unload"
    assert server.is_live()
    print(f"\n[versions] Triton {version}: start+load+infer+unload {time.monotonic() - t0:.1f}s")
