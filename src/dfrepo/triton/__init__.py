"""Triton repository agents written in Python, and dfrepo's Dragonfly agent.

``libtritonrepoagent_dragonfly.so`` (installed by :func:`install_agent`) hands every
repository-agent action to a Python worker process, which runs a :class:`RepoAgent`:
the built-in :class:`DragonflyAgent`, or your subclass selected per model with the
agent parameter ``dfrepo.agent`` (``"package.module:Class"``).  See docs/triton-agent.md.
"""

from __future__ import annotations

from .agent import AGENT_PARAMETER, ArtifactType, LoadContext, RepoAgent
from .dragonfly_agent import DragonflyAgent
from .install import install_agent

__all__ = [
    "AGENT_PARAMETER",
    "ArtifactType",
    "DragonflyAgent",
    "LoadContext",
    "RepoAgent",
    "install_agent",
]
