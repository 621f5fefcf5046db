"""One URL to one file: the convenience front of :class:`~dfrepo.engine.downloader.Downloader`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..dragonfly.fields import parse_proxy
from .downloader import Downloader
from .jobs import DownloadRequest, DownloadResult, ProgressCallback
from .settings import TransferConfig
from .transport import Transport

if TYPE_CHECKING:
    from ..dragonfly.config import DragonflyConfig


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    size: int | None = None,
    etag: str | None = None,
    md5: str | None = None,
    headers: Mapping[str, str] | None = None,
    config: TransferConfig | None = None,
    dragonfly: DragonflyConfig | None = None,
    proxy: str | None = None,
    progress: ProgressCallback | None = None,
    implementation: str | None = None,
) -> DownloadResult:
    """Download one URL to *dest*, verified and atomically.

    :param url: the object's (presigned) URL. Never logged.
    :param dest: final path; written via a temp file in the same directory.
    :param size: the size when already known (skips the probe request).
    :param etag: expected ETag; sent as If-Match and checked on every response.
    :param md5: expected hex MD5 of the content, verified before the file appears.
    :param headers: extra request headers.
    :param config: :class:`TransferConfig`; defaults are tuned for multi-GB objects.
    :param dragonfly: a DragonflyConfig (proxy, headers, filters, task identity).
    :param proxy: shortcut for a plain HTTP proxy URL when no DragonflyConfig is given.
    :param progress: ``progress(done, total)``.
    :param implementation: force ``"cython"`` or ``"python"`` (tests, benchmarks).
    """
    cfg = config or TransferConfig()
    proxy = parse_proxy(proxy, None) if dragonfly is None else None  # the one proxy rule
    transport = Transport(cfg, proxy=proxy, fallback_direct=False) if proxy else None
    req = DownloadRequest(url=url, dest=Path(dest), size=size, etag=etag, md5=md5, headers=dict(headers or {}))
    with Downloader(cfg, transport=transport, dragonfly=dragonfly, implementation=implementation) as dl:
        try:
            return dl.download_many([req], progress=progress)[0]
        finally:
            if transport is not None:
                transport.clear()
