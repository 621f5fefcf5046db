"""Proxies for *direct* downloads, from the environment, read the way curl reads them.

The C++ ``dragonfly-repository-agent`` downloads with libcurl; without a Dragonfly
``proxy`` curl honours the usual variables, so on a host behind a forwarding proxy the
agent's direct downloads went through it. dfrepo resolves the same variables once, from
the pull's environment mapping (:func:`direct_proxies_from_env`, called by
:func:`dfrepo.settings.resolve`), and the engine's :class:`~dfrepo.engine.transport.Transport`
routes direct requests by the result. urllib3 never reads ``os.environ`` for this.

curl's rules, kept here:

* per URL scheme, ``<scheme>_proxy`` lowercase first, then uppercase; except ``http``:
  only ``http_proxy`` (``HTTP_PROXY`` is ignored: a CGI sets it from a request header,
  the "httpoxy" rule); then ``all_proxy``, ``ALL_PROXY``;
* ``no_proxy`` then ``NO_PROXY``: comma/space separated; ``*`` = every host; an entry
  matches the host itself and its sub-domains (a leading ``.`` is ignored); IPv4 entries
  may carry a CIDR prefix; ports are not compared;
* a proxy without a scheme is ``http://``; without a port it is 1080 (curl's default).

A Dragonfly ``proxy`` (dfdaemon) is not subject to ``no_proxy``: dfrepo always sends
through the peer what it was told to (see docs/triton-agent.md).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ..environment import DIRECT_PROXY_ENV, NO_PROXY_ENV
from ..errors import ConfigError
from ..redact import redact_url

__all__ = ["DirectProxies", "direct_proxies_from_env"]

_CURL_DEFAULT_PROXY_PORT = 1080


@dataclass(frozen=True)
class DirectProxies:
    """Where direct requests go: a proxy URL per origin scheme, and the bypass list.

    :ivar by_scheme: ``{"http": url, "https": url}`` (either may be absent). A URL may
        carry ``user:password@`` (sent as ``Proxy-Authorization``); never shown in repr.
    :ivar no_proxy: the bypass entries, lowercased.
    """

    by_scheme: Mapping[str, str] = field(default_factory=dict)
    no_proxy: tuple[str, ...] = ()

    def proxy_for(self, url: str) -> str | None:
        """The proxy for *url*, or None (no proxy for its scheme, or the host bypasses)."""
        parts = urlsplit(url)
        proxy = self.by_scheme.get(parts.scheme.lower())
        if proxy is None or bypasses(parts.hostname or "", self.no_proxy):
            return None
        return proxy

    def __repr__(self) -> str:
        shown = {k: redact_url(v) for k, v in sorted(self.by_scheme.items())}
        return f"DirectProxies(by_scheme={shown!r}, no_proxy={self.no_proxy!r})"


def bypasses(host: str, entries: tuple[str, ...]) -> bool:
    """curl's ``no_proxy`` match of *host* against *entries*."""
    host = host.strip("[]").rstrip(".").lower()
    if not host:
        return False
    try:
        addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        addr = None
    for entry in entries:
        if entry == "*":
            return True
        if addr is not None:
            try:
                if addr in ipaddress.ip_network(entry.strip("[]"), strict=False):
                    return True
            except ValueError:
                pass
            continue
        name = entry.lstrip(".").rstrip(".")
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def _parse_proxy(value: str, var: str) -> str:
    value = value.strip()
    if "://" not in value:
        value = "http://" + value
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ConfigError(f"${var} is not a valid proxy URL ({redact_url(value)})", source="env", key=var) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"${var}: dfrepo supports http:// and https:// proxies only, got "
                          f"{redact_url(value)}", source="env", key=var)
    if port is None:
        port = 443 if scheme == "https" else _CURL_DEFAULT_PROXY_PORT
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = (userinfo + "@" if userinfo else "") + f"{host}:{port}"
        value = f"{scheme}://{netloc}"
    return value.rstrip("/")


def direct_proxies_from_env(env: Mapping[str, str]) -> DirectProxies | None:
    """Resolve the direct-download proxies from *env* (curl's rules); None = none set.

    :raises ConfigError: a proxy variable that is not an http(s) proxy URL (the message
        names the variable, never a password).
    """
    by_scheme: dict[str, str] = {}
    for scheme, names in DIRECT_PROXY_ENV.items():
        for var in names:
            value = env.get(var, "").strip()
            if value:
                by_scheme[scheme] = _parse_proxy(value, var)
                break
    if not by_scheme:
        return None
    no_proxy: tuple[str, ...] = ()
    for var in NO_PROXY_ENV:
        bypass = env.get(var)
        if bypass is not None:
            no_proxy = tuple(e.strip().lower() for e in bypass.replace(" ", ",").split(",") if e.strip())
            break
    return DirectProxies(by_scheme, no_proxy)
