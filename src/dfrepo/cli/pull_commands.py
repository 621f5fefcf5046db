"""``dfrepo pull`` and ``dfrepo ls``: the CLI's edge into :mod:`dfrepo.settings`.

The flags become typed setting groups here and :func:`dfrepo.settings.resolve` is called
once; the pull itself (:func:`dfrepo.pull.pull_with`) parses nothing. ``dfrepo pull`` of
one ``http(s)://`` object needs only the Dragonfly and transfer settings.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from .._progress import format_bytes, format_rate, make_progress
from ..dragonfly import DragonflyConfig
from ..engine import ProgressCallback, TransferConfig
from ..errors import CacheError, ConfigError
from ..redact import redact_url
from ..settings import (
    ObjectCache,
    PullSettings,
    cache_switch,
    credential_file,
    resolve,
    resolve_dragonfly,
    resolve_location,
)
from .output import EXIT_OK, Out

__all__ = ["cmd_ls", "cmd_pull", "summary_line"]


def _dragonfly_overrides(args: argparse.Namespace) -> dict[str, object]:
    overrides: dict[str, object] = {}
    if args.proxy is not None:
        overrides["proxy"] = "" if args.proxy.strip().lower() in ("", "direct", "none") else args.proxy
    if args.tag is not None:
        overrides["tag"] = args.tag
    if args.no_fallback:
        overrides["fallback_direct"] = False
    if args.transport is not None:
        overrides["transport"] = args.transport
    if args.socket is not None:
        overrides["socket"] = args.socket
    return overrides


def _transfer_overrides(args: argparse.Namespace) -> dict[str, object]:
    overrides: dict[str, object] = {}
    if args.concurrency is not None:
        overrides["concurrency"] = args.concurrency
    if args.range_size is not None:
        overrides["range_size"] = args.range_size
    return overrides


def _cache(args: argparse.Namespace) -> tuple[ObjectCache | None, str | None]:
    """The persistent cache of ``dfrepo pull``, as :func:`~dfrepo.settings.resolve`'s
    *cache* and *cache_setting*.

    A flag beats the environment. ``--no-cache``: none. ``--cache-dir DIR``: that
    directory (even with ``DFREPO_CACHE=off``), and an unusable one is a
    :class:`~dfrepo.errors.CacheError` (exit 1): the user named it for this command.
    Otherwise ``$DFREPO_CACHE`` decides, as for the Triton agent
    (:func:`~dfrepo.settings.cache_switch`): ``off`` = none, a directory = that one,
    ``on`` or unset = the default directory (``$DFREPO_CACHE_DIR``,
    ``$XDG_CACHE_HOME/dfrepo``, ``~/.cache/dfrepo``). An unusable directory from the
    environment (read-only, a foreign or missing ``$HOME``, a random UID) is one warning
    and a pull without the cache, as in the Python API and the Triton agent
    (:func:`dfrepo.cache.open_cache`).
    """
    from ..cache import ModelCache

    if args.no_cache:
        return None, None
    if args.cache_dir is None:
        return None, cache_switch(os.environ)
    try:
        return ModelCache(args.cache_dir), None
    except CacheError as exc:
        raise CacheError(f"{exc} (named by --cache-dir: give a writable directory, or --no-cache to pull "
                         f"without the cache)", path=getattr(exc, "path", None)) from None


def settings_from_args(args: argparse.Namespace) -> PullSettings:
    """The settings of ``dfrepo pull LOCATION DEST`` (a model directory)."""
    cache, cache_setting = _cache(args)
    return resolve(
        args.location,
        credential_path=args.credentials,
        dragonfly_config=args.dragonfly_config,
        dragonfly_overrides=_dragonfly_overrides(args),
        transfer_overrides=_transfer_overrides(args),
        cache=cache,
        cache_setting=cache_setting,
        expiry=args.expiry,
    )


def _http_dest(url: str, dest: str) -> Path:
    target = Path(dest)
    if dest.endswith(("/", os.sep)) or target.is_dir():
        name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
        if not name or name in (".", "..") or "\x00" in name:
            raise ConfigError(f"cannot name a file after {redact_url(url)}; give a file path as DEST",
                              source="arg", key="dest")
        target = target / name
    return target


def _pull_http(args: argparse.Namespace, dragonfly: DragonflyConfig, transfer: TransferConfig,
               progress: ProgressCallback | None) -> Any:
    from ..engine import Downloader, DownloadRequest
    from ..pull import PullResult, bytes_by_delivery

    started = time.monotonic()
    target = _http_dest(args.location, args.dest)
    with Downloader(transfer, dragonfly=dragonfly if dragonfly.enabled else None) as dl:
        res = dl.download_many([DownloadRequest(url=args.location, dest=target)], progress=progress)[0]
        via = dl.via
        fallback_reason = dl.transport.fallback_reason
    by_source = {"origin": 0, "peer": 0, "peer-cache": 0}
    by_source[res.source] = by_source.get(res.source, 0) + res.size
    return PullResult(
        location=redact_url(args.location), dest=target, files=1, bytes=res.size,
        seconds=time.monotonic() - started,
        bytes_from_origin=by_source["origin"], bytes_from_peer=by_source["peer"],
        bytes_from_peer_cache=by_source["peer-cache"],
        via=via, retries=res.retries, requests=res.requests, implementation=res.implementation,
        fallback_reason=fallback_reason, results=(res,), **bytes_by_delivery([res]))


def summary_line(result: Any, proxy: str | None) -> str:
    """``pulled 5 files, 1.00 GiB in 2.31 s (443 MiB/s) — origin 0 B, peer ..., via proxy URL``."""
    files = f"{result.files} file{'s' if result.files != 1 else ''}"
    parts = [f"origin {format_bytes(result.bytes_from_origin)}",
             f"peer {format_bytes(result.bytes_from_peer)}"]
    if result.bytes_from_peer_cache:
        parts.append(f"peer-cache {format_bytes(result.bytes_from_peer_cache)}")
    parts.append(f"cache {format_bytes(result.bytes_from_cache)}")
    if result.bytes_local:
        parts.append(f"local {format_bytes(result.bytes_local)}")
    if result.via == "grpc":
        via = (f"via dfdaemon gRPC (linked {format_bytes(result.bytes_linked)}, copied "
               f"{format_bytes(result.bytes_copied)}, streamed {format_bytes(result.bytes_streamed)})")
    elif result.via == "proxy":
        via = f"via proxy {redact_url(proxy)}"
    elif result.fallback_reason:
        via = f"direct ({result.fallback_reason})"
    elif result.bytes_from_origin == 0 and result.bytes == result.bytes_from_cache + result.bytes_local:
        via = "nothing downloaded"
    else:
        via = "direct"
    parts.append(via)
    return (f"pulled {files}, {format_bytes(result.bytes)} in {result.seconds:.2f} s "
            f"({format_rate(result.throughput)}) \u2014 " + ", ".join(parts))


def cmd_pull(args: argparse.Namespace, out: Out) -> int:
    """``dfrepo pull LOCATION DEST``: settings first (a bad one fails before any download)."""
    from ..pull import pull_with

    settings: PullSettings | None = None
    if args.location.lower().startswith(("http://", "https://")):
        dragonfly = resolve_dragonfly(path=args.dragonfly_config, overrides=_dragonfly_overrides(args))
        transfer = TransferConfig().with_overrides(_transfer_overrides(args))
    else:
        settings = settings_from_args(args)
        dragonfly, transfer = settings.dragonfly, settings.transfer
    progress = make_progress(Path(args.dest).name or "pull", quiet=out.quiet or out.json_mode)
    try:
        if settings is None:
            result = _pull_http(args, dragonfly, transfer, progress)
        else:
            result = pull_with(settings, args.dest, progress=progress)
    finally:
        if progress is not None:
            progress.close()
    if out.json_mode:
        out.result(result.as_dict())
    elif not out.quiet:
        out.line(summary_line(result, dragonfly.proxy))
    return EXIT_OK


def cmd_ls(args: argparse.Namespace, out: Out) -> int:
    """``dfrepo ls LOCATION``."""
    from ..stores import list_model

    loc = resolve_location(args.location)
    kwargs: dict[str, Any] = {"credential_path": credential_file(args.credentials)}
    if args.expiry is not None:
        kwargs["expiry"] = args.expiry
    objects = list_model(loc, **kwargs)
    if out.json_mode:
        out.result({
            "location": loc.display,
            "files": sum(1 for o in objects if not o.is_dir),
            "bytes": sum(o.size for o in objects),
            "objects": [{"rel_path": o.rel_path, "size": o.size, "version": o.version, "md5": o.md5,
                         "crc32c": o.crc32c, "source": o.source, **({"dir": True} if o.is_dir else {})}
                        for o in objects],
        })
        return EXIT_OK
    names = [o.rel_path + ("/" if o.is_dir else "") for o in objects]
    width = max((len(n) for n in names), default=0)
    size_width = max((len(str(o.size)) for o in objects), default=0)
    for name, o in zip(names, objects, strict=True):
        out.line(f"{name:<{width}}  {o.size:>{size_width}}  {o.version or '-'}")
    return EXIT_OK
