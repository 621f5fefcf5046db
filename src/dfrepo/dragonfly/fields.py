"""Dragonfly setting values: one parser per key, and the rules for extra headers.

Every parser takes ``(value, where, key, loose)``: *where* names the source in messages
(a file path, ``$DFREPO_PROXY``, ``overrides``; None for the constructor), *loose*
allows strings for typed values (Triton parameters and CLI flags are always strings).
A bad value is a :class:`~dfrepo.errors.ConfigError` naming the source and the key,
never echoing a secret. :class:`~dfrepo.dragonfly.config.DragonflyConfig` runs them on
construction, so every config that exists holds valid values.

The proxy rule is decided here, once: dfdaemon's proxy is a plain ``http://host:port``.
An ``https://`` proxy is refused (dfdaemon's proxy speaks plain HTTP and dfrepo never
opens a CONNECT tunnel), and so is one with ``user:password@`` (dfrepo would not send
it: the credential would be silently dropped).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..errors import ConfigError, warn_once
from ..redact import redact_url
from ..values import FALSE_WORDS, TRUE_WORDS
from .taskid import parse_byte_size

__all__ = [
    "FILTER_DIALECTS",
    "MAX_PIECE_LENGTH",
    "MIN_PIECE_LENGTH",
    "PARSERS",
    "TRANSPORTS",
    "check_header",
    "dropped_header",
    "parse_headers",
    "parse_proxy",
    "setting_error",
    "type_name",
]

#: ``"rust"`` = ``X-Dragonfly-Filtered-Query-Params`` (comma), ``"go"`` = ``X-Dragonfly-Filter`` (``&``).
FILTER_DIALECTS = ("rust", "go")
MIN_PIECE_LENGTH = 4 * 1024 * 1024
MAX_PIECE_LENGTH = 64 * 1024 * 1024
TRANSPORTS = ("proxy", "grpc", "auto")

# Headers that would break the transfer (per request or per object, or merging every
# object into one task): refused.
_FORBIDDEN_HEADERS = frozenset(
    h.lower()
    for h in (
        "Host",
        "Range",
        "If-Range",
        "If-Match",
        "If-None-Match",
        "Content-Length",
        "Transfer-Encoding",
        # One value for every object would collapse all files into ONE task.
        "X-Dragonfly-Content-For-Calculating-Task-ID",
        "X-Dragonfly-Output-Path",
    )
)
# Headers the C++ agent forwarded verbatim (curl sends what it is given) that dfrepo's
# connection handling owns: dropped with a warning (once per name), never fatal. Sending
# them would not help (hop-by-hop) or would break the file (Accept-Encoding: gzip).
_DROPPED_HEADERS = frozenset(
    h.lower() for h in ("Accept-Encoding", "Connection", "Keep-Alive", "Proxy-Connection", "TE", "Upgrade")
)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def setting_error(where: str | None, key: str, what: str) -> ConfigError:
    """The error for a bad value of *key* read from *where*."""
    prefix = f"{where}: " if where else ""
    return ConfigError(f"{prefix}Dragonfly setting {key!r} {what}", source=where, key=key)


def type_name(value: object) -> str:
    """JSON's name for *value*'s type in messages (``null`` for None)."""
    return "null" if value is None else type(value).__name__


def _opt_str(value: Any, where: str | None, key: str, loose: bool = False) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise setting_error(where, key, f"must be a string, not {type_name(value)}")
    value = value.strip()
    if _BAD_VALUE.search(value):
        raise setting_error(where, key, "contains control characters")
    return value or None


def parse_proxy(value: Any, where: str | None, key: str = "proxy", loose: bool = False) -> str | None:
    """The proxy URL without a trailing slash; ``None``/``""`` = no proxy.

    The one proxy rule (the engine trusts what passed it): ``http://host[:port]``, or
    ``host:port`` as curl takes it; no TLS, no userinfo, no path or query.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise setting_error(where, key, f"must be a string URL, not {type_name(value)}")
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
        raise setting_error(where, key, f"is not a valid URL ({redact_url(value)})") from None
    if scheme == "https":
        raise setting_error(where, key, f"must be a plain http:// URL: dfdaemon's proxy speaks HTTP, "
                                        f"not TLS ({redact_url(value)})")
    if scheme != "http" or not parts.hostname:
        raise setting_error(where, key, f"must be an http:// URL with a host ({redact_url(value)})")
    if parts.username is not None or parts.password is not None:
        # Never echoed: redact_url drops the userinfo.
        raise setting_error(where, key, f"must not carry user:password@ (dfrepo sends no proxy "
                                        f"credentials; {redact_url(value)})")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise setting_error(where, key, f"must not have a path or query ({redact_url(value)})")
    return str(value).rstrip("/")


def _bool(value: Any, where: str | None, key: str, loose: bool = False) -> bool:
    if isinstance(value, bool):
        return value
    if loose and isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise setting_error(where, key, f"must be a boolean, not {type_name(value)}")


def _priority(value: Any, where: str | None, key: str = "priority", loose: bool = False) -> int | None:
    if value is None or (loose and isinstance(value, str) and not value.strip()):
        return None
    if loose and isinstance(value, str) and re.fullmatch(r"\s*[0-9]+\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise setting_error(where, key, f"must be an integer 0-6, not {type_name(value)}")
    if not 0 <= value <= 6:
        raise setting_error(where, key, f"must be between 0 and 6, got {value}")
    return value


def _piece_length(value: Any, where: str | None, key: str = "piece_length", loose: bool = False) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):  # "8MiB", "4194304": dfdaemon's own syntax, fine in the file
        parsed = parse_byte_size(value)
        if parsed is None:
            raise setting_error(where, key, "is not a size (use bytes or e.g. '8MiB')")
        value = parsed
    if isinstance(value, bool) or not isinstance(value, int):
        raise setting_error(where, key, f"must be an integer number of bytes, not {type_name(value)}")
    if not MIN_PIECE_LENGTH <= value <= MAX_PIECE_LENGTH:
        raise setting_error(where, key, f"must be between 4 MiB and 64 MiB, got {value} bytes")
    return value


def _transport(value: Any, where: str | None, key: str = "transport", loose: bool = False) -> str:
    if not isinstance(value, str) or value.strip().lower() not in TRANSPORTS:
        raise setting_error(where, key, f"must be one of {', '.join(TRANSPORTS)}, not {value!r}"[:200])
    return value.strip().lower()


def _socket(value: Any, where: str | None, key: str = "socket", loose: bool = False) -> str:
    if not isinstance(value, str) or not value.strip():
        raise setting_error(where, key, "must be the path of dfdaemon's unix socket")
    value = value.strip()
    if _BAD_VALUE.search(value) or not value.startswith("/"):
        raise setting_error(where, key, "must be an absolute path without control characters")
    if len(value.encode()) > 107:
        raise setting_error(where, key, "is longer than a unix socket path may be (107 bytes)")
    return str(value)


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
    raise setting_error(where, key, "must be a list of query parameter names")


def _dialects(value: Any, where: str | None, key: str = "filter_dialects", loose: bool = False) -> tuple[str, ...]:
    names = _filter(value, where, key)
    if names is None:
        raise setting_error(where, key, "must be a list drawn from 'rust', 'go'")
    bad = [n for n in names if n.lower() not in FILTER_DIALECTS]
    if bad:
        raise setting_error(where, key, f"has unknown dialect(s) {bad} (use 'rust', 'go')")
    return tuple(n.lower() for n in names)


def _model_parameters(value: Any, where: str | None, key: str = "model_parameters",
                      loose: bool = False) -> tuple[str, ...] | None:
    """The operator's allow-list of agent parameters a model may set: a JSON list of names
    or ``fnmatch`` patterns (``[]`` = none); None = not given. Only the list's shape is
    checked here; the names are checked by :mod:`dfrepo.triton.parameters`, which knows
    every parameter. Never a string (not even from the constructor): ``"tag,filter"``
    would read as one name."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        raise setting_error(where, key, f'must be a list of agent parameter names such as ["tag", "header.*"] '
                                        f"([] allows none), not {type_name(value)}")
    out: dict[str, None] = {}
    for entry in value:
        if not isinstance(entry, str):
            raise setting_error(where, key, f"must list strings, not {type_name(entry)}")
        name = entry.strip()
        if not name or _BAD_VALUE.search(name) or "," in name:
            raise setting_error(where, key, f"has an entry that is not one parameter name: {entry[:80]!r}")
        out[name] = None
    return tuple(out)


def parse_headers(value: Any, where: str | None, key: str = "header", loose: bool = False) -> dict[str, str]:
    """A mapping of extra header names to values, each checked by :func:`check_header`."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise setting_error(where, key, f"must be an object of header names to strings, not {type_name(value)}")
    out: dict[str, str] = {}
    for name, val in value.items():
        check_header(name, val, where, f"{key}.{name}")
        if not dropped_header(name, where):
            out[name] = val.strip()
    return out


def dropped_header(name: str, where: str | None) -> bool:
    """True (and a warning, once per name) for a header dfrepo ignores: hop-by-hop ones
    and ``Accept-Encoding``, which the engine sets itself."""
    if name.lower() not in _DROPPED_HEADERS:
        return False
    warn_once(f"header:{name.lower()}", f"{where + ': ' if where else ''}header {name!r} ignored: dfrepo manages "
                                        f"connections and encodings itself")
    return True


def check_header(name: Any, value: Any, where: str | None, key: str) -> None:
    """Refuse a bad header name, a non-string or multi-line value, or a header dfrepo owns.

    Never echoes the value: it may be a credential.
    """
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        raise setting_error(where, key, "is not a valid header name")
    if not isinstance(value, str):
        raise setting_error(where, key, f"must be a string, not {type_name(value)}")
    if _BAD_VALUE.search(value):
        raise setting_error(where, key, "contains control characters (CR/LF are not allowed)")
    if name.lower() in _FORBIDDEN_HEADERS:
        raise setting_error(where, key, "cannot be set: dfrepo sets it per request "
                                        "(or it would merge every object into one task)")


PARSERS: dict[str, Callable[[Any, str | None, str, bool], Any]] = {
    "proxy": parse_proxy,
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
    "model_parameters": _model_parameters,
}
