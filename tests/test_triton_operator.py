"""Issue #15 on a real tritonserver: the operator's rules for the ``dragonfly`` agent.

* no ``dragonfly_config.json`` and no ``DFREPO_ALLOW_DIRECT``: the LOAD fails, naming the file;
* poll mode, direct downloads (a ``{}`` config) through the environment's ``http_proxy``
  (a recording forward proxy on loopback): only the version the model's ``version_policy``
  selects is pulled, an unknown agent parameter is ignored, a model that sets ``proxy``
  is refused, a changed object is fetched again on the next poll and nothing else is;
* the allow-list in ``dragonfly_config.json`` (``"model_parameters"``): it narrows what a
  model may set, ``$DFREPO_MODEL_PARAMETERS`` beats it, and a model cannot widen it (nor
  point the agent at another config file) through its own parameters.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from forward_proxy import ForwardProxy

pytestmark = [pytest.mark.triton, pytest.mark.servers]

from dfrepo.triton.install import install_agent
from servers import models
from servers.procs import wait_until
from servers.triton import triton_home
from servers.upload import upload_tree_s3

BUCKET = "operator-models"
X = [1.0, 2.0, 3.0, 4.0]




def _versioned_model(root: Path, name: str, adds: dict[int, float], params: dict[str, str]) -> Path:
    """A toy model with one version directory per ``adds`` entry (version -> x + add)."""
    model = root / name
    for version, add in adds.items():
        tmp = root / ".tmp"
        models.make_toy_model(tmp, name, add=add, agent="dragonfly", agent_params=params)
        (model / str(version)).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp / name / "1" / "model.py", model / str(version) / "model.py")
        shutil.copy(tmp / name / "config.pbtxt", model / "config.pbtxt")
        shutil.copy(tmp / name / "labels.txt", model / "labels.txt")
        shutil.rmtree(tmp)
    return model


@pytest.fixture(scope="module")
def agents(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if triton_home() is None:
        pytest.skip("prepared Triton not found in .cache/triton; run scripts/bootstrap.sh")
    return install_agent(tmp_path_factory.mktemp("op") / "repoagents").parent.parent


def test_missing_dragonfly_config_fails_the_load(triton_server: Any, seaweedfs: Any, agents: Path,
                                                 tmp_path: Path) -> None:
    src = tmp_path / "src"
    models.make_toy_model(src, "op_noconfig", add=1.0, agent="dragonfly")
    upload_tree_s3(seaweedfs, BUCKET, "noconfig", src)
    assert not Path("/home/triton/dragonfly_config.json").exists()
    server = triton_server(seaweedfs.s3_url(BUCKET, "noconfig"), repoagent_dir=str(agents),
                           env={**seaweedfs.triton_env(), "DFREPO_CACHE": "off"})
    status, _body = server.load("op_noconfig")
    assert status != 200 and not server.is_ready("op_noconfig")
    log = server.log()
    assert "no Dragonfly config: /home/triton/dragonfly_config.json does not exist" in log, log[-3000:]
    assert "DFREPO_ALLOW_DIRECT=1" in log
    assert server.is_live()


def test_poll_mode_versions_parameters_and_env_proxy(triton_server: Any, seaweedfs: Any, agents: Path,
                                                     tmp_path: Path) -> None:
    src = tmp_path / "src"
    _versioned_model(src, "op_versions", {1: 1.0, 2: 2.0, 3: 3.0},
                     {"tag": "team-a", "checksum.MD5": "from-another-agent"})
    _versioned_model(src, "op_static", {1: 10.0}, {})
    _versioned_model(src, "op_evil", {1: 5.0}, {"proxy": "http://attacker.invalid:4001"})
    upload_tree_s3(seaweedfs, BUCKET, "poll", src)
    cfg = tmp_path / "dragonfly_config.json"
    cfg.write_text(json.dumps({}))  # the operator's choice: direct (as the C++ agent)
    with ForwardProxy() as proxy:
        env = {**seaweedfs.triton_env(), "TRITON_DRAGONFLY_CONFIG_PATH": str(cfg),
               "DFREPO_CACHE_DIR": str(tmp_path / "cache"), "http_proxy": proxy.url}
        server = triton_server(seaweedfs.s3_url(BUCKET, "poll"), repoagent_dir=str(agents), env=env,
                               explicit=False, extra_args=["--model-control-mode=poll",
                                                           "--repository-poll-secs=1"])
        assert wait_until(lambda: server.is_ready("op_versions") and server.is_ready("op_static"), 30.0), server.log()[-4000:]
        assert server.infer_fp32("op_versions", "INPUT0", X, "OUTPUT0") == [4.0, 5.0, 6.0, 7.0]  # version 3

        def presigned(model: str) -> list[str]:
            return [p.split(f"/{model}/", 1)[1].split("?")[0] for m, p in proxy.requests
                    if m == "GET" and p.endswith("?<presigned>") and f"/{model}/" in p]

        # 2 + 5: dfrepo's direct downloads went through http_proxy, latest 1 only.
        assert sorted(presigned("op_versions")) == ["3/model.py", "config.pbtxt", "labels.txt"], proxy.requests
        log = server.log()
        # 3: another agent's parameter is named and ignored; 4: a model may not set proxy.
        assert "'checksum.MD5' is not a dfrepo setting; ignored" in log
        assert not server.is_ready("op_evil")
        assert "agent parameter 'proxy' may not be set by a model" in log
        assert "attacker.invalid" not in [p for _, p in proxy.requests]

        # MODE_POLL: change one object; the next poll reloads the model and fetches only it.
        before = len(proxy.requests)
        changed = tmp_path / "changed"
        _versioned_model(changed, "op_versions", {3: 30.0}, {"tag": "team-a", "checksum.MD5": "from-another-agent"})
        seaweedfs.client().upload_file(str(changed / "op_versions" / "3" / "model.py"), BUCKET,
                                       "poll/op_versions/3/model.py")
        assert wait_until(lambda: server.infer_fp32("op_versions", "INPUT0", X, "OUTPUT0") == [31.0, 32.0, 33.0, 34.0],
                     60), server.log()[-4000:]
        after = proxy.requests[before:]
        fetched = [p.split("/op_versions/", 1)[1].split("?")[0] for m, p in after
                   if m == "GET" and p.endswith("?<presigned>") and "/op_versions/" in p]
        assert fetched == ["3/model.py"], after  # config.pbtxt and labels.txt: from dfrepo's cache
        assert [p for m, p in after if m == "GET" and p.endswith("?<presigned>") and "/op_static/" in p] == []


def test_allow_list_in_dragonfly_config(triton_server: Any, seaweedfs: Any, agents: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    models.make_toy_model(src, "al_tag", add=1.0, agent="dragonfly", agent_params={"tag": "team-a"})
    # priority is on the default list, not on this operator's.
    models.make_toy_model(src, "al_priority", add=2.0, agent="dragonfly", agent_params={"priority": "2"})
    evil = tmp_path / "evil.json"
    evil.write_text(json.dumps({"model_parameters": ["*"]}))
    models.make_toy_model(src, "al_sneaky", add=3.0, agent="dragonfly", agent_params={
        "model_parameters": "*", "TRITON_DRAGONFLY_CONFIG_PATH": str(evil), "DFREPO_MODEL_PARAMETERS": "*",
        "priority": "2"})
    upload_tree_s3(seaweedfs, BUCKET, "allowlist", src)
    cfg = tmp_path / "dragonfly_config.json"
    cfg.write_text(json.dumps({"model_parameters": ["tag"]}))  # no proxy: direct, as the C++ agent
    env = {**seaweedfs.triton_env(), "TRITON_DRAGONFLY_CONFIG_PATH": str(cfg), "DFREPO_CACHE": "off"}
    server = triton_server(seaweedfs.s3_url(BUCKET, "allowlist"), repoagent_dir=str(agents), env=env)
    assert server.load("al_tag")[0] == 200, server.log()[-4000:]
    assert server.infer_fp32("al_tag", "INPUT0", X, "OUTPUT0") == [2.0, 3.0, 4.0, 5.0]
    for refused in ("al_priority", "al_sneaky"):
        status, _body = server.load(refused)
        assert status != 200 and not server.is_ready(refused)
    log = server.log()
    assert log.count("agent parameter 'priority' may not be set by a model (operator allows: tag)") == 2, log[-4000:]
    # al_sneaky's model_parameters / TRITON_DRAGONFLY_CONFIG_PATH / DFREPO_MODEL_PARAMETERS
    # widened nothing: they are no dfrepo setting (warned about and ignored; the unit tests
    # check the warning, the worker's stderr is not reliably in the log in time).
    assert server.is_live()

    # The environment beats the file; an unknown name in the file fails the LOAD, named.
    server2 = triton_server(seaweedfs.s3_url(BUCKET, "allowlist"), repoagent_dir=str(agents),
                            env={**env, "DFREPO_MODEL_PARAMETERS": "priority"})
    assert server2.load("al_priority")[0] == 200, server2.log()[-4000:]
    assert server2.load("al_tag")[0] != 200
    cfg.write_text(json.dumps({"model_parameters": ["prioirty"]}))  # read again on every LOAD
    assert server2.load("al_sneaky")[0] != 200  # (a loaded, unchanged model is not LOADed again)
    log = server2.log()
    assert f"{cfg}: model_parameters names 'prioirty'" in log and "did you mean 'priority'" in log, log[-4000:]
