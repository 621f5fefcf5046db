"""The byte mover takes the file's write lock around every write — and only there: reading
the socket is never serialized, and the lock is released whatever the write does."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from dfrepo.engine.body import Body, Cursor, new_buffer
from dfrepo.engine.picker import get_copy_body
from implementations import IMPLS

MODES = ["splice", "recv", "readinto"]


class CountingLock:
    """A lock that counts its acquires and releases (the twin ignores *mode* and reads
    through ``readinto``: the same writes, the same lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.acquired = 0
        self.released = 0

    def acquire(self) -> bool:
        self._lock.acquire()
        self.acquired += 1
        return True

    def release(self) -> None:
        self.released += 1
        self._lock.release()

    def __enter__(self) -> CountingLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def locked(self) -> bool:
        return self._lock.locked()


def _body(sock: socket.socket, mode: str, buffered: bytes = b"") -> Body:
    reader = sock.makefile("rb", buffering=0)
    return Body(-1 if mode == "readinto" else sock.fileno(), 5.0, buffered, reader.readinto)  # type: ignore[arg-type]


def _send_later(sock: socket.socket, data: bytes) -> threading.Thread:
    t = threading.Thread(target=lambda: (sock.sendall(data), sock.close()), daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", MODES)
def test_every_write_is_made_under_the_lock(impl: str, mode: str, tmp_path: Path) -> None:
    copy, _ = get_copy_body(impl)
    data = os.urandom(3 * 65536 + 123)
    rx, tx = socket.socketpair()
    fd = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT, 0o600)
    lock = CountingLock()
    try:
        sender = _send_later(tx, data[100:])
        done = copy(_body(rx, mode), fd, 100, len(data) - 100, new_buffer(65536), Cursor(), None, mode,
                    None, None, lock)
        os.pwrite(fd, data[:100], 0)
        sender.join(5)
    finally:
        os.close(fd)
        rx.close()
    assert done == len(data) - 100
    assert (tmp_path / "out").read_bytes() == data
    assert lock.acquired == lock.released >= 1
    assert not lock.locked()


@pytest.mark.parametrize("impl", IMPLS)
def test_buffered_bytes_are_written_under_the_lock(impl: str, tmp_path: Path) -> None:
    copy, _ = get_copy_body(impl)
    rx, tx = socket.socketpair()
    fd = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT, 0o600)
    lock = CountingLock()
    try:
        tx.sendall(b"world")
        tx.close()
        done = copy(_body(rx, "recv", b"hello "), fd, 0, 11, new_buffer(4096), Cursor(), None, "recv",
                    None, None, lock)
    finally:
        os.close(fd)
        rx.close()
    assert done == 11 and (tmp_path / "out").read_bytes() == b"hello world"
    assert lock.acquired == lock.released == 2


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", MODES)
def test_a_failed_write_releases_the_lock(impl: str, mode: str, tmp_path: Path) -> None:
    copy, _ = get_copy_body(impl)
    (tmp_path / "ro").write_bytes(b"")
    rx, tx = socket.socketpair()
    fd = os.open(tmp_path / "ro", os.O_RDONLY)  # pwrite: EBADF
    lock = threading.Lock()
    try:
        sender = _send_later(tx, b"x" * 10000)
        with pytest.raises(OSError):
            copy(_body(rx, mode), fd, 0, 10000, new_buffer(4096), Cursor(), None, mode, None, None, lock)
        sender.join(5)
    finally:
        os.close(fd)
        rx.close()
    assert not lock.locked()


@pytest.mark.parametrize("impl", IMPLS)
def test_a_socket_read_waits_without_the_lock(impl: str, tmp_path: Path) -> None:
    """While one request waits for its body, another may write the same file: the lock is
    held for the writes only (here: held by the test while the body is still in flight)."""
    copy, _ = get_copy_body(impl)
    mode = "recv" if impl == "cython" else "readinto"
    rx, tx = socket.socketpair()
    fd = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT, 0o600)
    lock = threading.Lock()
    result: list[int] = []
    try:
        worker = threading.Thread(target=lambda: result.append(
            copy(_body(rx, mode), fd, 0, 8, new_buffer(4096), Cursor(), None, mode, None, None, lock)))
        with lock:  # another writer holds the file; the mover is blocked on the socket, not on us
            worker.start()
            worker.join(0.2)
            assert worker.is_alive() and not result
            tx.sendall(b"12345678")
            tx.close()
        worker.join(5)
    finally:
        os.close(fd)
        rx.close()
    assert result == [8] and (tmp_path / "out").read_bytes() == b"12345678"
