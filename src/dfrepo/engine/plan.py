"""How a file is cut into requests: pure functions, no I/O.

Two audiences with different needs:

* **An object store** (direct): ranges so several connections share one large object —
  at least two per connection the batch may open, between :data:`MIN_DIRECT_RANGE` and
  ``range_size`` bytes (8 MiB keeps the per-request cost, one round trip and a few hundred
  header bytes, under 1 % even at 1 Gbit/s per connection) — and no short tail: a tail
  shorter than half a range is merged into the range before it, so a 1-byte last request
  never costs a round trip of its own. A file smaller than a range is one plain GET, so a
  model of 1000 × 1 MiB files costs 1000 requests, not more.
* **A Dragonfly peer** (proxy): the real dfdaemon maps every range onto the whole-file
  task, fetches the pieces that cover it and registers a new peer with the scheduler for
  each request. Two rules follow from its source (``resource/task.rs``, ``piece.rs``):

  - a range of **≤ 4 MiB**, or any request for an object of ≤ 4 MiB, skips the scheduler
    and goes straight to the origin, on every node. So no range we send through a peer is
    ≤ 4 MiB unless the object is that small — such a range is merged into its neighbour —
    and an object of ≤ 4 MiB is fetched with one plain GET;
  - ranges are aligned to the task's piece length (the automatic rule below, or the
    configured ``X-Dragonfly-Piece-Length``) so two ranges never share a piece that both
    would wait for.

  With ``peer_ranges`` off (see :class:`dfrepo.dragonfly.DragonflyConfig`) a file goes
  through the peer as one GET: the daemon already fetches its pieces in parallel, and the
  scheduler sees one peer per file per node instead of one per range.
"""

from __future__ import annotations

from typing import NamedTuple

from ..dragonfly.config import MAX_PIECE_LENGTH, MIN_PIECE_LENGTH
from .settings import MiB

__all__ = [
    "MAX_PIECE_LENGTH",
    "MIN_DIRECT_RANGE",
    "MIN_PIECE_LENGTH",
    "MiB",
    "SMALL_TO_SOURCE",
    "Span",
    "auto_piece_length",
    "plan_spans",
]

#: dfdaemon serves a range (or an object) of at most this many bytes from the origin itself.
SMALL_TO_SOURCE = MIN_PIECE_LENGTH
#: Direct ranges are not cut smaller than this to make work for more connections.
MIN_DIRECT_RANGE = 8 * MiB


class Span(NamedTuple):
    """Bytes ``start..end`` (inclusive) of one file; ``ranged`` False = a plain GET of the
    whole object (``end == size - 1``; an empty object is ``(0, -1, False)``)."""

    start: int
    end: int
    ranged: bool

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def auto_piece_length(content_length: int) -> int:
    """dfdaemon's automatic piece length: ``next_power_of_two(length // 500)`` clamped to
    [4 MiB, 64 MiB] (``dragonfly-client/src/resource/piece.rs``)."""
    wanted = max(content_length // 500, 1)
    power = 1 << (wanted - 1).bit_length()
    return min(max(power, MIN_PIECE_LENGTH), MAX_PIECE_LENGTH)


def plan_spans(
    size: int,
    *,
    range_size: int,
    via_peer: bool = False,
    peer_ranges: bool = True,
    piece_length: int | None = None,
    offset: int = 0,
    connections: int = 1,
) -> list[Span]:
    """The requests that fetch bytes ``offset..size-1`` of a *size*-byte object.

    :param range_size: the wanted bytes per request (rounded up to whole pieces through a peer).
    :param via_peer: the requests go through a Dragonfly peer (the rules above apply).
    :param peer_ranges: through a peer, send ranges (True) or one GET per file (False).
    :param piece_length: the task's fixed piece length; None = dfdaemon's automatic rule.
    :param offset: bytes before it are already on disk (the probe's first range); the
        result then covers only the rest and always uses ranges.
    :param connections: requests the batch may have in flight at most; direct ranges are
        cut so each of them gets work (not below :data:`MIN_DIRECT_RANGE`).
    """
    if size < 0 or not 0 <= offset <= size or range_size < 1:
        raise ValueError(f"bad plan input: size={size} offset={offset} range_size={range_size}")
    if offset == size:
        return [] if size else [Span(0, -1, False)]
    if via_peer:
        if offset == 0 and (size <= SMALL_TO_SOURCE or not peer_ranges):
            return [Span(0, size - 1, False)]
        unit = piece_length or auto_piece_length(size)
        # Whole pieces, at least range_size, and more than 4 MiB (a range of exactly one
        # 4 MiB piece would still go to the origin).
        step = unit * max(-(-range_size // unit), SMALL_TO_SOURCE // unit + 1)
        return _merge_small(_cut(size, step, offset), SMALL_TO_SOURCE)
    step = min(range_size, max(MIN_DIRECT_RANGE, -(-size // (2 * max(connections, 1)))))
    spans = _cut(size, step, offset)
    if len(spans) > 1 and spans[-1].length < step // 2:
        last = spans.pop()
        spans[-1] = Span(spans[-1].start, last.end, True)
    return spans


def _cut(size: int, step: int, offset: int) -> list[Span]:
    """Ranges on the grid of multiples of *step*, starting at *offset*."""
    spans = []
    start = offset
    while start < size:
        end = min((start // step + 1) * step, size) - 1
        spans.append(Span(start, end, True))
        start = end + 1
    return spans


def _merge_small(spans: list[Span], limit: int) -> list[Span]:
    """Merge every span of ≤ *limit* bytes into its neighbour (the one before; the first
    into the one after), so none is left that small unless it is the only one."""
    out: list[Span] = []
    for span in spans:
        if out and (span.length <= limit or out[-1].length <= limit):
            out[-1] = Span(out[-1].start, span.end, True)
        else:
            out.append(span)
    return out
