"""dragonfly_config.json parsing, environment, overrides and DragonflyConfig validation."""

from __future__ import annotations

import dataclasses
import json
import pickle
import warnings

import pytest

from dfrepo.dragonfly import (
    DEFAULT_CONFIG_PATH,
    DragonflyConfig,
    default_config_path,
    is_override_key,
    load_dragonfly_config,
)
from dfrepo.errors import ConfigError, DfrepoWarning

NO_ENV: dict[str, str] = {}


@pytest.fixture
def write(tmp_path):
    def _write(content, name="dragonfly_config.json"):
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
        return path

    return _write


def test_defaults():
    cfg = DragonflyConfig()
    assert cfg.proxy is None and not cfg.enabled
    assert dict(cfg.headers) == {} and cfg.filter is None
    assert cfg.tag is cfg.application is cfg.priority is cfg.piece_length is None
    assert cfg.use_p2p and cfg.fallback_direct and cfg.version_in_task_id
    assert cfg.filter_dialects == ("rust", "go")


def test_agent_compatible_file(write):
    # The existing agent's documented S3 example (filter entries may be "&"-joined)
    path = write(
        {
            "proxy": "http://127.0.0.1:4001",
            "header": {"X-Custom": "v"},
            "filter": ["X-Amz-Algorithm", "X-Amz-Credential&X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders",
                       "X-Amz-Signature"],
        }  # fmt: skip
    )
    cfg = load_dragonfly_config(path, env=NO_ENV)
    assert cfg.proxy == "http://127.0.0.1:4001" and cfg.enabled
    assert dict(cfg.headers) == {"X-Custom": "v"}
    assert cfg.filter == ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                          "X-Amz-SignedHeaders", "X-Amz-Signature")  # fmt: skip


def test_all_dfrepo_keys(write):
    path = write(
        {
            "proxy": "127.0.0.1:4001",
            "filter": "Expires&Signature,ns",
            "tag": "team",
            "application": "triton",
            "priority": 2,
            "piece_length": "16MiB",
            "use_p2p": False,
            "fallback_direct": False,
            "version_in_task_id": False,
            "filter_dialects": ["rust"],
        }
    )
    cfg = load_dragonfly_config(path, env=NO_ENV)
    assert cfg == DragonflyConfig(
        proxy="http://127.0.0.1:4001",
        filter=("Expires", "Signature", "ns"),
        tag="team",
        application="triton",
        priority=2,
        piece_length=16 * 1024 * 1024,
        use_p2p=False,
        fallback_direct=False,
        version_in_task_id=False,
        filter_dialects=("rust",),
    )


def test_empty_and_null_values_mean_unset(write):
    cfg = load_dragonfly_config(write({"proxy": "", "header": {}, "filter": [], "tag": "", "priority": None}), env=NO_ENV)
    assert cfg.proxy is None and cfg.tag is None and cfg.priority is None and cfg.filter == ()


def test_trailing_comma_is_a_config_error(write):
    # the early agent README example
    path = write('{\n  "proxy": "http://127.0.0.1:4001",\n  "filter": ["X-Amz-Algorithm"],\n}\n')
    with pytest.raises(ConfigError) as info:
        load_dragonfly_config(path, env=NO_ENV)
    msg = str(info.value)
    assert str(path) in msg and "line 4" in msg and "trailing comma" in msg
    assert info.value.source == str(path)


@pytest.mark.parametrize("content", ["", "not json", '{"proxy": "x" // comment\n}', "[1, 2]", '"str"', "null"])
def test_malformed_documents(write, content):
    path = write(content)
    with pytest.raises(ConfigError) as info:
        load_dragonfly_config(path, env=NO_ENV)
    assert str(path) in str(info.value)


def test_unknown_key_warns_and_is_ignored(write):
    path = write({"proxy": "http://127.0.0.1:4001", "headers": {"A": "b"}, "bogus": 1})
    with pytest.warns(DfrepoWarning) as record:
        cfg = load_dragonfly_config(path, env=NO_ENV)
    messages = [str(w.message) for w in record]
    assert any("'headers'" in m and "did you mean 'header'" in m for m in messages)
    assert any("'bogus'" in m and str(path) in m for m in messages)
    assert cfg.proxy == "http://127.0.0.1:4001" and dict(cfg.headers) == {}


def test_duplicate_key_warns(write):
    with pytest.warns(DfrepoWarning, match="twice"):
        cfg = load_dragonfly_config(write('{"tag": "a", "tag": "b"}'), env=NO_ENV)
    assert cfg.tag == "b"


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ({"proxy": 4001}, "proxy"),
        ({"proxy": "socks5://127.0.0.1:1080"}, "proxy"),
        ({"proxy": "http://127.0.0.1:4001/path"}, "proxy"),
        ({"proxy": "http://127.0.0.1:notaport"}, "proxy"),
        ({"proxy": "https://127.0.0.1:4001"}, "proxy"),
        ({"proxy": "http://user:pw@127.0.0.1:4001"}, "proxy"),
        ({"proxy": "user@127.0.0.1:4001"}, "proxy"),
        ({"header": ["X-A: b"]}, "header"),
        ({"header": {"X-A": 1}}, "header.X-A"),
        ({"header": {"Bad Name": "v"}}, "header.Bad Name"),
        ({"header": {"X-A": "v\r\nX-Evil: 1"}}, "header.X-A"),
        ({"header": {"Host": "elsewhere.example"}}, "header.Host"),
        ({"header": {"range": "bytes=0-1"}}, "header.range"),
        ({"header": {"X-Dragonfly-Content-For-Calculating-Task-ID": "x"}},
         "header.X-Dragonfly-Content-For-Calculating-Task-ID"),
        ({"filter": ["ok", 3]}, "filter"),
        ({"filter": {"a": 1}}, "filter"),
        ({"tag": 5}, "tag"),
        ({"priority": "3"}, "priority"),
        ({"priority": 9}, "priority"),
        ({"priority": True}, "priority"),
        ({"piece_length": 1024}, "piece_length"),
        ({"piece_length": "4mb"}, "piece_length"),
        ({"piece_length": 128 * 1024 * 1024}, "piece_length"),
        ({"piece_length": "huge"}, "piece_length"),
        ({"use_p2p": "yes"}, "use_p2p"),
        ({"fallback_direct": 1}, "fallback_direct"),
        ({"filter_dialects": ["rust", "python"]}, "filter_dialects"),
    ],
)  # fmt: skip
def test_wrong_types_name_file_and_key(write, doc, key):
    path = write(doc)
    with pytest.raises(ConfigError) as info:
        load_dragonfly_config(path, env=NO_ENV)
    assert info.value.key == key and info.value.source == str(path)
    assert str(path) in str(info.value) and repr(key) in str(info.value)


def test_secrets_never_in_messages_or_repr(write):
    path = write({"proxy": "ftp://user:hunter2@127.0.0.1:4001", "header": {"Authorization": "Basic c2VjcmV0"}})
    with pytest.raises(ConfigError) as info:
        load_dragonfly_config(path, env=NO_ENV)
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_dragonfly_config(write({"header": {"Authorization": "Bearer tok\n"}}), env=NO_ENV)
    assert "tok" not in str(info.value)
    # A proxy with user:password@ is refused (dfrepo sends no proxy credentials)...
    with pytest.raises(ConfigError) as info:
        load_dragonfly_config(write({"proxy": "http://user:hunter2@127.0.0.1:4001"}), env=NO_ENV)
    assert "hunter2" not in str(info.value) and "user:password" in str(info.value)
    cfg = load_dragonfly_config(
        write({"proxy": "http://127.0.0.1:4001", "header": {"Authorization": "Basic c2VjcmV0"}}),
        env=NO_ENV,
    )
    assert "c2VjcmV0" not in repr(cfg)  # ...and a credential header is usable but never shown
    assert "Authorization" in repr(cfg)


def test_missing_file_gives_defaults_unless_required(tmp_path):
    missing = tmp_path / "nope.json"
    assert load_dragonfly_config(missing, env=NO_ENV) == DragonflyConfig()
    with pytest.raises(ConfigError, match="not found"):
        load_dragonfly_config(missing, env=NO_ENV, required=True)


def test_directory_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="directory"):
        load_dragonfly_config(tmp_path, env=NO_ENV)


def test_default_path_from_env(write):
    assert default_config_path({}) == DEFAULT_CONFIG_PATH == "/home/triton/dragonfly_config.json"
    assert default_config_path({"TRITON_DRAGONFLY_CONFIG_PATH": ""}) == DEFAULT_CONFIG_PATH
    path = write({"tag": "from-env-path"})
    assert default_config_path({"TRITON_DRAGONFLY_CONFIG_PATH": str(path)}) == str(path)
    assert load_dragonfly_config(None, env={"TRITON_DRAGONFLY_CONFIG_PATH": str(path)}).tag == "from-env-path"


def test_utf8_bom_is_accepted(write, tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(b'\xef\xbb\xbf{"tag": "t"}')
    assert load_dragonfly_config(path, env=NO_ENV).tag == "t"


def test_proxy_env_precedence(write):
    path = write({"proxy": "http://file:4001"})
    assert load_dragonfly_config(path, env={}).proxy == "http://file:4001"
    assert load_dragonfly_config(path, env={"DRAGONFLY_PROXY": "http://dfy:4001"}).proxy == "http://dfy:4001"
    env = {"DFREPO_PROXY": "http://dfrepo:4001", "DRAGONFLY_PROXY": "http://dfy:4001"}
    assert load_dragonfly_config(path, env=env).proxy == "http://dfrepo:4001"
    assert load_dragonfly_config(path, env={"DFREPO_PROXY": " "}).proxy == "http://file:4001"
    assert load_dragonfly_config(None, env={"DFREPO_PROXY": "127.0.0.1:4001"}).proxy == "http://127.0.0.1:4001"
    with pytest.raises(ConfigError) as info:
        load_dragonfly_config(path, env={"DFREPO_PROXY": "socks5://x:1"})
    assert info.value.source == "$DFREPO_PROXY" and info.value.key == "proxy"
    # overrides beat the environment; "" means direct
    assert load_dragonfly_config(path, env=env, overrides={"proxy": ""}).proxy is None


def test_overrides_are_parsed_and_typed(write):
    path = write({"proxy": "http://127.0.0.1:4001", "header": {"X-Keep": "1", "X-Replace": "old"}, "tag": "file"})
    cfg = load_dragonfly_config(
        path,
        env=NO_ENV,
        overrides={
            "tag": "model-a",
            "application": "triton",
            "priority": "2",
            "piece_length": "8MiB",
            "filter": "token, sig&X-Extra",
            "fallback": "false",
            "use_p2p": "0",
            "version_in_task_id": "off",
            "filter_dialects": "rust",
            "header.x-replace": "new",
            "header.X-New": "v",
        },
    )
    assert cfg.tag == "model-a" and cfg.application == "triton"
    assert cfg.priority == 2 and cfg.piece_length == 8 * 1024 * 1024
    assert cfg.filter == ("token", "sig", "X-Extra")
    assert cfg.fallback_direct is False and cfg.use_p2p is False and cfg.version_in_task_id is False
    assert cfg.filter_dialects == ("rust",)
    assert dict(cfg.headers) == {"X-Keep": "1", "x-replace": "new", "X-New": "v"}


@pytest.mark.parametrize(
    ("overrides", "key"),
    [({"priority": "high"}, "priority"), ({"fallback": "maybe"}, "fallback"), ({"proxyy": "x"}, "proxyy"),
     ({"header.Host": "x"}, "header.Host"), ({"header.X-A": 1}, "header.X-A"), ({"piece_length": "1k"}, "piece_length")],
)  # fmt: skip
def test_bad_overrides(overrides, key):
    with pytest.raises(ConfigError) as info:
        load_dragonfly_config(None, env={"TRITON_DRAGONFLY_CONFIG_PATH": "/nonexistent/x.json"}, overrides=overrides)
    assert info.value.key == key and info.value.source == "overrides"


def test_is_override_key():
    for key in ("proxy", "tag", "application", "priority", "filter", "fallback", "header.X-A", "piece_length"):
        assert is_override_key(key)
    for key in ("concurrency", "header", "cache_dir"):
        assert not is_override_key(key)


def test_config_is_frozen_hashable_picklable():
    cfg = DragonflyConfig(proxy="http://127.0.0.1:4001", headers={"X-A": "1"}, filter=["a"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.proxy = None  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.headers["X-B"] = "2"  # type: ignore[index]
    assert hash(cfg) == hash(DragonflyConfig(proxy="http://127.0.0.1:4001", headers={"X-A": "1"}, filter=("a",)))
    assert dataclasses.replace(cfg, tag="t").tag == "t"
    assert pickle.loads(pickle.dumps(cfg)) == cfg


def test_direct_construction_is_validated():
    with pytest.raises(ConfigError):
        DragonflyConfig(priority=7)
    with pytest.raises(ConfigError):
        DragonflyConfig(headers={"Host": "elsewhere.example"})
    with pytest.raises(ConfigError, match="conflicts"):
        DragonflyConfig(tag="a", headers={"X-Dragonfly-Tag": "b"})


def test_dragonfly_headers_in_header_block_are_hoisted(write):
    path = write({"header": {"X-Dragonfly-Tag": "t", "X-Dragonfly-Priority": "3", "X-Dragonfly-Use-P2P": "false",
                             "X-Dragonfly-Piece-Length": "8mib", "X-Other": "o"}})  # fmt: skip
    cfg = load_dragonfly_config(path, env=NO_ENV)
    assert (cfg.tag, cfg.priority, cfg.use_p2p, cfg.piece_length) == ("t", 3, False, 8 * 1024 * 1024)
    assert dict(cfg.headers) == {"X-Other": "o"}


def test_no_warnings_for_a_clean_file(write):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dragonfly_config(write({"proxy": "http://127.0.0.1:4001", "filter": ["a"]}), env=NO_ENV)


def test_model_parameters_key(write):
    """The Triton agent's allow-list (``model_parameters``): a list of names, kept as given;
    the operator's alone (no override, no string form). The C++ agent reads only ``proxy``,
    ``header`` and ``filter`` (``Find`` on each; other members are never looked at), so a
    file with the key serves both agents."""
    doc = {"proxy": "http://127.0.0.1:4001", "header": {"X-Custom": "v"}, "filter": ["X-Amz-Algorithm"],
           "model_parameters": [" tag ", "filter", "header.*", "tag"]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a known key: no "unknown key" warning
        cfg = load_dragonfly_config(write(doc), env=NO_ENV)
    assert cfg.model_parameters == ("tag", "filter", "header.*")
    assert (cfg.proxy, dict(cfg.headers), cfg.filter) == ("http://127.0.0.1:4001", {"X-Custom": "v"}, ("X-Amz-Algorithm",))
    assert load_dragonfly_config(write({"model_parameters": []}), env=NO_ENV).model_parameters == ()
    assert load_dragonfly_config(write({}), env=NO_ENV).model_parameters is None
    assert "model_parameters=('tag', 'filter', 'header.*')" in repr(cfg)
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert not is_override_key("model_parameters")
    with pytest.raises(ConfigError, match="unknown Dragonfly override"):
        load_dragonfly_config(write({}), env=NO_ENV, overrides={"model_parameters": "tag"})
    with pytest.raises(ConfigError, match="must be a list") as info:
        load_dragonfly_config(write({"model_parameters": "tag,filter"}), env=NO_ENV)
    assert info.value.key == "model_parameters" and "dragonfly_config.json" in str(info.value)
    with pytest.raises(ConfigError, match="must be a list"):
        DragonflyConfig(model_parameters="tag")  # type: ignore[arg-type]
    # A typo in the key itself is pointed at, as for any key.
    with pytest.warns(DfrepoWarning, match="did you mean 'model_parameters'"):
        load_dragonfly_config(write({"model_parameter": ["tag"]}), env=NO_ENV)
