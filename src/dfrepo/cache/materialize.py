"""Put a cached file's bytes at a destination: a hard link when the file systems allow,
else a reflink, ``copy_file_range`` or a plain copy."""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
from pathlib import Path

from .directory import remove_file

__all__ = ["LINK_REFUSED", "copy_fd", "place"]

_FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
_CHUNK = 8 * 1024 * 1024
#: errnos of a hard link the file systems refuse (cross-device, no links, too many ...):
#: the caller copies instead.
LINK_REFUSED = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EACCES, errno.EOPNOTSUPP})


def copy_fd(src: int, dst: int, size: int) -> str:
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


def place(fd: int, st: os.stat_result, data: Path, dest: Path) -> None:
    """Hard-link the entry *data* (or reflink/copy it from *fd*, open on it with stat *st*)
    to *dest* via a temp name in *dest*'s directory."""
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
            if exc.errno not in LINK_REFUSED | {errno.ENOENT}:
                raise
            remove_file(tmp)
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            copy_fd(fd, out, st.st_size)
        finally:
            os.close(out)
        os.replace(tmp, dest)
    except BaseException:
        remove_file(tmp)
        raise
