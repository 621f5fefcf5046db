"""Issue #15: the Triton agent under the operator's control.

Missing ``dragonfly_config.json`` fails the LOAD unless direct downloads are allowed;
direct downloads honour the environment's proxies as curl does; unknown agent
parameters and headers the C++ agent forwarded are tolerated; a model may set only the
parameters the operator allows; only the version directories ``version_policy`` selects
are pulled.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest

from dfrepo import settings as settings_mod
from dfrepo.dragonfly import load_dragonfly_config
from dfrepo.engine.proxyenv import DirectProxies, direct_proxies_from_env
from dfrepo.errors import (
    ConfigError,
    DfrepoWarning,
    DragonflyConfigMissingError,
    ParameterNotAllowedError,
)
from dfrepo.triton.agent import LoadContext
from dfrepo.triton.dragonfly_agent import DragonflyAgent
from dfrepo.triton.parameters import settings_for_model
from dfrepo.versions import VersionPolicy
from forward_proxy import ForwardProxy


@pytest.fixture
def no_default_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    absent = tmp_path / "absent" / "dragonfly_config.json"
    monkeypatch.setattr(settings_mod, "DEFAULT_DRAGONFLY_CONFIG_PATH", str(absent))
    return absent


# -- 1. missing dragonfly_config.json -------------------------------------------------------
def test_missing_dragonfly_config_fails_the_load_by_default(no_default_file: Path) -> None:
    with pytest.raises(DragonflyConfigMissingError) as info:
        settings_for_model("s3://b/m", {}, env={})
    msg = str(info.value)
    assert str(no_default_file) in msg and "TRITON_DRAGONFLY_CONFIG_PATH" in msg
    assert "DFREPO_ALLOW_DIRECT=1" in msg
    assert isinstance(info.value, ConfigError)  # INVALID_ARG at the agent boundary


def test_direct_without_config_only_when_allowed(no_default_file: Path, tmp_path: Path) -> None:
    s = settings_for_model("s3://b/m", {}, env={"DFREPO_ALLOW_DIRECT": "1"})
    assert s.dragonfly.proxy is None
    # A proxy from the environment is a peer to go through: no file needed.
    s = settings_for_model("s3://b/m", {}, env={"DFREPO_PROXY": "127.0.0.1:4001"})
    assert s.dragonfly.proxy == "http://127.0.0.1:4001"
    # A file without "proxy" is the operator's explicit choice (the C++ agent: direct).
    cfg = tmp_path / "df.json"
    cfg.write_text('{"fallback_direct": true}')
    assert settings_for_model("s3://b/m", {}, env={"TRITON_DRAGONFLY_CONFIG_PATH": str(cfg)}).dragonfly.proxy is None
    # The CLI and the Python API keep their library default (no file = direct).
    assert settings_mod.resolve("s3://b/m", env={}).dragonfly.proxy is None


# -- 3. what the C++ agent accepted ---------------------------------------------------------
def test_headers_the_cpp_agent_forwarded_are_dropped_with_a_warning(tmp_path: Path) -> None:
    cfg = tmp_path / "df.json"
    cfg.write_text('{"header": {"Connection": "keep-alive", "Proxy-Connection": "keep-alive", '
                   '"Accept-Encoding": "gzip", "X-Team": "a"}}')
    with pytest.warns(DfrepoWarning) as record:
        config = load_dragonfly_config(cfg, env={})
    assert dict(config.headers) == {"X-Team": "a"}
    text = " ".join(str(w.message) for w in record)
    assert "'Connection' ignored" in text and "'Accept-Encoding' ignored" in text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dragonfly_config(cfg, env={})  # once per header name
    with pytest.raises(ConfigError, match="Range"):  # would break the transfer: still refused
        load_dragonfly_config(cfg, env={}, overrides={"header.Range": "bytes=0-1"})


# -- 4. the operator's allow-list -----------------------------------------------------------
@pytest.mark.parametrize("key,value", [
    ("proxy", "http://attacker.example:4001"), ("azure_endpoint", "http://attacker.example/{account}"),
    ("verify_tls", "false"), ("ca_bundle", "/etc/hostname"), ("cache", "/tmp/elsewhere"),
    ("transport", "grpc"), ("socket", "/tmp/evil.sock"), ("header.Authorization", "Bearer s3cr3t"),
    ("expiry", "604800"), ("use_p2p", "false"),
])
def test_model_cannot_redirect_without_the_operator(key: str, value: str) -> None:
    env = {"DFREPO_ALLOW_DIRECT": "1"}
    with pytest.raises(ParameterNotAllowedError) as info:
        settings_for_model("gs://b/m", {key: value}, env=env)
    assert info.value.key == key and f"{key!r}" in str(info.value)
    assert "DFREPO_MODEL_PARAMETERS" in str(info.value) and value not in str(info.value)


def test_operator_allow_list() -> None:
    base = {"DFREPO_ALLOW_DIRECT": "1"}
    s = settings_for_model("s3://b/m", {"tag": "t", "priority": "2", "filter": "ns", "dfrepo.agent": "dragonfly"},
                           env=base)  # the default allows the task-naming keys
    assert s.dragonfly.tag == "t" and s.dragonfly.priority == 2
    env = {**base, "DFREPO_MODEL_PARAMETERS": "tag, header.*"}
    s = settings_for_model("s3://b/m", {"header.X-Team": "a", "tag": "t"}, env=env)
    assert s.dragonfly.headers["X-Team"] == "a"
    with pytest.raises(ParameterNotAllowedError):
        settings_for_model("s3://b/m", {"priority": "2"}, env=env)
    with pytest.raises(ParameterNotAllowedError):
        settings_for_model("s3://b/m", {"tag": "t"}, env={**base, "DFREPO_MODEL_PARAMETERS": "none"})
    s = settings_for_model("s3://b/m", {"proxy": "127.0.0.1:4001"}, env={**base, "DFREPO_MODEL_PARAMETERS": "*"})
    assert s.dragonfly.proxy == "http://127.0.0.1:4001"


# -- 4b. the allow-list in the operator's dragonfly_config.json ----------------------------
def _operator_file(tmp_path: Path, doc: dict[str, Any], name: str = "dragonfly_config.json") -> dict[str, str]:
    cfg = tmp_path / name
    cfg.write_text(json.dumps(doc))
    return {"TRITON_DRAGONFLY_CONFIG_PATH": str(cfg)}


def test_allow_list_from_dragonfly_config(tmp_path: Path) -> None:
    env = _operator_file(tmp_path, {"proxy": "127.0.0.1:4001", "model_parameters": ["tag", "header.*"]})
    s = settings_for_model("s3://b/m", {"tag": "t", "header.X-Team": "a"}, env=env)
    assert s.dragonfly.tag == "t" and s.dragonfly.headers["X-Team"] == "a"
    assert s.dragonfly.proxy == "http://127.0.0.1:4001" and s.dragonfly.model_parameters == ("tag", "header.*")
    with pytest.raises(ParameterNotAllowedError) as info:  # allowed by default, not by this operator
        settings_for_model("s3://b/m", {"priority": "2"}, env=env)
    msg = str(info.value)
    assert "operator allows: tag, header.*" in msg and '"model_parameters"' in msg and "DFREPO_MODEL_PARAMETERS" in msg
    with pytest.raises(ParameterNotAllowedError):  # [] allows nothing
        settings_for_model("s3://b/m", {"tag": "t"}, env=_operator_file(tmp_path, {"model_parameters": []}))
    s = settings_for_model("s3://b/m", {"proxy": "127.0.0.1:4002"}, env=_operator_file(tmp_path, {"model_parameters": ["*"]}))
    assert s.dragonfly.proxy == "http://127.0.0.1:4002"
    # No key (or null): the default list.
    for doc in ({}, {"model_parameters": None}):
        assert settings_for_model("s3://b/m", {"priority": "2"}, env=_operator_file(tmp_path, doc)).dragonfly.priority == 2
    # The allow-list also decides dfrepo.agent (checked before the settings are resolved).
    from dfrepo.triton.agent import resolve_agent_class

    with pytest.raises(ConfigError, match="not a dfrepo.triton.RepoAgent subclass"):
        resolve_agent_class({"dfrepo.agent": "json:JSONDecoder"},
                            env=_operator_file(tmp_path, {"model_parameters": ["dfrepo.agent"]}))
    with pytest.raises(ParameterNotAllowedError, match="model_parameters"):
        resolve_agent_class({"dfrepo.agent": "json:JSONDecoder"}, env=_operator_file(tmp_path, {"model_parameters": ["tag"]}))


def test_allow_list_environment_beats_the_file(tmp_path: Path) -> None:
    env = _operator_file(tmp_path, {"model_parameters": ["tag"]})
    s = settings_for_model("s3://b/m", {"priority": "2"}, env={**env, "DFREPO_MODEL_PARAMETERS": "priority"})
    assert s.dragonfly.priority == 2
    with pytest.raises(ParameterNotAllowedError):
        settings_for_model("s3://b/m", {"tag": "t"}, env={**env, "DFREPO_MODEL_PARAMETERS": "priority"})
    with pytest.raises(ParameterNotAllowedError):  # "none" in the environment: nothing, whatever the file says
        settings_for_model("s3://b/m", {"tag": "t"}, env={**_operator_file(tmp_path, {"model_parameters": ["*"]}),
                                                          "DFREPO_MODEL_PARAMETERS": "none"})


@pytest.mark.parametrize("value,error", [
    ("tag,filter", "must be a list"), ({"tag": True}, "must be a list"), (True, "must be a list"),
    ([1], "must list strings"), (["tag,filter"], "not one parameter name"), ([""], "not one parameter name"),
    (["prioirty"], "did you mean 'priority'"), (["proxyy*"], "no agent parameter"), (["none"], "no agent parameter"),
])
def test_allow_list_in_the_file_is_validated_at_load(tmp_path: Path, value: Any, error: str) -> None:
    env = _operator_file(tmp_path, {"model_parameters": value})
    with pytest.raises(ConfigError, match=error) as info:
        settings_for_model("s3://b/m", {}, env=env)
    assert info.value.key == "model_parameters" and env["TRITON_DRAGONFLY_CONFIG_PATH"] in str(info.value)
    assert not isinstance(info.value, ParameterNotAllowedError)
    # Checked even while the environment decides: a bad file is not left for later.
    with pytest.raises(ConfigError, match=error):
        settings_for_model("s3://b/m", {}, env={**env, "DFREPO_MODEL_PARAMETERS": "tag"})


def test_allow_list_entries_that_name_parameters(tmp_path: Path) -> None:
    ok = ["tag", "fallback", "fallback_direct", "concurrency", "cache", "dfrepo.agent", "header.X-Team", "header.*",
          "piece_*", "*"]
    env = _operator_file(tmp_path, {"model_parameters": ok})
    assert settings_for_model("s3://b/m", {"concurrency": "3"}, env=env).transfer.concurrency == 3
    with pytest.raises(ConfigError, match=r"\$DFREPO_MODEL_PARAMETERS.*did you mean 'priority'") as info:
        settings_for_model("s3://b/m", {}, env={"DFREPO_ALLOW_DIRECT": "1", "DFREPO_MODEL_PARAMETERS": "tag,prioirty"})
    assert info.value.key == "DFREPO_MODEL_PARAMETERS"


def test_a_model_cannot_change_the_allow_list_or_the_config_path(tmp_path: Path) -> None:
    """The allow-list and the file it may come from are the operator's: no config.pbtxt key
    reaches them (they are no dfrepo setting, so they are ignored like any unknown key)."""
    elsewhere = _operator_file(tmp_path, {"proxy": "http://attacker.example:4001", "model_parameters": ["*"]},
                               name="evil.json")["TRITON_DRAGONFLY_CONFIG_PATH"]
    env = _operator_file(tmp_path, {"proxy": "127.0.0.1:4001", "model_parameters": ["tag"]})
    sneaky = {"model_parameters": "*", "dragonfly_config": elsewhere, "TRITON_DRAGONFLY_CONFIG_PATH": elsewhere,
              "DFREPO_MODEL_PARAMETERS": "*", "dfrepo.model_parameters": "*"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DfrepoWarning)  # "... is not a dfrepo setting; ignored"
        with pytest.raises(ParameterNotAllowedError) as info:
            settings_for_model("s3://b/m", {**sneaky, "priority": "2"}, env=env)
        assert info.value.key == "priority"
        s = settings_for_model("s3://b/m", {**sneaky, "tag": "t"}, env=env)
    assert s.dragonfly.proxy == "http://127.0.0.1:4001" and s.dragonfly.model_parameters == ("tag",)
    # Even when the operator allows every parameter: still no parameter by that name.
    everything = _operator_file(tmp_path, {"proxy": "127.0.0.1:4001", "model_parameters": ["*"]}, name="all.json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DfrepoWarning)
        s = settings_for_model("s3://b/m", {**sneaky, "tag": "t"}, env=everything)
    assert s.dragonfly.proxy == "http://127.0.0.1:4001" and s.dragonfly.model_parameters == ("*",)
    # The Python API and the Dragonfly overrides refuse the key outright.
    from dfrepo.dragonfly import is_override_key, with_overrides
    from dfrepo.triton.parameters import split_overrides

    assert not is_override_key("model_parameters")
    with pytest.raises(ConfigError, match="unknown Dragonfly override 'model_parameters'"):
        with_overrides(s.dragonfly, {"model_parameters": ["tag"]})
    with pytest.raises(ConfigError, match="unknown setting 'model_parameters'"):
        split_overrides({"model_parameters": "*"})


# -- 2. environment proxies for direct downloads (curl's rules) -----------------------------
def test_direct_proxies_follow_curl() -> None:
    assert direct_proxies_from_env({"HTTP_PROXY": "http://p:3128"}) is None  # httpoxy: ignored
    p = direct_proxies_from_env({"http_proxy": "p:3128", "HTTPS_PROXY": "http://u:hunter2@q",
                                 "NO_PROXY": "internal.example,.corp,10.0.0.0/8"})
    assert p is not None
    assert p.proxy_for("http://s3.example/b/k") == "http://p:3128"
    assert p.proxy_for("https://s3.example/b/k") == "http://u:hunter2@q:1080"  # curl's default port
    for bypassed in ("http://internal.example/x", "https://a.internal.example/x", "http://x.corp/k",
                     "http://10.1.2.3:9000/b"):
        assert p.proxy_for(bypassed) is None, bypassed
    assert p.proxy_for("http://notinternal.example/x") == "http://p:3128"
    assert "hunter2" not in repr(p)
    assert direct_proxies_from_env({"all_proxy": "http://a:1", "no_proxy": "*"}) == DirectProxies(
        {"http": "http://a:1", "https": "http://a:1"}, ("*",))
    with pytest.raises(ConfigError, match=r"\$https_proxy") as info:
        direct_proxies_from_env({"https_proxy": "socks5://u:hunter2@s:1080"})
    assert "hunter2" not in str(info.value)
    assert settings_mod.resolve("s3://b/m", env={"http_proxy": "p:3128"}).direct_proxies is not None


# -- 5. version_policy ----------------------------------------------------------------------
def test_version_policy_semantics() -> None:
    paths = ["config.pbtxt", "labels.txt", "1/model.py", "2/model.py", "3/model.py", "3/w.bin",
             "10/model.py", "01/model.py", "configs/a.pbtxt", "warmup/x", "1a/x"]

    def pick(config: dict[str, Any]) -> set[str]:
        policy = VersionPolicy.from_model_config(config)
        assert policy is not None
        return set(policy.select(paths, lambda p: p))

    always = {"config.pbtxt", "labels.txt", "01/model.py", "configs/a.pbtxt", "warmup/x", "1a/x"}
    assert pick({"name": "m"}) == always | {"10/model.py"}  # default: latest 1
    assert pick({"version_policy": {"latest": {"num_versions": 2}}}) == always | {"10/model.py", "3/model.py",
                                                                                  "3/w.bin"}
    assert pick({"version_policy": {"all": {}}}) == set(paths)
    assert pick({"version_policy": {"specific": {"versions": ["1", 3, 7]}}}) == always | {
        "1/model.py", "3/model.py", "3/w.bin"}
    assert VersionPolicy.from_model_config({}) is None  # no config: pull everything
    with pytest.raises(ConfigError, match="version_policy"):
        VersionPolicy.from_model_config({"version_policy": {"newest": {}}})


# -- through the agent's Python entry, against a real S3 server -----------------------------


@pytest.mark.servers
def test_agent_pulls_selected_versions_through_the_env_proxy(
        seaweedfs: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_default_file: Path) -> None:
    from servers.upload import upload_tree_s3

    src = tmp_path / "src" / "vmodel"
    for v in ("1", "2", "3"):
        (src / v).mkdir(parents=True)
        (src / v / "model.py").write_text(f"version {v}\n")
    (src / "config.pbtxt").write_text('name: "vmodel"\n')
    (src / "labels.txt").write_text("a\n")
    upload_tree_s3(seaweedfs, "opmodels", "repo", src.parent)
    for var, value in seaweedfs.triton_env().items():
        monkeypatch.setenv(var, value)
    for var in ("TRITON_DRAGONFLY_CONFIG_PATH", "TRITON_CLOUD_CREDENTIAL_PATH", "DFREPO_PROXY",
                "DRAGONFLY_PROXY", "no_proxy", "NO_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DFREPO_CACHE", "off")
    location = seaweedfs.s3_url("opmodels", "repo") + "/vmodel"
    config = {"name": "vmodel", "version_policy": {"latest": {"num_versions": 2}}}

    def load(dest: Path) -> str | None:
        ctx = LoadContext(action="LOAD", location=location, artifact_type="REMOTE_FILESYSTEM",
                          parameters={"tag": "t"}, model_config=config, acquire=lambda: str(dest))
        return DragonflyAgent().load(ctx)

    with pytest.raises(DragonflyConfigMissingError):
        load(tmp_path / "out0")
    monkeypatch.setenv("DFREPO_ALLOW_DIRECT", "1")
    with ForwardProxy() as proxy:
        monkeypatch.setenv("http_proxy", proxy.url)
        assert load(tmp_path / "out1") == str(tmp_path / "out1")
        got = sorted(str(p.relative_to(tmp_path / "out1")) for p in (tmp_path / "out1").rglob("*") if p.is_file())
        assert got == ["2/model.py", "3/model.py", "config.pbtxt", "labels.txt"]
        fetched = sorted(path.split("/vmodel/", 1)[1].split("?")[0] for method, path in proxy.requests
                         if method == "GET" and "/vmodel/" in path)
        assert fetched == ["2/model.py", "3/model.py", "config.pbtxt", "labels.txt"], proxy.requests
        # no_proxy: the same pull goes straight to the store.
        monkeypatch.setenv("no_proxy", "127.0.0.1")
        before = len(proxy.requests)
        load(tmp_path / "out2")
        assert [r for r in proxy.requests[before:] if "/vmodel/" in r[1] and r[0] == "GET"] == []
