"""The download engine: plans requests, talks HTTP, retries, schedules, commits.

Python decides here; the bytes are moved by :mod:`dfrepo._fastio` (compiled) or its twin
:mod:`dfrepo._fastio_py`, picked by :mod:`~dfrepo.engine.picker`. Modules, top-down:

* :mod:`~dfrepo.engine.downloader` — :class:`Downloader`; :mod:`~dfrepo.engine.single` — :func:`download`;
* :mod:`~dfrepo.engine.plan` — how a file is cut into requests;
* :mod:`~dfrepo.engine.exchange` — request headers and the checks on every answer;
* :mod:`~dfrepo.engine.retry` — retry policy and error scrubbing;
* :mod:`~dfrepo.engine.scheduler`, :mod:`~dfrepo.engine.concurrency` — worker threads and
  the adaptive number of requests in flight;
* :mod:`~dfrepo.engine.commit`, :mod:`~dfrepo.engine.fs` — durable, atomic publication
  through a file-system seam;
* :mod:`~dfrepo.engine.transport` — which pool serves a GET (proxy or direct);
* :mod:`~dfrepo.engine.wire` — the lean HTTP/1.1 client for plain TCP (urllib3 for TLS);
* :mod:`~dfrepo.engine.body` — the byte mover's input contract;
* :mod:`~dfrepo.engine.daemon` — dfdaemon's gRPC route;
* :mod:`~dfrepo.engine.settings` — :class:`TransferConfig`.
"""

from __future__ import annotations

from .downloader import Downloader
from .jobs import DownloadRequest, DownloadResult, ProgressCallback
from .settings import TransferConfig
from .single import download

__all__ = ["DownloadRequest", "DownloadResult", "Downloader", "ProgressCallback", "TransferConfig", "download"]
