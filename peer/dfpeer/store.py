"""Per-task piece storage with single-flight piece claims.

Layout under ``<data_dir>/tasks/<task_id>/``:

* ``data``: one sparse file of ``content_length`` bytes; pieces are written at
  their offsets with ``pwrite`` and served with ``os.sendfile``.
* ``pieces``: one byte per piece, ``1`` once the piece is complete.
* ``meta.json``: content length, piece length and the origin response headers
  captured by the first stat (replayed on every response, never revalidated).

Tasks survive a restart of the peer (metadata is reloaded), like dfdaemon's
cache until GC.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

__all__ = ["Claim", "Task", "TaskStore"]

log = logging.getLogger("dfpeer.store")


class Claim(Enum):
    """Outcome of :meth:`Task.claim`."""

    DONE = "done"  #: the piece is already stored
    DOWNLOAD = "download"  #: the caller is now the only downloader of the piece


@dataclass(eq=False)
class Task:
    """One cached object: metadata, sparse data file and piece bitmap."""

    task_id: str
    directory: Path
    content_length: int
    piece_length: int
    headers: list[tuple[str, str]]
    url: str  # redacted (no query): for stats only
    fd: int = -1
    bitmap_fd: int = -1
    done: bytearray = field(default_factory=bytearray)
    inflight: set[int] = field(default_factory=set)
    failed: bool = False
    cond: threading.Condition = field(default_factory=threading.Condition)

    @property
    def piece_count(self) -> int:
        """Number of pieces (0 for an empty object)."""
        if self.content_length == 0:
            return 0
        return (self.content_length + self.piece_length - 1) // self.piece_length

    def piece_span(self, number: int) -> tuple[int, int]:
        """``(offset, length)`` of piece *number*."""
        offset = number * self.piece_length
        return offset, min(self.piece_length, self.content_length - offset)

    def pieces_for(self, start: int, end: int) -> range:
        """Piece numbers covering the inclusive byte range ``start..end``."""
        return range(start // self.piece_length, end // self.piece_length + 1)

    @property
    def pieces_done(self) -> int:
        """Number of complete pieces."""
        return self.done.count(1)

    @property
    def finished(self) -> bool:
        """True when every piece is stored."""
        return self.pieces_done == self.piece_count

    def is_done(self, number: int) -> bool:
        """True when piece *number* is stored (no lock: a bytearray read is atomic)."""
        return self.done[number] == 1

    def claim(self, number: int, *, cancelled: threading.Event | None = None) -> Claim | None:
        """Become the downloader of piece *number*, or wait until it is stored.

        Exactly one concurrent caller gets :attr:`Claim.DOWNLOAD`; the others
        wait.  If that downloader fails, a waiter claims the piece in turn.
        Returns None if *cancelled* is set while waiting.
        """
        with self.cond:
            while True:
                if self.done[number]:
                    return Claim.DONE
                if number not in self.inflight:
                    self.inflight.add(number)
                    return Claim.DOWNLOAD
                if cancelled is not None and cancelled.is_set():
                    return None
                self.cond.wait(0.5)

    def complete(self, number: int) -> None:
        """Mark a claimed piece stored (persisted in the bitmap) and wake waiters."""
        os.pwrite(self.bitmap_fd, b"\x01", number)
        with self.cond:
            self.done[number] = 1
            self.inflight.discard(number)
            self.cond.notify_all()

    def abandon(self, number: int) -> None:
        """Give up a claimed piece after a failed download; the task is re-statted next time."""
        with self.cond:
            self.inflight.discard(number)
            self.failed = True
            self.cond.notify_all()

    def wake(self) -> None:
        """Wake every thread waiting on this task (used on request failure/cancel)."""
        with self.cond:
            self.cond.notify_all()

    def snapshot(self) -> dict[str, object]:
        """JSON-ready summary for the stats API."""
        return {
            "url": self.url,
            "content_length": self.content_length,
            "piece_length": self.piece_length,
            "piece_count": self.piece_count,
            "pieces_done": self.pieces_done,
            "finished": self.finished,
            "failed": self.failed,
        }


def _open_files(task: Task) -> None:
    task.directory.mkdir(parents=True, exist_ok=True)
    task.fd = os.open(task.directory / "data", os.O_RDWR | os.O_CREAT, 0o644)
    if os.fstat(task.fd).st_size != task.content_length:
        os.ftruncate(task.fd, task.content_length)
    task.bitmap_fd = os.open(task.directory / "pieces", os.O_RDWR | os.O_CREAT, 0o644)
    existing = os.pread(task.bitmap_fd, task.piece_count, 0)
    task.done = bytearray(task.piece_count)
    task.done[: len(existing)] = existing
    if os.fstat(task.bitmap_fd).st_size != task.piece_count:
        os.ftruncate(task.bitmap_fd, task.piece_count)
    # Close the descriptors only when no request holds the task any more, so a
    # concurrent sendfile never sees a recycled fd after clear().
    weakref.finalize(task, _close_quietly, task.fd, task.bitmap_fd)


def _close_quietly(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class TaskStore:
    """All tasks of one peer, keyed by task ID, persisted under ``data_dir``."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.root = Path(data_dir) / "tasks"
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._tasks: dict[str, Task] = {}
        self._creating: dict[str, threading.Lock] = {}
        self._load()

    def _load(self) -> None:
        for directory in sorted(self.root.iterdir()):
            meta_path = directory / "meta.json"
            try:
                meta = json.loads(meta_path.read_text())
                task = Task(
                    task_id=directory.name,
                    directory=directory,
                    content_length=int(meta["content_length"]),
                    piece_length=int(meta["piece_length"]),
                    headers=[(str(k), str(v)) for k, v in meta["headers"]],
                    url=str(meta.get("url", "")),
                )
                _open_files(task)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("dropping unreadable task %s: %s", directory.name, exc)
                shutil.rmtree(directory, ignore_errors=True)
                continue
            self._tasks[task.task_id] = task

    def get(self, task_id: str) -> Task | None:
        """The task if it is stored, else None."""
        return self._tasks.get(task_id)

    def creation_lock(self, task_id: str) -> threading.Lock:
        """Lock that serializes the stat + create of one task (single-flight stat)."""
        with self._lock:
            lock = self._creating.get(task_id)
            if lock is None:
                lock = self._creating[task_id] = threading.Lock()
            return lock

    def create(
        self,
        task_id: str,
        *,
        content_length: int,
        piece_length: int,
        headers: list[tuple[str, str]],
        url: str,
    ) -> Task:
        """Create (or replace) a task.  Stored pieces are kept if the geometry is unchanged."""
        with self._lock:
            old = self._tasks.get(task_id)
            directory = self.root / task_id
            if old is not None and (old.content_length, old.piece_length) == (content_length, piece_length):
                # A failed task re-statted with the same geometry keeps its pieces.
                task = old
                task.headers, task.url, task.failed = headers, url, False
            else:
                if old is not None:
                    self._tasks.pop(task_id, None)
                    shutil.rmtree(directory, ignore_errors=True)
                task = Task(
                    task_id=task_id,
                    directory=directory,
                    content_length=content_length,
                    piece_length=piece_length,
                    headers=headers,
                    url=url,
                )
                _open_files(task)
            meta = {"content_length": content_length, "piece_length": piece_length, "headers": headers, "url": url}
            tmp = directory / "meta.json.tmp"
            tmp.write_text(json.dumps(meta))
            os.replace(tmp, directory / "meta.json")
            self._tasks[task_id] = task
            return task

    def clear(self) -> int:
        """Drop every task (memory and disk); return how many were dropped."""
        with self._lock:
            tasks = list(self._tasks.values())
            self._tasks.clear()
            for task in tasks:
                shutil.rmtree(task.directory, ignore_errors=True)
                task.wake()
            return len(tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(list(self._tasks.values()))

    def __len__(self) -> int:
        return len(self._tasks)
