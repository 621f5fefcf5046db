"""A model's Triton agent ``parameters`` -> a pull's settings (the agent's edge).

``config.pbtxt`` gives the agent a flat map of strings. :func:`split_overrides` routes
each key to the group that reads it: Dragonfly keys (``proxy``, ``tag``, ``header.X`` ...),
transfer keys (``concurrency``, ``range_size`` ...) and the pull's own keys
(:data:`PULL_KEYS`); for the Python API and the CLI an unknown key is an error.

:func:`settings_for_model` is the Triton agent's edge, where ``config.pbtxt`` comes from
the bucket, not from the operator:

* an unknown parameter is warned about (on every LOAD that has it, once per key) and
  ignored: the C++ agent read no parameters at all, so configs written for it (or for
  other agents) keep loading;
* a known one must be on the operator's allow-list (:func:`allowed_model_parameters`:
  ``$DFREPO_MODEL_PARAMETERS``, else ``"model_parameters"`` in ``dragonfly_config.json``,
  else :data:`DEFAULT_MODEL_PARAMETERS`), else the LOAD fails with
  :class:`~dfrepo.errors.ParameterNotAllowedError`: a model must not be able to point the
  proxy, an endpoint, TLS checks or the cache somewhere else (a GCS or Azure bearer token
  would follow the requests). The allow-list itself is not a parameter: no
  ``config.pbtxt`` key changes it or the path of ``dragonfly_config.json`` (such keys are
  unknown, hence ignored);
* the model configuration's ``version_policy`` picks the version directories to pull.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from ..dragonfly import OVERRIDE_KEYS, DragonflyConfig, is_override_key, with_overrides
from ..engine import TransferConfig
from ..environment import MODEL_PARAMETERS_ENV
from ..errors import ConfigError, ParameterNotAllowedError, warn_always
from ..settings import PullSettings, cache_switch, operator_dragonfly, require_peer, resolve
from ..versions import VersionPolicy
from .agent import AGENT_PARAMETER

__all__ = [
    "DEFAULT_MODEL_PARAMETERS",
    "PULL_KEYS",
    "Parameters",
    "allowed_model_parameters",
    "check_model_parameters",
    "model_overrides",
    "operator_allows",
    "route_parameters",
    "settings_for_model",
    "split_overrides",
]

_TRANSFER_KEYS = frozenset(f.name for f in fields(TransferConfig))
#: Keys of a Triton agent's ``parameters`` that the pull itself reads (``dfrepo.agent``
#: picks the agent class and is not a setting).
PULL_KEYS = frozenset({"expiry", "cache", "azure_endpoint", AGENT_PARAMETER})
#: What a model's ``config.pbtxt`` may set when the operator did not say
#: (``$DFREPO_MODEL_PARAMETERS``): keys that only change how the peer names and schedules
#: the model's own tasks. Everything that decides where requests and credentials go
#: (``proxy``, ``transport``, ``socket``, ``azure_endpoint``, ``header.*``), how far they
#: are trusted (``verify_tls``, ``ca_bundle``, ``expiry``), where files are written
#: (``cache``) or how hard the bucket is hit (``concurrency``, ``use_p2p``,
#: ``fallback_direct``) is the operator's.
DEFAULT_MODEL_PARAMETERS = ("tag", "application", "priority", "filter", "piece_length")
_NONE = frozenset({"", "none", "-"})


def split_overrides(overrides: Mapping[str, str] | None) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Split flat overrides into (dragonfly, transfer, pull) settings.

    :raises ConfigError: a key nobody knows (named in the message).
    """
    dragonfly: dict[str, str] = {}
    transfer: dict[str, str] = {}
    pull: dict[str, str] = {}
    for key, value in (overrides or {}).items():
        if key in _TRANSFER_KEYS:
            transfer[key] = value
        elif key in PULL_KEYS:
            pull[key] = value
        elif is_override_key(key):
            dragonfly[key] = value
        else:
            # A typo in a Triton agent parameter must not be silently ignored.
            raise ConfigError(f"unknown setting {key!r} (known: Dragonfly keys such as proxy, tag, filter, "
                              f"header.<Name>; transfer keys such as concurrency, range_size; "
                              f"{', '.join(sorted(PULL_KEYS))})", source="parameters", key=key)
    return dragonfly, transfer, pull


@dataclass(frozen=True)
class Parameters:
    """Flat parameters routed to the settings groups :func:`~dfrepo.settings.resolve` takes."""

    dragonfly: Mapping[str, str]
    transfer: Mapping[str, str]
    cache: str | None = None
    expiry: str | None = None
    azure_endpoint: str | None = None


def route_parameters(overrides: Mapping[str, str] | None) -> Parameters:
    """:func:`split_overrides`, with the pull's own keys named."""
    dragonfly, transfer, pull = split_overrides(overrides)
    return Parameters(dragonfly=dragonfly, transfer=transfer, cache=pull.get("cache"),
                      expiry=pull.get("expiry"), azure_endpoint=pull.get("azure_endpoint"))


def _known(key: str) -> bool:
    return key in _TRANSFER_KEYS or key in PULL_KEYS or is_override_key(key)


#: The file key of the allow-list (``dragonfly_config.json``; :mod:`dfrepo.dragonfly.loading`).
FILE_KEY = "model_parameters"


def _names_a_parameter(entry: str) -> bool:
    if _known(entry):
        return True
    if entry.startswith("header.") and len(entry) > len("header."):
        return True  # header.<Name> or a pattern over header names
    every = _TRANSFER_KEYS | PULL_KEYS | OVERRIDE_KEYS | {"header.X-Any"}
    return any(fnmatch.fnmatchcase(key, entry) for key in every)


def check_model_parameters(entries: Iterable[str], source: str, key: str) -> tuple[str, ...]:
    """*entries* of an allow-list, each a parameter a model could set or an ``fnmatch``
    pattern matching one (``header.*``, ``*``).

    :raises ConfigError: an entry that names no parameter (a typo would otherwise refuse a
        parameter the operator meant to allow, or allow nothing), named with *source*/*key*.
    """
    out = tuple(entries)
    for entry in out:
        if not _names_a_parameter(entry):
            known = sorted(_TRANSFER_KEYS | PULL_KEYS | OVERRIDE_KEYS)
            close = difflib.get_close_matches(entry, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{source}: {key} names {entry[:80]!r}, which is no agent parameter a model "
                              f"could set{hint} (known: {', '.join(known)}, header.<Name>; patterns such as "
                              f"header.* and * work too)", source=source, key=key)
    return out


def allowed_model_parameters(env: Mapping[str, str], config: DragonflyConfig | None = None, *,
                             source: str | None = None) -> tuple[str, ...]:
    """The operator's allow-list: which agent parameters a model's ``config.pbtxt`` may set.

    First ``$DFREPO_MODEL_PARAMETERS`` when set (comma-separated keys or ``fnmatch``
    patterns such as ``header.*``; ``*`` = every key; ``none`` or empty = no key), else
    ``"model_parameters"`` in ``dragonfly_config.json`` (a JSON list, same entries; ``[]``
    = no key), else :data:`DEFAULT_MODEL_PARAMETERS`. The environment beats the file, as
    for the proxy. Both are the operator's; a model can set neither.

    :param config: the operator's config (:func:`dfrepo.settings.operator_dragonfly`);
        None = read it when the environment does not decide.
    :param source: the file *config* came from, for messages.
    :raises ConfigError: an entry that names no parameter (either source, even the one
        that does not decide), or the file cannot be read.
    """
    raw = env.get(MODEL_PARAMETERS_ENV)
    if config is None and raw is None:
        source, config = operator_dragonfly(env)
    from_file = None
    if config is not None and config.model_parameters is not None:
        from_file = check_model_parameters(config.model_parameters, source or "dragonfly_config.json", FILE_KEY)
    if raw is not None:
        if raw.strip().lower() in _NONE:
            return ()
        return check_model_parameters((e.strip() for e in raw.split(",") if e.strip()),
                                      f"${MODEL_PARAMETERS_ENV}", MODEL_PARAMETERS_ENV)
    return from_file if from_file is not None else DEFAULT_MODEL_PARAMETERS


def operator_allows(key: str, env: Mapping[str, str], config: DragonflyConfig | None = None) -> bool:
    """True when the operator lets a model set *key* (:func:`allowed_model_parameters`)."""
    return _allowed(key, allowed_model_parameters(env, config))


def _allowed(key: str, allow: tuple[str, ...]) -> bool:
    name = "fallback_direct" if key == "fallback" else key
    return any(fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(key, pattern) for pattern in allow)


def model_overrides(parameters: Mapping[str, str], env: Mapping[str, str],
                    allow: tuple[str, ...] | None = None) -> dict[str, str]:
    """A model's agent *parameters* as overrides: unknown keys warned about (on every
    call, once per key: each LOAD says it in Triton's log) and dropped, the bridge's
    ``dfrepo.*`` keys dropped, the rest checked against *allow* (default:
    :func:`allowed_model_parameters`).

    :raises ParameterNotAllowedError: a known key the operator did not allow (named).
    """
    if allow is None:
        allow = allowed_model_parameters(env)
    out: dict[str, str] = {}
    for key, value in parameters.items():
        if key.startswith("dfrepo."):
            continue
        if not _known(key):
            warn_always(f"config.pbtxt agent parameter {key!r} is not a dfrepo setting; ignored", stacklevel=2)
            continue
        if not _allowed(key, allow):
            shown = ", ".join(allow) if allow else "none"
            raise ParameterNotAllowedError(
                f"config.pbtxt agent parameter {key!r} may not be set by a model (operator allows: {shown}); "
                f"set it in dragonfly_config.json or the environment, or allow it with "
                f"{MODEL_PARAMETERS_ENV}=...,{key} or \"{FILE_KEY}\": [..., \"{key}\"] in dragonfly_config.json",
                source="config.pbtxt", key=key)
        out[key] = value
    return out


def settings_for_model(location: str, parameters: Mapping[str, str],
                       env: Mapping[str, str] | None = None,
                       model_config: Mapping[str, Any] | None = None) -> PullSettings:
    """The settings of one model's pull, from its agent *parameters* and the environment.

    The operator's ``dragonfly_config.json`` is read once, first (its
    ``model_parameters`` is part of the allow-list). Parameters go through
    :func:`model_overrides` (unknown: warned and ignored; not allowed by the operator:
    refused) and then onto that config. *model_config* (Triton's JSON) gives the
    ``version_policy``: only the version directories it selects are pulled. The agent's
    files: ``$TRITON_DRAGONFLY_CONFIG_PATH``/``$TRITON_CLOUD_CREDENTIAL_PATH`` must exist
    when set; the ``/home/triton`` defaults are used when they exist. The persistent cache
    is what makes a reload or a restarted server cheap: on unless the model's ``cache``
    parameter or ``$DFREPO_CACHE`` says ``off`` (or names a directory).
    """
    env = os.environ if env is None else env
    found, operator = operator_dragonfly(env)
    allow = allowed_model_parameters(env, operator, source=found)
    routed = route_parameters(model_overrides(parameters, env, allow))
    dragonfly = with_overrides(operator, routed.dragonfly) if routed.dragonfly else operator
    require_peer(found, dragonfly, env)
    cache = cache_switch(env, routed.cache)
    return resolve(location, env=env, dragonfly=dragonfly, transfer_overrides=routed.transfer,
                   cache_setting=cache, expiry=routed.expiry, azure_endpoint=routed.azure_endpoint,
                   triton_defaults=True, versions=VersionPolicy.from_model_config(model_config))
