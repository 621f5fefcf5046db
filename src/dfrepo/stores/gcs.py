"""GCS listing and V4 signed URLs with google-auth / google-cloud-storage.

The google-auth credentials come from :class:`~dfrepo.credentials.GCSCredentials`
(:func:`google_credentials`): the JSON file, else ADC, else anonymous.

How each object's URL is made (``RemoteObject.url`` / ``.headers``), in order:

``key``
    The credential can sign locally (service-account key file, impersonated
    credentials): a V4 signed URL for the listed *generation*, valid ``expiry`` s.
``iam``
    The credential has a service-account e-mail but no key (Compute Engine / GKE
    metadata credentials): a V4 signed URL whose signature comes from the IAM
    Credentials ``signBlob`` API (needs ``iam.serviceAccounts.signBlob`` on itself).
``bearer``
    Nothing can sign (ADC from ``gcloud auth application-default login``), or
    ``signBlob`` was refused: the JSON-API media URL
    (``/download/storage/v1/b/B/o/O?alt=media&generation=G``) plus an
    ``Authorization: Bearer`` header.  The token lives about an hour and must be
    forwarded by the proxy; prefer a service account.  When a download is refused
    (401: the token expired), the credential mints a new token (``credentials.refresh``)
    and the file continues with the same URL and the new header.
``anonymous``
    Anonymous credentials (an emulator without a key file, public buckets): the same
    media URL with no header.

Against an emulator (``CLOUD_STORAGE_EMULATOR_ENDPOINT``) listing is always anonymous
(the emulators ignore auth and a key would try to reach oauth2.googleapis.com), and a
key file, when given, still signs URLs for the emulator's host.

Signed URLs (``key``/``iam``) carry ``resign``, which signs the same generation again
when a URL expires part-way through a long pull; bearer-token objects carry one that
returns the same media URL with a freshly minted token in the header (one refresh of the
credential per expiry, shared by every file of the listing); anonymous URLs have none
(nothing expires).  Neither a new signature nor a new token changes the Dragonfly task
identity: the ``X-Goog-*`` signature parameters are filtered out of it and headers are
not part of it.  A zero-byte ``dir/`` object becomes a directory
entry (``RemoteObject.is_dir``) so an empty directory is recreated.

``version`` is the generation; ``md5`` (hex) and ``crc32c`` (base64) come from the
object metadata.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import threading
from typing import Any

from ..credentials import GCSCredentials
from ..errors import ConfigError, CredentialsError, ObjectNotFoundError, StoreError
from ..locations import GCSLocation
from ..objects import RemoteObject, Resign, Signed
from ..safepaths import safe_relpath
from ._common import b64_to_hex, dir_entry, finish, is_dir_marker, resign_expiry

log = logging.getLogger(__name__)

SIGNING_MODES = ("auto", "key", "iam", "bearer", "anonymous")


def google_credentials(creds: GCSCredentials, *, anonymous_if_missing: bool = False) -> Any:
    """Return a ``google.auth`` credentials object.

    Order (Triton's): the JSON file; else ADC (which includes metadata credentials);
    else anonymous.  ``anonymous_if_missing=True`` (emulators) skips ADC so nothing
    probes the metadata server.
    """
    try:
        import google.auth
        import google.auth.exceptions
        from google.auth.credentials import AnonymousCredentials
    except ImportError as exc:  # pragma: no cover
        raise CredentialsError("gs:// needs google-auth (pip install 'dfrepo[gcs]')",
                               provider="gs", source=creds.source) from exc
    scopes = ["https://www.googleapis.com/auth/devstorage.read_only"]
    if creds.service_account_path:
        path = creds.service_account_path
        try:
            with open(path, encoding="utf-8") as fh:
                info = json.load(fh)
        except OSError as exc:
            raise CredentialsError(
                f"cannot read GCS credential file {path!r} ({creds.source}): {exc.strerror}",
                provider="gs", source=creds.source) from None
        except ValueError:
            raise CredentialsError(f"GCS credential file {path!r} is not valid JSON",
                                   provider="gs", source=creds.source) from None
        if not isinstance(info, dict) or "type" not in info:
            raise CredentialsError(f"GCS credential file {path!r} has no 'type' key",
                                   provider="gs", source=creds.source)
        try:
            if info["type"] == "service_account":
                from google.oauth2 import service_account

                return service_account.Credentials.from_service_account_info(info, scopes=scopes)
            if info["type"] == "authorized_user":
                from google.oauth2 import credentials as user_credentials

                return user_credentials.Credentials.from_authorized_user_info(info, scopes=scopes)
            found, _ = google.auth.load_credentials_from_dict(info, scopes=scopes)
            return found
        except (ValueError, KeyError, google.auth.exceptions.GoogleAuthError) as exc:
            # Their messages can quote fields of the file; name only the type.
            raise CredentialsError(
                f"GCS credential file {path!r} (type {info.get('type')!r}) is malformed: "
                f"{type(exc).__name__}", provider="gs", source=creds.source) from None
    if anonymous_if_missing:
        return AnonymousCredentials()
    try:
        found, _ = google.auth.default(scopes=scopes)
        return found
    except google.auth.exceptions.DefaultCredentialsError:
        return AnonymousCredentials()


def _signing_mode(gcreds: Any) -> str:
    from google.auth.credentials import AnonymousCredentials, Signing

    if isinstance(gcreds, AnonymousCredentials):
        return "anonymous"
    if isinstance(gcreds, Signing):
        return "key"
    email = getattr(gcreds, "service_account_email", None)
    if email:
        return "iam"
    return "bearer"


def _translate(exc: BaseException, location: GCSLocation, creds: GCSCredentials) -> Exception:
    import google.api_core.exceptions as gexc
    import google.auth.exceptions as aexc

    where = location.display
    if isinstance(exc, gexc.NotFound):
        return ObjectNotFoundError(f"GCS bucket {location.bucket!r} does not exist ({where})",
                                   provider="gs", status=404)
    if isinstance(exc, (gexc.Unauthorized, gexc.Forbidden)):
        return CredentialsError(f"GCS rejected the credentials for {where} ({creds.source}): "
                                f"HTTP {exc.code}", provider="gs", source=creds.source)
    if isinstance(exc, aexc.RefreshError):
        return CredentialsError(f"cannot obtain a GCS access token for {where} "
                                f"({creds.source}): {type(exc).__name__}", provider="gs",
                                source=creds.source)
    if isinstance(exc, gexc.GoogleAPICallError):
        return StoreError(f"GCS error listing {where}: HTTP {exc.code}", provider="gs",
                          status=exc.code)
    return StoreError(f"GCS listing of {where} failed: {type(exc).__name__}", provider="gs")


class _Tokens:
    """The access tokens of one listing's credential, for ``iam`` signing and ``bearer``
    headers. Every ``credentials.refresh`` of it takes turns on one lock (the download
    threads share the credential): the first thread to find the token expired, or refused,
    refreshes it; the threads that waited take that new token instead of refreshing again
    (one refresh per expiry, not one per file)."""

    def __init__(self, gcreds: Any, creds: GCSCredentials) -> None:
        self._gcreds, self._creds = gcreds, creds
        self._lock = threading.Lock()

    def current(self) -> str:
        """A valid access token ("" for anonymous credentials): the held one while
        google-auth calls it valid, else a newly minted one. Refresh errors propagate."""
        import google.auth.transport.requests

        with self._lock:
            if not self._gcreds.valid:  # under the lock: a thread that waited sees the token just minted
                self._gcreds.refresh(google.auth.transport.requests.Request())
            return str(self._gcreds.token or "")

    def _after(self, stale: str) -> str:
        """A token other than *stale*: the one held when another file renewed it already,
        else a newly minted one."""
        import google.auth.transport.requests

        with self._lock:
            held = str(self._gcreds.token or "")
            if held and held != stale:
                return held
            try:
                self._gcreds.refresh(google.auth.transport.requests.Request())
            except Exception as exc:  # noqa: BLE001 - RefreshError, transport errors: no detail leaks
                raise CredentialsError(
                    f"cannot obtain a fresh GCS access token ({self._creds.source}): "
                    f"{type(exc).__name__}", provider="gs", source=self._creds.source) from None
            return str(self._gcreds.token or "")

    def resigner(self, url: str, token: str) -> Resign:
        """Authorizes *url* (a media URL listed with *token*) with a token newer than the
        one it last handed out, on each call."""
        handed = [token]

        def sign() -> Signed:
            handed[0] = self._after(handed[0])
            return Signed(url, {"Authorization": f"Bearer {handed[0]}"})
        return sign


def _signer(blob: Any, gcreds: Any, tokens: _Tokens, mode: str, endpoint: str, expiry: int,
            creds: GCSCredentials) -> Resign:
    """Signs a V4 GET URL for *blob*'s generation, valid *expiry* s, on each call
    (``key``: locally; ``iam``: through signBlob with a fresh access token)."""
    def sign() -> Signed:
        expiration = _dt.timedelta(seconds=expiry)
        try:
            if mode == "iam":
                return Signed(str(blob.generate_signed_url(
                    version="v4", expiration=expiration, method="GET",
                    generation=blob.generation, api_access_endpoint=endpoint,
                    service_account_email=gcreds.service_account_email,
                    access_token=tokens.current())))
            return Signed(str(blob.generate_signed_url(
                version="v4", expiration=expiration, method="GET", generation=blob.generation,
                api_access_endpoint=endpoint, credentials=gcreds)))
        except Exception as exc:  # noqa: BLE001 - signing errors vary by mode; no detail leaks
            raise CredentialsError(
                f"the GCS credential ({creds.source}) cannot sign a URL for {blob.name!r}: "
                f"{type(exc).__name__}", provider="gs", source=creds.source) from exc
    return sign


def list_gcs(
    location: GCSLocation,
    creds: GCSCredentials,
    *,
    expiry: int,
    timeout: float,
    signing: str = "auto",
) -> list[RemoteObject]:
    """List ``location`` recursively; sign (or authorize) a GET for every object.

    :param signing: ``auto`` (see the module docstring) or force one of
        ``key``/``iam``/``bearer``/``anonymous``.
    """
    import google.api_core.exceptions as gexc
    import google.auth.exceptions as aexc
    import requests
    from google.api_core.retry import Retry
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    if signing not in SIGNING_MODES:
        raise ConfigError(f"signing must be one of {SIGNING_MODES}", source="arg", key="signing")
    gcreds = google_credentials(creds, anonymous_if_missing=location.is_emulator)
    mode = _signing_mode(gcreds) if signing == "auto" else signing
    list_creds = AnonymousCredentials() if location.is_emulator else gcreds
    project = getattr(gcreds, "project_id", None) or "dfrepo-none"
    client = storage.Client(project=project, credentials=list_creds,
                            client_options={"api_endpoint": location.endpoint})
    retry = Retry(timeout=timeout, initial=0.2, maximum=2.0)
    list_prefix = location.prefix + "/" if location.prefix else ""
    expiration = _dt.timedelta(seconds=expiry)
    objects: list[RemoteObject] = []
    tokens = _Tokens(gcreds, creds)
    try:
        blobs = client.list_blobs(location.bucket, prefix=list_prefix, timeout=timeout,
                                  retry=retry)
        headers: dict[str, str] = {}
        for blob in blobs:
            name, size = blob.name, int(blob.size or 0)
            if is_dir_marker(name, size):
                entry = dir_entry(name, location.prefix, location.source_for(name))
                if entry is not None:
                    objects.append(entry)
                continue
            rel = safe_relpath(name, location.prefix)
            url = None
            if mode == "iam":
                try:
                    token = tokens.current()
                    url = blob.generate_signed_url(
                        version="v4", expiration=expiration, method="GET",
                        generation=blob.generation, api_access_endpoint=location.endpoint,
                        service_account_email=gcreds.service_account_email, access_token=token)
                except Exception as exc:  # noqa: BLE001 - any signBlob failure: fall back
                    log.warning("GCS signBlob failed (%s); using bearer-token media URLs",
                                type(exc).__name__)
                    mode = "bearer"
            elif mode == "key":
                try:
                    url = blob.generate_signed_url(
                        version="v4", expiration=expiration, method="GET",
                        generation=blob.generation, api_access_endpoint=location.endpoint,
                        credentials=gcreds)
                except (AttributeError, TypeError, ValueError) as exc:
                    raise CredentialsError(
                        f"the GCS credential ({creds.source}) cannot sign URLs: "
                        f"{type(exc).__name__}; use a service-account key", provider="gs",
                        source=creds.source) from exc
            if url is None:
                url = location.url_for(name, blob.generation)
                if mode == "bearer" and not headers:
                    token = tokens.current()
                    if token:  # anonymous credentials have none
                        headers = {"Authorization": f"Bearer {token}"}
            resign: Resign | None = None
            if mode in ("key", "iam"):
                resign = _signer(blob, gcreds, tokens, mode, location.endpoint, resign_expiry(expiry), creds)
            elif mode == "bearer" and headers:
                resign = tokens.resigner(url, headers["Authorization"].removeprefix("Bearer "))
            objects.append(RemoteObject(
                rel_path=rel, size=size, url=url,
                version=str(blob.generation) if blob.generation is not None else None,
                md5=b64_to_hex(blob.md5_hash), crc32c=blob.crc32c or None,
                headers=dict(headers) if mode == "bearer" else {},
                source=location.source_for(name), resign=resign))
    except (gexc.GoogleAPICallError, gexc.RetryError, aexc.GoogleAuthError,
            requests.RequestException) as exc:
        if isinstance(exc, gexc.RetryError):
            raise StoreError(f"cannot reach GCS at {location.endpoint} for {location.display} "
                             f"within {timeout:g}s", provider="gs") from exc
        raise _translate(exc, location, creds) from exc
    log.debug("listed %d objects under %s (urls: %s)", len(objects), location.display, mode)
    return finish(objects, location.display)
