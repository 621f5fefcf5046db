"""The ``dfrepo`` command line (also ``python -m dfrepo``).

Commands::

    dfrepo pull LOCATION DEST      a model directory (s3://, gs://, as://, local) or one
                                   http(s):// object, through the Dragonfly peer
    dfrepo ls LOCATION             list a model directory (rel_path, size, version)
    dfrepo task-id URL             the task ID the Dragonfly peer gives a GET of URL
    dfrepo install-agent           install the Triton repository agent library
    dfrepo cache ls|du|prune|clear inspect and trim the persistent cache

Exit codes (by the class of the error; :func:`exit_code_for`):

    0  success
    1  any other error (cache, repository agent, internal)
    2  usage error, bad setting or config file (ConfigError), bad location (LocationError)
    3  credentials missing or rejected (CredentialsError)
    4  model or object not found, store listing failed (ObjectNotFoundError, StoreError)
    5  download failed (TransferError: HTTPStatusError, RetriesExhaustedError, ...)
    6  the Dragonfly proxy is unreachable and direct fallback is off (ProxyUnavailableError)
    7  local disk error (OSError: ENOSPC, EACCES, EROFS ...)
    130 interrupted

Errors are one line on stderr (``dfrepo: error: ...``), never with a traceback, a URL
query string or a credential.  ``--json`` prints exactly one JSON object on stdout: the
result, or ``{"error": {...}}`` on failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit

from ._progress import format_bytes, format_rate, make_progress
from ._version import __version__
from .errors import (
    ConfigError,
    CredentialsError,
    DfrepoError,
    ProxyUnavailableError,
    RepoAgentError,
    StoreError,
    TransferError,
)
from .redact import redact_inline, redact_url

__all__ = ["EXIT_CODES", "exit_code_for", "main"]

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
_EPILOG = "exit codes:\n" + "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES)


def exit_code_for(exc: BaseException) -> int:
    """The process exit code for an error (see the module docstring)."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, ProxyUnavailableError):
        return EXIT_PROXY
    if isinstance(exc, TransferError):
        return EXIT_TRANSFER
    if isinstance(exc, CredentialsError):
        return EXIT_CREDENTIALS
    if isinstance(exc, StoreError):
        return EXIT_STORE
    if isinstance(exc, ConfigError):
        return EXIT_USAGE
    if isinstance(exc, OSError):
        return EXIT_DISK
    return EXIT_OTHER


# --------------------------------------------------------------------------- secret hygiene

_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>()\[\]]*[^\s'\"<>()\[\]?]")
_SECRET_PARAM_RE = re.compile(
    r"(?i)\b((?:x-amz|x-goog)-[a-z\-]*(?:signature|credential|security-token)|signature|sig|token"
    r"|access_?token|secret[a-z_]*|password|passwd)=[^&\s'\"]+")


def scrub(text: str) -> str:
    """*text* with every URL's userinfo and query redacted and ``sig=...`` values masked."""
    text = _URL_RE.sub(lambda m: redact_inline(m.group(0)), text)
    return _SECRET_PARAM_RE.sub(lambda m: f"{m.group(1)}=<redacted>", text)


def _scrub_json(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {str(k): _scrub_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub_json(v) for v in value]
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    return scrub(str(value))


def _describe_error(exc: BaseException) -> str:
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


def _error_doc(exc: BaseException, code: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": exc.__class__.__name__, "message": _describe_error(exc), "exit_code": code}
    if isinstance(exc, DfrepoError):
        for key, value in getattr(exc, "_attrs", {}).items():
            if value is not None and key not in doc:
                doc[key] = _scrub_json(value)
    elif isinstance(exc, OSError) and exc.errno is not None:
        doc["errno"] = exc.errno
    return {"error": doc}


# --------------------------------------------------------------------------- output


class _Out:
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
        print(json.dumps(_scrub_json(doc), sort_keys=True), file=self.stdout)

    def line(self, text: str) -> None:
        print(scrub(text), file=self.stdout)


def _parse_duration(text: str) -> float:
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([smhdw]?)\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 3600, 90m, 12h, 7d)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]


def _size_arg(text: str) -> int:
    from .values import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# --------------------------------------------------------------------------- pull


def _dragonfly_for(args: argparse.Namespace) -> Any:
    from .dragonfly import load_dragonfly_config

    overrides: dict[str, object] = {}
    if args.proxy is not None:
        overrides["proxy"] = "" if args.proxy.strip().lower() in ("", "direct", "none") else args.proxy
    if args.tag is not None:
        overrides["tag"] = args.tag
    if args.no_fallback:
        overrides["fallback_direct"] = False
    if args.transport is not None:
        overrides["transport"] = args.transport
    if args.socket is not None:
        overrides["socket"] = args.socket
    return load_dragonfly_config(args.dragonfly_config, overrides=overrides,
                                 required=args.dragonfly_config is not None)


def _transfer_for(args: argparse.Namespace) -> Any:
    from .engine import TransferConfig

    overrides: dict[str, Any] = {}
    if args.concurrency is not None:
        overrides["concurrency"] = args.concurrency
    if args.range_size is not None:
        overrides["range_size"] = args.range_size
    return TransferConfig().with_overrides(overrides)


def _http_dest(url: str, dest: str) -> Path:
    target = Path(dest)
    if dest.endswith(("/", os.sep)) or target.is_dir():
        name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
        if not name or name in (".", "..") or "\x00" in name:
            raise ConfigError(f"cannot name a file after {redact_url(url)}; give a file path as DEST",
                              source="arg", key="dest")
        target = target / name
    return target


def _pull_http(args: argparse.Namespace, dragonfly: Any, transfer: Any, progress: Any) -> Any:
    from .repo import PullResult, bytes_by_delivery
    from .engine import Downloader, DownloadRequest

    started = time.monotonic()
    target = _http_dest(args.location, args.dest)
    with Downloader(transfer, dragonfly=dragonfly if dragonfly.enabled else None) as dl:
        res = dl.download_many([DownloadRequest(url=args.location, dest=target)], progress=progress)[0]
        via = dl.via
        fallback_reason = dl.transport.fallback_reason
    by_source = {"origin": 0, "peer": 0, "peer-cache": 0}
    by_source[res.source] = by_source.get(res.source, 0) + res.size
    return PullResult(
        location=redact_url(args.location), dest=target, files=1, bytes=res.size,
        seconds=time.monotonic() - started,
        bytes_from_origin=by_source["origin"], bytes_from_peer=by_source["peer"],
        bytes_from_peer_cache=by_source["peer-cache"],
        via=via, retries=res.retries, requests=res.requests, implementation=res.implementation,
        fallback_reason=fallback_reason, results=(res,), **bytes_by_delivery([res]))


def summary_line(result: Any, proxy: str | None) -> str:
    """``pulled 5 files, 1.00 GiB in 2.31 s (443 MiB/s) — origin 0 B, peer ..., via proxy URL``."""
    files = f"{result.files} file{'s' if result.files != 1 else ''}"
    parts = [f"origin {format_bytes(result.bytes_from_origin)}",
             f"peer {format_bytes(result.bytes_from_peer)}"]
    if result.bytes_from_peer_cache:
        parts.append(f"peer-cache {format_bytes(result.bytes_from_peer_cache)}")
    parts.append(f"cache {format_bytes(result.bytes_from_cache)}")
    if result.bytes_local:
        parts.append(f"local {format_bytes(result.bytes_local)}")
    if result.via == "grpc":
        via = (f"via dfdaemon gRPC (linked {format_bytes(result.bytes_linked)}, copied "
               f"{format_bytes(result.bytes_copied)}, streamed {format_bytes(result.bytes_streamed)})")
    elif result.via == "proxy":
        via = f"via proxy {redact_url(proxy)}"
    elif result.fallback_reason:
        via = f"direct ({result.fallback_reason})"
    elif result.bytes_from_origin == 0 and result.bytes == result.bytes_from_cache + result.bytes_local:
        via = "nothing downloaded"
    else:
        via = "direct"
    parts.append(via)
    return (f"pulled {files}, {format_bytes(result.bytes)} in {result.seconds:.2f} s "
            f"({format_rate(result.throughput)}) \u2014 " + ", ".join(parts))


def _cmd_pull(args: argparse.Namespace, out: _Out) -> int:
    from .cache import ModelCache
    from .repo import pull

    dragonfly = _dragonfly_for(args)
    transfer = _transfer_for(args)
    is_http = args.location.lower().startswith(("http://", "https://"))
    progress = make_progress(Path(args.dest).name or "pull", quiet=out.quiet or out.json_mode)
    try:
        if is_http:
            result = _pull_http(args, dragonfly, transfer, progress)
        else:
            cache = None if args.no_cache else ModelCache(args.cache_dir)
            result = pull(args.location, args.dest, credential_path=args.credentials, dragonfly=dragonfly,
                          transfer=transfer, cache=cache, progress=progress, expiry=args.expiry)
    finally:
        if progress is not None:
            progress.close()
    if out.json_mode:
        out.result(result.as_dict())
    elif not out.quiet:
        out.line(summary_line(result, dragonfly.proxy))
    return EXIT_OK


# --------------------------------------------------------------------------- ls / task-id


def _cmd_ls(args: argparse.Namespace, out: _Out) -> int:
    from .locations import parse_location
    from .stores import list_model

    loc = parse_location(args.location)
    kwargs: dict[str, Any] = {"credential_path": args.credentials}
    if args.expiry is not None:
        kwargs["expiry"] = args.expiry
    objects = list_model(loc, **kwargs)
    if out.json_mode:
        out.result({
            "location": loc.display,
            "files": len(objects),
            "bytes": sum(o.size for o in objects),
            "objects": [{"rel_path": o.rel_path, "size": o.size, "version": o.version, "md5": o.md5,
                         "crc32c": o.crc32c, "source": o.source} for o in objects],
        })
        return EXIT_OK
    width = max((len(o.rel_path) for o in objects), default=0)
    size_width = max((len(str(o.size)) for o in objects), default=0)
    for o in objects:
        out.line(f"{o.rel_path:<{width}}  {o.size:>{size_width}}  {o.version or '-'}")
    return EXIT_OK


def _cmd_task_id(args: argparse.Namespace, out: _Out) -> int:
    from .dragonfly import load_dragonfly_config, request_headers, task_id_for_request

    overrides: dict[str, object] = {}
    if args.tag is not None:
        overrides["tag"] = args.tag
    if args.application is not None:
        overrides["application"] = args.application
    if args.filter:
        overrides["filter"] = ",".join(args.filter)
    cfg = load_dragonfly_config(args.dragonfly_config, overrides=overrides,
                                required=args.dragonfly_config is not None)
    headers = request_headers(cfg, args.url, version=args.version)
    tid = task_id_for_request(args.url, headers, canonicalization=args.canonicalization)
    if out.json_mode:
        shown = {k: v for k, v in headers.items() if k.lower().startswith("x-dragonfly-")}
        out.result({"task_id": tid, "url": redact_url(args.url), "canonicalization": args.canonicalization,
                    "headers": shown})
    else:
        out.line(tid)
    return EXIT_OK


# --------------------------------------------------------------------------- install-agent


def _cmd_install_agent(args: argparse.Namespace, out: _Out) -> int:
    try:
        from .triton.install import install_agent
    except ImportError as exc:
        raise RepoAgentError(f"the Triton repository agent is not available in this installation "
                             f"({exc.__class__.__name__}: {exc})") from None
    kwargs: dict[str, Any] = {}
    if args.repoagent_dir is not None:
        kwargs["repoagent_dir"] = args.repoagent_dir
    if args.name is not None:
        kwargs["name"] = args.name
    path = install_agent(**kwargs)
    if out.json_mode:
        out.result({"installed": str(path)})
    elif not out.quiet:
        out.line(f"installed {path}")
    return EXIT_OK


# --------------------------------------------------------------------------- cache


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cmd_cache(args: argparse.Namespace, out: _Out) -> int:
    from .cache import ModelCache

    cache = ModelCache(args.cache_dir)
    if args.cache_command == "ls":
        entries = cache.entries()
        if out.json_mode:
            out.result({"root": str(cache.root), "entries": [
                {"key": e.key, "size": e.size, "source": e.source, "version": e.version, "md5": e.md5,
                 "created": e.created, "last_used": e.last_used} for e in entries]})
        else:
            for e in entries:
                out.line(f"{e.size:>14}  {_iso(e.last_used)}  {e.version or '-'}  {e.source}")
        return EXIT_OK
    if args.cache_command == "du":
        count, size = cache.usage()
        if out.json_mode:
            out.result({"root": str(cache.root), "entries": count, "bytes": size, "max_bytes": cache.max_bytes})
        else:
            out.line(f"{count} {'entry' if count == 1 else 'entries'}, {format_bytes(size)} ({size} bytes) in {cache.root} "
                     f"(limit {format_bytes(cache.max_bytes)})")
        return EXIT_OK
    if args.cache_command == "prune":
        removed, freed = cache.prune(max_bytes=args.max_bytes, older_than=args.older_than)
    else:
        removed, freed = cache.clear()
    if out.json_mode:
        out.result({"root": str(cache.root), "removed": removed, "freed_bytes": freed})
    elif not out.quiet:
        out.line(f"removed {removed} {'entry' if removed == 1 else 'entries'}, freed {format_bytes(freed)}")
    return EXIT_OK


# --------------------------------------------------------------------------- parser


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
                     "NVIDIA Triton through a Dragonfly P2P peer.", epilog=_EPILOG, formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"dfrepo {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-v info, -vv debug) on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=_EPILOG, formatter_class=fmt)
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
    p.add_argument("--concurrency", type=_positive_int, metavar="N", help="parallel range requests")
    p.add_argument("--range-size", metavar="SIZE", help="bytes per range request (e.g. 32MiB)")
    p.add_argument("--no-fallback", action="store_true",
                   help="fail (exit 6) instead of downloading directly when the proxy is unreachable")
    p.add_argument("--no-cache", action="store_true", help="do not use the persistent cache")
    p.add_argument("--cache-dir", metavar="DIR", help="persistent cache directory (default: $DFREPO_CACHE_DIR, "
                   "$XDG_CACHE_HOME/dfrepo, ~/.cache/dfrepo)")
    p.add_argument("--expiry", type=_positive_int, metavar="SECONDS", help="lifetime of presigned URLs")
    p.add_argument("--tag", help="X-Dragonfly-Tag (the object version is appended)")
    p.add_argument("--transport", choices=("proxy", "grpc", "auto"),
                   help="talk to dfdaemon over its HTTP proxy, its gRPC socket (the daemon writes or "
                        "hard-links the files itself), or gRPC when the socket answers (default: the "
                        "config's transport, else proxy)")
    p.add_argument("--socket", metavar="PATH", help="dfdaemon's gRPC socket "
                   "(default /var/run/dragonfly/dfdaemon.sock)")
    p.set_defaults(func=_cmd_pull)

    p = command("ls", "List a model directory: rel_path, size, version.")
    p.add_argument("location")
    p.add_argument("--credentials", metavar="PATH", help="cloud_credential.json")
    p.add_argument("--expiry", type=_positive_int, metavar="SECONDS", help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_ls)

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
    p.set_defaults(func=_cmd_task_id)

    p = command("install-agent", "Install the Triton repository agent (libtritonrepoagent_<name>.so).")
    p.add_argument("--repoagent-dir", metavar="DIR", help="Triton's --repoagent-directory")
    p.add_argument("--name", help="agent name used in config.pbtxt (default: dragonfly)")
    p.set_defaults(func=_cmd_install_agent)

    p = sub.add_parser("cache", help="Inspect and trim the persistent cache.",
                       description="Inspect and trim the persistent cache.", epilog=_EPILOG, formatter_class=fmt)
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
            cp.add_argument("--max-bytes", type=_size_arg, metavar="SIZE",
                            help="evict least recently used entries down to SIZE (default: the cache limit)")
            cp.add_argument("--older-than", type=_parse_duration, metavar="AGE",
                            help="remove entries unused for AGE (3600, 90m, 12h, 7d)")
        cp.set_defaults(func=_cmd_cache)
    return parser


# --------------------------------------------------------------------------- main


class _ScrubFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub(record.getMessage())
        record.args = None
        return True


def _log_handler(verbosity: int, quiet: bool) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(_ScrubFilter())
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbosity, 2)]
    handler.setLevel(level)
    return handler


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    text = scrub(str(message))
    if not text.startswith("dfrepo:"):
        text = f"dfrepo: warning: {text}"
    print(text, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dfrepo`` with *argv* (default ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    out = _Out(json_mode=bool(getattr(args, "json", False)), quiet=bool(getattr(args, "quiet", False)))
    logger = logging.getLogger("dfrepo")
    handler = _log_handler(args.verbose, out.quiet)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(min(handler.level, logger.getEffectiveLevel()))
    func: Callable[[argparse.Namespace, _Out], int] = args.func
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return func(args, out)
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_OK
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - every error becomes one line
        code = exit_code_for(exc)
        print(f"dfrepo: error: {_describe_error(exc)}", file=sys.stderr)
        if out.json_mode:
            try:
                out.result(_error_doc(exc, code))
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
