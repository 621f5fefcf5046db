"""Write a Triton repository agent in Python.

Subclass :class:`RepoAgent`, override :meth:`RepoAgent.load` (and the other actions if
you need them), and select the class from the model's ``config.pbtxt``::

    model_repository_agents { agents [ { name: "dragonfly",
      parameters [ { key: "dfrepo.agent" value: "mypkg.agents:MyAgent" } ] } ] }

Without ``dfrepo.agent`` the built-in :class:`~dfrepo.triton.DragonflyAgent` runs.
One instance of the class is created per model when its LOAD starts and dropped after
its last action (``LOAD_FAIL`` or ``UNLOAD_COMPLETE``), so ``self`` is per-model state
and LOADs of different models, which may run concurrently, never share it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from ..environment import AGENT_PATHS_ENV, MODEL_PARAMETERS_ENV
from ..errors import ConfigError, ParameterNotAllowedError, RepoAgentError

__all__ = [
    "AGENT_PARAMETER",
    "ActionName",
    "ArtifactType",
    "LoadContext",
    "RepoAgent",
    "resolve_agent_class",
]

#: The ``config.pbtxt`` agent parameter that selects the Python class (``module:Class``).
AGENT_PARAMETER = "dfrepo.agent"

ArtifactType = Literal["FILESYSTEM", "REMOTE_FILESYSTEM"]
ActionName = Literal["LOAD", "LOAD_COMPLETE", "LOAD_FAIL", "UNLOAD", "UNLOAD_COMPLETE"]


class LoadContext:
    """What Triton told the agent about one model, for one action.

    :ivar action: the action being run (``"LOAD"``, ``"LOAD_COMPLETE"`` ...).
    :ivar location: the model directory: a local path for ``FILESYSTEM``, a
        ``s3://``/``gs://``/``as://`` URL for ``REMOTE_FILESYSTEM``.  After a LOAD that
        relocated the model, later actions see the new local directory.
    :ivar artifact_type: ``"FILESYSTEM"`` or ``"REMOTE_FILESYSTEM"``.
    :ivar parameters: the agent's ``parameters`` from ``config.pbtxt`` (a proto map:
        no order).
    :ivar model_config: the model configuration as Triton's JSON (``{}`` if unavailable).
    :ivar model_name: ``model_config["name"]``, else the last component of the location.
    """

    __slots__ = (
        "_acquire",
        "_acquired",
        "action",
        "artifact_type",
        "location",
        "model_config",
        "model_name",
        "parameters",
    )

    def __init__(
        self,
        *,
        action: ActionName,
        location: str,
        artifact_type: ArtifactType,
        parameters: Mapping[str, str] | None = None,
        model_config: Mapping[str, Any] | None = None,
        model_name: str | None = None,
        acquire: Callable[[], str] | None = None,
    ) -> None:
        self.action = action
        self.location = location
        self.artifact_type = artifact_type
        self.parameters: dict[str, str] = dict(parameters or {})
        self.model_config: dict[str, Any] = dict(model_config or {})
        name = model_name or self.model_config.get("name")
        if not name:
            name = os.path.basename(location.rstrip("/")) or location
        self.model_name: str = str(name)
        self._acquire = acquire
        self._acquired: str | None = None

    @property
    def is_remote(self) -> bool:
        """True for ``REMOTE_FILESYSTEM`` locations (``s3://``, ``gs://``, ``as://``)."""
        return self.artifact_type == "REMOTE_FILESYSTEM"

    def acquire_dir(self) -> str:
        """Return Triton's mutable local directory for this model (created on first call).

        Triton makes it with ``mkdtemp("/tmp/folderXXXXXX")``, returns the same directory
        on later calls, and deletes it itself after ``LOAD_FAIL`` or ``UNLOAD_COMPLETE``.
        :raises RepoAgentError: outside an action, or if Triton refuses.
        """
        if self._acquired is None:
            if self._acquire is None:
                raise RepoAgentError(
                    f"acquire_dir() is only available while an action of model "
                    f"'{self.model_name}' runs"
                )
            self._acquired = self._acquire()
        return self._acquired

    def __repr__(self) -> str:
        return (f"LoadContext(action={self.action!r}, model_name={self.model_name!r}, "
                f"artifact_type={self.artifact_type!r}, location={self.location!r})")


class RepoAgent:
    """Base class of a Python repository agent. Every method is optional but :meth:`load`.

    Errors: raise any exception; its message becomes the one-line
    ``TRITONSERVER_Error`` Triton logs (``Poll failed for model directory ...``) and
    the load fails.  Raise :class:`~dfrepo.errors.RepoAgentError` with
    ``code="NOT_FOUND"`` (or ``INVALID_ARG``, ``UNAVAILABLE``, ``UNSUPPORTED``,
    ``INTERNAL``) to pick the Triton error code.
    """

    #: Short name used in messages.
    name: str = "python"

    def load(self, ctx: LoadContext) -> str | None:
        """Prepare the model. Return a complete local directory to load it from, or None.

        A returned directory must already hold the whole model (``config.pbtxt``, the
        numeric version dirs, everything): Triton loads only from it and never
        downloads the model itself.  ``None`` leaves Triton's location as it is.
        """
        return None

    def load_complete(self, ctx: LoadContext) -> None:
        """Triton finished loading the model."""

    def load_fail(self, ctx: LoadContext) -> None:
        """The load failed (in this agent, a later agent or the backend)."""

    def unload(self, ctx: LoadContext) -> None:
        """Triton is about to unload the model."""

    def unload_complete(self, ctx: LoadContext) -> None:
        """Triton unloaded the model; this instance is dropped afterwards."""


_BUILTIN = {
    "dragonfly": "dfrepo.triton.dragonfly_agent:DragonflyAgent",
    "python": "dfrepo.triton.agent:RepoAgent",
}


def _check_operator_provided(spec: str, module_name: str, env: Mapping[str, str]) -> None:
    from .parameters import operator_allows

    if operator_allows(AGENT_PARAMETER, env):
        return
    try:
        found = importlib.util.find_spec(module_name.split(".", 1)[0])  # locates, runs nothing
    except (ImportError, ValueError):
        found = None
    if found is None:
        return  # the import names what is missing
    roots = [Path(p).resolve() for p in env.get(AGENT_PATHS_ENV, "").split(os.pathsep) if p]
    places = [found.origin, *(found.submodule_search_locations or ())]
    if any(p and any(Path(p).resolve().is_relative_to(r) for r in roots) for p in places):
        return
    raise ParameterNotAllowedError(
        f"agent parameter {AGENT_PARAMETER}={spec!r}: {module_name!r} is not in a directory the operator "
        f"gave the agent (install_agent(sys_path=...)); allow any installed module with "
        f"{MODEL_PARAMETERS_ENV}=...,{AGENT_PARAMETER} or \"model_parameters\": [..., \"{AGENT_PARAMETER}\"] "
        f"in dragonfly_config.json", source="config.pbtxt", key=AGENT_PARAMETER)


def resolve_agent_class(parameters: Mapping[str, str],
                        env: Mapping[str, str] | None = None) -> type[RepoAgent]:
    """Return the agent class named by ``parameters["dfrepo.agent"]`` (default: Dragonfly).

    The value is ``"package.module:ClassName"`` or a built-in name (``"dragonfly"``,
    ``"python"``). ``config.pbtxt`` lives in the bucket, so a model may only name a class
    the operator provided: one in a directory given to ``install_agent(sys_path=...)``
    (``$DFREPO_AGENT_PATHS`` in the worker), or anything when the operator allows the
    ``dfrepo.agent`` parameter (``$DFREPO_MODEL_PARAMETERS``, or ``"model_parameters"`` in
    ``dragonfly_config.json``). The check runs before the
    module is imported, so a refused module never executes.

    :raises ParameterNotAllowedError: a module outside the operator's directories.
    :raises ConfigError: the value is malformed, the module or class cannot be found,
        or the class is not a :class:`RepoAgent`.
    """
    spec = (parameters.get(AGENT_PARAMETER) or "dragonfly").strip()
    target = _BUILTIN.get(spec, spec)
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"agent parameter {AGENT_PARAMETER}={spec!r} must look like 'package.module:Class'",
            source="config.pbtxt", key=AGENT_PARAMETER,
        )
    if spec not in _BUILTIN:
        _check_operator_provided(spec, module_name, os.environ if env is None else env)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"agent parameter {AGENT_PARAMETER}={spec!r}: cannot import {module_name!r}: {exc}",
            source="config.pbtxt", key=AGENT_PARAMETER,
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigError(
                f"agent parameter {AGENT_PARAMETER}={spec!r}: {module_name!r} has no {attr!r}",
                source="config.pbtxt", key=AGENT_PARAMETER,
            )
    if not (isinstance(obj, type) and issubclass(obj, RepoAgent)):
        raise ConfigError(
            f"agent parameter {AGENT_PARAMETER}={spec!r}: {attr!r} is not a "
            f"dfrepo.triton.RepoAgent subclass",
            source="config.pbtxt", key=AGENT_PARAMETER,
        )
    return obj
