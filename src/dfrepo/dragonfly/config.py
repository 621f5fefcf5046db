"""Dragonfly client settings: :class:`DragonflyConfig` and ``dragonfly_config.json``.

The file is compatible with the existing Triton Dragonfly repository agent
(``dragonflyoss/dragonfly-repository-agent``)::

    {"proxy": "http://127.0.0.1:4001",
     "header": {"X-Custom": "v"},
     "filter": ["X-Amz-Algorithm", "X-Amz-Credential&X-Amz-Date"]}

plus dfrepo's own keys (``tag``, ``application``, ``priority``, ``piece_length``,
``use_p2p``, ``fallback_direct``, ``version_in_task_id``, ``filter_dialects``).  Every key
is optional.  Unknown keys give a :class:`~dfrepo.errors.DfrepoWarning`; malformed JSON and
wrong types give a :class:`~dfrepo.errors.ConfigError` naming the file and key.

Where the file is: the ``path`` argument, else ``$TRITON_DRAGONFLY_CONFIG_PATH``, else
``/home/triton/dragonfly_config.json`` (the agent's defaults).  A missing file means the
defaults below (unless ``required=True``).

Precedence, lowest to highest: defaults < file < environment (proxy only) < overrides.

Defaults and why:

* ``proxy = None`` (download directly).  A library must not assume a dfdaemon listens on
  this host; set it in the file, in ``$DFREPO_PROXY`` or ``$DRAGONFLY_PROXY`` (first
  non-empty wins, and beats the file), or as an override.  ``""`` as an override means
  "direct" explicitly.  :data:`DEFAULT_PROXY` is the usual local address.
* ``use_p2p = True``: send ``X-Dragonfly-Use-P2P: true`` so GETs go P2P without an
  operator ``proxy.rules[]`` entry.
* ``fallback_direct = True``: an unreachable proxy means a direct download (logged once).
* ``version_in_task_id = True``: fold the object's version into ``X-Dragonfly-Tag`` so a
  rewritten object is not served stale from the peer cache.
* ``filter = None``: send dfdaemon's default filter list (plus Azure SAS keys for Azure
  URLs); a given filter is *added* to that list (see :mod:`dfrepo.dragonfly.headers`).
* ``filter_dialects = ("rust", "go")``: send the filter both as
  ``X-Dragonfly-Filtered-Query-Params`` (Rust dfdaemon) and ``X-Dragonfly-Filter`` (Go).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from ..errors import ConfigError, DfrepoWarning
from ..redact import redact_url
from ..values import FALSE_WORDS, TRUE_WORDS
from .taskid import parse_byte_size

__all__ = [
    "CONFIG_PATH_ENV",
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_PROXY",
    "FILTER_DIALECTS",
    "MAX_PIECE_LENGTH",
    "MIN_PIECE_LENGTH",
    "OVERRIDE_KEYS",
    "PROXY_ENV_VARS",
    "DragonflyConfig",
    "default_config_path",
    "is_override_key",
    "load_dragonfly_config",
]

CONFIG_PATH_ENV = "TRITON_DRAGONFLY_CONFIG_PATH"
DEFAULT_CONFIG_PATH = "/home/triton/dragonfly_config.json"
#: Environment variables that give the proxy, first non-empty wins.
PROXY_ENV_VARS = ("DFREPO_PROXY", "DRAGONFLY_PROXY")
#: dfdaemon's default proxy address (not used unless configured).
DEFAULT_PROXY = "http://127.0.0.1:4001"
#: ``"rust"`` = ``X-Dragonfly-Filtered-Query-Params`` (comma), ``"go"`` = ``X-Dragonfly-Filter`` (``&``).
FILTER_DIALECTS = ("rust", "go")
MIN_PIECE_LENGTH = 4 * 1024 * 1024
MAX_PIECE_LENGTH = 64 * 1024 * 1024
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
)
#: Override keys (besides ``header.<Name>``); ``fallback`` is short for ``fallback_direct``.
OVERRIDE_KEYS = frozenset(_FILE_KEYS) - {"header"} | {"fallback", "headers"}

# Headers dfrepo's engine owns, or that are per object: never settable in the config.
_FORBIDDEN_HEADERS = frozenset(
    h.lower()
    for h in (
        "Accept-Encoding",
        "Host",
        "Range",
        "If-Range",
        "If-Match",
        "If-None-Match",
        "Content-Length",
        "Transfer-Encoding",
        "Connection",
        "Keep-Alive",
        "Proxy-Connection",
        "TE",
        "Upgrade",
        # One value for every object would collapse all files into ONE task.
        "X-Dragonfly-Content-For-Calculating-Task-ID",
        "X-Dragonfly-Output-Path",
    )
)
# Header spellings of typed fields: moved into the field so version folding still applies.
_HOISTED = {
    "x-dragonfly-tag": "tag",
    "x-dragonfly-application": "application",
    "x-dragonfly-priority": "priority",
    "x-dragonfly-piece-length": "piece_length",
    "x-dragonfly-use-p2p": "use_p2p",
}
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def default_config_path(env: Mapping[str, str] = os.environ) -> str:
    """``$TRITON_DRAGONFLY_CONFIG_PATH`` if set and non-empty, else :data:`DEFAULT_CONFIG_PATH`."""
    return env.get(CONFIG_PATH_ENV) or DEFAULT_CONFIG_PATH


def is_override_key(key: str) -> bool:
    """True if *key* is a :func:`load_dragonfly_config` override (to split Triton parameters)."""
    return key in OVERRIDE_KEYS or key.startswith("header.")


# --------------------------------------------------------------------------- value parsers
# Each takes (value, where, key, loose): *where* is the source for messages, *loose* allows
# strings for typed values (Triton parameters and CLI flags are always strings).


def _err(where: str | None, key: str, what: str) -> ConfigError:
    prefix = f"{where}: " if where else ""
    return ConfigError(f"{prefix}Dragonfly setting {key!r} {what}", source=where, key=key)


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _opt_str(value: Any, where: str | None, key: str, loose: bool = False) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _err(where, key, f"must be a string, not {_type_name(value)}")
    value = value.strip()
    if _BAD_VALUE.search(value):
        raise _err(where, key, "contains control characters")
    return value or None


def _proxy(value: Any, where: str | None, key: str = "proxy", loose: bool = False) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _err(where, key, f"must be a string URL, not {_type_name(value)}")
    value = value.strip()
    if not value:
        return None
    if "://" not in value:
        value = "http://" + value  # curl (the existing agent) accepts host:port
    scheme = value.split("://", 1)[0].lower()
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise _err(where, key, f"is not a valid URL ({redact_url(value)})") from None
    if scheme not in ("http", "https") or not parts.hostname:
        raise _err(where, key, f"must be an http:// URL with a host ({redact_url(value)})")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise _err(where, key, f"must not have a path or query ({redact_url(value)})")
    return value.rstrip("/")


def _bool(value: Any, where: str | None, key: str, loose: bool = False) -> bool:
    if isinstance(value, bool):
        return value
    if loose and isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise _err(where, key, f"must be a boolean, not {_type_name(value)}")


def _priority(value: Any, where: str | None, key: str = "priority", loose: bool = False) -> int | None:
    if value is None or (loose and isinstance(value, str) and not value.strip()):
        return None
    if loose and isinstance(value, str) and re.fullmatch(r"\s*[0-9]+\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _err(where, key, f"must be an integer 0-6, not {_type_name(value)}")
    if not 0 <= value <= 6:
        raise _err(where, key, f"must be between 0 and 6, got {value}")
    return value


def _piece_length(value: Any, where: str | None, key: str = "piece_length", loose: bool = False) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):  # "8MiB", "4194304": dfdaemon's own syntax, fine in the file
        parsed = parse_byte_size(value)
        if parsed is None:
            raise _err(where, key, "is not a size (use bytes or e.g. '8MiB')")
        value = parsed
    if isinstance(value, bool) or not isinstance(value, int):
        raise _err(where, key, f"must be an integer number of bytes, not {_type_name(value)}")
    if not MIN_PIECE_LENGTH <= value <= MAX_PIECE_LENGTH:
        raise _err(where, key, f"must be between 4 MiB and 64 MiB, got {value} bytes")
    return value


TRANSPORTS = ("proxy", "grpc", "auto")


def _transport(value: Any, where: str | None, key: str = "transport", loose: bool = False) -> str:
    if not isinstance(value, str) or value.strip().lower() not in TRANSPORTS:
        raise _err(where, key, f"must be one of {', '.join(TRANSPORTS)}, not {value!r}"[:200])
    return value.strip().lower()


def _socket(value: Any, where: str | None, key: str = "socket", loose: bool = False) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _err(where, key, "must be the path of dfdaemon's unix socket")
    value = value.strip()
    if _BAD_VALUE.search(value) or not value.startswith("/"):
        raise _err(where, key, "must be an absolute path without control characters")
    if len(value.encode()) > 107:
        raise _err(where, key, "is longer than a unix socket path may be (107 bytes)")
    return value


def _split_names(items: Iterable[str]) -> tuple[str, ...]:
    out: dict[str, None] = {}
    for item in items:
        for name in re.split(r"[&,]", item):
            name = name.strip()
            if name:
                out[name] = None
    return tuple(out)


def _filter(value: Any, where: str | None, key: str = "filter", loose: bool = False) -> tuple[str, ...] | None:
    """A list of names (entries may be ``&``-joined, as the agent's docs show) or one string."""
    if value is None:
        return None
    if isinstance(value, str):
        return _split_names([value])
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return _split_names(value)
    raise _err(where, key, "must be a list of query parameter names")


def _dialects(value: Any, where: str | None, key: str = "filter_dialects", loose: bool = False) -> tuple[str, ...]:
    names = _filter(value, where, key)
    if names is None:
        raise _err(where, key, "must be a list drawn from 'rust', 'go'")
    bad = [n for n in names if n.lower() not in FILTER_DIALECTS]
    if bad:
        raise _err(where, key, f"has unknown dialect(s) {bad} (use 'rust', 'go')")
    return tuple(n.lower() for n in names)


def _headers(value: Any, where: str | None, key: str = "header", loose: bool = False) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _err(where, key, f"must be an object of header names to strings, not {_type_name(value)}")
    out: dict[str, str] = {}
    for name, val in value.items():
        _check_header(name, val, where, f"{key}.{name}")
        out[name] = val.strip()
    return out


def _check_header(name: Any, value: Any, where: str | None, key: str) -> None:
    # Never echo a header value: it may be a credential.
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        raise _err(where, key, "is not a valid header name")
    if not isinstance(value, str):
        raise _err(where, key, f"must be a string, not {_type_name(value)}")
    if _BAD_VALUE.search(value):
        raise _err(where, key, "contains control characters (CR/LF are not allowed)")
    if name.lower() in _FORBIDDEN_HEADERS:
        raise _err(where, key, "cannot be set: dfrepo sets it per request (or it would merge every object into one task)")


_PARSERS = {
    "proxy": _proxy,
    "filter": _filter,
    "tag": _opt_str,
    "application": _opt_str,
    "priority": _priority,
    "piece_length": _piece_length,
    "use_p2p": _bool,
    "fallback_direct": _bool,
    "version_in_task_id": _bool,
    "filter_dialects": _dialects,
    "peer_ranges": _bool,
    "transport": _transport,
    "socket": _socket,
}


# --------------------------------------------------------------------------- the config


@dataclass(frozen=True)
class DragonflyConfig:
    """How dfrepo talks to a Dragonfly peer. Frozen and validated on construction.

    :param proxy: dfdaemon proxy URL (``http://host:4001``); ``None`` = no proxy, download
        directly.  Secret-safe: ``repr`` shows it without userinfo.
    :param headers: extra request headers for proxied requests (the file's ``"header"``).
        ``X-Dragonfly-Tag``/``-Application``/``-Priority``/``-Piece-Length``/``-Use-P2P``
        given here are moved into the typed fields; engine-owned headers (``Range``,
        ``Accept-Encoding``...) and per-object ones are refused.  A
        ``X-Dragonfly-Filtered-Query-Params``/``X-Dragonfly-Filter`` given here is sent
        verbatim and replaces dfrepo's computed list for that dialect.
    :param filter: extra query keys to drop from the task identity, added to dfdaemon's
        default list; ``None`` = not given.
    :param tag: ``X-Dragonfly-Tag`` (the object version is appended, see
        ``version_in_task_id``).
    :param application: ``X-Dragonfly-Application``.
    :param priority: ``X-Dragonfly-Priority``, 0-6 (dfdaemon default 6).
    :param piece_length: ``X-Dragonfly-Piece-Length`` in bytes, 4-64 MiB (default: automatic).
    :param use_p2p: send ``X-Dragonfly-Use-P2P: true``.
    :param fallback_direct: if the proxy cannot be reached, download from the origin.
    :param version_in_task_id: fold the object's version (ETag/generation) into the tag.
    :param filter_dialects: which filter headers to send, from ``("rust", "go")``.
    :param transport: how dfrepo talks to the daemon: ``"proxy"`` (HTTP on ``proxy``),
        ``"grpc"`` (``DownloadTask`` on ``socket``: the daemon writes or hard-links the file
        itself, a local hit costs one ``link()``), ``"auto"`` (gRPC when the socket answers,
        else the proxy; logged once). See :mod:`dfrepo.dragonfly.daemon_grpc`.
    :param socket: dfdaemon's download socket (default ``/var/run/dragonfly/dfdaemon.sock``).
    :param peer_ranges: through the peer, fetch a file as piece-aligned range GETs of
        > 4 MiB (True) or as one GET (False; dfdaemon fetches the pieces in parallel itself
        and the scheduler sees one peer per file per node). See :mod:`dfrepo.engine.plan`.
    """

    proxy: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict, hash=False)
    filter: tuple[str, ...] | None = None
    tag: str | None = None
    application: str | None = None
    priority: int | None = None
    piece_length: int | None = None
    use_p2p: bool = True
    fallback_direct: bool = True
    version_in_task_id: bool = True
    filter_dialects: tuple[str, ...] = FILTER_DIALECTS
    peer_ranges: bool = False
    transport: str = "proxy"
    socket: str = "/var/run/dragonfly/dfdaemon.sock"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        headers = dict(_headers(self.headers, None, "headers"))
        for name in list(headers):
            target = _HOISTED.get(name.lower())
            if target is None:
                continue
            raw = headers.pop(name)
            if target == "use_p2p":
                set_(self, "use_p2p", raw.lower() == "true")
                continue
            if getattr(self, target) is not None:
                raise _err(None, f"headers.{name}", f"conflicts with the {target!r} setting; give only one")
            set_(self, target, raw)  # validated just below
        set_(self, "headers", MappingProxyType(headers))
        for key, parse in _PARSERS.items():
            set_(self, key, parse(getattr(self, key), None, key, True))

    @property
    def enabled(self) -> bool:
        """True when downloads go through a Dragonfly daemon (its proxy or its gRPC socket)."""
        return self.proxy is not None or self.transport != "proxy"

    def __reduce__(self) -> Any:
        # MappingProxyType does not pickle; rebuild (and re-validate) from plain values.
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["headers"] = dict(self.headers)
        return (_rebuild_config, (values,))

    def __repr__(self) -> str:
        return (
            f"DragonflyConfig(proxy={redact_url(self.proxy) or None!r}, headers={sorted(self.headers)!r}, "
            f"filter={self.filter!r}, tag={self.tag!r}, application={self.application!r}, "
            f"priority={self.priority!r}, piece_length={self.piece_length!r}, use_p2p={self.use_p2p!r}, "
            f"fallback_direct={self.fallback_direct!r}, version_in_task_id={self.version_in_task_id!r}, "
            f"filter_dialects={self.filter_dialects!r}, peer_ranges={self.peer_ranges!r}, "
            f"transport={self.transport!r}, socket={self.socket!r})"
        )


def _rebuild_config(values: dict[str, Any]) -> DragonflyConfig:
    return DragonflyConfig(**values)


# --------------------------------------------------------------------------- loading


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
        raise ConfigError(f"{path}: Dragonfly config must be a JSON object, not {_type_name(doc)}", source=path)
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key == "header":
            out["headers"] = _headers(value, path, "header")
        elif key in _PARSERS:
            out[key] = _PARSERS[key](value, path, key, False)
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
            _check_header(name, value, where, key)
            for old in [h for h in headers if h.lower() == name.lower()]:
                del headers[old]
            headers[name] = str(value).strip()
        elif key == "headers":
            for name, val in _headers(value, where, key).items():
                for old in [h for h in headers if h.lower() == name.lower()]:
                    del headers[old]
                headers[name] = val
        else:
            target = "fallback_direct" if key == "fallback" else key
            values[target] = _PARSERS[target](value, where, key, True)
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
        ``filter_dialects``, ``peer_ranges``, ``transport``, ``socket``, ``header.<Name>`` (one header), ``headers`` (a mapping).
        Strings are parsed (``"true"``, ``"3"``); unknown keys raise (use
        :func:`is_override_key` to pick them out of a larger parameter set).
    :param required: raise instead of using defaults when the file does not exist.
    :raises ConfigError: malformed JSON, a wrong type or value (names file and key).
    :warns DfrepoWarning: unknown or duplicate keys in the file.
    """
    file_path = os.fspath(path) if path is not None else default_config_path(env)
    values = _from_file(file_path, required)
    for var in PROXY_ENV_VARS:
        if env.get(var, "").strip():
            values["proxy"] = _proxy(env[var], f"${var}", "proxy")
            break
    if overrides:
        _apply_overrides(values, overrides)
    return DragonflyConfig(**values)
