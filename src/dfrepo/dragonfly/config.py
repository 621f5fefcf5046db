"""Dragonfly client settings: the frozen, validated :class:`DragonflyConfig`.

Where the values come from (``dragonfly_config.json``, ``$DFREPO_PROXY``, Triton agent
parameters, CLI flags) is :mod:`dfrepo.dragonfly.loading`; how each value is checked is
:mod:`dfrepo.dragonfly.fields`.

Defaults and why:

* ``proxy = None`` (download directly).  A library must not assume a dfdaemon listens on
  this host; set it in the file, in ``$DFREPO_PROXY`` or ``$DRAGONFLY_PROXY`` (first
  non-empty wins, and beats the file), or as an override.  ``""`` as an override means
  "direct" explicitly.  :data:`DEFAULT_PROXY` is the usual local address.  Only a plain
  ``http://host:port`` is accepted (see :func:`~dfrepo.dragonfly.fields.parse_proxy`).
* ``use_p2p = True``: send ``X-Dragonfly-Use-P2P: true`` so GETs go P2P without an
  operator ``proxy.rules[]`` entry.
* ``fallback_direct = True``: an unreachable proxy means a direct download (logged once).
* ``version_in_task_id = True``: fold the object's version into ``X-Dragonfly-Tag`` so a
  rewritten object is not served stale from the peer cache.
* ``filter = None``: send dfdaemon's default filter list (plus Azure SAS keys for Azure
  URLs); a given filter is *added* to that list (see :mod:`dfrepo.dragonfly.headers`).
* ``filter_dialects = ("rust", "go")``: send the filter both as
  ``X-Dragonfly-Filtered-Query-Params`` (Rust dfdaemon) and ``X-Dragonfly-Filter`` (Go).
* ``model_parameters = None``: the file does not say which agent parameters a model's
  ``config.pbtxt`` may set (the Triton agent's allow-list; see
  :mod:`dfrepo.triton.parameters`). The operator's alone: never an override.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from ..redact import redact_url
from .fields import (
    FILTER_DIALECTS,
    MAX_PIECE_LENGTH,
    MIN_PIECE_LENGTH,
    PARSERS,
    TRANSPORTS,
    parse_headers,
    setting_error,
)

__all__ = [
    "DEFAULT_PROXY",
    "FILTER_DIALECTS",
    "MAX_PIECE_LENGTH",
    "MIN_PIECE_LENGTH",
    "TRANSPORTS",
    "DragonflyConfig",
]

#: dfdaemon's default proxy address (not used unless configured).
DEFAULT_PROXY = "http://127.0.0.1:4001"

# Header spellings of typed fields: moved into the field so version folding still applies.
_HOISTED = {
    "x-dragonfly-tag": "tag",
    "x-dragonfly-application": "application",
    "x-dragonfly-priority": "priority",
    "x-dragonfly-piece-length": "piece_length",
    "x-dragonfly-use-p2p": "use_p2p",
}


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
    :param model_parameters: the Triton agent's allow-list from ``dragonfly_config.json``:
        the agent parameters (names or ``fnmatch`` patterns, ``()`` = none) a model's
        ``config.pbtxt`` may set; None = not set (``$DFREPO_MODEL_PARAMETERS`` or the
        default decide). Not a Dragonfly request setting, and never an override: only the
        operator's file sets it (:func:`dfrepo.triton.parameters.allowed_model_parameters`).
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
    model_parameters: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        headers = dict(parse_headers(self.headers, None, "headers"))
        for name in list(headers):
            target = _HOISTED.get(name.lower())
            if target is None:
                continue
            raw = headers.pop(name)
            if target == "use_p2p":
                set_(self, "use_p2p", raw.lower() == "true")
                continue
            if getattr(self, target) is not None:
                raise setting_error(None, f"headers.{name}", f"conflicts with the {target!r} setting; give only one")
            set_(self, target, raw)  # validated just below
        set_(self, "headers", MappingProxyType(headers))
        for key, parse in PARSERS.items():
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
            f"transport={self.transport!r}, socket={self.socket!r}, model_parameters={self.model_parameters!r})"
        )


def _rebuild_config(values: dict[str, Any]) -> DragonflyConfig:
    return DragonflyConfig(**values)
