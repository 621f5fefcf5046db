"""The repository agent inside a real tritonserver (CPU, python-backend toy models)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dfrepo.triton import install_agent
from servers.models import make_toy_model
from servers.procs import wait_until
from servers.triton import dfrepo_workers_of
from test_triton_bridge import AGENTS_SOURCE, build_shim

pytestmark = pytest.mark.triton

AGENT = "dragonfly"  # the drop-in name; the Python class is picked per model


@pytest.fixture(scope="module")
def repoagents(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("repoagents")
    (d / "agents").mkdir()
    (d / "agents" / "dfrepo_test_agents.py").write_text(AGENTS_SOURCE)
    install_agent(d / "dir", AGENT, shim=build_shim(d), sys_path=[str(d / "agents")])
    return d / "dir"






def test_python_agent_redirects_local_model(triton_server: Any, repoagents: Path, tmp_path: Path) -> None:
    repo, other = tmp_path / "repo", tmp_path / "other"
    copy = make_toy_model(other, "toy", add=100.0)
    make_toy_model(repo, "toy", add=1.0, agent=AGENT,
                   agent_params={"dfrepo.agent": "dfrepo_test_agents:CopyAgent", "copy_from": str(copy)})
    server = triton_server(str(repo), repoagent_dir=str(repoagents))
    status, body = server.load("toy")
    assert status == 200, body + server.log()[-3000:]
    assert server.infer_fp32("toy", "INPUT0", [1, 2, 3, 4], "OUTPUT0") == [101.0, 102.0, 103.0, 104.0]
    assert "initialize repo=/tmp/folder" in server.log()


def test_failing_agent_fails_only_its_model(triton_server: Any, repoagents: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_toy_model(repo, "bad", agent=AGENT, agent_params={"dfrepo.agent": "dfrepo_test_agents:FailAgent"})
    make_toy_model(repo, "good", add=2.0)
    server = triton_server(str(repo), repoagent_dir=str(repoagents))
    status, body = server.load("bad")
    expected = ("dfrepo agent 'fail': LOAD of model 'bad' (" + str(repo / "bad") + ") failed: GET "
                "http://127.0.0.1:1/models/m/1/model.py?<redacted> answered HTTP 403")
    assert status != 200 and "failed to load 'bad'" in body  # the reason goes to the log
    assert not server.is_ready("bad")
    assert expected in server.log() and "SECRET" not in server.log()
    assert server.is_live()
    assert server.load("good")[0] == 200
    assert server.infer_fp32("good", "INPUT0", [0, 0, 0, 0], "OUTPUT0") == [2.0] * 4


def test_unload_reload_does_not_leak_workers(triton_server: Any, repoagents: Path, tmp_path: Path) -> None:
    repo, pidfile = tmp_path / "repo", tmp_path / "pids"
    make_toy_model(repo, "toy", agent=AGENT,
                   agent_params={"dfrepo.agent": "dfrepo_test_agents:PidAgent", "pidfile": str(pidfile)})
    server = triton_server(str(repo), repoagent_dir=str(repoagents))
    tpid = server.process.pid
    for _ in range(2):
        assert server.load("toy")[0] == 200
        assert server.is_ready("toy")
        assert len(dfrepo_workers_of(tpid)) == 1
        server.unload("toy")
        assert wait_until(lambda: not server.is_ready("toy"))
        # last model gone -> agent Finalize -> the worker is stopped and reaped
        assert wait_until(lambda: dfrepo_workers_of(tpid) == []), dfrepo_workers_of(tpid)
    actions = [line.split()[0] for line in pidfile.read_text().splitlines()]
    assert actions == ["LOAD", "LOAD_COMPLETE", "UNLOAD", "UNLOAD_COMPLETE"] * 2
    assert server.is_live()


@pytest.mark.servers
def test_dragonfly_agent_pulls_s3_model(triton_server: Any, seaweedfs: Any, repoagents: Path,
                                        tmp_path: Path) -> None:
    from servers.upload import upload_tree_s3

    local = tmp_path / "local"
    make_toy_model(local, "toy_s3", add=7.0, payload_bytes=1 << 20, agent=AGENT)
    upload_tree_s3(seaweedfs, "models", "repo", local)
    seaweedfs.clear_log()
    # No credential file: Triton and the agent both use the AWS_* environment. No Dragonfly
    # config either: direct downloads only because the operator allowed them.
    env = {**seaweedfs.triton_env(), "DFREPO_ALLOW_DIRECT": "1"}
    server = triton_server(seaweedfs.s3_url("models", "repo"), repoagent_dir=str(repoagents), env=env)
    status, body = server.load("toy_s3")
    assert status == 200, body + server.log()[-3000:]
    assert server.infer_fp32("toy_s3", "INPUT0", [1, 1, 1, 1], "OUTPUT0") == [8.0] * 4
    assert "initialize repo=/tmp/folder" in server.log()
    gets = [path for method, path in seaweedfs.request_log()
            if method == "GET" and path.split("?")[0].endswith("/weights.bin")]
    # dfrepo fetches with presigned URLs; Triton's own S3 client signs in headers. Every GET
    # of the weights being presigned proves Triton never downloaded the model itself.
    assert gets and all("X-Amz-Signature=" in path for path in gets), gets
