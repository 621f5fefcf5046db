"""Build a :class:`~dfrepo.dragonfly.config.DragonflyConfig` from ``dragonfly_config.json``,
the environment and per-model/CLI overrides.

The file is compatible with the existing Triton Dragonfly repository agent
(``dragonflyoss/dragonfly-repository-agent``)::

    {"proxy": "http://127.0.0.1:4001",
     "header": {"X-Custom": "v"},
     "filter": ["X-Amz-Algorithm", "X-Amz-Credential&X-Amz-Date"]}

plus dfrepo's own keys (``tag``, ``application``, ``priority``, ``piece_length``,
``use_p2p``, ``fallback_direct``, ``version_in_task_id``, ``filter_dialects``,
``peer_ranges``, ``transport``, ``socket``, and the Triton agent's ``model_parameters``).
Every key is optional.  Unknown keys give a :class:`~dfrepo.errors.DfrepoWarning`
(the C++ agent reads only ``proxy``, ``header`` and ``filter`` and ignores the rest, so
one file serves both); malformed JSON and wrong types give a
:class:`~dfrepo.errors.ConfigError` naming the file and key.

``model_parameters`` (:data:`OPERATOR_KEYS`) is the operator's alone: it is not an
override key, so neither a CLI flag nor a model's ``config.pbtxt`` can set it.

Where the file is: the ``path`` argument, else ``$TRITON_DRAGONFLY_CONFIG_PATH``, else
``/home/triton/dragonfly_config.json`` (the agent's defaults, :mod:`dfrepo.environment`).
A missing file means the defaults (unless ``required=True``).

Precedence, lowest to highest: defaults < file < environment (proxy only) < overrides.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from ..environment import DEFAULT_DRAGONFLY_CONFIG_PATH, DRAGONFLY_CONFIG_PATH_ENV, PROXY_ENV_VARS
from ..errors import ConfigError, DfrepoWarning
from .config import DragonflyConfig
from .fields import PARSERS, check_header, dropped_header, parse_headers, parse_proxy, type_name

__all__ = [
    "CONFIG_PATH_ENV",
    "DEFAULT_CONFIG_PATH",
    "MAX_CONFIG_BYTES",
    "OPERATOR_KEYS",
    "OVERRIDE_KEYS",
    "PROXY_ENV_VARS",
    "build_dragonfly_config",
    "default_config_path",
    "is_override_key",
    "load_dragonfly_config",
    "with_overrides",
]

#: The names this package has always used for :mod:`dfrepo.environment`'s values.
CONFIG_PATH_ENV = DRAGONFLY_CONFIG_PATH_ENV
DEFAULT_CONFIG_PATH = DEFAULT_DRAGONFLY_CONFIG_PATH
#: A dragonfly_config.json larger than this is refused (real ones are < 1 KiB; a huge
#: file would otherwise end up as megabyte-sized request headers).
MAX_CONFIG_BYTES = 1024 * 1024

_FILE_KEYS = (
    "proxy",
    "header",
    "filter",
    "tag",
    "application",
    "priority",
    "piece_length",
    "use_p2p",
    "fallback_direct",
    "version_in_task_id",
    "filter_dialects",
    "peer_ranges",
    "transport",
    "socket",
    "model_parameters",
)
#: Keys only the file sets (the Triton agent's allow-list of model parameters): no override.
OPERATOR_KEYS = frozenset({"model_parameters"})
#: Override keys (besides ``header.<Name>``); ``fallback`` is short for ``fallback_direct``.
OVERRIDE_KEYS = frozenset(_FILE_KEYS) - {"header"} - OPERATOR_KEYS | {"fallback", "headers"}


def default_config_path(env: Mapping[str, str] = os.environ) -> str:
    """``$TRITON_DRAGONFLY_CONFIG_PATH`` if set and non-empty, else :data:`DEFAULT_CONFIG_PATH`."""
    return env.get(CONFIG_PATH_ENV) or DEFAULT_CONFIG_PATH


def is_override_key(key: str) -> bool:
    """True if *key* is a :func:`load_dragonfly_config` override (to split Triton parameters)."""
    return key in OVERRIDE_KEYS or key.startswith("header.")


def _read_json(path: str) -> Any:
    import json

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for k, v in pairs:
            if k in seen:
                warnings.warn(f"{path}: key {k!r} appears twice; the last one wins", DfrepoWarning, stacklevel=4)
            seen[k] = v
        return seen

    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a Dragonfly config file", source=path) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read Dragonfly config ({exc.strerror})", source=path) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: Dragonfly config is larger than {MAX_CONFIG_BYTES} bytes", source=path)
    try:
        return json.loads(data.decode("utf-8-sig"), object_pairs_hook=pairs_hook)
    except RecursionError:
        raise ConfigError(f"{path}: Dragonfly config is nested too deeply", source=path) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: Dragonfly config is not UTF-8", source=path) from None
    except json.JSONDecodeError as exc:
        hint = ""
        if "trailing comma" in exc.msg or exc.msg.startswith(("Expecting property name", "Expecting value")):
            hint = " (a trailing comma or a comment? JSON allows neither)"
        raise ConfigError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}{hint}", source=path
        ) from None
    except ValueError:  # e.g. an integer literal longer than sys.get_int_max_str_digits()
        raise ConfigError(f"{path}: invalid JSON (a number too large to convert)", source=path) from None


def _from_file(path: str, required: bool) -> dict[str, Any]:
    if not os.path.exists(path):
        if required:
            raise ConfigError(f"{path}: Dragonfly config file not found", source=path)
        return {}
    doc = _read_json(path)
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: Dragonfly config must be a JSON object, not {type_name(doc)}", source=path)
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key == "header":
            out["headers"] = parse_headers(value, path, "header")
        elif key in PARSERS:
            out[key] = PARSERS[key](value, path, key, False)
        else:
            import difflib

            close = difflib.get_close_matches(key, _FILE_KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            warnings.warn(f"{path}: unknown Dragonfly config key {key!r} ignored{hint}", DfrepoWarning, stacklevel=3)
    return out


def _apply_overrides(values: dict[str, Any], overrides: Mapping[str, object]) -> None:
    where = "overrides"
    headers = dict(values.get("headers", {}))
    for key, value in overrides.items():
        if not isinstance(key, str) or not is_override_key(key):
            raise ConfigError(f"unknown Dragonfly override {key!r}", source=where, key=str(key))
        if key.startswith("header."):
            name = key[len("header.") :]
            check_header(name, value, where, key)
            if dropped_header(name, where):
                continue
            for old in [h for h in headers if h.lower() == name.lower()]:
                del headers[old]
            headers[name] = str(value).strip()
        elif key == "headers":
            for name, val in parse_headers(value, where, key).items():
                for old in [h for h in headers if h.lower() == name.lower()]:
                    del headers[old]
                headers[name] = val
        else:
            target = "fallback_direct" if key == "fallback" else key
            values[target] = PARSERS[target](value, where, key, True)
    if headers or "headers" in values:
        values["headers"] = headers


def with_overrides(config: DragonflyConfig, overrides: Mapping[str, object]) -> DragonflyConfig:
    """Return *config* with per-model/CLI *overrides* applied (same keys as
    :func:`load_dragonfly_config`)."""
    values: dict[str, Any] = {f.name: getattr(config, f.name) for f in fields(config)}
    values["headers"] = dict(values["headers"])
    _apply_overrides(values, overrides)
    return DragonflyConfig(**values)


def load_dragonfly_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] = os.environ,
    overrides: Mapping[str, object] | None = None,
    required: bool = False,
) -> DragonflyConfig:
    """Build a :class:`DragonflyConfig` from defaults, file, environment and overrides.

    :param path: the JSON file; ``None`` = :func:`default_config_path` (``env``).
    :param env: environment for ``TRITON_DRAGONFLY_CONFIG_PATH`` and the proxy variables
        :data:`PROXY_ENV_VARS`.
    :param overrides: per-model Triton agent ``parameters`` or CLI flags.  Keys:
        ``proxy`` (``""`` = direct), ``tag``, ``application``, ``priority``,
        ``piece_length`` (bytes or ``8MiB``), ``filter`` (comma- or ``&``-separated),
        ``fallback``/``fallback_direct``, ``use_p2p``, ``version_in_task_id``,
        ``filter_dialects``, ``peer_ranges``, ``transport``, ``socket``, ``header.<Name>`` (one
        header), ``headers`` (a mapping).
        Strings are parsed (``"true"``, ``"3"``); unknown keys raise (use
        :func:`is_override_key` to pick them out of a larger parameter set).
    :param required: raise instead of using defaults when the file does not exist.
    :raises ConfigError: malformed JSON, a wrong type or value (names file and key).
    :warns DfrepoWarning: unknown or duplicate keys in the file.
    """
    file_path = os.fspath(path) if path is not None else default_config_path(env)
    return build_dragonfly_config(file_path, env=env, overrides=overrides, required=required)


def build_dragonfly_config(
    file_path: str | None,
    *,
    env: Mapping[str, str] = os.environ,
    overrides: Mapping[str, object] | None = None,
    required: bool = False,
) -> DragonflyConfig:
    """:func:`load_dragonfly_config` from *file_path* exactly (None = no file: the
    defaults, the environment's proxy and *overrides*)."""
    values = _from_file(file_path, required) if file_path is not None else {}
    for var in PROXY_ENV_VARS:
        if env.get(var, "").strip():
            values["proxy"] = parse_proxy(env[var], f"${var}", "proxy")
            break
    if overrides:
        _apply_overrides(values, overrides)
    return DragonflyConfig(**values)
