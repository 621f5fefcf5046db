"""The built-in agent: a drop-in replacement for ``dragonfly-repository-agent``.

Same files, same environment variables, same defaults as the C++ agent
(:mod:`dfrepo.environment`):

* ``$TRITON_DRAGONFLY_CONFIG_PATH`` (default ``/home/triton/dragonfly_config.json``)
* ``$TRITON_CLOUD_CREDENTIAL_PATH`` (default ``/home/triton/cloud_credential.json``)

Differences (documented in docs/triton-agent.md): a missing credential file at the
*default* path falls back to the environment and SDK credential chains (as Triton core
does) instead of failing; a path set explicitly in the environment must exist.  A
missing Dragonfly config fails the LOAD, as the C++ agent's does, unless a proxy comes
from ``$DFREPO_PROXY`` or ``$DFREPO_ALLOW_DIRECT=1`` allows direct downloads.  Local
(``FILESYSTEM``) locations are passed through instead of failing; the agent
``parameters`` of ``config.pbtxt`` override settings per model within the operator's
allow-list (:mod:`dfrepo.triton.parameters`); only the version directories the model's
``version_policy`` selects are pulled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .agent import LoadContext, RepoAgent

__all__ = ["DragonflyAgent", "pull_model"]


def pull_model(location: str, dest: str, *, parameters: Mapping[str, str],
               model_config: Mapping[str, Any] | None = None) -> Any:
    """Pull *location* into *dest*: the model's settings resolved once
    (:func:`~dfrepo.triton.parameters.settings_for_model`), then
    :func:`dfrepo.pull.pull_with`.

    The one place that calls into :mod:`dfrepo.pull` (kept apart so tests can swap it).
    """
    # lazy: keeps the worker's start-up import small
    from ..pull import pull_with
    from .parameters import settings_for_model

    return pull_with(settings_for_model(location, parameters, model_config=model_config), dest)


class DragonflyAgent(RepoAgent):
    """Pull ``s3://``/``gs://``/``as://`` models through the Dragonfly peer into Triton's dir.

    ``FILESYSTEM`` locations are left alone (Triton loads them in place).
    """

    name = "dragonfly"

    def load(self, ctx: LoadContext) -> str | None:
        if not ctx.is_remote:
            return None
        dest = ctx.acquire_dir()
        pull_model(ctx.location, dest, parameters=ctx.parameters, model_config=ctx.model_config)
        return dest
