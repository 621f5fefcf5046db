"""Persistent, content-addressed object cache shared by every pull on a host.

Triton deletes its own copy of a model on every unload and restart
(``triton-repoagent.md`` §2.3); :class:`ModelCache` keeps the bytes, so a reloaded model
or a restarted server whose objects did not change is materialised by a hard link (or a
reflink / copy across filesystems) instead of being downloaded again.

**Identity** (:mod:`.keys`).  An entry's key is ``sha256`` over the object's identity
*without any URL signature*: ``(source, version, size, md5)`` (:func:`cache_key`).  The
version is the store's evidence (S3/Azure ETag, GCS generation); an object overwritten in
the store has a new version, hence a new key, and is fetched again - a cache never serves
stale bytes.  Objects without version evidence are never cached (stale could not be told
from fresh).

**Layout** under the root (:mod:`.directory`)::

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

**Reads are verified** (:mod:`.model_cache`): the size always; with ``verify="full"`` also
the MD5 (the store's, or one computed at insert).  A corrupt or truncated entry is removed
and is a miss.  A hit is placed at its destination by :mod:`.materialize`.

**Eviction** is LRU by ``last_used`` (updated on every hit) down to ``max_bytes`` after each
insert.  Evicting an entry that is hard-linked into a loaded model is harmless: the link
keeps the data alive.  Cached files are made read-only (this changes the mode of the hard-
linked copies too) so an in-place write in a model directory cannot corrupt the cache.

An unusable root (read-only, a foreign or missing ``$HOME``, a random UID) does not fail
a pull: :func:`open_cache` (what the settings, the Triton agent and ``dfrepo pull`` use)
warns once with a :class:`~dfrepo.errors.DfrepoWarning` and the pull goes on without the
cache.  A root the caller names for one pull (``ModelCache(root)``, ``dfrepo pull
--cache-dir``) is not second-guessed: unusable, it raises :class:`~dfrepo.errors.CacheError`.  The
``lock`` file is created 0o644 and only ever opened read-only (see
:data:`.directory.LOCK_MODE`); every file descriptor the cache opens is close-on-exec.

Settings: root ``DFREPO_CACHE_DIR``, else ``$XDG_CACHE_HOME/dfrepo``, else
``~/.cache/dfrepo``; size bound ``DFREPO_CACHE_MAX_BYTES`` (``"20GiB"``, ``"500M"``, bytes)
or the ``max_bytes`` argument, default :data:`DEFAULT_MAX_BYTES` (20 GiB).
"""

from __future__ import annotations

from .directory import CacheEntry
from .keys import cache_key
from .model_cache import (
    CACHE_DIR_ENV,
    CACHE_MAX_BYTES_ENV,
    DEFAULT_MAX_BYTES,
    ModelCache,
    default_cache_dir,
    open_cache,
)

__all__ = [
    "CACHE_DIR_ENV",
    "CACHE_MAX_BYTES_ENV",
    "DEFAULT_MAX_BYTES",
    "CacheEntry",
    "ModelCache",
    "cache_key",
    "default_cache_dir",
    "open_cache",
]
