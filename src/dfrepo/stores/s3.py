"""S3 (and S3-compatible) listing and SigV4 presigning with boto3/botocore.

The boto3 session is built from :class:`~dfrepo.credentials.S3Credentials` in Triton's
order (:func:`boto3_session`): static keys, else the profile, else the default chain.
One paginated ``ListObjectsV2`` without a delimiter over ``prefix/`` lists the whole
model directory; each object gets a presigned ``GET`` (``generate_presigned_url``,
SigV4, ``X-Amz-SignedHeaders=host``) valid for ``expiry`` seconds.  The host:port
location form is addressed path-style, as Triton does.

A zero-byte ``dir/`` marker becomes a directory entry (``RemoteObject.is_dir``), so an
empty directory such as an ensemble's version directory is recreated (Triton's own S3
code does).  Every file carries ``resign``: a fresh presigned GET for the same key, used
when a URL expires part-way through a long pull (lifetime ``resign_expiry(expiry)``).  The
credential always travels in the URL (a session token too, as ``X-Amz-Security-Token``),
so the re-signed :class:`~dfrepo.objects.Signed` carries no headers.

``RemoteObject.version`` is the ETag without quotes; ``md5`` is the ETag when it is a
plain 32-hex single-part ETag.  Caveat: objects encrypted with SSE-KMS/SSE-C have such
ETags that are *not* the MD5 of the content; pass ``trust_etag_md5=False`` there.
"""

from __future__ import annotations

import logging
from typing import Any

from ..credentials import S3Credentials
from ..errors import CredentialsError, LocationError, ObjectNotFoundError, StoreError
from ..locations import S3Location
from ..objects import RemoteObject, Resign, Signed
from ..redact import redact_inline
from ..safepaths import safe_relpath
from ..values import normalize_etag
from ._common import dir_entry, finish, is_dir_marker, resign_expiry, s3_etag_md5

log = logging.getLogger(__name__)

_AUTH_CODES = {
    "SignatureDoesNotMatch": "the secret key does not match the access key id",
    "InvalidAccessKeyId": "the access key id is not known to the server",
    "AccessDenied": "access denied",
    "AllAccessDisabled": "access denied",
    "ExpiredToken": "the session token has expired",
    "InvalidToken": "the session token is invalid",
    "TokenRefreshRequired": "the session token has expired",
    "AuthorizationHeaderMalformed": "the request was signed for the wrong region",
    "InvalidSecurity": "the security credentials are invalid",
}


def boto3_session(creds: S3Credentials) -> Any:
    """A ``boto3.Session`` following Triton's order: static keys, profile, default."""
    try:
        import boto3
        import botocore.exceptions
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise CredentialsError("s3:// needs boto3 (pip install 'dfrepo[s3]')",
                               provider="s3", source=creds.source) from exc
    try:
        if creds.is_static:
            return boto3.Session(
                aws_access_key_id=creds.key_id,
                aws_secret_access_key=creds.secret_key,
                aws_session_token=creds.session_token or None,
                region_name=creds.region or None,
            )
        if creds.profile:
            return boto3.Session(profile_name=creds.profile, region_name=creds.region or None)
        return boto3.Session(region_name=creds.region or None)
    except botocore.exceptions.ProfileNotFound as exc:
        raise CredentialsError(f"AWS profile {creds.profile!r} not found ({creds.source})",
                               provider="s3", source=creds.source) from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise CredentialsError(f"cannot set up AWS credentials ({creds.source}): "
                               f"{type(exc).__name__}", provider="s3", source=creds.source) from exc


def _client(location: S3Location, creds: S3Credentials, timeout: float) -> Any:
    import botocore.config

    session = boto3_session(creds)
    region = creds.region or session.region_name or "us-east-1"
    config = botocore.config.Config(
        signature_version="s3v4",
        s3={"addressing_style": "path" if location.path_style else "auto"},
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=min(timeout, 10.0),
        read_timeout=timeout,
        # Only compute checksums when an operation requires them (S3-compatible servers).
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    try:
        found = session.get_credentials()
    except ValueError as exc:  # botocore's container-metadata URL validation
        raise CredentialsError(f"AWS credential chain failed ({creds.source}): {type(exc).__name__}",
                               provider="s3", source=creds.source) from exc
    if found is None:
        raise CredentialsError(
            f"no AWS credentials for {location.display} ({creds.source}): set key_id/"
            "secret_key in the credential file, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE, or run with an instance/container role",
            provider="s3", source=creds.source)
    return session.client("s3", endpoint_url=location.endpoint_url, region_name=region,
                          config=config)


def _bucket_region(client: Any, bucket: str) -> str | None:
    """AWS only: the bucket's region from HeadBucket's x-amz-bucket-region header."""
    import botocore.exceptions

    try:
        resp = client.head_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError as exc:
        resp = exc.response
    except botocore.exceptions.BotoCoreError:
        return None
    headers = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    region = headers.get("x-amz-bucket-region")
    return str(region) if region else None


def _translate(exc: BaseException, location: S3Location, creds: S3Credentials) -> Exception:
    import botocore.exceptions

    where = location.display
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchBucket", "NoSuchKey", "404", "NotFound"):
            return ObjectNotFoundError(f"S3 bucket {location.bucket!r} does not exist ({where})",
                                       provider="s3", status=404)
        if code in _AUTH_CODES or status in (401, 403):
            reason = _AUTH_CODES.get(code, f"{code or status}")
            return CredentialsError(
                f"S3 rejected the credentials for {where} ({creds.source}): {reason} [{code or status}]",
                provider="s3", source=creds.source)
        return StoreError(f"S3 error listing {where}: {code or status}", provider="s3",
                          status=status)
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return CredentialsError(f"no AWS credentials found for {where} ({creds.source})",
                                provider="s3", source=creds.source)
    if isinstance(exc, botocore.exceptions.ParamValidationError):
        return LocationError(f"invalid S3 bucket or key for {where}: {location.quirk or exc}",
                             source="location", key="bucket")
    if isinstance(exc, (botocore.exceptions.EndpointConnectionError,
                        botocore.exceptions.ConnectTimeoutError,
                        botocore.exceptions.ReadTimeoutError)):
        return StoreError(f"cannot reach the S3 endpoint for {where}: {type(exc).__name__}",
                          provider="s3")
    return StoreError(f"S3 listing of {where} failed: {type(exc).__name__}", provider="s3")


def _presigner(client: Any, bucket: str, key: str, expiry: int) -> Resign:
    """Signs a GET for ``bucket/key`` valid *expiry* seconds, locally, on each call."""
    import botocore.exceptions

    def sign() -> Signed:
        try:
            return Signed(str(client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expiry)))
        except botocore.exceptions.BotoCoreError as exc:  # e.g. a role's credentials ran out
            raise CredentialsError(f"cannot sign a fresh URL for s3 object {key!r}: "
                                   f"{type(exc).__name__}", provider="s3") from exc
    return sign


def list_s3(
    location: S3Location,
    creds: S3Credentials,
    *,
    expiry: int,
    timeout: float,
    trust_etag_md5: bool = True,
    page_size: int | None = None,
) -> list[RemoteObject]:
    """List ``location`` recursively and presign a GET for every object.

    :param page_size: ``MaxKeys`` per ListObjectsV2 page (server default 1000).
    """
    import botocore.exceptions

    if location.quirk and ":" in location.bucket:
        raise LocationError(f"{redact_inline(location.raw)!r}: {location.quirk}; "
                            "rename the key or use the plain s3://bucket/... form",
                            source="location", key="bucket")
    list_prefix = location.prefix + "/" if location.prefix else ""
    try:
        client = _client(location, creds, timeout)
        if location.endpoint_url is None and not creds.region and client.meta.region_name == "us-east-1":
            region = _bucket_region(client, location.bucket)
            if region and region != client.meta.region_name:
                log.debug("bucket %s is in %s", location.bucket, region)
                creds = S3Credentials(key_id=creds.key_id, secret_key=creds.secret_key,
                                      session_token=creds.session_token, region=region,
                                      profile=creds.profile, source=creds.source)
                client = _client(location, creds, timeout)
        paginator = client.get_paginator("list_objects_v2")
        objects: list[RemoteObject] = []
        pages = paginator.paginate(Bucket=location.bucket, Prefix=list_prefix,
                                   PaginationConfig={"PageSize": page_size} if page_size else {})
        for page in pages:
            for item in page.get("Contents", ()):
                key, size = item["Key"], int(item.get("Size", 0))
                if is_dir_marker(key, size):
                    entry = dir_entry(key, location.prefix, location.source_for(key))
                    if entry is not None:
                        objects.append(entry)
                    continue
                rel = safe_relpath(key, location.prefix)
                etag = normalize_etag(item.get("ETag"))
                url = _presigner(client, location.bucket, key, expiry)().url
                objects.append(RemoteObject(
                    rel_path=rel, size=size, url=url, version=etag,
                    md5=s3_etag_md5(etag) if trust_etag_md5 else None,
                    source=location.source_for(key),
                    resign=_presigner(client, location.bucket, key, resign_expiry(expiry))))
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise _translate(exc, location, creds) from exc
    log.debug("listed %d objects under %s", len(objects), location.display)
    return finish(objects, location.display)
