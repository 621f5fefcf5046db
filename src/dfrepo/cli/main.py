"""``main``: run one ``dfrepo`` command; errors become one scrubbed line and an exit code."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import TextIO

from .arguments import build_parser
from .output import EXIT_OK, EXIT_USAGE, Out, describe_error, error_doc, exit_code_for, scrub

__all__ = ["main"]


class _ScrubFilter(logging.Filter):
    """Scrubs every record the handler prints and remembers the warnings among them (see
    :func:`_warning_printer`)."""

    def __init__(self) -> None:
        super().__init__()
        self.printed: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub(record.getMessage())
        record.args = None
        if record.levelno >= logging.WARNING:  # what a warning may repeat
            self.printed.append(record.msg)
        return True


def _log_handler(verbosity: int, quiet: bool, scrubber: _ScrubFilter) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(scrubber)
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbosity, 2)]
    handler.setLevel(level)
    return handler


def _warning_printer(logged: list[str]) -> Callable[..., None]:
    """``warnings.showwarning`` for the CLI: one scrubbed line on stderr, none when the same
    message was already printed as a log line (e.g. an unusable cache is logged and warned)."""

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: TextIO | None = None, line: str | None = None) -> None:
        text = scrub(str(message))
        if text and any(text in printed for printed in logged):
            return
        if not text.startswith("dfrepo:"):
            text = f"dfrepo: warning: {text}"
        print(text, file=sys.stderr)

    return show


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dfrepo`` with *argv* (default ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    out = Out(json_mode=bool(getattr(args, "json", False)), quiet=bool(getattr(args, "quiet", False)))
    logger = logging.getLogger("dfrepo")
    scrubber = _ScrubFilter()
    handler = _log_handler(args.verbose, out.quiet, scrubber)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(min(handler.level, logger.getEffectiveLevel()))
    func: Callable[[argparse.Namespace, Out], int] = args.func
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_printer(scrubber.printed)
            return func(args, out)
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_OK
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - every error becomes one line
        code = exit_code_for(exc)
        print(f"dfrepo: error: {describe_error(exc)}", file=sys.stderr)
        if out.json_mode:
            try:
                out.result(error_doc(exc, code))
            except BrokenPipeError:
                _silence_stdout()
        return code
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _silence_stdout() -> None:
    """After EPIPE on stdout (``dfrepo ls | head``), keep the interpreter from complaining."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass
