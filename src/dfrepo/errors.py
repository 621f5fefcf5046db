"""The one exception tree of dfrepo.

Every error dfrepo raises on purpose is a :class:`DfrepoError`.  Disk errors from
``pwrite``/``fsync``/``rename`` stay plain :class:`OSError` (their subclass already
says what happened: ``ENOSPC``, ``EROFS`` ...).

Messages never carry a URL's query string or an auth header: presigned URLs hold
signatures.  Every class that takes a URL runs it through
:func:`~dfrepo.redact.redact_url` first.
"""

from __future__ import annotations

import sys
import threading
import warnings
from typing import Any

from .redact import redact_url

__all__ = [
    "CacheError",
    "ChecksumMismatchError",
    "ConfigError",
    "CredentialsError",
    "DfrepoError",
    "DfrepoWarning",
    "DragonflyConfigMissingError",
    "HTTPStatusError",
    "IncompleteDownloadError",
    "InsufficientSpaceError",
    "LocationError",
    "ObjectNotFoundError",
    "ParameterNotAllowedError",
    "ProxyUnavailableError",
    "RangeNotSupportedError",
    "RepoAgentError",
    "RetriesExhaustedError",
    "SourceChangedError",
    "StoreError",
    "TransferError",
    "UnsafePathError",
    "warn_always",
    "warn_once",
]


class DfrepoError(Exception):
    """Root of every error dfrepo raises on purpose. Never raised bare."""

    def __init__(self, message: str, **attrs: Any) -> None:
        super().__init__(message)
        self.message = message
        for key, value in attrs.items():
            setattr(self, key, value)
        self._attrs = attrs

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), self.message, self._attrs))


def _rebuild(cls: type[DfrepoError], message: str, attrs: dict[str, Any]) -> DfrepoError:
    err = cls.__new__(cls)
    DfrepoError.__init__(err, message, **attrs)
    return err


class ConfigError(DfrepoError, ValueError):
    """A setting, config file or location is malformed.

    ``source`` says where it came from (``arg``, ``env``, a file path), ``key`` which
    setting; neither ever holds a secret value.
    """

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None) -> None:
        super().__init__(message, source=source, key=key)


class DragonflyConfigMissingError(ConfigError):
    """The Triton agent found no ``dragonfly_config.json`` and direct downloads were not
    allowed (``$DFREPO_ALLOW_DIRECT``): a fleet would otherwise hit the bucket without P2P."""


class ParameterNotAllowedError(ConfigError):
    """A model's ``config.pbtxt`` agent parameter sets a key the operator did not allow
    (``$DFREPO_MODEL_PARAMETERS``)."""


class LocationError(ConfigError):
    """A repository location (``s3://``, ``gs://``, ``as://`` ...) cannot be parsed."""


class UnsafePathError(ConfigError):
    """An object key would escape the destination directory (``..``, absolute, NUL ...)."""


class CredentialsError(DfrepoError):
    """Credentials are missing, malformed or rejected. ``provider`` is s3/gs/as."""

    def __init__(self, message: str, *, provider: str | None = None, source: str | None = None) -> None:
        super().__init__(message, provider=provider, source=source)


class StoreError(DfrepoError):
    """Listing or signing against an object store failed."""

    def __init__(self, message: str, *, provider: str | None = None, status: int | None = None) -> None:
        super().__init__(message, provider=provider, status=status)


class ObjectNotFoundError(StoreError):
    """The location holds no object (or an empty directory)."""


class TransferError(DfrepoError):
    """Moving bytes failed. ``url`` is always redacted; ``byte_range`` is (start, end) or None."""

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        byte_range: tuple[int, int] | None = None,
        **attrs: Any,
    ) -> None:
        super().__init__(message, url=redact_url(url) if url else None, byte_range=byte_range, **attrs)


class HTTPStatusError(TransferError):
    """The server answered with a status dfrepo did not expect.

    ``status`` is the HTTP status; ``error_type`` is Dragonfly's ``X-Dragonfly-Error-Type``
    (``backend``, ``proxy``, ``dfdaemon``) when a peer produced the error.
    """

    status: int
    error_type: str | None

    def __init__(
        self,
        message: str,
        *,
        status: int,
        url: str | None = None,
        byte_range: tuple[int, int] | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message, url=url, byte_range=byte_range, status=status, error_type=error_type)

    @property
    def retryable(self) -> bool:
        return self.status in (408, 429) or self.status >= 500 or self.error_type == "dfdaemon"


class RangeNotSupportedError(TransferError):
    """The server ignored a Range request, or its Content-Range does not match."""


class IncompleteDownloadError(TransferError):
    """The body ended before its announced length (``expected``/``received`` bytes)."""

    expected: int
    received: int

    def __init__(
        self,
        message: str,
        *,
        expected: int,
        received: int,
        url: str | None = None,
        byte_range: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(message, url=url, byte_range=byte_range, expected=expected, received=received)


class SourceChangedError(TransferError):
    """The object changed while it was downloaded (ETag/size differ from the probe)."""


class ChecksumMismatchError(TransferError):
    """The downloaded bytes do not match the checksum the store listed."""


class RetriesExhaustedError(TransferError):
    """A retryable failure kept happening; ``attempts`` made, ``__cause__`` is the last error."""

    attempts: int

    def __init__(
        self,
        message: str,
        *,
        attempts: int,
        url: str | None = None,
        byte_range: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(message, url=url, byte_range=byte_range, attempts=attempts)


class ProxyUnavailableError(TransferError):
    """The Dragonfly peer's proxy cannot be reached and direct fallback is off."""


class InsufficientSpaceError(TransferError):
    """The destination's file system has not enough free space for the files to fetch
    (checked before the first byte; nothing was written). Attributes: ``path``,
    ``needed`` and ``available`` (bytes)."""


class CacheError(DfrepoError):
    """The persistent cache is unusable (bad directory, corrupt entry that cannot be removed)."""


class RepoAgentError(DfrepoError):
    """A failure at the Triton repository-agent boundary."""


class DfrepoWarning(UserWarning):
    """Something dfrepo tolerated but the user should know (unknown config keys ...)."""


_warned: set[str] = set()
_warn_lock = threading.Lock()


def first_time(key: str) -> bool:
    """True the first time *key* is seen in this process (thread-safe): for what is said once."""
    with _warn_lock:
        if key in _warned:
            return False
        _warned.add(key)
        return True


def warn_once(key: str, message: str) -> None:
    """Warn (:class:`DfrepoWarning`) the first time *key* is seen in this process."""
    if first_time(key):
        warnings.warn(message, DfrepoWarning, stacklevel=3)


def warn_always(message: str, *, stacklevel: int = 1) -> None:
    """Warn (:class:`DfrepoWarning`) on every call: for what each occurrence must say
    (a bad agent parameter on every LOAD that has it).

    :func:`warnings.warn` would say the same text from the same line only once per process
    (Python's ``default`` action remembers it in the calling module's registry); here each
    call has a registry of its own. The warning filters (``-W``, ``PYTHONWARNINGS``,
    :func:`warnings.simplefilter`) still decide: ``ignore`` silences, ``once`` de-duplicates.

    :param stacklevel: as for :func:`warnings.warn`: 1 = the line calling this function.
    """
    try:
        frame = sys._getframe(stacklevel)
    except ValueError:  # fewer frames than asked for: as warnings.warn does
        filename, lineno, module_globals = "sys", 1, sys.__dict__
    else:
        filename, lineno, module_globals = frame.f_code.co_filename, frame.f_lineno, frame.f_globals
    warnings.warn_explicit(message, DfrepoWarning, filename, lineno,
                           module=str(module_globals.get("__name__", "<string>")),
                           registry={}, module_globals=module_globals)
