"""Settings are resolved once, at the edge (dfrepo.settings), and then only read."""

from __future__ import annotations

import dataclasses
import importlib
import warnings
from pathlib import Path
from typing import Any

import pytest

import dfrepo.locations
import dfrepo.settings
import dfrepo.stores
from dfrepo import settings as settings_mod
from dfrepo.cli import main
from dfrepo.dragonfly import DragonflyConfig
from dfrepo.engine import TransferConfig, download
from dfrepo.errors import ConfigError, DfrepoWarning
from dfrepo.locations import AzureLocation, LocalLocation, S3Location
from dfrepo.objects import RemoteObject
from dfrepo.settings import PullSettings, resolve
from dfrepo.triton.parameters import settings_for_model, split_overrides

NO_FILES = {"TRITON_DRAGONFLY_CONFIG_PATH": "/nonexistent/dragonfly_config.json"}
OPERATOR_ALLOWS_ALL = {"DFREPO_MODEL_PARAMETERS": "*", "DFREPO_ALLOW_DIRECT": "1"}


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("DFREPO_PROXY", "DRAGONFLY_PROXY", "TRITON_CLOUD_CREDENTIAL_PATH", "DFREPO_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TRITON_DRAGONFLY_CONFIG_PATH", str(tmp_path / "no-dragonfly-config.json"))
    monkeypatch.setenv("DFREPO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(settings_mod, "DEFAULT_DRAGONFLY_CONFIG_PATH", str(tmp_path / "absent-df.json"))
    monkeypatch.setattr(settings_mod, "DEFAULT_CREDENTIAL_PATH", str(tmp_path / "absent-cred.json"))


# --------------------------------------------------------------------------- the proxy rule, once


BAD_PROXIES = [
    ("https://127.0.0.1:4001", "plain http://"),
    ("http://user:hunter2@127.0.0.1:4001", "user:password"),
    ("HTTPS://peer.example:4001", "plain http://"),
]


@pytest.mark.parametrize(("proxy", "why"), BAD_PROXIES)
def test_bad_proxy_refused_at_config_time_from_every_edge(proxy: str, why: str, tmp_path: Path) -> None:
    attempts = {
        "constructor": lambda: DragonflyConfig(proxy=proxy),
        "environment": lambda: resolve("s3://b/m", env={**NO_FILES, "DFREPO_PROXY": proxy}),
        "python api": lambda: resolve("s3://b/m", env=NO_FILES, dragonfly_overrides={"proxy": proxy}),
        "triton parameter": lambda: settings_for_model("s3://b/m", {"proxy": proxy}, env=OPERATOR_ALLOWS_ALL),
        "download(proxy=)": lambda: download("http://127.0.0.1:1/x", tmp_path / "x", proxy=proxy),
    }
    for edge, attempt in attempts.items():
        with pytest.raises(ConfigError) as info:
            attempt()
        assert info.value.key == "proxy", edge
        assert why in str(info.value) and "hunter2" not in str(info.value), edge
    assert not (tmp_path / "x").exists()


def test_bad_proxy_in_the_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "dragonfly_config.json"
    path.write_text('{"proxy": "https://127.0.0.1:4001"}')
    with pytest.raises(ConfigError) as info:
        resolve("s3://b/m", env={}, dragonfly_config=path)
    assert info.value.source == str(path) and info.value.key == "proxy"


def test_cli_refuses_an_https_proxy_before_doing_anything(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["pull", "s3://b/m", str(tmp_path / "dest"), "--proxy", "https://127.0.0.1:4001"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "plain http://" in err
    assert not (tmp_path / "dest").exists()


def test_engine_transport_trusts_the_config() -> None:
    # The transport reads host and port of a checked proxy; it has no second rule.
    from dfrepo.engine.transport import Transport

    t = Transport(TransferConfig(), proxy=DragonflyConfig(proxy="127.0.0.1:4001").proxy)
    assert t.via == "proxy"
    t.clear()


# --------------------------------------------------------------------------- the location, once


def _count_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = dfrepo.locations.parse_location

    def counting(location: str, **kwargs: Any) -> Any:
        calls.append(location)
        return real(location, **kwargs)

    for module in (dfrepo.locations, dfrepo.settings, dfrepo.stores):
        monkeypatch.setattr(module, "parse_location", counting)
    return calls


def test_pull_parses_the_location_once_and_the_store_gets_the_parsed_location(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = _count_parses(monkeypatch)
    seen: dict[str, Any] = {}
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.pbtxt").write_text("name: 'm'")

    def fake_list_model(location: Any, **kwargs: Any) -> list[RemoteObject]:
        seen.update(kwargs, location=location)
        return [RemoteObject(rel_path="config.pbtxt", size=9, url=(src / "config.pbtxt").as_uri())]

    monkeypatch.setattr(dfrepo.stores, "list_model", fake_list_model)
    cred = tmp_path / "cred.json"
    res = dfrepo.pull("s3://bucket/models/m", tmp_path / "dest", env={**NO_FILES, "TRITON_CLOUD_CREDENTIAL_PATH": str(cred)},
                      overrides={"expiry": "120"})
    assert calls == ["s3://bucket/models/m"]
    assert isinstance(seen["location"], S3Location) and seen["location"].bucket == "bucket"
    assert seen["credential_path"] == str(cred) and seen["expiry"] == 120
    assert res.files == 1 and (tmp_path / "dest" / "config.pbtxt").read_text() == "name: 'm'"


def test_local_pull_parses_once_end_to_end(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = _count_parses(monkeypatch)
    (tmp_path / "src" / "1").mkdir(parents=True)
    (tmp_path / "src" / "1" / "model.onnx").write_bytes(b"x" * 10)
    res = dfrepo.pull(str(tmp_path / "src"), tmp_path / "dest", env=NO_FILES)
    assert calls == [str(tmp_path / "src")] and res.bytes_local == 10


# --------------------------------------------------------------------------- the builders


def test_resolve_gives_one_frozen_typed_object(tmp_path: Path) -> None:
    s = resolve("s3://b/m", env={**NO_FILES, "AWS_SECRET_ACCESS_KEY": "hunter2"},
                dragonfly_overrides={"proxy": "127.0.0.1:4001", "tag": "t"},
                transfer_overrides={"concurrency": "3", "range_size": "8MiB"}, expiry="60")
    assert isinstance(s, PullSettings) and isinstance(s.location, S3Location)
    assert s.dragonfly.proxy == "http://127.0.0.1:4001" and s.dragonfly.tag == "t"
    assert s.transfer.concurrency == 3 and s.transfer.range_size == 8 << 20
    assert s.expiry == 60 and s.cache is None and s.credential_path is None
    assert "hunter2" not in repr(s)  # the environment snapshot is never shown
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.expiry = 1  # type: ignore[misc]  # the point: it is frozen
    with pytest.raises(TypeError):
        s.env["X"] = "y"  # type: ignore[index]  # the point: the snapshot is read-only


def test_resolve_keeps_a_given_config_and_applies_overrides_on_top() -> None:
    given = DragonflyConfig(proxy="http://127.0.0.1:1", tag="keep")
    s = resolve("s3://b/m", env=NO_FILES, dragonfly=given, dragonfly_overrides={"fallback": "false"})
    assert s.dragonfly.tag == "keep" and s.dragonfly.fallback_direct is False
    assert resolve("s3://b/m", env=NO_FILES, dragonfly=given).dragonfly is given


def test_explicit_dragonfly_config_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        resolve("s3://b/m", env={}, dragonfly_config=tmp_path / "nope.json")


def test_cache_setting(tmp_path: Path) -> None:
    from dfrepo.cache import ModelCache

    on = resolve("s3://b/m", env={**NO_FILES, "DFREPO_CACHE_DIR": str(tmp_path / "c")}, cache_setting="on")
    assert isinstance(on.cache, ModelCache) and on.cache.root == tmp_path / "c"
    assert resolve("s3://b/m", env=NO_FILES, cache_setting="off").cache is None
    named = resolve("s3://b/m", env=NO_FILES, cache_setting=str(tmp_path / "d"))
    assert isinstance(named.cache, ModelCache) and named.cache.root == tmp_path / "d"


def test_bad_expiry_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        resolve("s3://b/m", env=NO_FILES, expiry="soon")
    assert info.value.key == "expiry"


# --------------------------------------------------------------------------- the Triton edge


def test_triton_parameters_are_routed_and_typed(tmp_path: Path) -> None:
    s = settings_for_model("as://acct/container/m", {
        "dfrepo.agent": "dragonfly", "dfrepo.anything": "ignored", "tag": "team", "concurrency": "2",
        "expiry": "300", "cache": "off", "azure_endpoint": "http://127.0.0.1:10000/{account}"},
        env=OPERATOR_ALLOWS_ALL)
    assert isinstance(s.location, AzureLocation)
    assert s.location.endpoint == "http://127.0.0.1:10000/acct"
    assert s.dragonfly.tag == "team" and s.transfer.concurrency == 2 and s.expiry == 300 and s.cache is None


def test_triton_unknown_parameter_is_warned_and_ignored() -> None:
    # The C++ agent read no parameters: a config.pbtxt written for it (or with another
    # agent's keys) must keep loading.
    env = {"DFREPO_ALLOW_DIRECT": "1"}
    with pytest.warns(DfrepoWarning, match="'concurency_x' is not a dfrepo setting; ignored"):
        s = settings_for_model("s3://b/m", {"concurency_x": "4", "tag": "t"}, env=env)
    assert s.transfer.concurrency is None and s.dragonfly.tag == "t"
    # The Python API's overrides are the operator's own: a typo there still raises.
    with pytest.raises(ConfigError) as info:
        split_overrides({"concurency_x": "4"})
    assert info.value.key == "concurency_x"


def test_triton_unknown_parameter_is_warned_on_every_load() -> None:
    """Each LOAD that has an unknown parameter names it (once per key), not only the first
    LOAD of the worker process: a reload of the model, or another model with the same key,
    says it again in Triton's log. The filters are Python's defaults, as in the worker,
    where a plain warnings.warn would repeat nothing from the same line."""
    env = {"DFREPO_ALLOW_DIRECT": "1"}

    def said(*keys: str) -> list[str]:
        return sorted(f"config.pbtxt agent parameter {k!r} is not a dfrepo setting; ignored" for k in keys)

    # One catch_warnings for all the LOADs: changing the filters between them would clear
    # Python's memory of what was said, and hide the de-duplication this is about.
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()  # no -W, no PYTHONWARNINGS: the "default" action

        def load(location: str, parameters: dict[str, str]) -> list[str]:
            before = len(caught)
            settings_for_model(location, parameters, env=env)
            return sorted(str(w.message) for w in caught[before:] if issubclass(w.category, DfrepoWarning))

        first = load("s3://b/m", {"concurency_x": "4", "checksum.MD5": "x", "tag": "t"})
        again = load("s3://b/m", {"concurency_x": "4", "checksum.MD5": "x", "tag": "t"})  # the same LOAD again
        other = load("s3://b/other", {"concurency_x": "5"})  # another model, the same key
    assert first == again == said("concurency_x", "checksum.MD5")
    assert other == said("concurency_x")
    # The operator's filters still decide.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore", DfrepoWarning)
        settings_for_model("s3://b/m", {"concurency_x": "4"}, env=env)
    assert caught == []


def test_triton_files_set_in_the_environment_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TRITON_DRAGONFLY_CONFIG_PATH"):
        settings_for_model("s3://b/m", {}, env={"TRITON_DRAGONFLY_CONFIG_PATH": str(tmp_path / "gone.json")})
    config = tmp_path / "dragonfly_config.json"
    config.write_text('{"proxy": "http://127.0.0.1:4001", "tag": "from-file"}')
    s = settings_for_model("s3://b/m", {"cache": "off"}, env={"TRITON_DRAGONFLY_CONFIG_PATH": str(config),
                                                              "DFREPO_MODEL_PARAMETERS": "cache"})
    assert s.dragonfly.tag == "from-file"


def test_triton_default_files_are_used_when_present(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config, cred = tmp_path / "dragonfly_config.json", tmp_path / "cloud_credential.json"
    config.write_text('{"tag": "default-file"}')
    cred.write_text("{}")
    monkeypatch.setattr(settings_mod, "DEFAULT_DRAGONFLY_CONFIG_PATH", str(config))
    monkeypatch.setattr(settings_mod, "DEFAULT_CREDENTIAL_PATH", str(cred))
    s = settings_for_model("s3://b/m", {"cache": "off"}, env={"DFREPO_MODEL_PARAMETERS": "cache"})
    assert s.dragonfly.tag == "default-file" and s.credential_path == str(cred)
    # The CLI and the Python API never pick up the agent's default credential file.
    assert resolve("s3://b/m", env={}).credential_path is None


def test_local_location_in_settings(tmp_path: Path) -> None:
    assert isinstance(resolve(str(tmp_path), env=NO_FILES).location, LocalLocation)


def test_pull_module_is_importable_by_name() -> None:
    module = importlib.import_module("dfrepo.pull")
    assert module.pull is dfrepo.pull and hasattr(module, "pull_with")


def test_cache_switch_reads_dfrepo_cache_and_an_empty_value_is_unset() -> None:
    from dfrepo.settings import cache_switch

    assert cache_switch({}) == "on"
    assert cache_switch({"DFREPO_CACHE": "off"}) == "off"
    assert cache_switch({"DFREPO_CACHE": "/var/cache/models"}) == "/var/cache/models"
    assert cache_switch({"DFREPO_CACHE": ""}) == "on"  # not "the current directory"
    assert cache_switch({"DFREPO_CACHE": "  "}) == "on"
    assert cache_switch({"DFREPO_CACHE": "off"}, explicit="on") == "on"  # a model's parameter wins
