"""Make a downloaded file durable and visible — or make sure nothing of it is.

A file is checked (size; the store's MD5 when listed), fsynced, closed and then published:
renamed over its destination (``rename``), or left where it was written (``in_place``,
inside the caller's private stage). The directories that gained entries are fsynced once
per batch (:func:`sync_directories`), so the renames survive a crash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ..errors import ChecksumMismatchError
from .fs import FileSystem
from .jobs import FileJob


def commit(job: FileJob, *, fsync: bool, verify_checksum: bool) -> int:
    """Check, sync and publish *job*'s file; returns its size.

    :raises ChecksumMismatchError: the bytes do not have the listed MD5 (the file is then
        discarded by the caller, the destination untouched).
    """
    fs = job.fs
    size = job.size or 0
    if job.via_daemon:
        # The daemon's file (maybe its own content file, hard-linked): read, never written.
        job.fd = fs.open_read(job.path or "")
    elif fs.size_of(job.fd) != size:
        fs.truncate(job.fd, size)  # preallocated past the end, or an empty object
    if job.req.md5 and verify_checksum:
        if fs.md5(job.fd, size) != job.req.md5.lower():
            raise ChecksumMismatchError(
                f"MD5 of the downloaded bytes does not match the listing for {job.req.dest.name}",
                url=job.req.url)
    if fsync:
        fs.fsync(job.fd)
    fs.close(job.fd)
    job.fd = -1
    assert job.path is not None
    if job.path != str(job.req.dest):
        fs.replace(job.path, job.req.dest)
    job.path = None  # published: discard() must not remove it any more
    return size


def sync_directories(fs: FileSystem, paths: Iterable[Path]) -> None:
    """fsync each directory that holds one of *paths*, once."""
    for directory in sorted({p.parent for p in paths}):
        fs.fsync_dir(directory)
