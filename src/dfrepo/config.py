"""Transfer settings: one frozen, validated object handed from the Python layer to the engine."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any, Literal, Mapping

from .errors import ConfigError

MiB = 1024 * 1024

IOMode = Literal["auto", "readinto", "recv", "splice"]

#: Parallel ranges against an origin when ``concurrency`` is not set.
DIRECT_CONCURRENCY = 4
#: Whole files in flight through a Dragonfly peer when ``concurrency`` is not set.
PEER_FILES_IN_FLIGHT = 16


@dataclass(frozen=True)
class TransferConfig:
    """How the engine moves bytes. Validated on construction.

    Memory bound per download: ``concurrency * buffer_size`` (plus urllib3's small
    per-connection buffers); it does not grow with the object size.

    :param concurrency: requests in flight at once (and pooled connections) for one batch;
        None (the default) = :data:`DIRECT_CONCURRENCY` ranges against an origin, and
        :data:`PEER_FILES_IN_FLIGHT` files through a Dragonfly peer in one-GET-per-file mode
        (each request is a whole file whose pieces the daemon fetches in parallel; measured on
        the real dfdaemon, 32 × 16 MiB cold: 4.0 s with 16 in flight vs 8.7 s with 4). A
        number is used as given everywhere.
    :param range_size: bytes per range request. At least 8 MiB by default because
        Dragonfly sends ranges of 4 MiB or less straight to the origin, bypassing P2P.
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
    """

    concurrency: int | None = None
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

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"invalid transfer setting {key}: {why}", source="arg", key=key)

        if self.concurrency is not None and (isinstance(self.concurrency, bool) or not 1 <= self.concurrency <= 256):
            raise bad("concurrency", "must be between 1 and 256")
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

    def workers(self, *, files_through_peer: bool) -> int:
        """Requests in flight: ``concurrency``, or the default for this kind of transfer."""
        if self.concurrency is not None:
            return self.concurrency
        return PEER_FILES_IN_FLIGHT if files_through_peer else DIRECT_CONCURRENCY

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
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if isinstance(current, int):
            return parse_size(value) if key.endswith("_size") else int(value)
        if isinstance(current, float):
            return float(value)
    except ValueError:
        raise ConfigError(f"invalid value for {key}: {value!r}", source="arg", key=key) from None
    return value


_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": MiB, "mb": 1000**2, "mib": MiB,
          "g": 1024**3, "gb": 1000**3, "gib": 1024**3}


def parse_size(text: str) -> int:
    """Parse ``"8MiB"``, ``"64m"``, ``"1048576"`` into bytes."""
    raw = text.strip().lower().replace(" ", "")
    number = raw.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = raw[len(number):]
    if not number or unit not in _UNITS:
        raise ValueError(f"not a size: {text!r}")
    return int(float(number) * _UNITS[unit])
