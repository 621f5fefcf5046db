"""dfrepo: pull model repositories from object storage into Triton through a Dragonfly peer.

The public API is what ``__all__`` lists; everything with a leading underscore is private.
Importing dfrepo loads no cloud SDK: those are imported when a store is first used.
"""

from __future__ import annotations

import logging

from ._version import __version__
from .engine import Downloader, DownloadRequest, DownloadResult, TransferConfig, download
from .errors import (
    CacheError,
    ChecksumMismatchError,
    ConfigError,
    CredentialsError,
    DfrepoError,
    DfrepoWarning,
    HTTPStatusError,
    IncompleteDownloadError,
    InsufficientSpaceError,
    LocationError,
    ObjectNotFoundError,
    ProxyUnavailableError,
    RangeNotSupportedError,
    RepoAgentError,
    RetriesExhaustedError,
    SourceChangedError,
    StoreError,
    TransferError,
    UnsafePathError,
)
from .objects import RemoteObject, Signed
from .pull import PullResult, pull

logging.getLogger("dfrepo").addHandler(logging.NullHandler())


def implementation() -> str:
    """Which byte mover is active by default: ``"cython"`` or ``"python"``."""
    from .engine.picker import IMPLEMENTATION

    return IMPLEMENTATION


__all__ = [
    "__version__",
    "CacheError",
    "ChecksumMismatchError",
    "ConfigError",
    "CredentialsError",
    "DfrepoError",
    "DfrepoWarning",
    "DownloadRequest",
    "DownloadResult",
    "Downloader",
    "HTTPStatusError",
    "IncompleteDownloadError",
    "InsufficientSpaceError",
    "LocationError",
    "ObjectNotFoundError",
    "ProxyUnavailableError",
    "PullResult",
    "RangeNotSupportedError",
    "RemoteObject",
    "RepoAgentError",
    "RetriesExhaustedError",
    "Signed",
    "SourceChangedError",
    "StoreError",
    "TransferConfig",
    "TransferError",
    "UnsafePathError",
    "download",
    "implementation",
    "pull",
]
