"""List a model directory in an object store as :class:`~dfrepo.objects.RemoteObject` s.

:func:`list_model` parses the location (if given as a string), resolves credentials
(if none are given) and dispatches to the back end:

* ``s3://`` -> :func:`dfrepo.stores.s3.list_s3` (boto3, SigV4 presigned GETs)
* ``gs://`` -> :func:`dfrepo.stores.gcs.list_gcs` (V4 signed URLs, IAM or bearer fallback)
* ``as://`` -> :func:`dfrepo.stores.azure.list_azure` (read-only SAS)
* local / ``file://`` -> :func:`dfrepo.stores.local.list_local` (``file://`` URLs)

Every entry's ``rel_path`` passed :func:`~dfrepo.safepaths.safe_relpath`; a directory
marker becomes a directory entry (``is_dir``) when no file lies under it, so empty
directories are recreated; the list is sorted by ``rel_path``.  Signed URLs and GCS
bearer-token objects carry a re-signer (``RemoteObject.resign``, returning a
:class:`~dfrepo.objects.Signed`: a new signature, or the same URL with a new token).  An empty directory or
missing bucket/container raises :class:`~dfrepo.errors.ObjectNotFoundError`; rejected
credentials raise :class:`~dfrepo.errors.CredentialsError`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..credentials import (
    AzureCredentials,
    Credentials,
    GCSCredentials,
    S3Credentials,
    resolve_credentials,
)
from ..errors import CredentialsError
from ..locations import (
    AnyLocation,
    AzureLocation,
    GCSLocation,
    LocalLocation,
    S3Location,
    parse_location,
)
from ..objects import RemoteObject
from ._common import DEFAULT_EXPIRY, MAX_EXPIRY, check_expiry

__all__ = ["list_model", "DEFAULT_EXPIRY", "MAX_EXPIRY"]


def list_model(
    location: AnyLocation | str,
    creds: Credentials | None = None,
    *,
    expiry: int = DEFAULT_EXPIRY,
    timeout: float = 30.0,
    credential_path: str | os.PathLike[str] | None = None,
    azure_endpoint: str | None = None,
    gcs_endpoint: str | None = None,
    env: Mapping[str, str] | None = None,
    **backend_options: Any,
) -> list[RemoteObject]:
    """List the model directory at *location* with a GET URL per file.

    :param creds: credentials for the location's provider; default
        :func:`~dfrepo.credentials.resolve_credentials` (file, env, SDK chain).
    :param expiry: lifetime of presigned URLs in seconds (1..604800, default 900).
    :param timeout: network timeout for listing, seconds.
    :param credential_path: a ``cloud_credential.json`` (else ``TRITON_CLOUD_CREDENTIAL_PATH``).
    :param azure_endpoint: / :param gcs_endpoint: endpoint overrides when *location* is a
        string (see :func:`~dfrepo.locations.parse_location`).
    :param env: environment for parsing and credential lookup (default ``os.environ``).
    :param backend_options: passed to the back end (``trust_etag_md5`` for S3,
        ``signing`` for GCS).
    """
    check_expiry(expiry)
    if isinstance(location, str):
        location = parse_location(location, azure_endpoint=azure_endpoint,
                                  gcs_endpoint=gcs_endpoint, env=env)
    if isinstance(location, LocalLocation):
        from .local import list_local

        return list_local(location)
    if creds is None:
        creds = resolve_credentials(location, credential_path=credential_path, env=env)
    if isinstance(location, S3Location) and isinstance(creds, S3Credentials):
        from .s3 import list_s3

        return list_s3(location, creds, expiry=expiry, timeout=timeout, **backend_options)
    if isinstance(location, GCSLocation) and isinstance(creds, GCSCredentials):
        from .gcs import list_gcs

        return list_gcs(location, creds, expiry=expiry, timeout=timeout, **backend_options)
    if isinstance(location, AzureLocation) and isinstance(creds, AzureCredentials):
        from .azure import list_azure

        return list_azure(location, creds, expiry=expiry, timeout=timeout, **backend_options)
    expected = {S3Location: S3Credentials, GCSLocation: GCSCredentials,
                AzureLocation: AzureCredentials}[type(location)]
    raise CredentialsError(
        f"{location.display} needs {expected.__name__}, got {type(creds).__name__}",
        provider=location.scheme)
