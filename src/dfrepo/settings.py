"""A pull's settings, resolved once, at the edge: :class:`PullSettings` and :func:`resolve`.

A pull's settings come from the environment, ``dragonfly_config.json``,
``cloud_credential.json``, Triton agent parameters and CLI flags. Each edge turns what it
was given into typed groups and calls :func:`resolve` once:

* the Python API, :func:`dfrepo.pull` (keyword arguments; ``overrides=`` in the Triton
  parameter form, routed by :mod:`dfrepo.triton.parameters`);
* the CLI, ``dfrepo pull`` (:mod:`dfrepo.cli.pull_commands`);
* the Triton agent, :func:`dfrepo.triton.parameters.settings_for_model` (a model's agent
  parameters, and the agent's rules for its two files: ``triton_defaults=True``).

:func:`resolve` parses the location (once), loads and validates the Dragonfly config
(the proxy rule is :func:`dfrepo.dragonfly.fields.parse_proxy`), builds the
:class:`~dfrepo.engine.TransferConfig`, picks the cache and the credential file, and
returns one frozen :class:`PullSettings`. :func:`dfrepo.pull.pull_with`, the stores and
the engine take those typed values and parse nothing again.

The variable names and default paths are :mod:`dfrepo.environment`'s.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

from .dragonfly import DragonflyConfig, with_overrides
from .dragonfly.loading import build_dragonfly_config
from .engine import TransferConfig
from .engine.proxyenv import DirectProxies, direct_proxies_from_env
from .environment import (
    ALLOW_DIRECT_ENV,
    CACHE_SWITCH_ENV,
    CREDENTIAL_PATH_ENV,
    DEFAULT_CREDENTIAL_PATH,
    DEFAULT_DRAGONFLY_CONFIG_PATH,
    DRAGONFLY_CONFIG_PATH_ENV,
)
from .errors import ConfigError, DragonflyConfigMissingError
from .locations import AnyLocation, parse_location
from .objects import RemoteObject
from .values import FALSE_WORDS, TRUE_WORDS
from .versions import VersionPolicy

__all__ = [
    "ObjectCache",
    "PullSettings",
    "allow_direct",
    "cache_switch",
    "credential_file",
    "dragonfly_config_file",
    "operator_dragonfly",
    "require_peer",
    "resolve",
    "resolve_dragonfly",
    "resolve_location",
]

_CACHE_OFF = FALSE_WORDS | {"none"}
_CACHE_ON = TRUE_WORDS


class ObjectCache(Protocol):
    """What a pull needs from a persistent cache (see :mod:`dfrepo.cache`)."""

    def materialize(self, obj: RemoteObject, dest: Path) -> bool:
        """Place a verified cached copy of *obj* at *dest*; False on a miss."""
        ...

    def store(self, obj: RemoteObject, path: Path) -> None:
        """Remember the freshly downloaded *path* as the content of *obj*."""
        ...


@dataclass(frozen=True)
class PullSettings:
    """Everything one pull reads, parsed and validated. Made by :func:`resolve`.

    :ivar location: the parsed repository location (never a string).
    :ivar dragonfly: the Dragonfly client settings (the proxy already checked).
    :ivar transfer: the engine's settings.
    :ivar cache: the persistent cache, or None for none.
    :ivar credential_path: the ``cloud_credential.json`` to use; None = the environment
        variables and SDK chains.
    :ivar expiry: lifetime of presigned URLs in seconds; None = the stores' default.
    :ivar env: the environment the pull was resolved in (a read-only snapshot; the
        stores read cloud credentials from it). Never shown in ``repr``.
    :ivar direct_proxies: the environment's ``http_proxy``/``https_proxy``/``no_proxy``
        for direct requests, read as curl reads them; None = none set.
    :ivar versions: the model's ``version_policy`` (Triton agent): unselected version
        directories are not pulled; None = pull everything.
    """

    location: AnyLocation
    dragonfly: DragonflyConfig = field(default_factory=DragonflyConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    cache: ObjectCache | None = field(default=None, compare=False)
    credential_path: str | None = None
    expiry: int | None = None
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False, compare=False)
    direct_proxies: DirectProxies | None = None
    versions: VersionPolicy | None = None


def _file_from_env(var: str, default: str, env: Mapping[str, str], triton_defaults: bool) -> str | None:
    """``$var``; with *triton_defaults* (the agent's rule) it must be a file, and without
    it *default* is used when that is a file."""
    value = env.get(var) or None
    if not triton_defaults:
        return value
    if value:
        if not os.path.isfile(value):
            raise ConfigError(f"{var}={value} does not exist or is not a file", source="env", key=var)
        return value
    return default if os.path.isfile(default) else None


def credential_file(explicit: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None,
                    triton_defaults: bool = False) -> str | None:
    """The ``cloud_credential.json`` to use: *explicit*, else ``$TRITON_CLOUD_CREDENTIAL_PATH``.

    With *triton_defaults* (the Triton agent): a path set in the environment must exist,
    and ``/home/triton/cloud_credential.json`` is used when it exists. None means the
    environment variables and SDK credential chains.
    """
    if explicit is not None:
        return os.fspath(explicit)
    env = os.environ if env is None else env
    return _file_from_env(CREDENTIAL_PATH_ENV, DEFAULT_CREDENTIAL_PATH, env, triton_defaults)


def dragonfly_config_file(env: Mapping[str, str] | None = None, *, triton_defaults: bool = False) -> str | None:
    """``$TRITON_DRAGONFLY_CONFIG_PATH``, else the default path; None = no file to read.

    Without *triton_defaults* a missing file means the defaults (the loader checks); with
    them (the Triton agent) a path set in the environment must exist, and None is
    returned when the default path is not a file.
    """
    env = os.environ if env is None else env
    found = _file_from_env(DRAGONFLY_CONFIG_PATH_ENV, DEFAULT_DRAGONFLY_CONFIG_PATH, env, triton_defaults)
    if triton_defaults:
        return found
    return found or DEFAULT_DRAGONFLY_CONFIG_PATH


def resolve_location(location: str | AnyLocation, *, env: Mapping[str, str] | None = None,
                     azure_endpoint: str | None = None) -> AnyLocation:
    """Parse *location* (the one place a pull's location string is parsed)."""
    if isinstance(location, str):
        return parse_location(location, env=env, azure_endpoint=azure_endpoint)
    return location


def resolve_dragonfly(
    config: DragonflyConfig | None = None,
    *,
    path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    triton_defaults: bool = False,
) -> DragonflyConfig:
    """The Dragonfly settings: *config* with *overrides*, or loaded.

    :param config: a ready config (then no file is read).
    :param path: an explicit ``dragonfly_config.json``: it must exist.
    :param overrides: flags or agent parameters (``proxy``, ``tag``, ``header.X`` ...).
    :param triton_defaults: the Triton agent's file rules (see :func:`dragonfly_config_file`).
    """
    if config is not None:
        return with_overrides(config, overrides) if overrides else config
    env = os.environ if env is None else env
    if path is not None:
        return build_dragonfly_config(os.fspath(path), env=env, overrides=overrides, required=True)
    found = dragonfly_config_file(env, triton_defaults=triton_defaults)
    built = build_dragonfly_config(found, env=env, overrides=overrides, required=triton_defaults)
    if triton_defaults:
        require_peer(found, built, env)
    return built


def operator_dragonfly(env: Mapping[str, str] | None = None) -> tuple[str | None, DragonflyConfig]:
    """The Triton agent's ``dragonfly_config.json`` (its file rules, see
    :func:`dragonfly_config_file`) and the environment's proxy, before any model's
    parameter: ``(the file read, or None; the config)``. The file is read once; a model's
    overrides go on top with :func:`~dfrepo.dragonfly.with_overrides`, then
    :func:`require_peer`."""
    env = os.environ if env is None else env
    found = dragonfly_config_file(env, triton_defaults=True)
    return found, build_dragonfly_config(found, env=env, required=True)


def require_peer(found: str | None, config: DragonflyConfig, env: Mapping[str, str]) -> None:
    """The Triton agent's rule: without a ``dragonfly_config.json`` (*found* None) and a
    proxy, no download unless ``$DFREPO_ALLOW_DIRECT`` is on.

    :raises DragonflyConfigMissingError: no file, no peer, direct downloads not allowed.
    """
    if found is None and not config.enabled and not allow_direct(env):
        raise DragonflyConfigMissingError(
            f"no Dragonfly config: {DEFAULT_DRAGONFLY_CONFIG_PATH} does not exist and "
            f"${DRAGONFLY_CONFIG_PATH_ENV} is not set, so there is no peer to download through; "
            f"refusing to download directly from the origin (a fleet would stampede the bucket). "
            f"Mount the file (its \"proxy\" is the peer; {{}} means direct, as the C++ agent), "
            f"set ${DRAGONFLY_CONFIG_PATH_ENV}, or set {ALLOW_DIRECT_ENV}=1 to allow direct downloads",
            source=DEFAULT_DRAGONFLY_CONFIG_PATH, key=DRAGONFLY_CONFIG_PATH_ENV)


def allow_direct(env: Mapping[str, str]) -> bool:
    """``$DFREPO_ALLOW_DIRECT`` is on: the Triton agent may download without any
    ``dragonfly_config.json`` (directly from the origin)."""
    return env.get(ALLOW_DIRECT_ENV, "").strip().lower() in TRUE_WORDS


def cache_switch(env: Mapping[str, str], explicit: str | None = None) -> str:
    """The persistent cache switch of a pull, for :func:`resolve`'s *cache_setting*:
    *explicit* when given (a model's ``cache`` parameter), else ``$DFREPO_CACHE`` (empty
    = unset), else ``on``. The Triton agent and ``dfrepo pull`` both read the variable here."""
    if explicit is not None:
        return explicit
    # Set but empty (``DFREPO_CACHE=``) means unset, never "the current directory".
    return env.get(CACHE_SWITCH_ENV, "").strip() or "on"


def _cache_from_setting(value: str, current: ObjectCache | None, env: Mapping[str, str]) -> ObjectCache | None:
    """``cache`` setting: off/false/0 disables, on/true enables the default cache dir,
    anything else is a cache directory."""
    lowered = value.strip().lower()
    if lowered in _CACHE_OFF:
        return None
    from .cache import open_cache  # an unusable cache directory warns once; the pull goes on

    if lowered in _CACHE_ON:
        return current if current is not None else open_cache(env=env)
    return open_cache(value, env=env)


def _expiry(value: int | str | None) -> int | None:
    if value is None or isinstance(value, int):
        return value
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"expiry must be seconds, got {value!r}", source="arg", key="expiry") from None


def resolve(
    location: str | AnyLocation,
    *,
    env: Mapping[str, str] | None = None,
    credential_path: str | os.PathLike[str] | None = None,
    dragonfly: DragonflyConfig | None = None,
    dragonfly_config: str | os.PathLike[str] | None = None,
    dragonfly_overrides: Mapping[str, object] | None = None,
    transfer: TransferConfig | None = None,
    transfer_overrides: Mapping[str, object] | None = None,
    cache: ObjectCache | None = None,
    cache_setting: str | None = None,
    expiry: int | str | None = None,
    azure_endpoint: str | None = None,
    triton_defaults: bool = False,
    versions: VersionPolicy | None = None,
) -> PullSettings:
    """Resolve a pull's settings once; every edge calls this.

    :param location: ``s3://``, ``gs://``, ``as://`` (Triton's grammar), a local path or
        ``file://``; parsed here and nowhere else.
    :param env: the environment to read (default ``os.environ``; snapshotted).
    :param credential_path: a ``cloud_credential.json`` (default: see :func:`credential_file`).
    :param dragonfly: a ready :class:`~dfrepo.dragonfly.DragonflyConfig`; else it is loaded
        from *dragonfly_config* (must exist) or ``$TRITON_DRAGONFLY_CONFIG_PATH``.
    :param dragonfly_overrides: Dragonfly keys from flags or agent parameters.
    :param transfer: / :param transfer_overrides: the engine's settings and string overrides.
    :param cache: a persistent cache object; :param cache_setting: ``on``/``off``/a
        directory (a model's ``cache`` parameter, ``$DFREPO_CACHE``), applied on top.
    :param expiry: presigned URL lifetime in seconds (an int, or its string).
    :param azure_endpoint: Azure account URL override for an ``as://`` location.
    :param triton_defaults: the Triton agent's rules for its two files (and: without a
        ``dragonfly_config.json`` and a proxy, :class:`DragonflyConfigMissingError` unless
        ``$DFREPO_ALLOW_DIRECT`` is on).
    :param versions: the model's ``version_policy`` (which version directories to pull).
    :raises ConfigError: a bad setting (named); :raises LocationError: a bad location.
    """
    env = MappingProxyType(dict(os.environ if env is None else env))
    df = resolve_dragonfly(dragonfly, path=dragonfly_config, overrides=dragonfly_overrides, env=env,
                           triton_defaults=triton_defaults)
    tr = (transfer or TransferConfig()).with_overrides(transfer_overrides or {})
    if cache_setting is not None:
        cache = _cache_from_setting(cache_setting, cache, env)
    return PullSettings(
        location=resolve_location(location, env=env, azure_endpoint=azure_endpoint),
        dragonfly=df,
        transfer=tr,
        cache=cache,
        credential_path=credential_file(credential_path, env=env, triton_defaults=triton_defaults),
        expiry=_expiry(expiry),
        env=env,
        direct_proxies=direct_proxies_from_env(env),
        versions=versions,
    )
