"""Azure Blob listing and SAS URLs with azure-storage-blob / azure-identity.

* Shared key (``account_key``): list with the key; each blob gets a read-only
  service SAS (``generate_blob_sas``, ``sp=r``) valid ``expiry`` seconds (start
  back-dated 5 minutes for clock skew).
* Identity (``managed_identity`` / ``default``): list with the azure-identity token
  credential (:func:`token_credential`) and sign with a **user delegation key**
  (``get_user_delegation_key``; needs the *Storage Blob Delegator* role or equivalent).
* ``anonymous`` (dfrepo extension): list anonymously; the bare blob URLs work only
  because listing did, i.e. the container is public.  A private container is
  refused at listing, so an unsigned URL is never handed out for it.

Directories: a zero-byte ``dir/`` blob and a hierarchical-namespace (ADLS Gen2) folder
blob (metadata ``hdi_isfolder=true``, no trailing slash) become directory entries
(``RemoteObject.is_dir``), so empty directories are recreated.  Signed URLs carry
``resign`` (a new SAS for the same blob, used when one expires mid-pull).  Every mode's
credential travels in the URL (the SAS); no download carries an ``Authorization`` header
(the identity's token only lists and fetches the user delegation key), so a re-signed
:class:`~dfrepo.objects.Signed` has no headers.

The account is ``account_str`` from the credential when set (as in Triton), else the
location's.  ``version`` is the ETag (quotes stripped); ``md5`` is the hex of
``Content-MD5`` when the blob has one.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import logging
import threading
from typing import Any

from ..credentials import AzureCredentials
from ..errors import CredentialsError, ObjectNotFoundError, StoreError
from ..locations import AZURE_DEFAULT_SUFFIX, AzureLocation
from ..objects import RemoteObject, Resign, Signed
from ..safepaths import safe_relpath
from ..values import normalize_etag
from ._common import b64_to_hex, dir_entry, finish, is_dir_marker, resign_expiry

log = logging.getLogger(__name__)

_CLOCK_SKEW = _dt.timedelta(minutes=5)
_KEY_SLACK = _dt.timedelta(hours=1)
_MAX_KEY_LIFE = _dt.timedelta(days=7)  # the service's limit for a user delegation key


def token_credential(creds: AzureCredentials) -> Any:
    """The azure-identity credential for ``managed_identity`` / ``default``."""
    try:
        from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
    except ImportError as exc:  # pragma: no cover
        raise CredentialsError("as:// with identity auth needs azure-identity "
                               "(pip install 'dfrepo[azure]')", provider="as",
                               source=creds.source) from exc
    if creds.auth_type == "managed_identity":
        return ManagedIdentityCredential(client_id=creds.client_id or None)
    if creds.client_id:
        return DefaultAzureCredential(managed_identity_client_id=creds.client_id)
    return DefaultAzureCredential()


def _account_and_endpoint(location: AzureLocation, creds: AzureCredentials) -> tuple[str, str]:
    account = creds.account_name or location.account
    endpoint = location.endpoint
    if account != location.account and endpoint == f"https://{location.account}{AZURE_DEFAULT_SUFFIX}":
        endpoint = f"https://{account}{AZURE_DEFAULT_SUFFIX}"
    return account, endpoint


def _is_folder(blob: Any) -> bool:
    """An HNS folder blob (``hdi_isfolder=true``) or a zero-byte ``dir/`` marker."""
    meta = {str(k).lower(): str(v).lower() for k, v in (blob.metadata or {}).items()}
    return meta.get("hdi_isfolder") == "true" or is_dir_marker(blob.name, int(blob.size or 0))


class _SasSigner:
    """Makes read-only SAS query strings for one container, now or later (re-signing).

    Shared key: signed locally.  Identity: with a user delegation key, fetched once and
    again when the one held expires before the SAS would.
    """

    def __init__(self, service: Any, account: str, container: str, creds: AzureCredentials):
        self._service, self._account, self._container, self._creds = service, account, container, creds
        self._lock = threading.Lock()
        self._key: Any = None
        self._key_expiry: _dt.datetime | None = None

    def sas(self, name: str, seconds: int) -> str:
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        now = _dt.datetime.now(_dt.timezone.utc)
        start, expires = now - _CLOCK_SKEW, now + _dt.timedelta(seconds=seconds)
        permission = BlobSasPermissions(read=True)
        if self._creds.auth_type == "key":
            return str(generate_blob_sas(self._account, self._container, name,
                                         account_key=self._creds.account_key,
                                         permission=permission, start=start, expiry=expires))
        with self._lock:
            if self._key is None or self._key_expiry is None or self._key_expiry < expires:
                # Held a while longer than this SAS needs, so one listing asks once.
                key_expiry = min(expires + _KEY_SLACK, now + _MAX_KEY_LIFE)
                self._key = self._service.get_user_delegation_key(start, key_expiry)
                self._key_expiry = key_expiry
            key = self._key
        return str(generate_blob_sas(self._account, self._container, name,
                                     user_delegation_key=key, permission=permission,
                                     start=start, expiry=expires))

    def resigner(self, base_url: str, name: str, seconds: int,
                 location: AzureLocation) -> Resign:
        import azure.core.exceptions as aexc

        def sign() -> Signed:
            try:
                return Signed(base_url + "?" + self.sas(name, seconds))
            except aexc.AzureError as exc:
                raise _translate(exc, location, self._creds) from exc
        return sign


def _translate(exc: BaseException, location: AzureLocation, creds: AzureCredentials) -> Exception:
    import azure.core.exceptions as aexc

    where = location.display
    if isinstance(exc, aexc.ResourceNotFoundError):
        return ObjectNotFoundError(
            f"Azure container {location.container!r} does not exist ({where})",
            provider="as", status=404)
    status = getattr(exc, "status_code", None)
    if isinstance(exc, aexc.ClientAuthenticationError) or status in (401, 403):
        code = getattr(exc, "error_code", None) or status or type(exc).__name__
        code = getattr(code, "value", code)  # StorageErrorCode enum -> its wire name
        if creds.auth_type == "anonymous":
            return CredentialsError(
                f"anonymous access to {where} was refused: the container is private; "
                f"configure an account key or identity ({code})", provider="as",
                source=creds.source)
        return CredentialsError(
            f"Azure rejected the credentials for {where} ({creds.source}, auth_type="
            f"{creds.auth_type}): {code}", provider="as", source=creds.source)
    if isinstance(exc, aexc.ServiceRequestError):
        return StoreError(f"cannot reach the Azure endpoint for {where}: {type(exc).__name__}",
                          provider="as")
    if isinstance(exc, aexc.HttpResponseError):
        code = getattr(exc, "error_code", None) or status
        return StoreError(f"Azure error listing {where}: {getattr(code, 'value', code)}",
                          provider="as", status=status)
    return StoreError(f"Azure listing of {where} failed: {type(exc).__name__}", provider="as")


def list_azure(
    location: AzureLocation,
    creds: AzureCredentials,
    *,
    expiry: int,
    timeout: float,
) -> list[RemoteObject]:
    """List ``location`` recursively and make a read-only SAS URL for every blob."""
    import azure.core.exceptions as aexc
    from azure.storage.blob import BlobServiceClient, LinearRetry

    account, endpoint = _account_and_endpoint(location, creds)
    credential: Any
    if creds.auth_type == "key":
        if not creds.account_key:
            raise CredentialsError(f"auth_type 'key' without account_key ({creds.source})",
                                   provider="as", source=creds.source)
        try:
            base64.b64decode(creds.account_key, validate=True)
        except (binascii.Error, ValueError):
            raise CredentialsError(f"the Azure account_key ({creds.source}) is not valid base64",
                                   provider="as", source=creds.source) from None
        credential = {"account_name": account, "account_key": creds.account_key}
    elif creds.auth_type == "anonymous":
        credential = None
    else:
        credential = token_credential(creds)

    # The SDK's default exponential backoff starts at 15 s; a model load should fail
    # faster (the transfer engine retries downloads on its own).
    retry = LinearRetry(backoff=1, random_jitter_range=1, retry_total=2)
    service = BlobServiceClient(endpoint, credential=credential, retry_policy=retry,
                                connection_timeout=min(timeout, 10.0), read_timeout=timeout)
    container = service.get_container_client(location.container)
    list_prefix = location.prefix + "/" if location.prefix else None
    signer = None if creds.auth_type == "anonymous" else _SasSigner(
        service, account, location.container, creds)
    objects: list[RemoteObject] = []
    try:
        for blob in container.list_blobs(name_starts_with=list_prefix, include=["metadata"],
                                          timeout=int(timeout)):
            name, size = blob.name, int(blob.size or 0)
            if _is_folder(blob):
                entry = dir_entry(name + ("" if name.endswith("/") else "/"), location.prefix,
                                  location.source_for(name))
                if entry is not None:
                    objects.append(entry)
                continue
            rel = safe_relpath(name, location.prefix)
            url = base = container.get_blob_client(name).url
            resign = None
            if signer is not None:
                url = base + "?" + signer.sas(name, expiry)
                resign = signer.resigner(base, name, resign_expiry(expiry), location)
            settings = blob.content_settings
            objects.append(RemoteObject(
                rel_path=rel, size=size, url=url, version=normalize_etag(blob.etag),
                md5=b64_to_hex(settings.content_md5 if settings else None),
                source=location.source_for(name), resign=resign))
    except aexc.AzureError as exc:
        raise _translate(exc, location, creds) from exc
    log.debug("listed %d blobs under %s", len(objects), location.display)
    return finish(objects, location.display)
