"""The engine's file-system seam: every call it makes on files and directories.

The byte mover writes with ``pwrite`` into descriptors handed out here; everything else
(create, reserve, truncate, fsync, rename, unlink) goes through :class:`FileSystem`, so a
test can substitute a subclass that fails with ENOSPC or EIO at any step without root or
a full disk — as s3transfer's ``OSUtils`` does.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import tempfile
from pathlib import Path

__all__ = ["FileSystem", "md5_of_fd", "filesystem_type"]

#: Memory file systems: fallocate there zero-fills real pages that pwrite then overwrites.
_NO_PREALLOC = frozenset({"tmpfs", "ramfs", "hugetlbfs"})
_MD5_CHUNK = 4 * 1024 * 1024
#: File mode of downloaded files: private to the user, like ``mkstemp``'s temp files.
FILE_MODE = 0o600


class FileSystem:
    """Plain POSIX calls; subclass to inject faults."""

    def makedirs(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)

    def create_temp(self, dest: Path) -> tuple[int, str]:
        """A new, private temp file beside *dest*: ``(fd, path)``."""
        return tempfile.mkstemp(prefix=f".{dest.name[:80]}.", suffix=".dfrepo-part", dir=dest.parent)

    def create(self, path: Path) -> int:
        """Create *path*, which must not exist (a file inside a private stage directory).

        Read-write, like ``mkstemp``: the MD5 check reads the file back before commit.
        """
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)

    def open_read(self, path: str | Path) -> int:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def allocate(self, fd: int, size: int) -> None:
        """Reserve *size* bytes (early ENOSPC, less fragmentation) where that is cheap."""
        if size <= 0 or filesystem_type(os.fstat(fd).st_dev) in _NO_PREALLOC:
            return
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # the file system cannot: fine
                raise

    def size_of(self, fd: int) -> int:
        return os.fstat(fd).st_size

    def truncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def fsync_dir(self, path: Path) -> None:
        """Make the entries of directory *path* (created, renamed files) durable."""
        try:
            dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:  # Defensive: some file systems refuse opening directories
            return
        try:
            os.fsync(dfd)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EROFS):  # cannot sync a directory there
                raise
        finally:
            os.close(dfd)

    def replace(self, src: str | Path, dst: str | Path) -> None:
        os.replace(src, dst)

    def unlink(self, path: str | Path) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def close(self, fd: int) -> None:
        os.close(fd)

    def md5(self, fd: int, size: int) -> str:
        return md5_of_fd(fd, size)

    def device_of(self, path: Path) -> int:
        """The file system (``st_dev``) *path* — or its nearest existing parent — lives on."""
        for candidate in (path, *path.parents):
            try:
                return os.stat(candidate).st_dev
            except FileNotFoundError:
                continue
        return os.stat("/").st_dev

    def free_bytes(self, path: Path) -> int:
        """Bytes an unprivileged writer may still use on *path*'s file system."""
        for candidate in (path, *path.parents):
            try:
                st = os.statvfs(candidate)
            except FileNotFoundError:
                continue
            return st.f_bavail * st.f_frsize
        return 0


def md5_of_fd(fd: int, size: int) -> str:
    """Hex MD5 of the first *size* bytes of *fd*, read with ``preadv`` into one buffer."""
    h = hashlib.md5(usedforsecurity=False)
    buf = bytearray(min(_MD5_CHUNK, max(size, 1)))
    view = memoryview(buf)
    pos = 0
    while pos < size:
        n = os.preadv(fd, [view[: min(len(buf), size - pos)]], pos)
        if n <= 0:
            break
        h.update(view[:n])
        pos += n
    return h.hexdigest()


@functools.lru_cache(maxsize=64)
def filesystem_type(st_dev: int) -> str:
    """The file system type of a device number, from /proc/self/mountinfo ("" if unknown).

    Cached per device: a model of 1000 files asks once, not 1000 times (a device number
    names one mounted file system for as long as it is mounted)."""
    want = f"{os.major(st_dev)}:{os.minor(st_dev)}"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                fields_ = line.split()
                if len(fields_) > 3 and fields_[2] == want and " - " in line:
                    return line.split(" - ", 1)[1].split()[0]
    except OSError:  # Defensive: no /proc
        pass
    return ""
