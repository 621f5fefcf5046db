"""How many requests a batch keeps in flight: a fixed number, or an adaptive limit.

Object stores and Dragonfly seed peers serve each connection at a bounded rate (S3 and
GCS give roughly 50–100 MB/s per connection), so the connections needed to fill a link
depend on the link and the origin, not on the file. The adaptive rule measures the
batch's aggregate throughput — bytes of every file, not per file — and:

* **starts** at :data:`~dfrepo.engine.settings.INITIAL_CONCURRENCY` requests;
* **doubles** after every measured window in which throughput rose by at least
  :data:`GAIN` over the level before (slow start); when a doubling gains less, the link is
  full below it, so it **shrinks**: it halves the level before and keeps halving while the
  throughput stays at :data:`KEEP` of the best seen at the higher levels — so a link that
  one connection fills (loopback, a CPU-bound node, a local Dragonfly hit) is served by
  one, not by 16 that cost CPU, memory and the origin's connection slots for nothing. The
  first halving that loses more goes back to the last good level and **holds**; after such
  a failed shrink the next one waits :data:`SHRINK_BACKOFF` seconds, doubling each time;
* while holding, **probes** one step up (:data:`PROBE_STEP` of the level) every
  :data:`REPROBE_SECONDS`, kept only if it gains :data:`GAIN` again — so a link that frees
  up is found;
* **backs off** to half on a throttling answer (503, 429, S3 ``SlowDown``) and waits
  :data:`THROTTLE_COOLDOWN` before growing again; to three quarters when a window's
  throughput falls under :data:`DROP` of the best seen at the level (congestion);
* never exceeds ``max_concurrency`` — with ``buffer_size`` that bounds memory
  independent of the object size.

A window lasts :data:`WINDOW_SECONDS`, or ends early once it has seen
:data:`WINDOW_BYTES` (a fast link is measured as precisely in less time). It only counts
while the batch has more work queued than requests in flight and no more requests are in
flight than the limit (the tail of a batch says nothing about the link, and after a shrink
the requests above the new limit first finish their ranges); the first
:data:`SETTLE_SECONDS` after the first bytes and after every change are not measured (new
connections open and ramp up).
The constants were chosen on this project's benchmarks (``benchmarks/test_bench_link.py``
and ``test_bench_raw.py``, results in ``benchmarks/results``): from 8 requests a doubling
every 0.3 s reaches 32 within a second — short against a multi-GB model, and still long
enough that one window holds dozens of 1 MiB chunks; a 10 % gain threshold and a 90 % keep
threshold ignore the few-percent noise of a 2-core loopback box, and keeping a level only
against the best of the higher levels (not the last one) stops small losses from adding
up over several halvings.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: Seconds per throughput measurement.
WINDOW_SECONDS = 0.2
#: A window ends early after this many bytes (but not before :data:`MIN_WINDOW_SECONDS`).
WINDOW_BYTES = 128 * 1024 * 1024
#: The shortest window.
MIN_WINDOW_SECONDS = 0.05
#: Seconds not measured after a change, while new connections open and ramp up.
SETTLE_SECONDS = 0.1
#: A higher level must raise throughput by this factor to be kept.
GAIN = 1.10
#: A lower level is kept while its throughput is at least this fraction of the best seen
#: at the higher levels.
KEEP = 0.90
#: Seconds before shrinking again after a shrink lost throughput (doubles every time).
SHRINK_BACKOFF = 4.0
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
        self._phase = "grow"  # grow (slow start) | probe (one step from hold) | shrink | hold
        self._prev_level = self.limit
        self._prev_rate = 0.0  # throughput measured at _prev_level
        self._best = 0.0  # best throughput at the current level
        self._settle_until: float | None = None  # no measurement before this (None: nothing arrived yet)
        self._window_start: float | None = None
        self._window_bytes = 0
        self._level_since = self.clock()
        self._no_growth_until = 0.0
        self._ref_rate = 0.0  # while shrinking: the best throughput of the higher levels
        self._no_shrink_until = 0.0
        self._shrink_backoff = SHRINK_BACKOFF

    # -- inputs ---------------------------------------------------------------------------

    def record(self, nbytes: int, *, saturated: bool) -> None:
        """*nbytes* arrived; *saturated* = more work is queued than requests in flight."""
        if not self.adaptive:
            return
        with self._lock:
            now = self.clock()
            if self._settle_until is None:  # the first bytes: the connections are still opening
                self._settle_until = now + SETTLE_SECONDS
            if not saturated or now < self._settle_until:
                self._window_start = None  # the tail of a batch, or connections ramping up
                return
            if self._window_start is None:
                self._window_start, self._window_bytes = now, 0
                return
            self._window_bytes += nbytes
            elapsed = now - self._window_start
            if elapsed < WINDOW_SECONDS and (elapsed < MIN_WINDOW_SECONDS or self._window_bytes < WINDOW_BYTES):
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
        if self._phase == "shrink":
            self._judge_shrink(now, rate)
            return
        if self._phase in ("grow", "probe"):
            if self._prev_rate and rate < self._prev_rate * GAIN:
                # The extra requests did not pay for themselves: the link is full below them.
                self._after_no_gain(now, rate)
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

    def _after_no_gain(self, now: float, rate: float) -> None:
        """A higher level gained less than :data:`GAIN`: shrink below the level before it
        when allowed, else return to it and hold."""
        level, ref = self._prev_level, max(self._prev_rate, rate)
        if level > 1 and now >= self._no_shrink_until:
            self._phase = "shrink"
            self._ref_rate = ref
            self._set(now, level // 2, "shrink", rate)
            return
        self._phase = "hold"
        self._set(now, level, "no gain", rate)
        self._best = ref

    def _judge_shrink(self, now: float, rate: float) -> None:
        if rate >= self._ref_rate * KEEP:
            self._shrink_backoff = SHRINK_BACKOFF  # fewer requests do the same work
            if self.limit > 1:
                self._prev_level = self.limit
                self._set(now, self.limit // 2, "shrink", rate)
                return
            self._phase, self._best = "hold", rate
            self._level_since = now
            return
        # Too few: back to the last level that kept the throughput, and hold.
        self._no_shrink_until = now + self._shrink_backoff
        self._shrink_backoff *= 2
        self._phase, self._best = "hold", self._ref_rate
        self._set(now, self._prev_level, "shrink lost throughput", rate)

    def _set(self, now: float, new: int, why: str, rate: float) -> None:
        if new != self.limit:
            self.decisions.append(Decision(now, self.limit, new, why, rate))
            self.limit = new
            self._settle_until = now + SETTLE_SECONDS
        self._level_since = now
        self._window_start = None
