"""dfdaemon's gRPC download API: the daemon writes (or hard-links) the file itself.

``dfdaemon.v2.DfdaemonDownload/DownloadTask`` on the daemon's unix socket is a
server-streaming call: a *started* message (content length, ``is_finished`` = the task is
complete on this peer), then one message per finished piece, every one with the task ID.
With ``output_path`` the daemon puts the content there; with ``force_hard_link`` it
hard-links its own content file (a local hit costs one ``link()``; nothing crosses a
socket), and it fails when it cannot link (another file system) — dfrepo then asks again
without force, and the daemon copies the file after the download.

The file is only complete when the stream ended OK; on a cold download it fills while
pieces arrive. dfrepo therefore gives the daemon a private path next to the destination,
waits for the end of the stream, checks it, and only then renames it into place.

**A file linked from the daemon's cache shares its inode with the daemon's content file**:
whoever modifies it in place corrupts the daemon's copy, which other peers are served from.
dfrepo never writes to it (it only renames and reads), Triton only reads model files, and
dfrepo's persistent cache links rather than copies. Do not open such files for writing.

Requirements: the ``grpc`` extra (``dragonfly-api``, ``grpcio``); the socket readable and
writable by this process; the destination directory visible to the daemon **at the same
path** (true for a daemon on the host with Triton on the host, or hostPath mounts shared
by both pods; not for an isolated daemon container — use the proxy transport there).

Unlike the proxy, the gRPC server applies no default query-parameter filter: dfrepo sends
the same list it sends to the proxy, so the task IDs are the same on both paths.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import (
    ConfigError,
    HTTPStatusError,
    ProxyUnavailableError,
    TransferError,
)
from ..redact import redact_url, redact_urls
from .config import DragonflyConfig
from .headers import filtered_query_params, version_tag

log = logging.getLogger("dfrepo")

__all__ = ["DEFAULT_SOCKET", "DaemonGrpc", "GrpcDelivery", "GrpcUnavailable", "grpc_available"]

#: dfdaemon's default ``download.server.socketPath``.
DEFAULT_SOCKET = "/var/run/dragonfly/dfdaemon.sock"

# gRPC status codes after which the same call may succeed (the daemon restarts, is busy).
_RETRYABLE = frozenset({"UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "ABORTED", "CANCELLED"})
# A stream the transport lost (the daemon died or reset it): like a broken connection.
_BROKEN_STREAM = re.compile(r"stream removed|socket closed|connection reset|broken pipe|RST_STREAM", re.IGNORECASE)
_LINK_FAILURE = re.compile(r"hard.?link|cross-device|EXDEV|os error 18", re.IGNORECASE)


class GrpcUnavailable(TransferError):
    """The daemon's gRPC socket cannot serve the call now (down, restarting, overloaded).

    ``code`` is the gRPC status name. Retryable; after the last attempt the caller falls
    back to the proxy/direct path or raises :class:`~dfrepo.errors.ProxyUnavailableError`.
    """


def grpc_available() -> str | None:
    """None when the gRPC stubs import, else why not (the ``grpc`` extra is missing)."""
    try:
        import grpc  # noqa: F401 - imported only to learn whether the extra is installed
        from dragonfly_api import dfdaemon_pb2_grpc  # noqa: F401 - the same
    except ImportError as exc:
        return f"the grpc extra is not installed ({exc.name})"
    return None


def _scrub(text: str) -> str:
    """A daemon message without any query string (presigned URLs carry signatures)."""
    return redact_urls(text)[:300]


@dataclass(frozen=True)
class GrpcDelivery:
    """What the daemon did for one file."""

    task_id: str
    content_length: int
    local_hit: bool
    """The task was complete on this peer when the call started (``is_finished``)."""
    linked: bool
    """The output shares the daemon's inode (a hard link), else it is the daemon's copy."""
    pieces: int


class DaemonGrpc:
    """One channel to a dfdaemon's download socket, shared by every worker thread."""

    def __init__(self, socket_path: str, config: DragonflyConfig, *, timeout: float = 3600.0) -> None:
        why = grpc_available()
        if why is not None:
            raise ConfigError(f"transport 'grpc' needs dfrepo[grpc]: {why}", source="arg", key="transport")
        import grpc
        from dragonfly_api import dfdaemon_pb2_grpc

        self.socket_path = socket_path
        self.config = config
        self.timeout = timeout
        self._grpc = grpc
        self._channel = grpc.insecure_channel(
            f"unix://{socket_path}",
            # tonic (hyper) rejects the socket path grpcio puts in :authority for unix targets.
            options=[("grpc.max_receive_message_length", 16 * 1024 * 1024), ("grpc.default_authority", "localhost")],
        )
        self._stub = dfdaemon_pb2_grpc.DfdaemonDownloadStub(self._channel)
        self._lock = threading.Lock()
        self._can_link = True

    def close(self) -> None:
        self._channel.close()

    def health(self, timeout: float = 2.0) -> str | None:
        """None when the socket accepts gRPC calls within *timeout*, else the reason."""
        if not os.path.exists(self.socket_path):
            return f"no socket at {self.socket_path}"
        try:
            self._grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except self._grpc.FutureTimeoutError:
            return f"socket {self.socket_path} does not answer gRPC within {timeout:g} s"
        return None

    # -- the call ---------------------------------------------------------------------------

    def _request(self, url: str, output: Path, *, version: str | None, headers: Mapping[str, str],
                 force_hard_link: bool) -> Any:
        from dragonfly_api import common_pb2, dfdaemon_pb2
        from google.protobuf.duration_pb2 import Duration

        cfg = self.config
        download = common_pb2.Download(
            url=url,
            type=common_pb2.TaskType.STANDARD,
            filtered_query_params=list(filtered_query_params(cfg, url)),
            request_header=dict(headers),
            output_path=str(output),
            force_hard_link=force_hard_link,
            timeout=Duration(seconds=int(self.timeout)),
        )
        tag = version_tag(cfg.tag, version if cfg.version_in_task_id else None)
        if tag:
            download.tag = tag
        if cfg.application:
            download.application = cfg.application
        if cfg.priority is not None:
            download.priority = common_pb2.Priority.ValueType(cfg.priority)
        if cfg.piece_length is not None:
            download.piece_length = cfg.piece_length
        return dfdaemon_pb2.DownloadTaskRequest(download=download)

    def download(self, url: str, output: Path, *, version: str | None = None,
                 headers: Mapping[str, str] | None = None) -> GrpcDelivery:
        """Have the daemon put *url*'s content at *output* (which must not exist).

        Hard link first; when the daemon cannot link (another file system), a copy. On any
        error *output* is removed (a cold download fills it while pieces arrive).
        :raises HTTPStatusError: the origin's error, as on the proxy path.
        :raises GrpcUnavailable: the daemon cannot take the call now (retryable).
        :raises TransferError: anything else, message scrubbed of signatures.
        """
        headers = dict(headers or {})
        try:
            if self._can_link:
                try:
                    return self._call(url, output, version=version, headers=headers, force_hard_link=True)
                except _LinkFailed:
                    _unlink(output)
                    with self._lock:
                        if self._can_link:
                            self._can_link = False
                            log.info("dfrepo: dfdaemon cannot hard-link into %s (another file system?); "
                                     "it will copy files there", output.parent)
            return self._call(url, output, version=version, headers=headers, force_hard_link=False)
        except BaseException:
            _unlink(output)
            raise

    def _call(self, url: str, output: Path, *, version: str | None, headers: Mapping[str, str],
              force_hard_link: bool) -> GrpcDelivery:
        grpc = self._grpc
        request = self._request(url, output, version=version, headers=headers, force_hard_link=force_hard_link)
        task_id = ""
        content_length = -1
        finished = False
        pieces = 0
        try:
            for message in self._stub.DownloadTask(request, timeout=self.timeout + 60):
                task_id = task_id or message.task_id
                if message.HasField("download_task_started_response"):
                    started = message.download_task_started_response
                    content_length = started.content_length
                    finished = started.is_finished
                elif message.HasField("download_piece_finished_response"):
                    pieces += 1
        except grpc.RpcError as exc:
            raise self._error(exc, url, force_hard_link) from None
        if content_length < 0:
            raise TransferError("dfdaemon ended the download stream without a started message", url=url)
        try:
            st = os.stat(output)
        except FileNotFoundError:
            raise TransferError(
                f"dfdaemon reported success but {output.name} is not where it was asked to write it "
                "(is the destination visible to the daemon at the same path?)", url=url) from None
        return GrpcDelivery(task_id=task_id, content_length=content_length, local_hit=finished,
                            linked=st.st_nlink > 1, pieces=pieces)

    def _error(self, exc: Any, url: str, force_hard_link: bool) -> Exception:
        code = exc.code().name if callable(getattr(exc, "code", None)) else "UNKNOWN"
        details = exc.details() if callable(getattr(exc, "details", None)) else ""
        details = details or ""
        if code == "INTERNAL":
            origin = _origin_error(_status_details(exc)) or _origin_error(details)
            if origin is not None:
                status = origin
                return HTTPStatusError(
                    f"origin (via Dragonfly gRPC) answered HTTP {status} for {redact_url(url)}",
                    status=status, url=url, error_type="backend")
        if force_hard_link and _LINK_FAILURE.search(details):
            return _LinkFailed()
        message = f"dfdaemon gRPC {code}: {_scrub(details)}"
        if code in _RETRYABLE or (code == "INTERNAL" and _BROKEN_STREAM.search(details)):
            return GrpcUnavailable(message, url=url, code=code)
        if code == "PERMISSION_DENIED":
            return HTTPStatusError(message, status=403, url=url, error_type="proxy")
        return TransferError(message, url=url, code=code)


class _LinkFailed(Exception):
    """force_hard_link could not be honoured: ask again for a copy."""


_BACKEND_STATUS = re.compile(r"backend error:?\s*(\d{3})\b")


def _status_details(exc: Any) -> str:
    """The binary status details dfdaemon attaches to an error (``grpc-status-details-bin``:
    JSON ``{message, header, status_code}`` for origin errors), decoded; "" if none."""
    try:
        trailers = exc.trailing_metadata() or ()
    except Exception:  # noqa: BLE001 - Defensive: not every RpcError carries metadata
        return ""
    for key, value in trailers:
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
    return ""


def _origin_error(details: str) -> int | None:
    """The origin's HTTP status from an ``INTERNAL`` error: the JSON details' ``status_code``,
    else the ``backend error: 403 Forbidden`` form of the message. None if not an origin error."""
    start = details.find("{")
    if start >= 0:
        try:
            doc = json.loads(details[start:])
        except ValueError:
            doc = None
        status = doc.get("status_code") if isinstance(doc, dict) else None
        if isinstance(status, int) and 100 <= status <= 599:
            return status
    m = _BACKEND_STATUS.search(details)
    if m and 100 <= int(m.group(1)) <= 599:
        return int(m.group(1))
    return None


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def unavailable(socket_path: str, why: str, url: str) -> ProxyUnavailableError:
    """The error raised when the socket fails and direct fallback is off."""
    return ProxyUnavailableError(f"dfdaemon gRPC socket {socket_path} is unavailable ({why}) "
                                 "and direct fallback is off", url=url)
