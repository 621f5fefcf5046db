"""A model's Triton agent ``parameters`` -> a pull's settings (the agent's edge).

``config.pbtxt`` gives the agent a flat map of strings. :func:`split_overrides` routes
each key to the group that reads it: Dragonfly keys (``proxy``, ``tag``, ``header.X`` ...),
transfer keys (``concurrency``, ``range_size`` ...) and the pull's own keys
(:data:`PULL_KEYS`); an unknown key is an error, never ignored. :func:`settings_for_model`
adds the agent's rules for its files and cache and calls :func:`dfrepo.settings.resolve`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from ..dragonfly import is_override_key
from ..engine import TransferConfig
from ..environment import CACHE_SWITCH_ENV
from ..errors import ConfigError
from ..settings import PullSettings, resolve
from .agent import AGENT_PARAMETER

__all__ = ["PULL_KEYS", "Parameters", "route_parameters", "settings_for_model", "split_overrides"]

_TRANSFER_KEYS = frozenset(f.name for f in fields(TransferConfig))
#: Keys of a Triton agent's ``parameters`` that the pull itself reads (``dfrepo.agent``
#: picks the agent class and is not a setting).
PULL_KEYS = frozenset({"expiry", "cache", "azure_endpoint", AGENT_PARAMETER})


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


def settings_for_model(location: str, parameters: Mapping[str, str],
                       env: Mapping[str, str] | None = None) -> PullSettings:
    """The settings of one model's pull, from its agent *parameters* and the environment.

    Every parameter but the bridge's own ``dfrepo.*`` keys is a setting. The agent's
    files: ``$TRITON_DRAGONFLY_CONFIG_PATH``/``$TRITON_CLOUD_CREDENTIAL_PATH`` must exist
    when set; the ``/home/triton`` defaults are used when they exist. The persistent cache
    is what makes a reload or a restarted server cheap: on unless the model's ``cache``
    parameter or ``$DFREPO_CACHE`` says ``off`` (or names a directory).
    """
    env = os.environ if env is None else env
    routed = route_parameters({k: v for k, v in parameters.items() if not k.startswith("dfrepo.")})
    cache = routed.cache if routed.cache is not None else env.get(CACHE_SWITCH_ENV, "on")
    return resolve(location, env=env, dragonfly_overrides=routed.dragonfly, transfer_overrides=routed.transfer,
                   cache_setting=cache, expiry=routed.expiry, azure_endpoint=routed.azure_endpoint,
                   triton_defaults=True)
