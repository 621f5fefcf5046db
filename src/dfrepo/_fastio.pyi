"""The byte mover's contract: :mod:`dfrepo._fastio` (compiled) and :mod:`dfrepo._fastio_py`
(its pure-Python twin) both implement it; :mod:`dfrepo.engine.body` builds its input."""

from collections.abc import Callable

from dfrepo.engine.body import Body, Cursor, WritableBuffer, WriteLock

IMPLEMENTATION: str
MODES: tuple[str, ...]

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
    """Copy *length* body bytes (-1: to the end) into *fd* at *offset*; returns bytes written.

    ``body.buffered`` first, then ``body.sock_fd`` directly (``recv``, or ``splice`` when
    *mode* is ``splice``) when it is >= 0, else ``body.readinto``. ``cursor.written`` is
    advanced after every chunk. *lock* (one per file) is held around every write into
    *fd*, so the writers of one file take turns in user space instead of spinning on its
    inode lock in the kernel. Raises IncompleteDownloadError on a short body,
    ``socket.timeout``/``OSError`` from the socket, ``OSError`` from pwrite.
    """
