"""How many requests a batch keeps in flight: a fixed number, or an adaptive limit.

Object stores and Dragonfly seed peers serve each connection at a bounded rate (S3 and
GCS give roughly 50–100 MB/s per connection), so the connections needed to fill a link
depend on the link and the origin, not on the file. The adaptive rule measures the
batch's aggregate throughput — bytes of every file, not per file — and:

* **starts** at :data:`~dfrepo.engine.settings.INITIAL_CONCURRENCY` requests;
* **doubles** after every measured window in which throughput rose by at least
  :data:`GAIN` over the level before (slow start); when a doubling gains less, it returns
  to the level before and **holds** (connections that add nothing are not kept);
* while holding, **probes** one step up (:data:`PROBE_STEP` of the level) every
  :data:`REPROBE_SECONDS`, kept only if it gains :data:`GAIN` again — so a link that frees
  up is found;
* **backs off** to half on a throttling answer (503, 429, S3 ``SlowDown``) and waits
  :data:`THROTTLE_COOLDOWN` before growing again; to three quarters when a window's
  throughput falls under :data:`DROP` of the best seen at the level (congestion);
* never exceeds ``max_concurrency`` — with ``buffer_size`` that bounds memory
  independent of the object size.

A window is :data:`WINDOW_SECONDS` long and only counts while the batch has more work
queued than requests in flight (the tail of a batch says nothing about the link); the
first :data:`SETTLE_SECONDS` after a change are not measured (new connections open and
ramp up). The constants were chosen on this project's rate-limited-origin benchmark
(``benchmarks/test_bench_link.py``, results in ``benchmarks/results``): from 8 requests a
doubling every 0.3 s reaches 32 within a second — short against a multi-GB model, and
still long enough that one window holds dozens of 1 MiB chunks — and a 10 % gain
threshold ignores the few-percent noise of a 2-core loopback box.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: Seconds per throughput measurement.
WINDOW_SECONDS = 0.2
#: Seconds not measured after a change, while new connections open and ramp up.
SETTLE_SECONDS = 0.1
#: A higher level must raise throughput by this factor to be kept.
GAIN = 1.10
#: Throughput under this fraction of the level's best = congestion: back off.
DROP = 0.60
#: Seconds holding a level before probing one step higher.
REPROBE_SECONDS = 2.0
#: A probe from hold adds this fraction of the level (at least one request).
PROBE_STEP = 0.25
#: Seconds without growth after a throttling answer.
THROTTLE_COOLDOWN = 5.0


@dataclass
class Decision:
    """One change of the limit, for logs and tests."""

    at: float
    old: int
    new: int
    why: str
    rate: float = 0.0


@dataclass
class AdaptiveLimit:
    """The number of requests allowed in flight; thread-safe.

    :param initial: requests in flight at the start.
    :param maximum: the ceiling.
    :param adaptive: False = the limit stays at *initial* (``concurrency`` set).
    :param clock: seconds (monotonic); tests pass a fake one.
    """

    initial: int
    maximum: int
    adaptive: bool = True
    clock: Callable[[], float] = time.monotonic
    decisions: list[Decision] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.limit = max(1, min(self.initial, self.maximum))
        self._lock = threading.Lock()
        self._phase = "grow"  # grow (slow start) | probe (one step from hold) | hold
        self._prev_level = self.limit
        self._prev_rate = 0.0  # throughput measured at _prev_level
        self._best = 0.0  # best throughput at the current level
        self._settle_until = 0.0  # no measurement before this (a change was just made)
        self._window_start: float | None = None
        self._window_bytes = 0
        self._level_since = self.clock()
        self._no_growth_until = 0.0

    # -- inputs ---------------------------------------------------------------------------

    def record(self, nbytes: int, *, saturated: bool) -> None:
        """*nbytes* arrived; *saturated* = more work is queued than requests in flight."""
        if not self.adaptive:
            return
        with self._lock:
            now = self.clock()
            if not saturated or now < self._settle_until:
                self._window_start = None  # the tail of a batch, or connections ramping up
                return
            if self._window_start is None:
                self._window_start, self._window_bytes = now, 0
                return
            self._window_bytes += nbytes
            elapsed = now - self._window_start
            if elapsed < WINDOW_SECONDS:
                return
            rate = self._window_bytes / elapsed
            self._window_start, self._window_bytes = now, 0
            self._decide(now, rate)

    def throttled(self) -> None:
        """The server answered 503/429/SlowDown: halve, and do not grow for a while."""
        if not self.adaptive:
            return
        with self._lock:
            now = self.clock()
            self._no_growth_until = now + THROTTLE_COOLDOWN
            if self.limit > 1:
                self._set(now, max(1, self.limit // 2), "throttled", 0.0)
            self._phase = "hold"
            self._best = 0.0

    # -- the rule -------------------------------------------------------------------------

    def _decide(self, now: float, rate: float) -> None:
        if self._phase in ("grow", "probe"):
            if self._prev_rate and rate < self._prev_rate * GAIN:
                # The extra requests did not pay for themselves: back to the level before.
                self._phase = "hold"
                self._set(now, self._prev_level, "no gain", rate)
                self._best = self._prev_rate
                return
            self._best = max(self._best, rate)
            step = self.limit if self._phase == "grow" else max(1, int(self.limit * PROBE_STEP))
            if now >= self._no_growth_until and self.limit < self.maximum:
                self._prev_level, self._prev_rate = self.limit, rate
                self._set(now, min(self.maximum, self.limit + step), "throughput rose", rate)
            else:
                self._phase = "hold"
                self._level_since = now
            return
        # hold
        if self._best and rate < self._best * DROP and self.limit > 1:
            self._set(now, max(1, self.limit * 3 // 4), "throughput fell", rate)
            self._best = 0.0
            return
        self._best = max(self._best, rate)
        if (now - self._level_since >= REPROBE_SECONDS and now >= self._no_growth_until
                and self.limit < self.maximum):
            self._phase = "probe"
            self._prev_level, self._prev_rate = self.limit, rate
            self._set(now, min(self.maximum, self.limit + max(1, int(self.limit * PROBE_STEP))), "probe", rate)

    def _set(self, now: float, new: int, why: str, rate: float) -> None:
        if new != self.limit:
            self.decisions.append(Decision(now, self.limit, new, why, rate))
            self.limit = new
            self._settle_until = now + SETTLE_SECONDS
        self._level_since = now
        self._window_start = None
