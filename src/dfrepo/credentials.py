"""Cloud credentials: Triton's ``cloud_credential.json``, the environment, SDK chains.

Resolution for one location (:func:`resolve_credentials`):

1. A credential file (``credential_path=`` or ``TRITON_CLOUD_CREDENTIAL_PATH``) in
   Triton's schema::

       {"s3": {"<name>": {"key_id": ..., "secret_key": ..., "region": ...,
                          "session_token": ..., "profile": ...}},
        "gs": {"<name>": "/path/to/service-account.json"},
        "as": {"<name>": {"account_str": ..., "account_key": ...,
                          "auth_type": "key|managed_identity|default", "client_id": ...}}}

   The entry whose *name* is the longest plain string prefix of the location wins
   (exactly Triton's and the C++ agent's rule); ``""`` is the catch-all.  A string
   prefix is not path-segment aware: ``s3://bucket/mod`` captures
   ``s3://bucket/models/x`` and ``s3://bucket`` captures ``s3://bucket-2/...``; end a
   name with ``/`` to stop that.  The location is matched as written (``raw``), as
   Triton sees it (a location built in code without ``raw``: its display form).
   As in Triton there is no environment fallback while a
   file is in use: no match is an error.

2. With no file, the variables Triton reads: ``AWS_ACCESS_KEY_ID``,
   ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION`` (or
   ``AWS_REGION``), ``AWS_PROFILE``; ``GOOGLE_APPLICATION_CREDENTIALS``;
   ``AZURE_STORAGE_ACCOUNT``, ``AZURE_STORAGE_KEY``, ``AZURE_STORAGE_AUTH_TYPE``,
   ``AZURE_STORAGE_CLIENT_ID``.

3. Whatever is left unset means "the SDK default chain": a boto3 session (profiles,
   container/instance roles ...), google-auth ADC, azure-identity
   ``DefaultAzureCredential`` (or ``ManagedIdentityCredential`` for
   ``auth_type=managed_identity``).

This module only decides *which* credentials apply and returns them as typed values;
each store builds its SDK objects from them (:mod:`dfrepo.stores.s3`,
:mod:`~dfrepo.stores.gcs`, :mod:`~dfrepo.stores.azure`), so no cloud SDK is imported here.
Credential objects never show secrets in ``repr`` and no message here quotes one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import CredentialsError
from .locations import AnyLocation, AzureLocation, GCSLocation, LocalLocation, Location, S3Location

__all__ = [
    "S3Credentials",
    "GCSCredentials",
    "AzureCredentials",
    "Credentials",
    "CredentialFile",
    "load_credential_file",
    "resolve_credentials",
    "match_credential_name",
    "AZURE_AUTH_TYPES",
]

#: ``auth_type`` values: Triton's three plus dfrepo's ``anonymous`` (public containers).
AZURE_AUTH_TYPES = ("key", "managed_identity", "default", "anonymous")


def _mask(value: str | None) -> str:
    return "None" if value is None else "'***'"


@dataclass(frozen=True)
class S3Credentials:
    """S3 credentials. Unset key id/secret mean "profile, else the boto3 default chain"."""

    key_id: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str | None = None
    profile: str | None = None
    #: where these came from: ``"<file>#s3/<name>"``, ``"env"`` or ``"default-chain"``.
    source: str = "default-chain"
    provider = "s3"

    @property
    def is_static(self) -> bool:
        return bool(self.key_id and self.secret_key)

    def __repr__(self) -> str:
        return (
            f"S3Credentials(key_id={self.key_id!r}, secret_key={_mask(self.secret_key)}, "
            f"session_token={_mask(self.session_token)}, region={self.region!r}, "
            f"profile={self.profile!r}, source={self.source!r})"
        )


@dataclass(frozen=True)
class GCSCredentials:
    """GCS credentials: a service-account (or authorized-user) JSON file, else ADC."""

    service_account_path: str | None = None
    source: str = "default-chain"
    provider = "gs"


@dataclass(frozen=True)
class AzureCredentials:
    """Azure credentials: shared key, managed identity, DefaultAzureCredential or anonymous."""

    account_name: str | None = None
    account_key: str | None = field(default=None, repr=False)
    auth_type: str = "default"
    client_id: str | None = None
    source: str = "default-chain"
    provider = "as"

    def __repr__(self) -> str:
        return (
            f"AzureCredentials(account_name={self.account_name!r}, "
            f"account_key={_mask(self.account_key)}, auth_type={self.auth_type!r}, "
            f"client_id={self.client_id!r}, source={self.source!r})"
        )


Credentials = S3Credentials | GCSCredentials | AzureCredentials


# --------------------------------------------------------------------------- the file


@dataclass(frozen=True)
class CredentialFile:
    """A parsed ``cloud_credential.json``: name -> credential, per provider."""

    path: str
    s3: Mapping[str, S3Credentials] = field(default_factory=dict)
    gs: Mapping[str, GCSCredentials] = field(default_factory=dict)
    as_: Mapping[str, AzureCredentials] = field(default_factory=dict)

    def entries(self, provider: str) -> Mapping[str, Credentials]:
        if provider == "s3":
            return self.s3
        if provider == "gs":
            return self.gs
        if provider == "as":
            return self.as_
        raise KeyError(provider)

    def match(self, location: AnyLocation) -> Credentials:
        """The credential for *location* (longest plain string prefix, as Triton).

        :raises CredentialsError: no entry matches (as Triton: no env fallback).
        """
        provider = location.scheme
        entries = self.entries(provider)
        name = match_credential_name(entries.keys(), location.raw or location.display)
        if name is None:
            raise CredentialsError(
                f"no {provider!r} credential in {self.path!r} matches {location.display!r} "
                f"(names: {sorted(entries)!r}; use \"\" for a catch-all)",
                provider=provider, source=self.path)
        return entries[name]


def match_credential_name(names: Any, paths: list[str] | str) -> str | None:
    """The longest of *names* that is a plain string prefix of one of *paths*, or None.

    Triton's rule (``!path.rfind(name, 0)``, longest name first): ``"s3://bucket/mod"``
    matches ``s3://bucket/models/x``; ``"s3://bucket"`` matches ``s3://bucket-2/x``;
    ``""`` matches everything.
    """
    if isinstance(paths, str):
        paths = [paths]
    best: str | None = None
    for name in names:
        if any(p.startswith(name) for p in paths):
            if best is None or len(name) > len(best):
                best = name
    return best


def _fail(path: str, key: str, problem: str) -> CredentialsError:
    provider = key.split("/", 1)[0] if key else None
    return CredentialsError(f"credential file {path!r}: {key or '<top>'}: {problem}",
                            provider=provider if provider in ("s3", "gs", "as") else None,
                            source=path)


def _opt_str(path: str, key: str, entry: Mapping[str, Any], member: str) -> str | None:
    value = entry.get(member)
    if value is None:
        return None
    if not isinstance(value, str):
        # Never echo the value: it may be a secret.
        raise _fail(path, f"{key}/{member}", f"must be a string, not {type(value).__name__}")
    return value or None


#: A credential file is a few hundred bytes; refuse absurd ones before parsing.
MAX_CREDENTIAL_FILE_BYTES = 1024 * 1024


def load_credential_file(path: str | os.PathLike[str]) -> CredentialFile:
    """Parse Triton's ``cloud_credential.json``.

    Unknown top-level keys and unknown members are ignored (Triton ignores them too).

    :raises CredentialsError: unreadable file, invalid JSON, wrong types, bad
        ``auth_type``; the message names the file and key, never a value.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CREDENTIAL_FILE_BYTES + 1)
    except OSError as exc:
        raise CredentialsError(f"cannot read credential file {path!r}: "
                               f"{exc.strerror or type(exc).__name__}", source=path) from None
    if len(raw) > MAX_CREDENTIAL_FILE_BYTES:
        raise CredentialsError(f"credential file {path!r} is larger than "
                               f"{MAX_CREDENTIAL_FILE_BYTES // 1024} KiB", source=path)
    try:
        data = json.loads(raw)
    except RecursionError:
        raise CredentialsError(f"credential file {path!r} is nested too deeply", source=path) from None
    except (ValueError, UnicodeDecodeError) as exc:
        # json's message quotes no document text, only a position.
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise CredentialsError(f"credential file {path!r} is not valid JSON{where}",
                               source=path) from None
    if not isinstance(data, dict):
        raise _fail(path, "", f"must be a JSON object, not {type(data).__name__}")

    for provider in ("s3", "gs", "as"):
        if provider in data and not isinstance(data[provider], dict):
            raise _fail(path, provider, f"must be an object of name -> credential, "
                        f"not {type(data[provider]).__name__}")

    s3: dict[str, S3Credentials] = {}
    for name, entry in data.get("s3", {}).items():
        key = f"s3/{name}"
        if not isinstance(entry, dict):
            raise _fail(path, key, f"must be an object, not {type(entry).__name__}")
        s3[name] = S3Credentials(
            key_id=_opt_str(path, key, entry, "key_id"),
            secret_key=_opt_str(path, key, entry, "secret_key"),
            session_token=_opt_str(path, key, entry, "session_token"),
            region=_opt_str(path, key, entry, "region"),
            profile=_opt_str(path, key, entry, "profile"),
            source=f"{path}#{key}",
        )
        if bool(s3[name].key_id) != bool(s3[name].secret_key):
            missing = "secret_key" if s3[name].key_id else "key_id"
            raise _fail(path, key, f"has one of key_id/secret_key but not {missing}")

    gs: dict[str, GCSCredentials] = {}
    for name, entry in data.get("gs", {}).items():
        key = f"gs/{name}"
        if not isinstance(entry, str):
            raise _fail(path, key, "must be the path of a service-account JSON file "
                        f"(a string), not {type(entry).__name__}")
        sa_path = entry
        if sa_path and not os.path.isabs(sa_path):
            sa_path = os.path.join(os.path.dirname(os.path.abspath(path)), sa_path)
        gs[name] = GCSCredentials(service_account_path=sa_path or None, source=f"{path}#{key}")

    as_: dict[str, AzureCredentials] = {}
    for name, entry in data.get("as", {}).items():
        key = f"as/{name}"
        if not isinstance(entry, dict):
            raise _fail(path, key, f"must be an object, not {type(entry).__name__}")
        account = _opt_str(path, key, entry, "account_str")
        account_key = _opt_str(path, key, entry, "account_key")
        auth_type = _opt_str(path, key, entry, "auth_type")
        client_id = _opt_str(path, key, entry, "client_id")
        as_[name] = _azure(account, account_key, auth_type, client_id, f"{path}#{key}",
                           lambda problem, key=key: _fail(path, f"{key}/auth_type", problem))
    return CredentialFile(path=path, s3=s3, gs=gs, as_=as_)


def _azure(account: str | None, account_key: str | None, auth_type: str | None,
           client_id: str | None, source: str, fail: Any) -> AzureCredentials:
    if auth_type is not None:
        auth_type = auth_type.lower()
        if auth_type not in AZURE_AUTH_TYPES:
            raise fail(f"{auth_type!r} is not one of {AZURE_AUTH_TYPES}")
        if auth_type == "key" and not account_key:
            raise fail("'key' needs account_key")
    else:
        auth_type = "key" if account_key else "default"
    return AzureCredentials(account_name=account, account_key=account_key,
                            auth_type=auth_type, client_id=client_id, source=source)


# --------------------------------------------------------------------------- resolution


def _from_env(location: Location, env: Mapping[str, str]) -> Credentials | None:
    def get(name: str) -> str | None:
        return env.get(name) or None

    if isinstance(location, S3Location):
        key_id, secret = get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")
        creds = S3Credentials(
            key_id=key_id,
            secret_key=secret,
            session_token=get("AWS_SESSION_TOKEN"),
            region=get("AWS_DEFAULT_REGION") or get("AWS_REGION"),
            profile=get("AWS_PROFILE"),
            source="env" if (key_id and secret) or get("AWS_PROFILE") else "default-chain",
        )
        if not creds.is_static:
            # Half a key pair in env: boto3 would ignore it too; use the chain.
            creds = S3Credentials(region=creds.region, profile=creds.profile, source=creds.source)
        return creds
    if isinstance(location, GCSLocation):
        sa = get("GOOGLE_APPLICATION_CREDENTIALS")
        return GCSCredentials(service_account_path=sa, source="env" if sa else "default-chain")
    if isinstance(location, AzureLocation):
        account, key = get("AZURE_STORAGE_ACCOUNT"), get("AZURE_STORAGE_KEY")
        auth_type, client_id = get("AZURE_STORAGE_AUTH_TYPE"), get("AZURE_STORAGE_CLIENT_ID")
        used = any((account, key, auth_type, client_id))
        return _azure(account, key, auth_type, client_id, "env" if used else "default-chain",
                      lambda problem: CredentialsError(
                          f"AZURE_STORAGE_AUTH_TYPE: {problem}", provider="as", source="env"))
    return None


def resolve_credentials(
    location: AnyLocation | str,
    *,
    credential_path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Credentials | None:
    """The credentials to use for *location* (None for local paths).

    :param credential_path: a ``cloud_credential.json``; default
        ``TRITON_CLOUD_CREDENTIAL_PATH`` from *env*; with neither, the environment
        variables and then the SDK default chains are used.
    :raises CredentialsError: the file is unusable or has no matching entry.
    """
    from .locations import parse_location

    env = os.environ if env is None else env
    if isinstance(location, str):
        location = parse_location(location, env=env)
    if isinstance(location, LocalLocation):
        return None
    if credential_path is None:
        credential_path = env.get("TRITON_CLOUD_CREDENTIAL_PATH") or None
    if credential_path is not None:
        return load_credential_file(credential_path).match(location)
    return _from_env(location, env)
