"""Pull a whole model directory: list once, fetch every file in parallel, publish atomically.

This is what the Triton agent and ``dfrepo pull`` call. The directory appears at *dest*
only when every file arrived and verified; on any failure the staging directory is
removed and *dest* is left as it was.

:func:`pull` is the Python API's edge: it resolves the settings once
(:func:`dfrepo.settings.resolve`) and runs :func:`pull_with`, which takes the resolved
:class:`~dfrepo.settings.PullSettings` and parses nothing. The CLI and the Triton agent
resolve their own settings and call :func:`pull_with`.

(``dfrepo.pull`` the attribute is this function; the module is
``sys.modules["dfrepo.pull"]``, e.g. ``importlib.import_module("dfrepo.pull")``.)
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from . import stages
from .dragonfly import DragonflyConfig
from .engine import (
    Downloader,
    DownloadRequest,
    DownloadResult,
    ProgressCallback,
    TransferConfig,
)
from .engine.fs import FileSystem
from .errors import ConfigError
from .locations import AnyLocation, LocalLocation
from .objects import RemoteObject
from .safepaths import safe_join
from .settings import ObjectCache, PullSettings, resolve

__all__ = ["ObjectCache", "PullResult", "bytes_by_delivery", "pull", "pull_with"]

log = logging.getLogger("dfrepo")


@dataclass(frozen=True)
class PullResult:
    """What one pull did. Byte counts say where the bytes came from."""

    location: str
    dest: Path
    files: int
    bytes: int
    seconds: float
    bytes_from_origin: int = 0
    bytes_from_peer: int = 0
    bytes_from_peer_cache: int = 0
    bytes_from_cache: int = 0
    bytes_local: int = 0
    bytes_streamed: int = 0
    """Bytes dfrepo wrote from HTTP bodies (proxy or direct)."""
    bytes_linked: int = 0
    """Bytes dfdaemon hard-linked into place over gRPC (no byte moved)."""
    bytes_copied: int = 0
    """Bytes dfdaemon copied into place over gRPC (destination on another file system)."""
    via: str = "direct"
    retries: int = 0
    requests: int = 0
    implementation: str = ""
    fallback_reason: str | None = None
    results: tuple[DownloadResult, ...] = field(default=(), repr=False)

    @property
    def throughput(self) -> float:
        """Bytes per second over the whole pull (listing included)."""
        return self.bytes / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "results"}
        d["dest"] = str(self.dest)
        d["throughput"] = self.throughput
        return d


def bytes_by_delivery(results: Iterable[DownloadResult]) -> dict[str, int]:
    """``bytes_streamed``/``bytes_linked``/``bytes_copied`` of downloaded files."""
    out = {"bytes_streamed": 0, "bytes_linked": 0, "bytes_copied": 0}
    for r in results:
        out[f"bytes_{r.delivery}"] += r.size
    return out


def pull(
    location: str | AnyLocation,
    dest: str | os.PathLike[str],
    *,
    credential_path: str | os.PathLike[str] | None = None,
    dragonfly: DragonflyConfig | None = None,
    transfer: TransferConfig | None = None,
    cache: ObjectCache | None = None,
    overrides: Mapping[str, str] | None = None,
    progress: ProgressCallback | None = None,
    expiry: int | None = None,
    env: Mapping[str, str] | None = None,
    implementation: str | None = None,
    objects: list[RemoteObject] | None = None,
) -> PullResult:
    """Fetch the model directory at *location* into *dest*.

    :param location: ``s3://``, ``gs://``, ``as://`` (Triton's grammar), a local path or
        ``file://``; parsed once, here.
    :param dest: the directory to fill. If it exists it must be empty (Triton's
        acquired dir is); if not, it is created by one rename at the end.
    :param credential_path: a ``cloud_credential.json`` (default:
        ``TRITON_CLOUD_CREDENTIAL_PATH``, then env vars and SDK chains).
    :param dragonfly: a :class:`~dfrepo.dragonfly.DragonflyConfig`; None loads
        ``dragonfly_config.json`` from ``TRITON_DRAGONFLY_CONFIG_PATH`` (defaults if missing).
    :param transfer: engine settings.
    :param cache: a persistent cache; hits are hard-linked instead of downloaded.
    :param overrides: flat string settings in the Triton agent ``parameters`` form
        (routed by :mod:`dfrepo.triton.parameters`): Dragonfly keys (``proxy``, ``tag``,
        ``filter``, ``header.X``, ``fallback`` ...), transfer keys (``concurrency``,
        ``range_size`` ...), ``expiry``, ``cache`` and ``azure_endpoint``.
    :param objects: an already made listing (skips listing; ``dfrepo ls``/tests).
    """
    from .triton.parameters import route_parameters

    started = time.monotonic()
    routed = route_parameters(overrides)
    settings = resolve(
        location, env=env, credential_path=credential_path,
        dragonfly=dragonfly, dragonfly_overrides=routed.dragonfly,
        transfer=transfer, transfer_overrides=routed.transfer,
        cache=cache, cache_setting=routed.cache,
        expiry=routed.expiry if routed.expiry is not None else expiry,
        azure_endpoint=routed.azure_endpoint,
    )
    return pull_with(settings, dest, progress=progress, implementation=implementation, objects=objects,
                     started=started)


def pull_with(
    settings: PullSettings,
    dest: str | os.PathLike[str],
    *,
    progress: ProgressCallback | None = None,
    implementation: str | None = None,
    objects: list[RemoteObject] | None = None,
    started: float | None = None,
) -> PullResult:
    """Fetch the model directory at ``settings.location`` into *dest*.

    :param settings: what :func:`dfrepo.settings.resolve` made (nothing is parsed again).
    :param dest: see :func:`pull`.
    :param objects: an already made listing (skips listing).
    :param implementation: force the byte mover (``"cython"``/``"python"``).
    :param started: ``time.monotonic()`` when the pull began (default: now).
    """
    from .stores import list_model

    started = time.monotonic() if started is None else started
    loc = settings.location
    cfg = settings.transfer
    dragonfly = settings.dragonfly
    cache = settings.cache
    if objects is None:
        kwargs: dict[str, Any] = {"credential_path": settings.credential_path, "env": settings.env}
        if settings.expiry is not None:
            kwargs["expiry"] = settings.expiry
        objects = list_model(loc, **kwargs)
    if settings.versions is not None:
        listed = len(objects)
        objects = settings.versions.select(objects, lambda o: o.rel_path)
        if len(objects) != listed:
            log.info("dfrepo: version_policy %s: pulling %d of %d files of %s", settings.versions.describe(),
                     len(objects), listed, loc.display)

    dest = Path(dest)
    _check_dest(dest)
    stages.remove_dead(dest.parent, dest.name)
    stage = stages.new_stage(dest)
    try:
        counts = {"cache": 0, "local": 0}
        to_fetch: list[tuple[RemoteObject, DownloadRequest]] = []
        etag_is_http = loc.scheme in ("s3", "as")
        for obj in objects:
            target = safe_join(stage, obj.rel_path)
            if obj.is_dir:  # an empty directory (e.g. an ensemble's version dir)
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(loc, LocalLocation) or obj.url.startswith("file://"):
                _link_or_copy(Path(unquote(urlsplit(obj.url).path)), target)
                counts["local"] += obj.size
                continue
            if cache is not None and cache.materialize(obj, target):
                counts["cache"] += obj.size
                continue
            to_fetch.append((obj, DownloadRequest(
                url=obj.url, dest=target, size=obj.size,
                etag=obj.version if etag_is_http else None,
                md5=obj.md5, headers=dict(obj.headers), version=obj.version,
                refresh=obj.resign)))
        results: list[DownloadResult] = []
        fallback_reason = None
        via = "cache" if cache is not None and objects else "direct"
        if isinstance(loc, LocalLocation):
            via = "local"
        impl = ""
        if to_fetch:
            # The stage is private: files are written in place, the stage is the one atomic step.
            with Downloader(cfg, dragonfly=dragonfly if dragonfly.enabled else None,
                            implementation=implementation, publish="in_place",
                            direct_proxies=settings.direct_proxies) as dl:
                results = dl.download_many([r for _, r in to_fetch], progress=progress)
                fallback_reason = dl.transport.fallback_reason
                via = dl.via
                impl = dl.implementation
            if cache is not None:
                for obj, req in to_fetch:
                    cache.store(obj, req.dest)
        fs = FileSystem()
        if cfg.fsync:
            _sync_tree(stage, fs)
        _publish(stage, dest)
        if cfg.fsync:  # the new name in the parent; dest itself when entries were moved into it
            fs.fsync_dir(dest.parent)
            fs.fsync_dir(dest)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    by_source = {"origin": 0, "peer": 0, "peer-cache": 0}
    for r in results:
        by_source[r.source] = by_source.get(r.source, 0) + r.size
    total = sum(o.size for o in objects)
    result = PullResult(
        location=loc.display,
        dest=dest,
        files=sum(1 for o in objects if not o.is_dir),
        bytes=total,
        seconds=time.monotonic() - started,
        bytes_from_origin=by_source["origin"],
        bytes_from_peer=by_source["peer"],
        bytes_from_peer_cache=by_source["peer-cache"],
        bytes_from_cache=counts["cache"],
        bytes_local=counts["local"],
        via=via,
        retries=sum(r.retries for r in results),
        requests=sum(r.requests for r in results),
        implementation=impl,
        fallback_reason=fallback_reason,
        results=tuple(results),
        **bytes_by_delivery(results),
    )
    log.info("dfrepo: pulled %s: %d files, %d bytes in %.2fs", loc.display, result.files, total, result.seconds)
    return result


def _check_dest(dest: Path) -> None:
    if dest.exists():
        if not dest.is_dir():
            raise ConfigError(f"destination {str(dest)!r} exists and is not a directory",
                              source="arg", key="dest")
        if any(dest.iterdir()):
            raise ConfigError(f"destination {str(dest)!r} is not empty", source="arg", key="dest")
    dest.parent.mkdir(parents=True, exist_ok=True)


def _publish(stage: Path, dest: Path) -> None:
    """Make the staged tree visible at *dest*: one rename when dest does not exist;
    otherwise (Triton's acquired, empty dir) one rename per top-level entry."""
    try:
        os.rename(stage, dest)
        return
    except OSError:
        if not dest.is_dir():
            raise
    for entry in sorted(stage.iterdir()):
        os.rename(entry, dest / entry.name)
    stage.rmdir()


def _sync_tree(root: Path, fs: FileSystem) -> None:
    """fsync every directory of the staged tree (its entries: files, sub-directories)."""
    for here, _dirs, _files in os.walk(root):
        fs.fsync_dir(Path(here))


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)

