"""How many requests a batch keeps in flight: a fixed number, or an adaptive limit.

Object stores and Dragonfly seed peers serve each connection at a bounded rate (S3 and
GCS give roughly 50–100 MB/s per connection), so the connections needed to fill a link
depend on the link and the origin, not on the file. The adaptive rule measures the
batch's aggregate throughput — bytes of every file, not per file — and:

* **starts** at :data:`~dfrepo.engine.settings.INITIAL_CONCURRENCY` requests;
* **doubles** after every measured window in which throughput rose by at least
  :data:`GAIN` over the level before (slow start). A step that gains less is looked at
  for a second window (the first may fall in the new connections' ramp-up, or in CPU time
  the host stole) and refused on the better of the two;
* leaving slow start, **tries fewer**: half the level before the refused step, kept on two
  windows that each do :data:`KEEP` of the best seen at the higher levels, then halves
  again while that holds — so a link that one connection fills (loopback, a CPU-bound
  node, a local Dragonfly hit) is served by one, not by 16 that cost CPU (on huge-page
  tmpfs one connection does 2–3 GiB/s at 0.3–0.5 CPU-s/GiB, 16 do 1.4 at 0.7) and the
  origin's connection slots. The first halving that loses goes back at once (one window
  is enough to undo a loss): to the last level that kept the throughput, or, for the
  first halving, to whichever of the two levels of the refused step measured better
  (the fewer requests when within :data:`TIE`). Then it **holds**;
* while holding, **probes** one step up (:data:`PROBE_STEP` of the level) every
  :data:`REPROBE_SECONDS`, judged like a doubling — so a link that frees up is found —
  and tries fewer again after :data:`SHRINK_BACKOFF` seconds, doubling the wait after
  every try that lost;
* **backs off** to half on a throttling answer (503, 429, S3 ``SlowDown``) and waits
  :data:`THROTTLE_COOLDOWN` before growing again; to three quarters when two windows in
  a row fall under :data:`DROP` of the best seen at the level (congestion);
* never exceeds ``max_concurrency`` — with ``buffer_size`` that bounds memory
  independent of the object size.

Errors are not symmetric, and the rule is built around that: holding a few requests too
many costs some CPU, holding too few costs throughput for as long as the hold lasts. On a
2-core box shared with the origin, windows at one level vary by ±20 %, so a single window
never moves the limit down for long: a step is refused on the better of two windows,
fewer requests are kept on two, a failed try goes back at once to a level that measured
well, and a back-off on falling throughput takes two low windows in a row.

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
threshold, and comparing every halving with the best of the higher levels (not with the
halving before), stop small losses from adding up over several halvings. The link
benchmark's many-file model (1000 × 1 MiB in 2–4 s on this box) chose the second looks:
with every verdict on one window, a third of its rounds ended at 8 requests or fewer
(back to the level before a step that one low window refused) and took 40 % longer than
the rounds that kept 16–32.
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
#: Two levels whose best windows are this close (a factor) count as equal: the fewer
#: requests win.
TIE = 1.02
#: A lower level is kept while its throughput is at least this fraction of the best seen
#: at the higher levels.
KEEP = 0.90
#: Seconds holding a level before trying fewer requests again; doubles after every try
#: that lost throughput, back to this after one that kept it.
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
        self._fallback = self.limit  # while shrinking: the level to go back to if it loses
        self._no_shrink_until = 0.0
        self._shrink_backoff = SHRINK_BACKOFF
        # A verdict's first window, held until a second one confirms it: a step without gain,
        # a halving that kept the throughput, a window under DROP.
        self._first_look: float | None = None
        self._seen: dict[int, float] = {}  # best window per level since conditions last changed

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
            self._no_shrink_until = now + self._shrink_backoff
            if self.limit > 1:
                self._set(now, max(1, self.limit // 2), "throttled", 0.0)
            self._phase = "hold"
            self._best = 0.0
            self._seen = {}

    # -- the rule -------------------------------------------------------------------------

    def _decide(self, now: float, rate: float) -> None:
        self._seen[self.limit] = max(self._seen.get(self.limit, 0.0), rate)
        if self._phase == "shrink":
            self._judge_shrink(now, rate)
        elif self._phase in ("grow", "probe"):
            self._judge_step(now, rate)
        else:
            self._hold(now, rate)

    def _judge_step(self, now: float, rate: float) -> None:
        """A doubling (slow start) or a probe from hold: keep it while it pays."""
        if self._prev_rate and rate < self._prev_rate * GAIN:
            if self._first_look is None:
                # One window can fall in the new connections' ramp-up or in a stolen slice
                # of CPU: a step is refused on the better of two.
                self._first_look = rate
                return
            rate = max(rate, self._first_look)
            if rate < self._prev_rate * GAIN:
                # The extra requests did not pay for themselves: the link is full below
                # them. Hold at whichever of the two levels measured better — leaving slow
                # start, first try whether half the level before does as well.
                back = self._better_level(self._prev_level, self.limit)
                if self._phase == "grow" and self._prev_level > 1 and now >= self._no_shrink_until:
                    ref = max(self._seen.get(self._prev_level, 0.0), rate)
                    self._try_fewer(now, self._prev_level // 2, back, ref, rate)
                else:
                    self._enter_hold(now, back, "no gain", rate)
                return
        self._best = max(self._best, rate)
        step = self.limit if self._phase == "grow" else max(1, int(self.limit * PROBE_STEP))
        if now >= self._no_growth_until and self.limit < self.maximum:
            self._prev_level, self._prev_rate = self.limit, rate
            self._set(now, min(self.maximum, self.limit + step), "throughput rose", rate)
        else:
            self._enter_hold(now, self.limit, "", rate)

    def _hold(self, now: float, rate: float) -> None:
        if self._best and rate < self._best * DROP and self.limit > 1:
            if self._first_look is None:  # one low window is noise; two in a row, congestion
                self._first_look = rate
                return
            self._set(now, max(1, self.limit * 3 // 4), "throughput fell", rate)
            self._best = 0.0
            self._seen = {}
            return
        self._first_look = None
        self._best = max(self._best, rate)
        if now >= self._no_shrink_until and self.limit > 1:
            # Would fewer requests do the same work? Judged against this level's best.
            self._try_fewer(now, self.limit // 2, self.limit, self._best, rate)
        elif (now - self._level_since >= REPROBE_SECONDS and now >= self._no_growth_until
                and self.limit < self.maximum):
            self._phase = "probe"
            self._prev_level, self._prev_rate = self.limit, self._best
            self._seen = {self.limit: self._best}  # what other levels gave may have changed since
            self._set(now, min(self.maximum, self.limit + max(1, int(self.limit * PROBE_STEP))), "probe", rate)

    def _try_fewer(self, now: float, level: int, fallback: int, ref: float, rate: float) -> None:
        """Shrink to *level*; kept while it does :data:`KEEP` of *ref*, else back to *fallback*."""
        self._phase, self._ref_rate, self._fallback = "shrink", ref, fallback
        self._set(now, level, "shrink", rate)

    def _judge_shrink(self, now: float, rate: float) -> None:
        if rate >= self._ref_rate * KEEP:
            if self._first_look is None:  # fewer requests are kept on two windows, not one
                self._first_look = rate
                return
            self._shrink_backoff = SHRINK_BACKOFF  # fewer requests do the same work
            if self.limit > 1:
                self._fallback = self.limit
                self._set(now, self.limit // 2, "shrink", rate)
                return
            self._enter_hold(now, 1, "", rate)
            return
        # Too few: back to the last level that kept the throughput, and hold.
        self._shrink_backoff *= 2
        self._enter_hold(now, self._fallback, "shrink lost throughput", rate)

    def _enter_hold(self, now: float, level: int, why: str, rate: float) -> None:
        """Hold at *level*. Leaving slow start or a try of fewer requests, the next try
        waits the current backoff (a probe that gained nothing does not postpone it)."""
        if self._phase != "probe":
            self._no_shrink_until = now + self._shrink_backoff
        self._phase = "hold"
        self._best = self._seen.get(level, rate)
        self._set(now, level, why, rate)

    def _better_level(self, fewer: int, more: int) -> int:
        """*more* if its best window beat *fewer*'s by more than :data:`TIE`, else *fewer*."""
        return more if self._seen.get(more, 0.0) > self._seen.get(fewer, 0.0) * TIE else fewer

    def _set(self, now: float, new: int, why: str, rate: float) -> None:
        if new != self.limit:
            assert why, "a change of the limit always has a reason"
            self.decisions.append(Decision(now, self.limit, new, why, rate))
            self.limit = new
            self._settle_until = now + SETTLE_SECONDS
        self._level_since = now
        self._window_start = None
        self._first_look = None
