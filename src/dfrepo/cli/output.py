"""What the CLI prints: exit codes, one-line errors, JSON results, never a secret.

Exit codes (by the class of the error; :func:`exit_code_for`) are listed in
:data:`EXIT_CODES` and in :mod:`dfrepo.cli`'s docstring.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from ..errors import (
    ConfigError,
    CredentialsError,
    DfrepoError,
    ProxyUnavailableError,
    StoreError,
    TransferError,
)
from ..redact import redact_urls

__all__ = [
    "EPILOG",
    "EXIT_CODES",
    "EXIT_OK",
    "EXIT_USAGE",
    "Out",
    "describe_error",
    "error_doc",
    "exit_code_for",
    "scrub",
    "scrub_json",
]

EXIT_OK = 0
EXIT_OTHER = 1
EXIT_USAGE = 2
EXIT_CREDENTIALS = 3
EXIT_STORE = 4
EXIT_TRANSFER = 5
EXIT_PROXY = 6
EXIT_DISK = 7
EXIT_INTERRUPTED = 130

#: (code, meaning) for ``--help`` and the docs.
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "success"),
    (EXIT_OTHER, "any other error (cache, repository agent, internal)"),
    (EXIT_USAGE, "usage error, bad setting/config file, bad location"),
    (EXIT_CREDENTIALS, "credentials missing or rejected"),
    (EXIT_STORE, "model/object not found or store listing failed"),
    (EXIT_TRANSFER, "download failed (HTTP status, retries exhausted, checksum ...)"),
    (EXIT_PROXY, "Dragonfly proxy unreachable and fallback disabled"),
    (EXIT_DISK, "local disk error (no space, permission, read-only ...)"),
    (EXIT_INTERRUPTED, "interrupted"),
)
EPILOG = "exit codes:\n" + "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES)


#: The first matching class decides the exit code (subclasses before their bases).
_EXIT_BY_ERROR: tuple[tuple[type[BaseException], int], ...] = (
    (KeyboardInterrupt, EXIT_INTERRUPTED),
    (ProxyUnavailableError, EXIT_PROXY),
    (TransferError, EXIT_TRANSFER),
    (CredentialsError, EXIT_CREDENTIALS),
    (StoreError, EXIT_STORE),
    (ConfigError, EXIT_USAGE),
    (OSError, EXIT_DISK),
)


def exit_code_for(exc: BaseException) -> int:
    """The process exit code for an error (see :mod:`dfrepo.cli`)."""
    return next((code for cls, code in _EXIT_BY_ERROR if isinstance(exc, cls)), EXIT_OTHER)


# --------------------------------------------------------------------------- secret hygiene

_SECRET_PARAM_RE = re.compile(
    r"(?i)\b((?:x-amz|x-goog)-[a-z\-]*(?:signature|credential|security-token)|signature|sig|token"
    r"|access_?token|secret[a-z_]*|password|passwd)=[^&\s'\"]+")


def scrub(text: str) -> str:
    """*text* with every URL's userinfo and query redacted and ``sig=...`` values masked."""
    text = redact_urls(text)
    return _SECRET_PARAM_RE.sub(lambda m: f"{m.group(1)}=<redacted>", text)


def scrub_json(value: Any) -> Any:
    """*value* (a JSON-able document) with :func:`scrub` applied to every string."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {str(k): scrub_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_json(v) for v in value]
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    return scrub(str(value))


def describe_error(exc: BaseException) -> str:
    """The one line the CLI prints for *exc* (scrubbed)."""
    if isinstance(exc, DfrepoError):
        return scrub(str(exc))
    if isinstance(exc, OSError):
        what = exc.strerror or exc.__class__.__name__
        where = f": {exc.filename}" if exc.filename else ""
        return scrub(f"{what}{where}")
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    message = str(exc)
    return scrub(f"internal error ({exc.__class__.__name__})" + (f": {message}" if message else ""))


def error_doc(exc: BaseException, code: int) -> dict[str, Any]:
    """``{"error": {...}}``: what ``--json`` prints on failure."""
    doc: dict[str, Any] = {"type": exc.__class__.__name__, "message": describe_error(exc), "exit_code": code}
    if isinstance(exc, DfrepoError):
        for key, value in getattr(exc, "_attrs", {}).items():
            if value is not None and key not in doc:
                doc[key] = scrub_json(value)
    elif isinstance(exc, OSError) and exc.errno is not None:
        doc["errno"] = exc.errno
    return {"error": doc}


class Out:
    """Where a command writes: stdout for results, stderr for messages."""

    def __init__(self, *, json_mode: bool, quiet: bool) -> None:
        self.json_mode = json_mode
        self.quiet = quiet

    @property
    def stdout(self) -> TextIO:
        return sys.stdout

    @property
    def stderr(self) -> TextIO:
        return sys.stderr

    def result(self, doc: Mapping[str, Any]) -> None:
        print(json.dumps(scrub_json(doc), sort_keys=True), file=self.stdout)

    def line(self, text: str) -> None:
        print(scrub(text), file=self.stdout)
