"""Make a downloaded file durable and visible — or make sure nothing of it is.

A file is checked (size; the store's MD5 when listed), fsynced, closed and then published:
renamed over its destination (``rename``), or left where it was written (``in_place``,
inside the caller's private stage). The directories that gained entries are fsynced once
per batch (:func:`sync_directories`), so the renames survive a crash.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..errors import ChecksumMismatchError, InsufficientSpaceError
from .fs import FileSystem
from .jobs import DownloadRequest, FileJob

#: Free space kept beyond the files' sizes: a fixed reserve plus a share of the total
#: (file-system metadata, other writers, Triton's own temp files).
SPACE_RESERVE = 64 * 1024 * 1024
SPACE_MARGIN = 0.02


def check_free_space(fs: FileSystem, requests: Iterable[DownloadRequest]) -> None:
    """Refuse a batch whose known sizes do not fit on the destination file systems.

    :raises InsufficientSpaceError: before anything is written, naming the directory and
        the bytes needed and available. Unknown sizes are not counted (they are checked by
        the write itself: ENOSPC).
    """
    need: dict[int, tuple[Path, int]] = {}
    devices: dict[Path, int] = {}  # a model's files share few directories: stat each once
    for req in requests:
        if not req.size:
            continue
        parent = req.dest.parent
        dev = devices.get(parent)
        if dev is None:
            dev = devices[parent] = fs.device_of(parent)
        where, total = need.get(dev, (parent, 0))
        need[dev] = (where, total + req.size)
    for where, total in need.values():
        wanted = total + SPACE_RESERVE + int(total * SPACE_MARGIN)
        free = fs.free_bytes(where)
        if free < wanted:
            raise InsufficientSpaceError(
                f"not enough free space in {where}: the files need {total} bytes (+ a reserve of "
                f"{wanted - total}), {free} are available", path=str(where), needed=wanted, available=free)


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
