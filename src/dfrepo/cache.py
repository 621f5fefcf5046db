"""Persistent, content-addressed object cache shared by every pull on a host.

Triton deletes its own copy of a model on every unload and restart
(``triton-repoagent.md`` §2.3); :class:`ModelCache` keeps the bytes, so a reloaded model
or a restarted server whose objects did not change is materialised by a hard link (or a
reflink / copy across filesystems) instead of being downloaded again.

**Identity.** An entry's key is ``sha256`` over the object's identity *without any URL
signature*: ``(source, version, size, md5)`` (:func:`cache_key`).  The version is the
store's evidence (S3/Azure ETag, GCS generation); an object overwritten in the store has
a new version, hence a new key, and is fetched again - a cache never serves stale bytes.
Objects without version evidence are never cached (stale could not be told from fresh).

**Layout** under the root::

    objects/ab/<key>         the content (read-only; often hard-linked into model dirs)
    objects/ab/<key>.json    sidecar: size, source (no secrets), version, md5, created, last_used
    tmp/                     inserts in progress (``*.part``; flock-held by their writer)
    lock                     flock: shared for reads and temp creation, exclusive for commits,
                             eviction and maintenance
    usage.json               running (count, bytes) so inserts need not rescan the cache
    CACHEDIR.TAG             tells backup tools to skip the directory

An entry exists when both its data file and its sidecar exist and agree in size.  Inserts
write to ``tmp/`` and publish with ``os.replace`` under the exclusive lock, so two processes
inserting the same key both succeed and leave one valid entry, and a process killed mid-
insert leaves only a temp file, which the next maintenance pass (or the next
:class:`ModelCache` on that root) removes once no live process holds its lock.

**Reads are verified**: the size always; with ``verify="full"`` also the MD5 (the store's,
or one computed at insert).  A corrupt or truncated entry is removed and is a miss.

**Eviction** is LRU by ``last_used`` (updated on every hit) down to ``max_bytes`` after each
insert.  Evicting an entry that is hard-linked into a loaded model is harmless: the link
keeps the data alive.  Cached files are made read-only (this changes the mode of the hard-
linked copies too) so an in-place write in a model directory cannot corrupt the cache.

Settings: root ``DFREPO_CACHE_DIR``, else ``$XDG_CACHE_HOME/dfrepo``, else
``~/.cache/dfrepo``; size bound ``DFREPO_CACHE_MAX_BYTES`` (``"20GiB"``, ``"500M"``, bytes)
or the ``max_bytes`` argument, default :data:`DEFAULT_MAX_BYTES` (20 GiB).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .engine.fs import md5_of_fd
from .errors import CacheError, ConfigError
from .objects import RemoteObject
from .redact import redact_inline
from .values import normalize_etag, parse_size

__all__ = [
    "CACHE_DIR_ENV",
    "CACHE_MAX_BYTES_ENV",
    "DEFAULT_MAX_BYTES",
    "CacheEntry",
    "ModelCache",
    "cache_key",
    "default_cache_dir",
]

log = logging.getLogger("dfrepo")

CACHE_DIR_ENV = "DFREPO_CACHE_DIR"
CACHE_MAX_BYTES_ENV = "DFREPO_CACHE_MAX_BYTES"
#: Default size bound: 20 GiB.  Big enough for a handful of typical Triton models, small
#: enough not to surprise anyone; set ``DFREPO_CACHE_MAX_BYTES`` for large LLM weights.
DEFAULT_MAX_BYTES = 20 * 1024**3

_KEY_VERSION = "dfrepo-cache-v1"
_KEY_RE = re.compile(r"^[0-9a-f]{64}$")
_FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
_CHUNK = 8 * 1024 * 1024
_CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by dfrepo.\n"
    "# For information about cache directory tags see https://bford.info/cachedir/\n"
)

def default_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """``DFREPO_CACHE_DIR``, else ``$XDG_CACHE_HOME/dfrepo``, else ``~/.cache/dfrepo``."""
    env = os.environ if env is None else env
    explicit = env.get(CACHE_DIR_ENV, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    xdg = env.get("XDG_CACHE_HOME", "").strip()
    if xdg and os.path.isabs(xdg):  # the XDG spec says relative values are invalid
        return Path(xdg) / "dfrepo"
    return Path.home() / ".cache" / "dfrepo"


def _identity(obj: RemoteObject) -> str:
    """Where the object lives, with no signature: ``source``, else the URL minus query."""
    if obj.source:
        return obj.source
    parts = urlsplit(obj.url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def cache_key(obj: RemoteObject) -> str | None:
    """The cache key of *obj*, or None when it has no version evidence (never cached).

    ``sha256`` of a canonical JSON array of (source, version, size, md5): no URL, no
    signature, no header takes part, so a freshly signed URL for the same object version
    maps to the same key, and a new version to a new key.
    """
    version = normalize_etag(obj.version)
    if version is None:
        return None
    payload = [_KEY_VERSION, _identity(obj), version, int(obj.size), (obj.md5 or "").lower() or None]
    return hashlib.sha256(json.dumps(payload, separators=(",", ":")).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    """One cached object as :meth:`ModelCache.entries` reports it."""

    key: str
    path: Path
    size: int
    source: str
    version: str | None
    md5: str | None
    created: float
    last_used: float


@dataclass(frozen=True)
class _Scan:
    entries: list[CacheEntry]
    removed: int
    freed: int


def _copy_fd(src: int, dst: int, size: int) -> str:
    """Copy *size* bytes from *src* to *dst* (both at offset 0); returns how."""
    try:
        fcntl.ioctl(dst, _FICLONE, src)
        return "reflink"
    except OSError:
        pass
    off = 0
    how = "copy_file_range"
    try:
        while off < size:
            n = os.copy_file_range(src, dst, size - off, off, off)
            if n == 0:
                break
            off += n
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM):
            raise
        how = "copy"
    while off < size:
        chunk = os.pread(src, min(_CHUNK, size - off), off)
        if not chunk:
            break
        view = memoryview(chunk)
        while view:
            written = os.pwrite(dst, view, off)
            view = view[written:]
            off += written
    if off != size:
        raise OSError(errno.EIO, f"cache copy ended after {off} of {size} bytes")
    return how


def _unlink(path: Path) -> int:
    """Remove *path* if it exists; returns its size (0 when it did not exist)."""
    try:
        size = os.lstat(path).st_size
        os.unlink(path)
        return size
    except FileNotFoundError:
        return 0


class ModelCache:
    """A persistent, content-addressed cache of model objects (implements ``ObjectCache``).

    :param root: cache directory (created if missing); default :func:`default_cache_dir`.
    :param max_bytes: size bound; default ``DFREPO_CACHE_MAX_BYTES`` or
        :data:`DEFAULT_MAX_BYTES`.  An object larger than the bound is not cached.
    :param verify: ``"size"`` (default; cheap, catches truncation) or ``"full"`` (also the
        MD5 on every hit, computed at insert when the store did not list one).
    :param env: environment to read settings from (default ``os.environ``).
    :raises CacheError: the directory cannot be created or used.
    :raises ConfigError: a bad ``verify`` or size setting.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        max_bytes: int | None = None,
        verify: str = "size",
        env: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if env is None else env
        if verify not in ("size", "full"):
            raise ConfigError(f"cache verify must be 'size' or 'full', got {verify!r}", source="arg", key="verify")
        if max_bytes is None:
            raw = env.get(CACHE_MAX_BYTES_ENV, "").strip()
            try:
                max_bytes = parse_size(raw) if raw else DEFAULT_MAX_BYTES
            except ValueError:
                raise ConfigError(f"{CACHE_MAX_BYTES_ENV} must be a size like 20GiB, got {raw!r}",
                                  source="env", key=CACHE_MAX_BYTES_ENV) from None
        elif isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ConfigError(f"cache max_bytes must be a non-negative int, got {max_bytes!r}",
                              source="arg", key="max_bytes")
        self.root = Path(root).expanduser() if root is not None else default_cache_dir(env)
        self.max_bytes = max_bytes
        self.verify = verify
        self._objects = self.root / "objects"
        self._tmp = self.root / "tmp"
        self._lock_path = self.root / "lock"
        self._usage_path = self.root / "usage.json"
        try:
            self._objects.mkdir(parents=True, exist_ok=True)
            self._tmp.mkdir(exist_ok=True)
            tag = self.root / "CACHEDIR.TAG"
            if not tag.exists():
                tag.write_text(_CACHEDIR_TAG)
            os.close(os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666))
        except OSError as exc:
            raise CacheError(f"cache directory {str(self.root)!r} is unusable: {exc.strerror or exc}",
                             path=str(self.root)) from None
        self._clean_stale_temps_nowait()

    def __repr__(self) -> str:
        return f"ModelCache(root={str(self.root)!r}, max_bytes={self.max_bytes}, verify={self.verify!r})"

    # -- ObjectCache protocol ---------------------------------------------------------------

    def materialize(self, obj: RemoteObject, dest: Path) -> bool:
        """Place a verified cached copy of *obj* at *dest*; False on a miss.

        A hard link when *dest* is on the cache's filesystem, else a reflink or a copy.
        Never raises for cache trouble (a broken entry is removed and is a miss); disk
        errors writing *dest* propagate.
        """
        key = cache_key(obj)
        if key is None:
            return False
        data = self._data_path(key)
        with self._lock(exclusive=False):
            try:
                fd = os.open(data, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return False
            except OSError as exc:
                log.warning("dfrepo: cache: cannot open entry %s: %s", key[:12], exc.strerror)
                return False
            meta = self._read_meta(key)
        try:
            st = os.fstat(fd)
            problem = self._check(key, obj, fd, st, meta)
            if problem is not None:
                log.warning("dfrepo: cache: entry %s for %s is %s; removed, fetching again",
                            key[:12], redact_inline(obj.source), problem)
                self._remove_if_same(key, st)
                return False
            self._place(fd, st, data, Path(dest))
        finally:
            os.close(fd)
        assert meta is not None
        self._touch(key, meta, st)
        return True

    def store(self, obj: RemoteObject, path: Path) -> None:
        """Remember the freshly downloaded *path* as the content of *obj*.

        Hard-links *path* into the cache (or copies it across filesystems); *path* itself
        stays where it is.  Objects without version evidence, larger than ``max_bytes`` or
        whose file does not have the listed size are skipped.  Cache trouble is logged,
        never raised: a pull must not fail because its cache is full or read-only.
        """
        key = cache_key(obj)
        if key is None or obj.size > self.max_bytes:
            return
        try:
            self._store(key, obj, Path(path))
        except OSError as exc:
            log.warning("dfrepo: cache: could not store %s: %s", redact_inline(obj.source) or obj.rel_path,
                        exc.strerror or exc.__class__.__name__)

    # -- maintenance ------------------------------------------------------------------------

    def entries(self) -> list[CacheEntry]:
        """Every valid entry, most recently used first."""
        with self._lock(exclusive=False):
            scan = self._scan(repair=False)
        return sorted(scan.entries, key=lambda e: e.last_used, reverse=True)

    def usage(self) -> tuple[int, int]:
        """(entries, bytes) currently in the cache (a full scan, always exact)."""
        found = self.entries()
        return len(found), sum(e.size for e in found)

    def prune(self, max_bytes: int | None = None, older_than: float | None = None) -> tuple[int, int]:
        """Remove entries unused for *older_than* seconds, then evict LRU down to *max_bytes*
        (default: this cache's bound).  Also removes leftovers of killed inserts.

        :returns: (entries removed, bytes freed).
        """
        limit = self.max_bytes if max_bytes is None else max_bytes
        if limit < 0:
            raise ConfigError("prune max_bytes must not be negative", source="arg", key="max_bytes")
        with self._lock(exclusive=True):
            scan = self._scan(repair=True)
            removed, freed = scan.removed, scan.freed
            live = scan.entries
            if older_than is not None:
                cutoff = time.time() - older_than
                keep = []
                for e in live:
                    if e.last_used < cutoff:
                        freed += self._remove(e.key)
                        removed += 1
                    else:
                        keep.append(e)
                live = keep
            r, f = self._evict(live, limit)
            return removed + r, freed + f

    def clear(self) -> tuple[int, int]:
        """Remove every entry (and leftover temp files). Returns (entries removed, bytes freed)."""
        with self._lock(exclusive=True):
            scan = self._scan(repair=True)
            freed = sum(self._remove(e.key) for e in scan.entries)
            for sub in self._objects.iterdir():
                with contextlib.suppress(OSError):
                    sub.rmdir()
            self._write_usage(0, 0)
            return len(scan.entries), freed

    # -- internals: paths, locks, sidecars ---------------------------------------------------

    def _data_path(self, key: str) -> Path:
        return self._objects / key[:2] / key

    def _meta_path(self, key: str) -> Path:
        return self._objects / key[:2] / (key + ".json")

    @contextlib.contextmanager
    def _lock(self, *, exclusive: bool, blocking: bool = True) -> Iterator[bool]:
        # A new open file description per acquisition, so threads of one process exclude
        # each other exactly like separate processes do.
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
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

    def _read_meta(self, key: str) -> dict[str, Any] | None:
        try:
            with open(self._meta_path(key), "rb") as fh:
                meta = json.loads(fh.read())
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("key") != key or not isinstance(meta.get("size"), int):
            return None
        return meta

    def _write_json(self, target: Path, doc: Mapping[str, Any]) -> None:
        tmp = self._tmp / f"{target.name}.{secrets.token_hex(6)}.json-part"
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(doc, fh, separators=(",", ":"))
            os.replace(tmp, target)
        except BaseException:
            _unlink(tmp)
            raise

    def _read_usage(self) -> tuple[int, int] | None:
        try:
            doc = json.loads(self._usage_path.read_bytes())
            count, size = int(doc["count"]), int(doc["bytes"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return (count, size) if count >= 0 and size >= 0 else None

    def _write_usage(self, count: int, size: int) -> None:
        self._write_json(self._usage_path, {"count": max(count, 0), "bytes": max(size, 0)})

    def _adjust_usage(self, count: int, size: int) -> None:
        """Under the exclusive lock: add to the running totals (no-op when unknown)."""
        current = self._read_usage()
        if current is not None:
            self._write_usage(current[0] + count, current[1] + size)

    # -- internals: reading ------------------------------------------------------------------

    def _check(self, key: str, obj: RemoteObject, fd: int, st: os.stat_result,
               meta: dict[str, Any] | None) -> str | None:
        """Why the entry open on *fd* cannot serve *obj*, or None when it can."""
        if meta is None:
            return "missing its metadata"
        if not stat.S_ISREG(st.st_mode):
            return "not a regular file"
        if st.st_size != obj.size or meta.get("size") != obj.size:
            return f"truncated or resized ({st.st_size} bytes, expected {obj.size})"
        if meta.get("version") != normalize_etag(obj.version):
            return "for another version"
        if self.verify == "full":
            expected = (obj.md5 or meta.get("md5") or "").lower()
            if expected and md5_of_fd(fd, st.st_size) != expected:
                return "corrupt (MD5 mismatch)"
        return None

    def _place(self, fd: int, st: os.stat_result, data: Path, dest: Path) -> None:
        """Hard-link the entry (or reflink/copy from *fd*) to *dest* via a temp name."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".{dest.name[:80]}.{secrets.token_hex(4)}.dfrepo-cache"
        try:
            try:
                os.link(data, tmp)
                lst = os.lstat(tmp)
                if (lst.st_ino, lst.st_dev) == (st.st_ino, st.st_dev):
                    os.replace(tmp, dest)
                    return
                os.unlink(tmp)  # the entry was replaced since we opened it: copy ours
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EACCES,
                                     errno.ENOENT, errno.EOPNOTSUPP):
                    raise
                _unlink(tmp)
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                _copy_fd(fd, out, st.st_size)
            finally:
                os.close(out)
            os.replace(tmp, dest)
        except BaseException:
            _unlink(tmp)
            raise

    def _touch(self, key: str, meta: dict[str, Any], st: os.stat_result) -> None:
        """Record a hit (LRU); skipped if the entry vanished or changed meanwhile."""
        try:
            with self._lock(exclusive=False):
                now_st = os.stat(self._data_path(key))
                if (now_st.st_ino, now_st.st_dev) != (st.st_ino, st.st_dev):
                    return
                self._write_json(self._meta_path(key), {**meta, "last_used": time.time()})
        except OSError as exc:
            log.debug("dfrepo: cache: could not record a hit on %s: %s", key[:12], exc)

    # -- internals: writing ------------------------------------------------------------------

    def _store(self, key: str, obj: RemoteObject, path: Path) -> None:
        src_st = os.stat(path)
        if src_st.st_size != obj.size:
            log.warning("dfrepo: cache: %s has %d bytes, listed %d; not cached",
                        obj.rel_path, src_st.st_size, obj.size)
            return
        tmp = self._tmp / f"{key}.{secrets.token_hex(6)}.part"
        hold = -1
        try:
            # Temp files are created (and flock-ed by us) under the shared lock, so the
            # exclusive-lock cleaner never mistakes one for a leftover of a killed insert.
            with self._lock(exclusive=False):
                if self._valid_entry(key, obj):
                    return
                linked = False
                try:
                    os.link(path, tmp)
                    linked = True
                    hold = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EACCES, errno.EOPNOTSUPP):
                        raise
                    hold = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                fcntl.flock(hold, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not linked:
                with open(path, "rb") as src:
                    _copy_fd(src.fileno(), hold, obj.size)
                os.fsync(hold)
            hold_st = os.fstat(hold)
            if hold_st.st_size != obj.size:
                log.warning("dfrepo: cache: %s changed while it was cached; not cached", obj.rel_path)
                return
            md5 = (obj.md5 or "").lower() or None
            if md5 is None and self.verify == "full":
                md5 = md5_of_fd(hold, obj.size)
            if hold_st.st_nlink <= 2:
                # Ours alone (the download and this link): make it read-only. A file with more
                # names is dfdaemon's content file, hard-linked over gRPC: the same inode is
                # kept (no duplicate bytes) and its mode is the daemon's business.
                os.fchmod(hold, stat.S_IMODE(hold_st.st_mode) & ~0o222)
            now = time.time()
            meta = {
                "v": 1, "key": key, "size": obj.size,
                "source": redact_inline(obj.source or _identity(obj)),
                "version": normalize_etag(obj.version), "md5": md5,
                "created": now, "last_used": now,
            }
            with self._lock(exclusive=True):
                if self._valid_entry(key, obj):
                    return  # another process inserted it first: its entry is as good as ours
                stale = _unlink(self._data_path(key))
                _unlink(self._meta_path(key))
                if stale:
                    self._adjust_usage(-1, -stale)
                self._data_path(key).parent.mkdir(exist_ok=True)
                # Count first: a kill between these steps over-counts, which only makes the
                # next insert rescan (and fix) the totals; it never lets the cache outgrow.
                self._adjust_usage(1, obj.size)
                os.replace(tmp, self._data_path(key))
                self._write_json(self._meta_path(key), meta)
                self._evict_if_needed()
        finally:
            if hold >= 0:
                os.close(hold)
            _unlink(tmp)

    def _valid_entry(self, key: str, obj: RemoteObject) -> bool:
        meta = self._read_meta(key)
        if meta is None or meta.get("size") != obj.size:
            return False
        try:
            return os.stat(self._data_path(key)).st_size == obj.size
        except OSError:
            return False

    def _remove(self, key: str) -> int:
        freed = _unlink(self._data_path(key))
        _unlink(self._meta_path(key))
        return freed

    def _remove_if_same(self, key: str, st: os.stat_result) -> None:
        """Remove a corrupt entry unless it was replaced since we judged it."""
        try:
            with self._lock(exclusive=True):
                try:
                    now_st = os.stat(self._data_path(key))
                except FileNotFoundError:
                    _unlink(self._meta_path(key))
                    return
                if (now_st.st_ino, now_st.st_dev) != (st.st_ino, st.st_dev):
                    return
                freed = self._remove(key)
                self._adjust_usage(-1, -freed)
        except OSError as exc:
            log.warning("dfrepo: cache: cannot remove corrupt entry %s: %s", key[:12], exc.strerror)

    # -- internals: scanning and eviction (exclusive lock held unless repair=False) --------

    def _scan(self, *, repair: bool) -> _Scan:
        """Every valid entry.  With *repair* (exclusive lock held): also remove orphan data
        files, orphan sidecars and temp files whose writer is gone, and rewrite the totals."""
        found: list[CacheEntry] = []
        removed = freed = 0
        try:
            subdirs = sorted(self._objects.iterdir())
        except FileNotFoundError:
            subdirs = []
        for sub in subdirs:
            try:
                names = set(os.listdir(sub))
            except (NotADirectoryError, FileNotFoundError):
                continue
            for name in sorted(names):
                key = name.removesuffix(".json")
                if not _KEY_RE.match(key):
                    continue
                if name.endswith(".json"):
                    if key not in names and repair:
                        _unlink(sub / name)  # sidecar of an entry whose data is gone
                    continue
                meta = self._read_meta(key)
                try:
                    st = os.stat(sub / name)
                except FileNotFoundError:
                    continue
                if meta is None or meta["size"] != st.st_size:
                    if repair:
                        freed += self._remove(key)
                        removed += 1
                    continue
                found.append(CacheEntry(
                    key=key, path=sub / name, size=st.st_size, source=str(meta.get("source") or ""),
                    version=meta.get("version"), md5=meta.get("md5"),
                    created=float(meta.get("created") or 0.0),
                    last_used=float(meta.get("last_used") or meta.get("created") or 0.0)))
        if repair:
            self._clean_stale_temps()
            self._write_usage(len(found), sum(e.size for e in found))
        return _Scan(found, removed, freed)

    def _evict(self, live: list[CacheEntry], limit: int) -> tuple[int, int]:
        """Remove least recently used entries of *live* until they total <= *limit*."""
        total = sum(e.size for e in live)
        removed = freed = 0
        for e in sorted(live, key=lambda e: (e.last_used, e.created)):
            if total <= limit:
                break
            freed += self._remove(e.key)
            total -= e.size
            removed += 1
        self._write_usage(len(live) - removed, total)
        return removed, freed

    def _evict_if_needed(self) -> None:
        usage = self._read_usage()
        if usage is not None and usage[1] <= self.max_bytes:
            return
        scan = self._scan(repair=True)
        removed, freed = self._evict(scan.entries, self.max_bytes)
        if removed:
            log.info("dfrepo: cache: evicted %d entries (%d bytes) to stay under %d bytes",
                     removed, freed, self.max_bytes)

    def _clean_stale_temps(self) -> int:
        """Remove temp files no live writer holds (exclusive lock held). Returns how many."""
        cleaned = 0
        try:
            names = os.listdir(self._tmp)
        except FileNotFoundError:
            return 0
        for name in names:
            path = self._tmp / name
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

    def _clean_stale_temps_nowait(self) -> None:
        try:
            if not any(os.scandir(self._tmp)):
                return
            with self._lock(exclusive=True, blocking=False) as got:
                if got:
                    n = self._clean_stale_temps()
                    if n:
                        log.info("dfrepo: cache: removed %d leftover temp files", n)
        except OSError as exc:
            log.debug("dfrepo: cache: temp cleanup skipped: %s", exc)
