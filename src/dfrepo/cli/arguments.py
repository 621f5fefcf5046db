"""The ``dfrepo`` argument parser: commands, flags and their value types."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from .._version import __version__
from .cache_commands import cmd_cache
from .output import EPILOG, EXIT_USAGE, scrub
from .pull_commands import cmd_ls, cmd_pull
from .tool_commands import cmd_install_agent, cmd_task_id

__all__ = ["build_parser", "parse_duration", "positive_int", "size_arg"]


def parse_duration(text: str) -> float:
    """``3600``, ``90m``, ``12h``, ``7d``, ``1w`` -> seconds."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([smhdw]?)\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 3600, 90m, 12h, 7d)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]


def size_arg(text: str) -> int:
    """A byte size flag (``20GiB``)."""
    from ..values import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    """An integer flag of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one ``dfrepo: error:`` line plus usage."""

    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        print(f"dfrepo: error: {scrub(message)}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    """The full ``dfrepo`` argument parser."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(prog="dfrepo", description="Pull ML model repositories from object storage into "
                     "NVIDIA Triton through a Dragonfly P2P peer.", epilog=EPILOG, formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"dfrepo {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-v info, -vv debug) on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=EPILOG, formatter_class=fmt)
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress, no summary")
        return p

    p = command("pull", "Pull a model directory (s3://, gs://, as://, local) or one http(s):// object.")
    p.add_argument("location", help="s3://..., gs://..., as://..., a local path, or an http(s):// URL")
    p.add_argument("dest", help="destination directory (new or empty); a file path for an http(s) URL")
    p.add_argument("--proxy", metavar="URL", help="Dragonfly peer proxy, e.g. http://127.0.0.1:4001 "
                   "('direct' = none); default: dragonfly_config.json, $DFREPO_PROXY")
    p.add_argument("--dragonfly-config", metavar="PATH",
                   help="dragonfly_config.json (default: $TRITON_DRAGONFLY_CONFIG_PATH)")
    p.add_argument("--credentials", metavar="PATH",
                   help="cloud_credential.json (default: $TRITON_CLOUD_CREDENTIAL_PATH, env, SDK chain)")
    p.add_argument("--concurrency", type=positive_int, metavar="N", help="parallel range requests")
    p.add_argument("--range-size", metavar="SIZE", help="bytes per range request (e.g. 32MiB)")
    p.add_argument("--no-fallback", action="store_true",
                   help="fail (exit 6) instead of downloading directly when the proxy is unreachable")
    p.add_argument("--no-cache", action="store_true",
                   help="do not use the persistent cache (beats --cache-dir and $DFREPO_CACHE)")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="persistent cache directory, even with DFREPO_CACHE=off (a flag beats the "
                        "environment); unusable = error. Default: $DFREPO_CACHE (on, off or a directory, "
                        "as for the Triton agent); on or unset = $DFREPO_CACHE_DIR, $XDG_CACHE_HOME/dfrepo, "
                        "~/.cache/dfrepo; unusable = a warning, no cache")
    p.add_argument("--expiry", type=positive_int, metavar="SECONDS", help="lifetime of presigned URLs")
    p.add_argument("--tag", help="X-Dragonfly-Tag (the object version is appended)")
    p.add_argument("--transport", choices=("proxy", "grpc", "auto"),
                   help="talk to dfdaemon over its HTTP proxy, its gRPC socket (the daemon writes or "
                        "hard-links the files itself), or gRPC when the socket answers (default: the "
                        "config's transport, else proxy)")
    p.add_argument("--socket", metavar="PATH", help="dfdaemon's gRPC socket "
                   "(default /var/run/dragonfly/dfdaemon.sock)")
    p.set_defaults(func=cmd_pull)

    p = command("ls", "List a model directory: rel_path, size, version.")
    p.add_argument("location")
    p.add_argument("--credentials", metavar="PATH", help="cloud_credential.json")
    p.add_argument("--expiry", type=positive_int, metavar="SECONDS", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_ls)

    p = command("task-id", "Print the task ID the Dragonfly peer gives a GET of URL.")
    p.add_argument("url")
    p.add_argument("--tag", help="X-Dragonfly-Tag")
    p.add_argument("--application", help="X-Dragonfly-Application")
    p.add_argument("--filter", action="append", metavar="PARAM",
                   help="extra query parameter to ignore (repeatable, or comma-separated)")
    p.add_argument("--version", dest="version", metavar="ETAG",
                   help="object version folded into the tag (ETag, generation)")
    p.add_argument("--dragonfly-config", metavar="PATH", help="dragonfly_config.json")
    p.add_argument("--canonicalization", choices=("A", "B"), default="B",
                   help="B: current dfdaemon (default); A: dfdaemon <= 1.5.1")
    p.set_defaults(func=cmd_task_id)

    p = command("install-agent", "Install the Triton repository agent (libtritonrepoagent_<name>.so).")
    p.add_argument("--repoagent-dir", metavar="DIR", help="Triton's --repoagent-directory")
    p.add_argument("--name", help="agent name used in config.pbtxt (default: dragonfly)")
    p.set_defaults(func=cmd_install_agent)

    p = sub.add_parser("cache", help="Inspect and trim the persistent cache.",
                       description="Inspect and trim the persistent cache.", epilog=EPILOG, formatter_class=fmt)
    csub = p.add_subparsers(dest="cache_command", metavar="ACTION", parser_class=_Parser)
    csub.required = True
    for name, help_text in (("ls", "list entries, most recently used first"),
                            ("du", "entries and bytes used"),
                            ("prune", "remove old entries / evict down to a size"),
                            ("clear", "remove every entry")):
        cp = csub.add_parser(name, help=help_text, description=help_text)
        cp.add_argument("--cache-dir", metavar="DIR", help="cache directory (default: $DFREPO_CACHE_DIR ...)")
        cp.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        cp.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
        if name == "prune":
            cp.add_argument("--max-bytes", type=size_arg, metavar="SIZE",
                            help="evict least recently used entries down to SIZE (default: the cache limit)")
            cp.add_argument("--older-than", type=parse_duration, metavar="AGE",
                            help="remove entries unused for AGE (3600, 90m, 12h, 7d)")
        cp.set_defaults(func=cmd_cache)
    return parser
