"""One cache root on disk: entries and their sidecars, temp files, the lock, the running
totals, and the maintenance that keeps them consistent (scan, repair, LRU eviction).

See :mod:`dfrepo.cache` for the layout.  Methods that change entries expect the caller
to hold :meth:`CacheDir.lock` as their docstring says; nothing here verifies content.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .keys import KEY_RE

__all__ = ["CacheDir", "CacheEntry", "Scan", "remove_file"]

log = logging.getLogger("dfrepo")

#: Mode of the ``lock`` file.  It holds no data and is only ever flock()ed, which needs
#: no write access, so it is opened read-only: 0o644 lets another account that may read a
#: shared cache take the shared lock, and nobody but the owner can replace its content.
#: (0o666 made it world-writable.)
LOCK_MODE = 0o644

_CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by dfrepo.\n"
    "# For information about cache directory tags see https://bford.info/cachedir/\n"
)


@dataclass(frozen=True)
class CacheEntry:
    """One cached object as :meth:`~dfrepo.cache.ModelCache.entries` reports it."""

    key: str
    path: Path
    size: int
    source: str
    version: str | None
    md5: str | None
    created: float
    last_used: float


@dataclass(frozen=True)
class Scan:
    """What :meth:`CacheDir.scan` found (and, repairing, removed)."""

    entries: list[CacheEntry]
    removed: int
    freed: int


def remove_file(path: Path) -> int:
    """Remove *path* if it exists; returns its size (0 when it did not exist)."""
    try:
        size = os.lstat(path).st_size
        os.unlink(path)
        return size
    except FileNotFoundError:
        return 0


class CacheDir:
    """The files under one cache root.

    :raises OSError: from :meth:`create` when the directory cannot be set up.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "objects"
        self.tmp = root / "tmp"
        self._lock_path = root / "lock"
        self._usage_path = root / "usage.json"

    def create(self) -> None:
        """Make the directories, the ``CACHEDIR.TAG`` and the lock file if missing."""
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(exist_ok=True)
        tag = self.root / "CACHEDIR.TAG"
        if not tag.exists():
            tag.write_text(_CACHEDIR_TAG)
        fd = os.open(self._lock_path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, LOCK_MODE)
        try:  # a lock file made world-writable (0o666) by an earlier dfrepo: tighten it
            st = os.fstat(fd)
            if st.st_uid == os.geteuid() and st.st_mode & 0o022:
                os.fchmod(fd, LOCK_MODE)
        finally:
            os.close(fd)

    # -- paths, lock, sidecars ------------------------------------------------------------

    def data_path(self, key: str) -> Path:
        return self.objects / key[:2] / key

    def meta_path(self, key: str) -> Path:
        return self.objects / key[:2] / (key + ".json")

    def temp_path(self, key: str) -> Path:
        """A fresh name in ``tmp/`` for an insert of *key* in progress."""
        return self.tmp / f"{key}.{secrets.token_hex(6)}.part"

    @contextlib.contextmanager
    def lock(self, *, exclusive: bool, blocking: bool = True) -> Iterator[bool]:
        """Hold the root's flock; yields False when *blocking* is off and it is taken."""
        # A new open file description per acquisition, so threads of one process exclude
        # each other exactly like separate processes do.
        fd = os.open(self._lock_path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, LOCK_MODE)
        try:
            flags = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if blocking else fcntl.LOCK_NB)
            try:
                fcntl.flock(fd, flags)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def read_meta(self, key: str) -> dict[str, Any] | None:
        """The sidecar of *key*, or None when it is missing or not one of ours."""
        try:
            with open(self.meta_path(key), "rb") as fh:
                meta = json.loads(fh.read())
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("key") != key or not isinstance(meta.get("size"), int):
            return None
        return meta

    def write_json(self, target: Path, doc: Mapping[str, Any]) -> None:
        """Replace *target* with *doc* atomically (through a temp file in ``tmp/``)."""
        tmp = self.tmp / f"{target.name}.{secrets.token_hex(6)}.json-part"
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(doc, fh, separators=(",", ":"))
            os.replace(tmp, target)
        except BaseException:
            remove_file(tmp)
            raise

    # -- running totals (exclusive lock held) -----------------------------------------------

    def read_usage(self) -> tuple[int, int] | None:
        try:
            doc = json.loads(self._usage_path.read_bytes())
            count, size = int(doc["count"]), int(doc["bytes"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return (count, size) if count >= 0 and size >= 0 else None

    def write_usage(self, count: int, size: int) -> None:
        self.write_json(self._usage_path, {"count": max(count, 0), "bytes": max(size, 0)})

    def adjust_usage(self, count: int, size: int) -> None:
        """Add to the running totals (no-op when unknown)."""
        current = self.read_usage()
        if current is not None:
            self.write_usage(current[0] + count, current[1] + size)

    # -- entries ----------------------------------------------------------------------------

    def valid_entry(self, key: str, size: int) -> bool:
        """*key* has a sidecar and a data file, both of *size* bytes."""
        meta = self.read_meta(key)
        if meta is None or meta.get("size") != size:
            return False
        try:
            return os.stat(self.data_path(key)).st_size == size
        except OSError:
            return False

    def touch(self, key: str, meta: dict[str, Any], st: os.stat_result) -> None:
        """Record a hit (LRU); skipped if the entry vanished or changed meanwhile."""
        try:
            with self.lock(exclusive=False):
                now_st = os.stat(self.data_path(key))
                if (now_st.st_ino, now_st.st_dev) != (st.st_ino, st.st_dev):
                    return
                self.write_json(self.meta_path(key), {**meta, "last_used": time.time()})
        except OSError as exc:
            log.debug("dfrepo: cache: could not record a hit on %s: %s", key[:12], exc)

    def commit(self, key: str, tmp: Path, meta: Mapping[str, Any], size: int) -> bool:
        """Publish the finished insert *tmp* as *key* (exclusive lock held).

        False, and nothing changed, when another process inserted a valid entry first:
        its entry is as good as ours.
        """
        if self.valid_entry(key, size):
            return False
        stale = remove_file(self.data_path(key))
        remove_file(self.meta_path(key))
        if stale:
            self.adjust_usage(-1, -stale)
        self.data_path(key).parent.mkdir(exist_ok=True)
        # Count first: a kill between these steps over-counts, which only makes the next
        # insert rescan (and fix) the totals; it never lets the cache outgrow.
        self.adjust_usage(1, size)
        os.replace(tmp, self.data_path(key))
        self.write_json(self.meta_path(key), meta)
        return True

    def remove(self, key: str) -> int:
        """Remove *key*'s data and sidecar (exclusive lock held); returns the bytes freed."""
        freed = remove_file(self.data_path(key))
        remove_file(self.meta_path(key))
        return freed

    def remove_if_same(self, key: str, st: os.stat_result) -> None:
        """Remove a corrupt entry unless it was replaced since it was judged (takes the lock)."""
        try:
            with self.lock(exclusive=True):
                try:
                    now_st = os.stat(self.data_path(key))
                except FileNotFoundError:
                    remove_file(self.meta_path(key))
                    return
                if (now_st.st_ino, now_st.st_dev) != (st.st_ino, st.st_dev):
                    return
                freed = self.remove(key)
                self.adjust_usage(-1, -freed)
        except OSError as exc:
            log.warning("dfrepo: cache: cannot remove corrupt entry %s: %s", key[:12], exc.strerror)

    def clear(self) -> tuple[int, int]:
        """Remove every entry and leftover temp file (exclusive lock held).

        :returns: (entries removed, bytes freed).
        """
        scan = self.scan(repair=True)
        freed = sum(self.remove(e.key) for e in scan.entries)
        for sub in self.objects.iterdir():
            with contextlib.suppress(OSError):
                sub.rmdir()
        self.write_usage(0, 0)
        return len(scan.entries), freed

    # -- scanning and eviction (exclusive lock held unless repair=False) ----------------------

    def scan(self, *, repair: bool) -> Scan:
        """Every valid entry.  With *repair* (exclusive lock held): also remove orphan data
        files, orphan sidecars and temp files whose writer is gone, and rewrite the totals."""
        found: list[CacheEntry] = []
        removed = freed = 0
        try:
            subdirs = sorted(self.objects.iterdir())
        except FileNotFoundError:
            subdirs = []
        for sub in subdirs:
            try:
                names = set(os.listdir(sub))
            except (NotADirectoryError, FileNotFoundError):
                continue
            for name in sorted(names):
                key = name.removesuffix(".json")
                if not KEY_RE.match(key):
                    continue
                if name.endswith(".json"):
                    if key not in names and repair:
                        remove_file(sub / name)  # sidecar of an entry whose data is gone
                    continue
                meta = self.read_meta(key)
                try:
                    st = os.stat(sub / name)
                except FileNotFoundError:
                    continue
                if meta is None or meta["size"] != st.st_size:
                    if repair:
                        freed += self.remove(key)
                        removed += 1
                    continue
                found.append(CacheEntry(
                    key=key, path=sub / name, size=st.st_size, source=str(meta.get("source") or ""),
                    version=meta.get("version"), md5=meta.get("md5"),
                    created=float(meta.get("created") or 0.0),
                    last_used=float(meta.get("last_used") or meta.get("created") or 0.0)))
        if repair:
            self.clean_stale_temps()
            self.write_usage(len(found), sum(e.size for e in found))
        return Scan(found, removed, freed)

    def evict(self, live: list[CacheEntry], limit: int) -> tuple[int, int]:
        """Remove least recently used entries of *live* until they total <= *limit*."""
        total = sum(e.size for e in live)
        removed = freed = 0
        for e in sorted(live, key=lambda e: (e.last_used, e.created)):
            if total <= limit:
                break
            freed += self.remove(e.key)
            total -= e.size
            removed += 1
        self.write_usage(len(live) - removed, total)
        return removed, freed

    def evict_if_needed(self, max_bytes: int) -> None:
        """Evict down to *max_bytes* when the running totals say the cache is over it."""
        usage = self.read_usage()
        if usage is not None and usage[1] <= max_bytes:
            return
        scan = self.scan(repair=True)
        removed, freed = self.evict(scan.entries, max_bytes)
        if removed:
            log.info("dfrepo: cache: evicted %d entries (%d bytes) to stay under %d bytes",
                     removed, freed, max_bytes)

    def clean_stale_temps(self) -> int:
        """Remove temp files no live writer holds (exclusive lock held). Returns how many."""
        cleaned = 0
        try:
            names = os.listdir(self.tmp)
        except FileNotFoundError:
            return 0
        for name in names:
            path = self.tmp / name
            if name.endswith(".json-part"):
                # Sidecar temps only exist inside a locked section; none is running now.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                    cleaned += 1
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # a live insert holds it
            try:
                os.unlink(path)
                cleaned += 1
            except FileNotFoundError:
                pass
            finally:
                os.close(fd)
        return cleaned

    def clean_stale_temps_nowait(self) -> None:
        """:meth:`clean_stale_temps` if the exclusive lock is free right now (takes it)."""
        try:
            if not any(os.scandir(self.tmp)):
                return
            with self.lock(exclusive=True, blocking=False) as got:
                if got:
                    n = self.clean_stale_temps()
                    if n:
                        log.info("dfrepo: cache: removed %d leftover temp files", n)
        except OSError as exc:
            log.debug("dfrepo: cache: temp cleanup skipped: %s", exc)
