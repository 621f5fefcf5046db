"""Transfer settings: one frozen, validated object the edges build and the engine reads."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from ..errors import ConfigError
from ..values import parse_bool, parse_size

MiB = 1024 * 1024

IOMode = Literal["auto", "readinto", "recv", "splice"]

#: Requests in flight when a batch starts and ``concurrency`` is not set; the adaptive
#: limit (:mod:`dfrepo.engine.concurrency`) grows it from there while throughput rises.
INITIAL_CONCURRENCY = 8
#: The same for whole files through a Dragonfly peer (one GET per file, the daemon fetches
#: the pieces in parallel). Measured on the real dfdaemon, 32 × 16 MiB cold: 4.0 s with
#: 16 in flight vs 8.7 s with 4 — and a cold peer answers only after its first piece, too
#: late for the limit to learn from within a small model.
PEER_FILES_IN_FLIGHT = 16


@dataclass(frozen=True)
class TransferConfig:
    """How the engine moves bytes. Validated on construction.

    Memory bound per batch: ``max_concurrency * buffer_size`` (plus a small head
    buffer per connection); it does not grow with the object size.

    :param concurrency: a fixed number of requests in flight (and pooled connections) for
        one batch. None (the default) = adaptive: start at :data:`INITIAL_CONCURRENCY` and
        add connections while the batch's aggregate throughput keeps rising, back off on
        throttling (503/429/SlowDown) and falling throughput, never above
        ``max_concurrency`` (the rule and its constants: :mod:`dfrepo.engine.concurrency`).
    :param max_concurrency: the adaptive limit's ceiling.
    :param range_size: the largest range request against an origin. A large object is cut
        into at least two ranges per connection the limit may open (never below 8 MiB), so
        every connection has work. Through a Dragonfly peer ranges are whole pieces and more
        than 4 MiB (the daemon sends ranges of 4 MiB or less straight to the origin).
    :param buffer_size: the reused read buffer per worker.
    :param connect_timeout: seconds to open a TCP connection.
    :param read_timeout: seconds a socket read may wait. Generous: a cold Dragonfly
        peer sends headers only after the first piece (up to 64 MiB) arrived.
    :param max_attempts: attempts per range (and for the probe) on retryable errors.
    :param backoff_base: first retry delay in seconds; doubles each attempt (with jitter).
    :param backoff_max: cap on one retry delay, and on an honoured ``Retry-After``.
    :param fsync: fsync the file (and its directory) before it becomes visible.
    :param verify_tls: verify https certificates (never off by default).
    :param ca_bundle: path of a CA bundle for https origins (or a MITM-ing proxy).
    :param io_mode: how the compiled core reads sockets: ``recv`` straight from the
        socket fd into the reused buffer, ``splice`` socket->pipe->file with no user
        copy, ``readinto`` through http.client, ``auto`` picks the measured best.
    :param verify_checksum: check MD5 when the store listed one.
    :param preallocate: reserve the whole file up front (early ENOSPC, less fragmentation).
    :param check_space: before a batch, check that the destination file systems have room
        for every file of known size plus a reserve (:mod:`dfrepo.engine.commit`).
    """

    concurrency: int | None = None
    max_concurrency: int = 32
    range_size: int = 32 * MiB
    buffer_size: int = 1 * MiB
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    max_attempts: int = 5
    backoff_base: float = 0.2
    backoff_max: float = 10.0
    fsync: bool = True
    verify_tls: bool = True
    ca_bundle: str | None = None
    io_mode: IOMode = "auto"
    verify_checksum: bool = True
    preallocate: bool = True
    check_space: bool = True

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"invalid transfer setting {key}: {why}", source="arg", key=key)

        if self.concurrency is not None and (isinstance(self.concurrency, bool) or not 1 <= self.concurrency <= 256):
            raise bad("concurrency", "must be between 1 and 256")
        if isinstance(self.max_concurrency, bool) or not 1 <= self.max_concurrency <= 256:
            raise bad("max_concurrency", "must be between 1 and 256")
        if self.range_size < 64 * 1024:
            raise bad("range_size", "must be at least 64 KiB")
        if not 4096 <= self.buffer_size <= 64 * MiB:
            raise bad("buffer_size", "must be between 4 KiB and 64 MiB")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise bad("timeout", "timeouts must be positive")
        if self.max_attempts < 1:
            raise bad("max_attempts", "must be at least 1")
        if self.backoff_base < 0 or self.backoff_max < 0:
            raise bad("backoff", "must not be negative")
        if self.io_mode not in ("auto", "readinto", "recv", "splice"):
            raise bad("io_mode", "must be auto, readinto, recv or splice")
        if self.ca_bundle is not None and not os.path.isfile(self.ca_bundle):
            raise bad("ca_bundle", "file does not exist")

    @property
    def adaptive(self) -> bool:
        """True when the number of requests in flight is chosen while the batch runs."""
        return self.concurrency is None

    @property
    def max_workers(self) -> int:
        """Requests in flight at most (pool size, threads): the fixed or the adaptive ceiling."""
        return self.concurrency if self.concurrency is not None else self.max_concurrency

    def initial_workers(self, *, files_through_peer: bool = False) -> int:
        """Requests in flight when a batch starts (*files_through_peer*: one GET per file
        through a Dragonfly peer)."""
        if self.concurrency is not None:
            return self.concurrency
        return min(PEER_FILES_IN_FLIGHT if files_through_peer else INITIAL_CONCURRENCY, self.max_concurrency)

    def with_overrides(self, overrides: Mapping[str, Any]) -> TransferConfig:
        """Return a copy with *overrides* applied (strings are converted to the field type)."""
        known = {f.name: f for f in fields(self)}
        converted: dict[str, Any] = {}
        for key, value in overrides.items():
            if key not in known:
                raise ConfigError(f"unknown transfer setting {key!r}", source="arg", key=key)
            current = getattr(self, key)
            converted[key] = _convert(key, value, current)
        return replace(self, **converted)


def _convert(key: str, value: Any, current: Any) -> Any:
    if key == "concurrency" and isinstance(value, str):  # a number, or "auto" (the default rule)
        if value.strip().lower() in ("", "auto"):
            return None
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"invalid value for {key}: {value!r}", source="arg", key=key) from None
    if not isinstance(value, str) or isinstance(current, str) or current is None:
        return value
    try:
        if isinstance(current, bool):
            return parse_bool(value)
        if isinstance(current, int):
            return parse_size(value) if key.endswith("_size") else int(value)
        if isinstance(current, float):
            return float(value)
    except ValueError:
        raise ConfigError(f"invalid value for {key}: {value!r}", source="arg", key=key) from None
    return value

