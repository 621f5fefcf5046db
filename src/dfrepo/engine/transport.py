"""urllib3 pools aimed at the Dragonfly proxy (or the origin), and how their errors are classified."""

from __future__ import annotations

import http.client
import logging
import re
import socket
import threading
from collections.abc import Mapping
from typing import Any

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
    # A proxy connection that broke (a reused keep-alive connection the peer closed or
    # reset, a peer restart).  Transport.request turns "cannot connect to the proxy at
    # all" into a direct fallback or ProxyUnavailableError before this applies.
    ProxyError,
)


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


def _proxy_unreachable(exc: ProxyError) -> bool:
    """True when the proxy itself could not be connected to (not an error behind it)."""
    cause = exc.original_error if hasattr(exc, "original_error") else exc.__cause__
    return isinstance(cause, (NewConnectionError, ConnectTimeoutError, ConnectionRefusedError))


class Transport:
    """Connection pools for one pull: through the Dragonfly proxy, or direct.

    Through a proxy every GET goes out in absolute form (``GET https://host/key HTTP/1.1``)
    on a plain-HTTP connection pool aimed at the proxy, for ``http://`` and ``https://``
    origins alike: the peer talks TLS to the origin itself, and no CONNECT tunnel (which
    dfdaemon would intercept with its own certificate) is ever opened. urllib3's
    ``ProxyManager(use_forwarding_for_https=True)`` does this only for ``https://``
    proxies, which a dfdaemon on port 4001 is not, so the proxy's pool is used directly.

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
        self._proxied: urllib3.HTTPConnectionPool | None = None
        if self.proxy:
            # Checked once, where settings are made (dfrepo.dragonfly.fields.parse_proxy).
            parsed = urllib3.util.parse_url(self.proxy)
            assert parsed.host, "an unchecked proxy reached the transport"
            self._proxied = urllib3.HTTPConnectionPool(
                parsed.host, parsed.port or 80, maxsize=size, block=False, timeout=timeout, retries=False)
        self._lock = threading.Lock()
        self.fell_back = False
        self.fallback_reason: str | None = None

    @property
    def via(self) -> str:
        return "proxy" if self._proxied is not None and not self.fell_back else "direct"

    def request(self, url: str, headers: Mapping[str, str]) -> urllib3.BaseHTTPResponse:
        """Send a GET and return the response with its body unread."""
        pool = None if self.fell_back else self._proxied
        if pool is None:
            if self._proxied is not None:
                # Fallen back to the origin: Dragonfly's headers are not its business.
                headers = {k: v for k, v in headers.items() if not k.lower().startswith("x-dragonfly-")}
            try:
                return self._direct_manager(url).request("GET", url, headers=dict(headers), preload_content=False,
                                            decode_content=False, redirect=False)
            except SSLError as exc:
                raise TransferError(f"TLS error talking to {redact_url(url)}: {exc.__class__.__name__}",
                                    url=url) from None
        target = urllib3.util.parse_url(url)
        if target.scheme not in ("http", "https") or not target.host:
            raise ConfigError(f"cannot fetch {redact_url(url)} through a proxy: not an http(s) URL",
                              source="arg", key="url")
        host = target.host if target.port in (None, 80 if target.scheme == "http" else 443) \
            else f"{target.host}:{target.port}"
        try:
            return pool.urlopen("GET", url, headers={**headers, "Host": host}, assert_same_host=False,
                                retries=False, redirect=False, preload_content=False, decode_content=False)
        except (NewConnectionError, ConnectTimeoutError) as exc:
            return self._proxy_down(url, headers, exc)
        except ProxyError as exc:  # Defensive: urllib3 may still wrap connection failures
            if _proxy_unreachable(exc):
                return self._proxy_down(url, headers, exc)
            raise

    def _direct_manager(self, url: str) -> urllib3.PoolManager:
        """The pool manager for a direct request: the environment's proxy for *url*, or none."""
        proxy = self.direct_proxies.proxy_for(url) if self.direct_proxies is not None else None
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

    def _proxy_down(self, url: str, headers: Mapping[str, str], exc: Exception) -> urllib3.BaseHTTPResponse:
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
        if self._proxied is not None:
            self._proxied.close()
