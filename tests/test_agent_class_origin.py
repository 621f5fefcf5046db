"""A model may only name a Python agent class the operator provided.

``config.pbtxt`` lives in the bucket: whoever can write it must not make the agent's
worker import an arbitrary installed module. ``dfrepo.agent`` may name a class from a
directory the operator gave ``install_agent(sys_path=...)`` (the worker sees them as
``$DFREPO_AGENT_PATHS``), or anything when the operator allows the parameter. A refused
module is never imported. (End to end, through the real shim and a worker, the agents of
tests/test_triton_bridge.py and test_triton_deadlines.py come from such a directory.)
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dfrepo import errors
from dfrepo.triton.agent import resolve_agent_class

AGENT_SOURCE = """
from pathlib import Path
Path(__file__).with_suffix(".imported").write_text("yes")
from dfrepo.triton.agent import RepoAgent
class Mine(RepoAgent):
    pass
"""


@pytest.fixture()
def agents_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "agents"
    d.mkdir()
    (d / "operator_agents_q.py").write_text(AGENT_SOURCE)
    monkeypatch.syspath_prepend(str(d))
    yield d
    sys.modules.pop("operator_agents_q", None)


def test_an_installed_module_outside_the_operators_directories_is_refused(agents_dir: Path) -> None:
    with pytest.raises(errors.ParameterNotAllowedError) as info:
        resolve_agent_class({"dfrepo.agent": "operator_agents_q:Mine"}, env={})
    assert "DFREPO_MODEL_PARAMETERS" in str(info.value)
    assert not (agents_dir / "operator_agents_q.imported").exists(), "a refused module must not run"
    with pytest.raises(errors.ParameterNotAllowedError):
        resolve_agent_class({"dfrepo.agent": "json:JSONDecoder"}, env={})


def test_a_class_from_the_operators_directory_loads(agents_dir: Path) -> None:
    cls = resolve_agent_class({"dfrepo.agent": "operator_agents_q:Mine"}, env={"DFREPO_AGENT_PATHS": str(agents_dir)})
    assert cls.__name__ == "Mine"


def test_the_operator_can_allow_any_module() -> None:
    allow = {"DFREPO_MODEL_PARAMETERS": "tag,dfrepo.agent"}
    with pytest.raises(errors.ConfigError, match="not a dfrepo.triton.RepoAgent subclass"):
        resolve_agent_class({"dfrepo.agent": "json:JSONDecoder"}, env=allow)


def test_built_in_agents_need_no_permission() -> None:
    assert resolve_agent_class({"dfrepo.agent": "dragonfly"}, env={}).__name__ == "DragonflyAgent"
    assert resolve_agent_class({}, env={}).__name__ == "DragonflyAgent"
    with pytest.raises(errors.ConfigError, match="cannot import"):
        resolve_agent_class({"dfrepo.agent": "not_a_module_q:Agent"}, env={})
