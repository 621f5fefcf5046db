"""Parse Triton model-repository locations (:func:`parse_location`).

The grammars follow Triton core (``triton-inference-server/core:src/filesystem``):

``s3://``
    Triton's regex
    ``s3://(http://|https://|)([0-9a-zA-Z\\-.]+):([0-9]+)/([0-9a-z.\\-]+)(((/[0-9a-zA-Z.\\-_]+)*)?)``
    applied after ``CleanPath`` (duplicate slashes collapsed, leading/trailing ones
    trimmed).  A match gives an endpoint override ``host:port``, plain HTTP unless
    ``https://`` is written, and path-style addressing.  Otherwise the fallback
    ``s3://bucket/key...`` applies: the bucket runs up to the first ``/`` and the
    client talks to AWS (or whatever the SDK's own configuration says).

    **Triton quirk, reproduced on purpose.**  A key segment with a character outside
    ``[0-9a-zA-Z._-]`` (space, ``+``, ``=``, ``@`` ...) or an upper-case bucket makes the
    host:port form miss the regex; the fallback then takes ``host:port`` as the
    *bucket*.  :func:`parse_location` returns exactly that (``bucket="127.0.0.1:9000"``,
    no endpoint) and records why in :attr:`S3Location.quirk`; the S3 store refuses
    such a bucket with a :class:`~dfrepo.errors.LocationError` that quotes the quirk.
    With an explicit ``http://``/``https://`` Triton's fallback would even produce the
    bucket ``"http:"``; that case is refused here with the same explanation.

``gs://bucket/path``
    Split at the first ``/``.  ``CLOUD_STORAGE_EMULATOR_ENDPOINT`` selects an emulator,
    as in Triton (google-cloud-cpp honours it).

``as://account[.blob.core.windows.net]/container/path``
    Triton's regex ``as://([^/]+)/([^/?]+)(?:/([^?]*))?(\\?.*)?``; the account is the
    host with ``.blob.core.windows.net`` stripped.  Unlike Triton, the service endpoint
    can be overridden (``azure_endpoint=`` or ``DFREPO_AZURE_ENDPOINT``; Azurite's
    ``http://127.0.0.1:10000/devstoreaccount1``), and a host such as
    ``acct.blob.core.chinacloudapi.cn`` selects that sovereign cloud's endpoint.

anything else
    A local path (``file://`` URLs are decoded to one), used in place.

Deliberate differences from Triton, all of them refusals of input Triton would
misparse: an unknown ``scheme://`` (Triton would treat ``https://x`` as a relative
local path), an upper-case ``S3://`` / ``GS://`` / ``AS://``, ``..`` or ``.`` path
segments, NUL or control characters, a query string on ``as://`` (a SAS belongs in the
credential file), and ``://`` inside an S3 key (Triton's ``CleanPath`` would search
for ``http://`` anywhere in the string and silently drop the bucket).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from ..errors import LocationError
from ..redact import redact_inline
from ..safepaths import CONTROL_CHARS
from .location import (
    AZURE_DEFAULT_SUFFIX,
    GCS_DEFAULT_ENDPOINT,
    AnyLocation,
    AzureLocation,
    GCSLocation,
    LocalLocation,
    S3Location,
)

__all__ = ["parse_location"]

_S3_RE = re.compile(
    r"s3://(http://|https://|)([0-9a-zA-Z\-.]+):([0-9]+)/([0-9a-z.\-]+)(((/[0-9a-zA-Z.\-_]+)*)?)"
)
_AS_RE = re.compile(r"as://([^/]+)/([^/?]+)(?:/([^?]*))?(\?.*)?", re.DOTALL)
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_AZURE_ACCOUNT_RE = re.compile(r"^[a-z0-9]{3,24}$")
_AZURE_HOST_RE = re.compile(r"^([a-z0-9]{3,24})\.blob\.([a-z0-9.\-]+)$")


def _bad(message: str, location: str, key: str) -> LocationError:
    # The location string is a path, not a secret, but drop anything after "?".
    shown = redact_inline(location)
    if len(shown) > 200:
        shown = shown[:200] + "..."
    return LocationError(f"{message} (location {shown!r})", source="location", key=key)


def _check_segments(path: str, location: str, what: str) -> None:
    for seg in path.split("/"):
        if seg in (".", ".."):
            raise _bad(f"{what} has a {seg!r} segment", location, what)


def _clean_s3(rest: str, location: str) -> tuple[str, str]:
    """Triton's CleanPath on the part after ``s3://``: returns (protocol, cleaned)."""
    protocol = ""
    for proto in ("https://", "http://"):
        if rest.startswith(proto):
            protocol, rest = proto, rest[len(proto):]
            break
    if "://" in rest:
        raise _bad("'://' inside an S3 path (Triton would drop the bucket)", location, "path")
    cleaned = "/".join(p for p in rest.split("/") if p)
    if not cleaned:
        raise _bad("no bucket name in S3 location", location, "bucket")
    return protocol, cleaned


def _parse_s3(location: str) -> S3Location:
    protocol, cleaned = _clean_s3(location[len("s3://"):], location)
    m = _S3_RE.fullmatch("s3://" + protocol + cleaned)
    if m:
        proto, host, port, bucket, obj = m.group(1), m.group(2), m.group(3), m.group(4), m.group(5)
        if not 0 < int(port) < 65536:
            raise _bad(f"port {port} out of range", location, "port")
        prefix = obj.lstrip("/")
        _check_segments(prefix, location, "prefix")
        if bucket in (".", ".."):
            raise _bad(f"bucket {bucket!r} is not a name", location, "bucket")
        scheme = "https" if proto == "https://" else "http"
        return S3Location(
            raw=location,
            bucket=bucket,
            prefix=prefix,
            endpoint_url=f"{scheme}://{host}:{port}",
            use_https=scheme == "https",
        )
    # Triton's fallback: bucket up to the first "/".
    bucket, _, prefix = cleaned.partition("/")
    quirk = None
    first = re.fullmatch(r"([0-9a-zA-Z\-.]+):([0-9]+)", bucket)
    if first:
        if protocol:
            raise _bad(
                f"the host:port form needs a lower-case bucket and key segments of "
                f"[0-9a-zA-Z._-] only; Triton would fall back to the bucket "
                f"{protocol.rstrip('/')!r}",
                location,
                "prefix",
            )
        quirk = (
            f"Triton's S3 regex did not match (bucket must be [0-9a-z.-], key segments "
            f"[0-9a-zA-Z._-]), so its fallback reads {bucket!r} as the bucket name"
        )
    elif protocol:
        raise _bad("an S3 endpoint must be written host:port", location, "endpoint")
    if bucket in (".", ".."):
        raise _bad(f"bucket {bucket!r} is not a name", location, "bucket")
    _check_segments(prefix, location, "prefix")
    return S3Location(raw=location, bucket=bucket, prefix=prefix, quirk=quirk)


def _parse_gs(location: str, env: Mapping[str, str], gcs_endpoint: str | None) -> GCSLocation:
    rest = location[len("gs://"):]
    bucket, _, obj = rest.partition("/")
    if not bucket:
        raise _bad("no bucket name in GCS location", location, "bucket")
    if bucket in (".", ".."):
        raise _bad(f"bucket {bucket!r} is not a name", location, "bucket")
    prefix = "/".join(p for p in obj.split("/") if p)
    _check_segments(prefix, location, "prefix")
    endpoint = gcs_endpoint or env.get("CLOUD_STORAGE_EMULATOR_ENDPOINT") or GCS_DEFAULT_ENDPOINT
    endpoint = _check_endpoint(endpoint, location, "gcs_endpoint")
    return GCSLocation(raw=location, bucket=bucket, prefix=prefix, endpoint=endpoint)


def _check_endpoint(endpoint: str, location: str, key: str) -> str:
    try:
        parts = urlsplit(endpoint)
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
        or parts.username is not None
        or CONTROL_CHARS.search(endpoint)
    ):
        raise LocationError(
            f"endpoint must be http(s)://host[:port][/path] without credentials or query "
            f"(for {redact_inline(location)!r})",
            source=key,
            key=key,
        )
    return endpoint.rstrip("/")


def _parse_as(location: str, env: Mapping[str, str], azure_endpoint: str | None) -> AzureLocation:
    m = _AS_RE.fullmatch(location)
    if not m:
        raise _bad("expected as://account/container[/path]", location, "container")
    host, container, obj, query = m.group(1), m.group(2), m.group(3) or "", m.group(4)
    if query:
        raise _bad("query strings are not accepted in as:// locations", location, "query")
    host = host.lower()
    endpoint = None
    if host.endswith(AZURE_DEFAULT_SUFFIX):
        account = host[: -len(AZURE_DEFAULT_SUFFIX)]
    else:
        sovereign = _AZURE_HOST_RE.match(host)
        if sovereign:
            account = sovereign.group(1)
            endpoint = f"https://{host}"
        else:
            account = host
    if not _AZURE_ACCOUNT_RE.match(account):
        raise _bad(f"Azure account name {account!r} is not 3-24 lower-case letters/digits",
                   location, "account")
    if not re.fullmatch(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}|\$root", container):
        raise _bad(f"Azure container name {container!r} is invalid", location, "container")
    prefix = "/".join(p for p in obj.split("/") if p)
    _check_segments(prefix, location, "prefix")
    override = azure_endpoint or env.get("DFREPO_AZURE_ENDPOINT")
    if override:
        endpoint = _check_endpoint(override.replace("{account}", account), location, "azure_endpoint")
    return AzureLocation(raw=location, account=account, container=container, prefix=prefix,
                         endpoint=endpoint or "")


def _parse_local(location: str) -> LocalLocation:
    path = location
    if location.startswith("file://"):
        try:
            parts = urlsplit(location)
        except ValueError:  # "file://[", "file://[]": urllib's IPv6 host checks
            raise _bad("malformed file:// URL", location, "host") from None
        if parts.netloc not in ("", "localhost"):
            raise _bad("file:// URLs must name a local path (file:///abs/path)", location, "host")
        if parts.query or parts.fragment:
            raise _bad("file:// URLs take no query or fragment", location, "path")
        path = unquote(parts.path)
        if not path:
            raise _bad("file:// URL has no path", location, "path")
    if not path:
        raise _bad("empty location", location, "path")
    if "\x00" in path:
        raise _bad("NUL in local path", location, "path")
    return LocalLocation(raw=location, path=path)


def parse_location(
    location: str,
    *,
    azure_endpoint: str | None = None,
    gcs_endpoint: str | None = None,
    env: Mapping[str, str] | None = None,
) -> AnyLocation:
    """Parse a Triton repository/model location.

    :param location: ``s3://...``, ``gs://...``, ``as://...``, ``file://...`` or a path.
    :param azure_endpoint: Azure account URL override; ``{account}`` is substituted.
        Defaults to ``DFREPO_AZURE_ENDPOINT``, then ``https://<account>.blob.core.windows.net``.
    :param gcs_endpoint: GCS endpoint override; defaults to
        ``CLOUD_STORAGE_EMULATOR_ENDPOINT``, then ``https://storage.googleapis.com``.
    :param env: environment to read (default ``os.environ``).
    :raises LocationError: the location is malformed; ``key`` names the bad part.
    """
    if not isinstance(location, str):
        raise LocationError(f"location must be a string, not {type(location).__name__}",
                            source="location", key="location")
    env = os.environ if env is None else env
    if location.startswith(("gs://", "s3://", "as://")) and CONTROL_CHARS.search(location):
        raise _bad("control character in location", location, "path")
    # Triton tests the prefixes in this order.
    if location.startswith("gs://"):
        return _parse_gs(location, env, gcs_endpoint)
    if location.startswith("s3://"):
        return _parse_s3(location)
    if location.startswith("as://"):
        return _parse_as(location, env, azure_endpoint)
    m = _SCHEME_RE.match(location)
    if m and m.group(1) != "file":
        scheme = m.group(1)
        hint = " (schemes are lower-case)" if scheme.lower() in ("s3", "gs", "as", "file") else ""
        raise _bad(f"unsupported scheme {scheme!r}{hint}", location, "scheme")
    return _parse_local(location)
