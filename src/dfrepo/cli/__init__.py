"""The ``dfrepo`` command line (also ``python -m dfrepo``).

Commands::

    dfrepo pull LOCATION DEST      a model directory (s3://, gs://, as://, local) or one
                                   http(s):// object, through the Dragonfly peer
    dfrepo ls LOCATION             list a model directory (rel_path, size, version)
    dfrepo task-id URL             the task ID the Dragonfly peer gives a GET of URL
    dfrepo install-agent           install the Triton repository agent library
    dfrepo cache ls|du|prune|clear inspect and trim the persistent cache

Exit codes (by the class of the error; :func:`~dfrepo.cli.output.exit_code_for`):

    0  success
    1  any other error (cache, repository agent, internal)
    2  usage error, bad setting or config file (ConfigError), bad location (LocationError)
    3  credentials missing or rejected (CredentialsError)
    4  model or object not found, store listing failed (ObjectNotFoundError, StoreError)
    5  download failed (TransferError: HTTPStatusError, RetriesExhaustedError, ...)
    6  the Dragonfly proxy is unreachable and direct fallback is off (ProxyUnavailableError)
    7  local disk error (OSError: ENOSPC, EACCES, EROFS ...)
    130 interrupted

Modules: :mod:`.arguments` (the parser), :mod:`.pull_commands` (``pull``, ``ls``: the
CLI's edge into :mod:`dfrepo.settings`), :mod:`.cache_commands`, :mod:`.tool_commands`
(``task-id``, ``install-agent``), :mod:`.output` (exit codes, scrubbing, JSON),
:mod:`.main`.

Errors are one line on stderr (``dfrepo: error: ...``), never with a traceback, a URL
query string or a credential.  ``--json`` prints exactly one JSON object on stdout: the
result, or ``{"error": {...}}`` on failure.
"""

from __future__ import annotations

from .arguments import build_parser
from .main import main
from .output import EXIT_CODES, exit_code_for, scrub
from .pull_commands import summary_line

__all__ = ["EXIT_CODES", "build_parser", "exit_code_for", "main", "scrub", "summary_line"]
