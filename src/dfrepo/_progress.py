"""Progress display and human-readable sizes for the CLI (stderr only, TTY only)."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

__all__ = ["Progress", "format_bytes", "format_rate", "make_progress"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def format_bytes(n: float) -> str:
    """``0 B``, ``512 B``, ``1.50 KiB``, ``1.00 GiB`` (binary units)."""
    if n < 1024:
        return f"{int(n)} B"
    value = float(n)
    for unit in _UNITS[1:]:
        value /= 1024
        if value < 1024 or unit == _UNITS[-1]:
            return f"{value:.2f} {unit}"
    raise AssertionError("unreachable")


def format_rate(bytes_per_s: float) -> str:
    """``443 MiB/s``-style throughput (three significant digits)."""
    if bytes_per_s < 1024:
        return f"{bytes_per_s:.0f} B/s"
    value = bytes_per_s
    for unit in _UNITS[1:]:
        value /= 1024
        if value < 1024 or unit == _UNITS[-1]:
            return f"{value:.3g} {unit}/s"
    raise AssertionError("unreachable")


class Progress:
    """A ``progress(done, total)`` callback drawing one self-overwriting stderr line.

    Thread-safe (the engine calls it from worker threads); redraws at most 10 times a
    second.  Uses tqdm when it is installed (the ``progress`` extra) unless *plain*.
    """

    def __init__(self, label: str, stream: TextIO | None = None, *, plain: bool = False) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._drawn = False
        self._bar: Any = None
        self._bar_n = 0
        if not plain:
            try:
                from tqdm import tqdm  # type: ignore[import-untyped, unused-ignore]
            except ImportError:
                pass
            else:
                self._bar = tqdm(total=None, desc=label, unit="B", unit_scale=True, unit_divisor=1024,
                                 file=self.stream, leave=False, dynamic_ncols=True)

    def __call__(self, done: int, total: int) -> None:
        with self._lock:
            if self._bar is not None:
                if total and self._bar.total != total:
                    self._bar.total = total
                    self._bar.refresh()
                self._bar.update(done - self._bar_n)
                self._bar_n = done
                return
            now = time.monotonic()
            if now - self._last_draw < 0.1 and not (total and done >= total):
                return
            self._last_draw = now
            elapsed = max(now - self._started, 1e-9)
            pct = f" {100.0 * done / total:5.1f}%" if total else ""
            of = f" / {format_bytes(total)}" if total else ""
            line = f"\r{self.label}: {format_bytes(done)}{of}{pct}  {format_rate(done / elapsed)}"
            self.stream.write(line + "\x1b[K")
            self.stream.flush()
            self._drawn = True

    def close(self) -> None:
        """Erase the progress line (the caller prints the final summary)."""
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            elif self._drawn:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
                self._drawn = False


def make_progress(label: str, *, quiet: bool, stream: TextIO | None = None) -> Progress | None:
    """A :class:`Progress` when *stream* (default stderr) is a terminal and not *quiet*."""
    stream = stream if stream is not None else sys.stderr
    if quiet:
        return None
    try:
        if not stream.isatty():
            return None
    except (AttributeError, ValueError):
        return None
    return Progress(label, stream)
