"""dfpeer: a stand-in for the Rust dfdaemon HTTP proxy (Dragonfly peer), for tests and benchmarks.

Not part of the dfrepo wheel and never imports dfrepo: its task-ID code is its
own, so tests comparing dfrepo's client-side IDs with the peer's are meaningful.
See ``peer/README.md``.
"""

from __future__ import annotations

from .api import AdminClient, PeerProcess, StandinPeer
from .server import ADMIN_PREFIX, DIRECT_SOURCE_THRESHOLD, PeerConfig
from .taskid import DEFAULT_FILTERED_QUERY_PARAMS, canonical_url, task_id

__all__ = [
    "ADMIN_PREFIX",
    "AdminClient",
    "DEFAULT_FILTERED_QUERY_PARAMS",
    "DIRECT_SOURCE_THRESHOLD",
    "PeerConfig",
    "PeerProcess",
    "StandinPeer",
    "canonical_url",
    "task_id",
]
