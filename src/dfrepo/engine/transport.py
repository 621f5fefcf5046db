"""Connection pools aimed at the Dragonfly proxy (or the origin), and how their errors are classified."""

from __future__ import annotations

import functools
import http.client
import logging
import re
import socket
import threading
import urllib.parse
from collections.abc import Mapping
from typing import Any, NamedTuple

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    NewConnectionError,
    ProtocolError,
    ProxyError,
    ReadTimeoutError,
    SSLError,
)

from ..errors import ConfigError, IncompleteDownloadError, ProxyUnavailableError, TransferError
from ..redact import redact_url
from . import wire
from .proxyenv import DirectProxies
from .settings import TransferConfig

log = logging.getLogger("dfrepo")

#: Errors after which the same request may succeed: the connection broke or stalled.
RETRYABLE_EXCEPTIONS: tuple[type[BaseException], ...] = (
    ProtocolError,
    ReadTimeoutError,
    ConnectTimeoutError,
    NewConnectionError,
    socket.timeout,
    ConnectionError,
    http.client.HTTPException,
    IncompleteDownloadError,
    # A connection through an environment proxy that broke (urllib3 wraps it).
    # Transport.request turns "cannot connect to the Dragonfly proxy at all" into a
    # direct fallback or ProxyUnavailableError before any of this applies.
    ProxyError,
)


Response = urllib3.BaseHTTPResponse | wire.Response
"""A response with its body unread: :mod:`~dfrepo.engine.wire`'s for plain HTTP, urllib3's
for TLS origins and the environment's proxies."""


class _RedactQueries(logging.Filter):
    """Removes query strings (presigned URL signatures) from urllib3's log records.

    urllib3's connection pool logs every request line at DEBUG, query included; with the
    root logger at DEBUG a presigned URL would reach the logs. Installed once on the
    ``urllib3`` loggers by the first :class:`Transport`, for the whole process."""

    _QUERY = re.compile(r"\?[^\s\"']*")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(self._QUERY.sub("?<redacted>", a) if isinstance(a, str) else a for a in args)
        if isinstance(record.msg, str) and "?" in record.msg:
            record.msg = self._QUERY.sub("?<redacted>", record.msg)
        return True


_FILTER = _RedactQueries()


def _install_log_filter() -> None:
    for name in ("urllib3.connectionpool", "urllib3.poolmanager", "urllib3.util.retry", "urllib3.response"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


class Transport:
    """Connection pools for one pull: through the Dragonfly proxy, or direct.

    Through a proxy every GET goes out in absolute form (``GET https://host/key HTTP/1.1``)
    on a plain-HTTP connection pool aimed at the proxy, for ``http://`` and ``https://``
    origins alike: the peer talks TLS to the origin itself, and no CONNECT tunnel (which
    dfdaemon would intercept with its own certificate) is ever opened. urllib3's
    ``ProxyManager(use_forwarding_for_https=True)`` does this only for ``https://``
    proxies, which a dfdaemon on port 4001 is not, so the proxy's pool is used directly.

    Plain-HTTP exchanges (the proxy, ``http://`` origins without an environment proxy)
    go through :mod:`~dfrepo.engine.wire`'s lean keep-alive pools; ``https://`` origins
    and the environment's proxies through urllib3.

    When the proxy cannot be reached and ``fallback_direct`` is on, the transport
    switches to direct origin requests once, logs the reason once, and stays direct.

    Direct requests go through *direct_proxies* (the environment's ``http_proxy`` ...,
    resolved by :func:`~dfrepo.engine.proxyenv.direct_proxies_from_env`) when one applies
    to the URL: absolute-form GETs for ``http://`` origins, a CONNECT tunnel for
    ``https://`` ones, as curl does.
    """

    def __init__(
        self,
        config: TransferConfig,
        *,
        proxy: str | None = None,
        fallback_direct: bool = True,
        maxsize: int | None = None,
        direct_proxies: DirectProxies | None = None,
    ) -> None:
        _install_log_filter()
        self.config = config
        self.proxy = proxy or None
        self.fallback_direct = fallback_direct
        # One connection per request the batch may have in flight (urllib3 opens them lazily).
        size = maxsize or config.max_workers
        timeout = urllib3.Timeout(connect=config.connect_timeout, read=config.read_timeout)
        self.direct_proxies = direct_proxies
        self._pool_args: dict[str, Any] = {
            "num_pools": 32, "maxsize": size, "block": False, "timeout": timeout, "retries": False,
            "cert_reqs": "CERT_REQUIRED" if config.verify_tls else "CERT_NONE", "ca_certs": config.ca_bundle}
        self._direct = urllib3.PoolManager(**self._pool_args)
        self._via_proxy: dict[str, urllib3.ProxyManager] = {}
        self._size = size
        self._plain: dict[tuple[str, int], wire.Pool] = {}
        self._proxied: wire.Pool | None = None
        if self.proxy:
            # Checked once, where settings are made (dfrepo.dragonfly.fields.parse_proxy).
            parsed = urllib3.util.parse_url(self.proxy)
            assert parsed.host, "an unchecked proxy reached the transport"
            self._proxied = self._wire_pool(parsed.host, parsed.port or 80)
        self._lock = threading.Lock()
        self.fell_back = False
        self.fallback_reason: str | None = None

    @property
    def via(self) -> str:
        return "proxy" if self._proxied is not None and not self.fell_back else "direct"

    def request(self, url: str, headers: Mapping[str, str]) -> Response:
        """Send a GET and return the response with its body unread."""
        pool = None if self.fell_back else self._proxied
        if pool is None:
            if self._proxied is not None:
                # Fallen back to the origin: Dragonfly's headers are not its business.
                headers = {k: v for k, v in headers.items() if not k.lower().startswith("x-dragonfly-")}
            return self._request_direct(url, headers)
        target = _split(url)
        if target is None:
            raise ConfigError(f"cannot fetch {redact_url(url)} through a proxy: not an http(s) URL",
                              source="arg", key="url")
        try:
            conn = pool.connection()
        except OSError as exc:  # refused, unreachable, timed out: the proxy is not there
            return self._proxy_down(url, headers, exc)
        return self._send(pool, conn, wire.request_target(url), {**headers, "Host": target.host_header}, url)

    def _request_direct(self, url: str, headers: Mapping[str, str]) -> Response:
        target = _split(url)
        proxy = self.direct_proxies.proxy_for(url) if self.direct_proxies is not None else None
        if target is not None and target.scheme == "http" and proxy is None:
            pool = self._wire_pool(target.host, target.port)
            return self._send(pool, pool.connection(), wire.request_target(target.path),
                              {"Host": target.host_header, **headers}, url)
        try:
            return self._direct_manager(proxy).request("GET", url, headers=dict(headers), preload_content=False,
                                                       decode_content=False, redirect=False)
        except SSLError as exc:
            raise TransferError(f"TLS error talking to {redact_url(url)}: {exc.__class__.__name__}",
                                url=url) from None

    @staticmethod
    def _send(pool: wire.Pool, conn: wire.Connection, target: str, headers: Mapping[str, str],
              url: str) -> wire.Response:
        resp = pool.exchange(conn, target, headers)
        if log.isEnabledFor(logging.DEBUG):
            log.debug('dfrepo: "GET %s" %d via %s:%d', redact_url(url), resp.status, pool.host, pool.port)
        return resp

    def _wire_pool(self, host: str, port: int) -> wire.Pool:
        key = (host, port)
        pool = self._plain.get(key)
        if pool is None:
            pool = self._plain.setdefault(key, wire.Pool(
                host, port, maxsize=self._size, connect_timeout=self.config.connect_timeout,
                read_timeout=self.config.read_timeout))
        return pool

    def _direct_manager(self, proxy: str | None) -> urllib3.PoolManager:
        """The urllib3 pool manager for a direct request: through the environment's *proxy*, or none."""
        if proxy is None:
            return self._direct
        with self._lock:
            manager = self._via_proxy.get(proxy)
            if manager is None:
                parsed = urllib3.util.parse_url(proxy)
                headers = urllib3.make_headers(proxy_basic_auth=parsed.auth) if parsed.auth else None
                bare = f"{parsed.scheme}://{parsed.netloc}"  # urllib3's netloc has no userinfo
                manager = urllib3.ProxyManager(bare, proxy_headers=headers, **self._pool_args)
                self._via_proxy[proxy] = manager
        return manager

    def _proxy_down(self, url: str, headers: Mapping[str, str], exc: Exception) -> Response:
        if not self.fallback_direct:
            raise ProxyUnavailableError(
                f"Dragonfly proxy {redact_url(self.proxy)} is unreachable and direct fallback is off",
                url=url,
            ) from None
        with self._lock:
            if not self.fell_back:
                self.fell_back = True
                self.fallback_reason = f"proxy {redact_url(self.proxy)} unreachable ({type(exc).__name__})"
                log.warning("dfrepo: %s; downloading directly from the origin", self.fallback_reason)
        return self.request(url, headers)

    def clear(self) -> None:
        self._direct.clear()
        for manager in self._via_proxy.values():
            manager.clear()
        for pool in list(self._plain.values()):
            pool.close()


class Target(NamedTuple):
    """Where an http(s) URL's request goes, and what it says there."""

    scheme: str
    host: str
    port: int
    host_header: str
    path: str
    """The origin-form request target: path and query."""


@functools.lru_cache(maxsize=4096)
def _split(url: str) -> Target | None:
    """The :class:`Target` of an http(s) URL, or None for anything else."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        return None
    default = 80 if parts.scheme == "http" else 443
    try:
        port = parts.port or default
    except ValueError:
        return None
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == default else f"{shown}:{port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, host, port, host_header, target)
