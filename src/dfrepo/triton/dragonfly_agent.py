"""The built-in agent: a drop-in replacement for ``dragonfly-repository-agent``.

Same files, same environment variables, same defaults as the C++ agent:

* ``$TRITON_DRAGONFLY_CONFIG_PATH`` (default ``/home/triton/dragonfly_config.json``)
* ``$TRITON_CLOUD_CREDENTIAL_PATH`` (default ``/home/triton/cloud_credential.json``)

Differences (documented in docs/triton-agent.md): a missing credential file at the
*default* path falls back to the environment and SDK credential chains (as Triton core
does) instead of failing; a path set explicitly in the environment must exist.  A
missing Dragonfly config at the default path means "no proxy"; set explicitly it must
exist.  Local (``FILESYSTEM``) locations are passed through instead of failing, and
the agent ``parameters`` of ``config.pbtxt`` override settings per model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..environment import (
    CREDENTIAL_PATH_ENV,
    DEFAULT_CREDENTIAL_PATH,
    DEFAULT_DRAGONFLY_CONFIG_PATH,
    DRAGONFLY_CONFIG_PATH_ENV,
)
from ..errors import ConfigError
from .agent import LoadContext, RepoAgent

__all__ = [
    "DEFAULT_CREDENTIAL_PATH",
    "DEFAULT_DRAGONFLY_CONFIG_PATH",
    "DragonflyAgent",
    "credential_path",
    "dragonfly_config_path",
]

_DRAGONFLY_ENV = DRAGONFLY_CONFIG_PATH_ENV
_CREDENTIAL_ENV = CREDENTIAL_PATH_ENV


def _config_file(env: str, default: str) -> str | None:
    value = os.environ.get(env)
    if value:
        if not os.path.isfile(value):
            raise ConfigError(f"{env}={value} does not exist or is not a file", source="env", key=env)
        return value
    return default if os.path.isfile(default) else None


def dragonfly_config_path() -> str | None:
    """``$TRITON_DRAGONFLY_CONFIG_PATH`` (must exist) or the default path if it exists."""
    return _config_file(_DRAGONFLY_ENV, DEFAULT_DRAGONFLY_CONFIG_PATH)


def credential_path() -> str | None:
    """``$TRITON_CLOUD_CREDENTIAL_PATH`` (must exist) or the default path if it exists.

    ``None`` means: use the environment and SDK credential chains.
    """
    return _config_file(_CREDENTIAL_ENV, DEFAULT_CREDENTIAL_PATH)


def _overrides(parameters: Mapping[str, str]) -> dict[str, str]:
    """Per-model settings: every agent parameter but the bridge's own ``dfrepo.*`` keys."""
    return {k: v for k, v in parameters.items() if not k.startswith("dfrepo.")}


def pull_model(location: str, dest: str, *, parameters: Mapping[str, str]) -> Any:
    """Pull *location* into *dest* with :func:`dfrepo.pull`, reading the agent's files.

    The one place that calls into :mod:`dfrepo.pull` (kept apart so tests can swap it).
    ``dfrepo.pull`` reads ``dragonfly_config.json`` itself (same variable, same
    default); checking the path here first turns an explicitly set but missing file into
    a clear error instead of silent defaults.
    """
    from ..pull import pull  # lazy: keeps the worker's start-up import small

    dragonfly_config_path()
    overrides = _overrides(parameters)
    # The persistent cache is what makes a reload or a restarted server cheap: on unless
    # the model's ``cache`` parameter or $DFREPO_CACHE says "off" (or names a directory).
    overrides.setdefault("cache", os.environ.get("DFREPO_CACHE", "on"))
    return pull(
        location,
        dest=dest,
        credential_path=credential_path(),
        overrides=overrides,
    )


class DragonflyAgent(RepoAgent):
    """Pull ``s3://``/``gs://``/``as://`` models through the Dragonfly peer into Triton's dir.

    ``FILESYSTEM`` locations are left alone (Triton loads them in place).
    """

    name = "dragonfly"

    def load(self, ctx: LoadContext) -> str | None:
        if not ctx.is_remote:
            return None
        dest = ctx.acquire_dir()
        pull_model(ctx.location, dest, parameters=ctx.parameters)
        return dest
