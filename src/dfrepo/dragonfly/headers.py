"""Request headers for GETs sent through a Dragonfly peer's proxy.

What :func:`request_headers` sends, and why:

``X-Dragonfly-Use-P2P: true``
    (when ``cfg.use_p2p``) so the GET goes P2P without an operator ``proxy.rules[]`` entry.
``X-Dragonfly-Filtered-Query-Params: a,b,...`` (Rust dfdaemon) and ``X-Dragonfly-Filter: a&b&...`` (legacy Go)
    Query keys dropped from the task identity, so differently signed URLs of one object
    share one task.  **Sending the header replaces dfdaemon's own default list**, so the
    list always starts with :data:`~dfrepo.dragonfly.urlcanon.DEFAULT_FILTERED_QUERY_PARAMS`,
    adds :data:`AZURE_SAS_QUERY_PARAMS` for Azure URLs (:func:`is_azure_sas_url`), then
    ``cfg.filter``.  The Azure keys are added only for Azure URLs because short names such
    as ``sp``, ``st`` or ``sr`` may identify content on other servers, and merging two
    different objects into one task would serve wrong bytes.
``X-Dragonfly-Tag``
    ``cfg.tag`` plus the object's version evidence when ``cfg.version_in_task_id``:
    ``"{tag}@{version}"``, or just ``"{version}"`` without a tag.  dfdaemon never
    revalidates a cached task, so a rewritten object under the same URL must get a new
    task ID (see :func:`version_tag`).
``X-Dragonfly-Application``, ``X-Dragonfly-Priority``, ``X-Dragonfly-Piece-Length``
    when configured.
``cfg.headers``
    merged last (case-insensitively replacing ours).  The config already refuses the
    headers the engine owns (``Accept-Encoding: identity``, ``Range``, ``If-Match``...).

These headers are for requests *through the proxy*; a direct (fallback) download should
send none of them (dfdaemon forwards request headers to the origin, but a direct request
needs no Dragonfly headers and the user's headers may be meant for the proxy).
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from ..errors import ConfigError
from ..values import normalize_etag
from .config import DragonflyConfig
from .urlcanon import DEFAULT_FILTERED_QUERY_PARAMS

__all__ = [
    "AZURE_SAS_QUERY_PARAMS",
    "filtered_query_params",
    "is_azure_sas_url",
    "request_headers",
    "version_tag",
]

#: Azure Storage SAS query parameters (account, service and user-delegation SAS), from the
#: REST docs "Create an account SAS", "Create a service SAS", "Create a user delegation
#: SAS" and the SDKs' ``QueryStringConstants``.  All are authorization data, never the
#: object's identity.  Deliberately *not* listed: ``rscc/rscd/rsce/rscl/rsct`` (they change
#: the response headers, like S3's ``response-*`` which dfdaemon keeps too) and the
#: object selectors ``snapshot``, ``versionid``, ``sharesnapshot``.  ``skdutid``/``sduoid``
#: (delegated-user SAS, service version 2025-07-05) are included from the SDK property
#: names and were not checked against a live service.
AZURE_SAS_QUERY_PARAMS: tuple[str, ...] = (
    "sv",  # signedVersion
    "ss",  # signedServices (account SAS)
    "srt",  # signedResourceTypes (account SAS)
    "sp",  # signedPermissions
    "st",  # signedStart
    "se",  # signedExpiry
    "sip",  # signedIp
    "spr",  # signedProtocol
    "sr",  # signedResource
    "si",  # signedIdentifier (stored access policy)
    "sdd",  # signedDirectoryDepth
    "ses",  # signedEncryptionScope
    "sig",  # signature
    "skoid",  # user delegation key: object id
    "sktid",  # ... tenant id
    "skt",  # ... start
    "ske",  # ... expiry
    "sks",  # ... service
    "skv",  # ... version
    "saoid",  # signedAuthorizedObjectId
    "suoid",  # signedUnauthorizedObjectId
    "scid",  # signedCorrelationId
    "skdutid",  # signedKeyDelegatedUserTenantId (2025-07-05)
    "sduoid",  # signedDelegatedUserObjectId (2025-07-05)
)

_AZURE_HOST_SUFFIXES = (
    ".core.windows.net",  # blob/dfs/file, public cloud
    ".core.chinacloudapi.cn",
    ".core.usgovcloudapi.net",
    ".core.cloudapi.de",
)


def is_azure_sas_url(url: str) -> bool:
    """True for an Azure Storage host, or any URL carrying both ``sv=`` and ``sig=``.

    The query test catches Azurite (``127.0.0.1:10000/devstoreaccount1/...``), custom
    domains and private endpoints.
    """
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:
        return False
    if host.endswith(_AZURE_HOST_SUFFIXES):
        return True
    keys = {unquote(seg.partition("=")[0].replace("+", " ")) for seg in parts.query.split("&")}
    return "sig" in keys and "sv" in keys


def filtered_query_params(cfg: DragonflyConfig, url: str) -> tuple[str, ...]:
    """The full filter list dfrepo sends for *url*: defaults (+ Azure SAS) + ``cfg.filter``."""
    names = list(DEFAULT_FILTERED_QUERY_PARAMS)
    if is_azure_sas_url(url):
        names += AZURE_SAS_QUERY_PARAMS
    names += cfg.filter or ()
    return tuple(dict.fromkeys(names))  # de-duplicated, order kept


def version_tag(tag: str | None, version: str | None) -> str | None:
    """The ``X-Dragonfly-Tag`` value for a user tag and an object version.

    ETag quotes and a weak ``W/`` prefix are removed, so a version read from a listing and
    from a response header agree.  ``"{tag}@{version}"``, or ``version``, or ``tag``.
    """
    version = normalize_etag(version)
    if version is not None:
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in version):
            raise ConfigError("object version contains control characters", source="store", key="version")
    if tag and version:
        return f"{tag}@{version}"
    return tag or version or None


def request_headers(cfg: DragonflyConfig, url: str, *, version: str | None = None) -> dict[str, str]:
    """Headers for ``GET url`` through the proxy of *cfg* (see the module docstring).

    :param url: the URL as it will be requested; used to pick the filter list, never
        copied into a header.
    :param version: the object's version evidence (S3 ETag or versionId, GCS generation,
        Azure ETag); folded into ``X-Dragonfly-Tag`` when ``cfg.version_in_task_id``.
    """
    out: dict[str, str] = {}
    if cfg.use_p2p:
        out["X-Dragonfly-Use-P2P"] = "true"
    names = filtered_query_params(cfg, url)
    if "rust" in cfg.filter_dialects:
        out["X-Dragonfly-Filtered-Query-Params"] = ",".join(names)
    if "go" in cfg.filter_dialects:
        out["X-Dragonfly-Filter"] = "&".join(names)
    tag = version_tag(cfg.tag, version if cfg.version_in_task_id else None)
    if tag:
        out["X-Dragonfly-Tag"] = tag
    if cfg.application:
        out["X-Dragonfly-Application"] = cfg.application
    if cfg.priority is not None:
        out["X-Dragonfly-Priority"] = str(cfg.priority)
    if cfg.piece_length is not None:
        out["X-Dragonfly-Piece-Length"] = str(cfg.piece_length)
    for name, value in cfg.headers.items():
        for ours in [k for k in out if k.lower() == name.lower()]:
            del out[ours]
        out[name] = value
    return out
