"""The work queue of one batch and the worker threads that drain it.

Tasks are spans of files (or a probe of a file whose size is unknown); running tasks may
add more (a probe queues the rest of its file). At most ``limit.limit`` tasks run at
once; threads are started on demand up to that limit, so a batch that never needs 32
connections never starts 32 threads (nor touches 32 buffers). The first error cancels
everything still queued (fail fast).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterable

from .concurrency import AdaptiveLimit
from .jobs import FileJob, ProgressCallback
from .plan import Span

Task = tuple[FileJob, "Span | None"]
"""One unit of work: a planned span of a file, or None = probe the file (size unknown)."""


class Scheduler:
    """Runs ``run(task)`` for every task on up to ``limit.limit`` threads."""

    def __init__(self, tasks: Iterable[Task], limit: AdaptiveLimit, run: Callable[[Task], None],
                 *, name: str = "dfrepo") -> None:
        self._tasks: collections.deque[Task] = collections.deque(tasks)
        self.limit = limit
        self._run = run
        self._name = name
        self._cond = threading.Condition()
        self._active = 0
        self._threads: list[threading.Thread] = []
        self.error: BaseException | None = None

    @property
    def threads_started(self) -> int:
        return len(self._threads)

    def run_all(self) -> None:
        """Run until every task finished or one failed; returns when all threads ended."""
        with self._cond:
            self._spawn_locked()
        while True:
            with self._cond:
                pending = [t for t in self._threads if t.is_alive()]
            if not pending:
                return
            for t in pending:
                t.join()

    def _spawn_locked(self) -> None:
        want = min(self.limit.limit, self._active + len(self._tasks))
        alive = sum(1 for t in self._threads if t.is_alive())
        for _ in range(max(0, want - alive)):
            t = threading.Thread(target=self._loop, name=f"{self._name}-{len(self._threads)}", daemon=True)
            self._threads.append(t)
            t.start()

    def _loop(self) -> None:
        while (task := self._next()) is not None:
            try:
                self._run(task)
            finally:
                self._done()

    def _next(self) -> Task | None:
        with self._cond:
            while True:
                if self.error is not None:
                    return None
                if self._tasks and self._active < self.limit.limit:
                    self._active += 1
                    return self._tasks.popleft()
                if not self._tasks and self._active == 0:
                    self._cond.notify_all()
                    return None
                self._cond.wait()

    def _done(self) -> None:
        with self._cond:
            self._active -= 1
            # The thread that finished takes the next task itself (it goes on to _next), so
            # waking the others is only needed when the batch is over: waking every idle
            # thread after every task would cost a thundering herd per 1 MiB file.
            if not self._tasks and self._active == 0:
                self._cond.notify_all()

    def push(self, job: FileJob, tasks: list[Task]) -> None:
        """Queue more tasks of *job* (counted in its ``pending``)."""
        with self._cond:
            job.pending += len(tasks)
            self._tasks.extend(tasks)
            self._spawn_locked()
            self._cond.notify_all()

    def finished_one(self, job: FileJob) -> int:
        """One task of *job* ended; returns how many of its tasks are still pending."""
        with self._cond:
            job.pending -= 1
            return job.pending

    def record(self, nbytes: int) -> None:
        """Bytes arrived: feed the adaptive limit and start threads if it grew."""
        before = self.limit.limit
        # Measured only while work is queued and no more requests run than the limit
        # allows: after a shrink, the requests above it first finish their ranges.
        self.limit.record(nbytes, saturated=bool(self._tasks) and self._active <= before)
        if self.limit.limit != before:
            with self._cond:
                self._spawn_locked()
                self._cond.notify_all()

    def throttled(self) -> None:
        self.limit.throttled()

    def fail(self, exc: BaseException) -> None:
        with self._cond:
            if self.error is None:
                self.error = exc
            self._tasks.clear()
            self._cond.notify_all()


class BatchProgress:
    """Bytes done and total of one batch, reported to the caller's callback."""

    def __init__(self, progress: ProgressCallback | None, total: int) -> None:
        self._progress = progress
        self._lock = threading.Lock()
        self.done = 0
        self.total = total

    def add_total(self, n: int) -> None:
        with self._lock:
            self.total += n

    def advance(self, n: int) -> None:
        if self._progress is None:
            return
        with self._lock:
            self.done += n
            done, total = self.done, self.total
        self._progress(done, total)
