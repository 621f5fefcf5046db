""":class:`ModelCache`: the cache a pull uses (settings, verified hits, inserts, maintenance).

See :mod:`dfrepo.cache` for the identity, layout and eviction rules it follows.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..engine.fs import md5_of_fd
from ..errors import CacheError, ConfigError, DfrepoWarning, first_time
from ..objects import RemoteObject
from ..redact import redact_inline
from ..values import normalize_etag, parse_size
from .directory import CacheDir, CacheEntry, remove_file
from .keys import cache_key, identity
from .materialize import LINK_REFUSED, copy_fd, place

__all__ = ["CACHE_DIR_ENV", "CACHE_MAX_BYTES_ENV", "DEFAULT_MAX_BYTES", "ModelCache", "default_cache_dir",
           "open_cache"]

log = logging.getLogger("dfrepo")

CACHE_DIR_ENV = "DFREPO_CACHE_DIR"
CACHE_MAX_BYTES_ENV = "DFREPO_CACHE_MAX_BYTES"
#: Default size bound: 20 GiB.  Big enough for a handful of typical Triton models, small
#: enough not to surprise anyone; set ``DFREPO_CACHE_MAX_BYTES`` for large LLM weights.
DEFAULT_MAX_BYTES = 20 * 1024**3


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


def open_cache(root: str | os.PathLike[str] | None = None, *,
               env: Mapping[str, str] | None = None) -> ModelCache | None:
    """A :class:`ModelCache`, or None when its directory is unusable (read-only, a foreign
    or missing ``$HOME``, a random UID as on OpenShift, an unwritable ``DFREPO_CACHE_DIR``).

    A pull goes on without the cache then: the first time per directory (per process) a
    :class:`~dfrepo.errors.DfrepoWarning` is issued and the reason logged.  Configuration
    errors (a bad ``DFREPO_CACHE_MAX_BYTES``) still raise :class:`~dfrepo.errors.ConfigError`.
    """
    try:
        return ModelCache(root, env=env)
    except CacheError as exc:
        where = str(getattr(exc, "path", None) or root or CACHE_DIR_ENV)
        if first_time(f"cache-unusable:{where}"):
            msg = f"{exc}; continuing without the cache (set {CACHE_DIR_ENV} to a writable directory)"
            log.warning("dfrepo: cache: %s", msg)
            warnings.warn(msg, DfrepoWarning, stacklevel=2)
        return None


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
        try:
            self.root = Path(root).expanduser() if root is not None else default_cache_dir(env)
        except (RuntimeError, KeyError, OSError) as exc:  # no $HOME and no passwd entry
            raise CacheError(f"no cache directory: cannot determine the home directory ({exc}); "
                             f"set {CACHE_DIR_ENV}", path=None) from None
        self.max_bytes = max_bytes
        self.verify = verify
        self._dir = CacheDir(self.root)
        try:
            self._dir.create()
        except OSError as exc:
            raise CacheError(f"cache directory {str(self.root)!r} is unusable: {exc.strerror or exc}",
                             path=str(self.root)) from None
        self._dir.clean_stale_temps_nowait()

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
        data = self._dir.data_path(key)
        with self._dir.lock(exclusive=False):
            try:
                fd = os.open(data, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return False
            except OSError as exc:
                log.warning("dfrepo: cache: cannot open entry %s: %s", key[:12], exc.strerror)
                return False
            meta = self._dir.read_meta(key)
        try:
            st = os.fstat(fd)
            problem = self._check(obj, fd, st, meta)
            if problem is not None:
                log.warning("dfrepo: cache: entry %s for %s is %s; removed, fetching again",
                            key[:12], redact_inline(obj.source), problem)
                self._dir.remove_if_same(key, st)
                return False
            place(fd, st, data, Path(dest))
        finally:
            os.close(fd)
        assert meta is not None
        self._dir.touch(key, meta, st)
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
        with self._dir.lock(exclusive=False):
            scan = self._dir.scan(repair=False)
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
        with self._dir.lock(exclusive=True):
            scan = self._dir.scan(repair=True)
            removed, freed = scan.removed, scan.freed
            live = scan.entries
            if older_than is not None:
                cutoff = time.time() - older_than
                keep = []
                for e in live:
                    if e.last_used < cutoff:
                        freed += self._dir.remove(e.key)
                        removed += 1
                    else:
                        keep.append(e)
                live = keep
            r, f = self._dir.evict(live, limit)
            return removed + r, freed + f

    def clear(self) -> tuple[int, int]:
        """Remove every entry (and leftover temp files). Returns (entries removed, bytes freed)."""
        with self._dir.lock(exclusive=True):
            return self._dir.clear()

    # -- internals --------------------------------------------------------------------------

    def _check(self, obj: RemoteObject, fd: int, st: os.stat_result, meta: dict[str, Any] | None) -> str | None:
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

    def _store(self, key: str, obj: RemoteObject, path: Path) -> None:
        src_st = os.stat(path)
        if src_st.st_size != obj.size:
            log.warning("dfrepo: cache: %s has %d bytes, listed %d; not cached",
                        obj.rel_path, src_st.st_size, obj.size)
            return
        tmp = self._dir.temp_path(key)
        hold = -1
        try:
            # Temp files are created (and flock-ed by us) under the shared lock, so the
            # exclusive-lock cleaner never mistakes one for a leftover of a killed insert.
            with self._dir.lock(exclusive=False):
                if self._dir.valid_entry(key, obj.size):
                    return
                linked = False
                try:
                    os.link(path, tmp)
                    linked = True
                    hold = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
                except OSError as exc:
                    if exc.errno not in LINK_REFUSED:
                        raise
                    hold = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                fcntl.flock(hold, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not linked:
                with open(path, "rb") as src:
                    copy_fd(src.fileno(), hold, obj.size)
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
                "source": redact_inline(obj.source or identity(obj)),
                "version": normalize_etag(obj.version), "md5": md5,
                "created": now, "last_used": now,
            }
            with self._dir.lock(exclusive=True):
                if self._dir.commit(key, tmp, meta, obj.size):
                    self._dir.evict_if_needed(self.max_bytes)
        finally:
            if hold >= 0:
                os.close(hold)
            remove_file(tmp)
