"""``dfrepo cache ls|du|prune|clear``: inspect and trim the persistent cache."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone

from .._progress import format_bytes
from .output import EXIT_OK, Out

__all__ = ["cmd_cache"]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def cmd_cache(args: argparse.Namespace, out: Out) -> int:
    """Run ``dfrepo cache ACTION``."""
    from ..cache import ModelCache

    cache = ModelCache(args.cache_dir)
    if args.cache_command == "ls":
        entries = cache.entries()
        if out.json_mode:
            out.result({"root": str(cache.root), "entries": [
                {"key": e.key, "size": e.size, "source": e.source, "version": e.version, "md5": e.md5,
                 "created": e.created, "last_used": e.last_used} for e in entries]})
        else:
            for e in entries:
                out.line(f"{e.size:>14}  {_iso(e.last_used)}  {e.version or '-'}  {e.source}")
        return EXIT_OK
    if args.cache_command == "du":
        count, size = cache.usage()
        if out.json_mode:
            out.result({"root": str(cache.root), "entries": count, "bytes": size, "max_bytes": cache.max_bytes})
        else:
            noun = "entry" if count == 1 else "entries"
            out.line(f"{count} {noun}, {format_bytes(size)} ({size} bytes) in {cache.root} "
                     f"(limit {format_bytes(cache.max_bytes)})")
        return EXIT_OK
    if args.cache_command == "prune":
        removed, freed = cache.prune(max_bytes=args.max_bytes, older_than=args.older_than)
    else:
        removed, freed = cache.clear()
    if out.json_mode:
        out.result({"root": str(cache.root), "removed": removed, "freed_bytes": freed})
    elif not out.quiet:
        out.line(f"removed {removed} {'entry' if removed == 1 else 'entries'}, freed {format_bytes(freed)}")
    return EXIT_OK
