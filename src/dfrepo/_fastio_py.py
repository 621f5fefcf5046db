"""Pure-Python twin of :mod:`dfrepo._fastio`: same contract (``_fastio.pyi``), same errors.

It reads through the body's ``readinto`` into the caller's reused buffer (no per-chunk
allocation; the wait in ``recv_into`` releases the GIL) and writes with ``os.pwrite``
(which also releases the GIL). It has no raw-socket or splice path: the engine never
gives it a socket (``Body.sock_fd`` is -1).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .engine.body import Body, Cursor, WritableBuffer, WriteLock
from .errors import IncompleteDownloadError

IMPLEMENTATION = "python"

MODES = ("auto", "readinto", "recv", "splice")


def _write_all(fd: int, data: memoryview, offset: int, lock: WriteLock | None) -> None:
    if lock is not None:
        with lock:
            _write_all(fd, data, offset, None)
        return
    while data:
        written = os.pwrite(fd, data, offset)  # EINTR is retried by Python (PEP 475)
        data = data[written:]
        offset += written


def copy_body(
    body: Body,
    fd: int,
    offset: int,
    length: int,
    buf: WritableBuffer,
    cursor: Cursor,
    progress: Callable[[int], object] | None = None,
    mode: str = "auto",
    url: str | None = None,
    byte_range: tuple[int, int] | None = None,
    lock: WriteLock | None = None,
) -> int:
    """Copy *length* body bytes of *body* into *fd* at *offset*.

    See :func:`dfrepo._fastio.copy_body`; *mode* is accepted for signature parity and
    validated, but this twin always reads through ``body.readinto``.
    """
    if mode not in MODES:
        raise ValueError(f"unknown io mode {mode!r}")
    done = len(body.buffered)  # bytes already read past the headers come first
    if done:
        _write_all(fd, memoryview(body.buffered), offset, lock)
        cursor.written = done
        if progress is not None:
            progress(done)
    readinto = body.readinto
    view = memoryview(buf)
    bufsize = len(buf)
    while length < 0 or done < length:
        want = bufsize if length < 0 else min(length - done, bufsize)
        got = readinto(view[:want])
        if not got:
            if length < 0:
                break
            raise IncompleteDownloadError(
                f"connection closed after {done} of {length} bytes",
                expected=length,
                received=done,
                url=url,
                byte_range=byte_range,
            )
        _write_all(fd, view[:got], offset + done, lock)
        done += got
        cursor.written = done
        if progress is not None:
            progress(got)
    return done
