"""``dfrepo task-id`` and ``dfrepo install-agent``."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import RepoAgentError
from ..redact import redact_url
from ..settings import resolve_dragonfly
from .output import EXIT_OK, Out

__all__ = ["cmd_install_agent", "cmd_task_id"]


def cmd_task_id(args: argparse.Namespace, out: Out) -> int:
    """``dfrepo task-id URL``: the task ID the Dragonfly peer gives a GET of URL."""
    from ..dragonfly import request_headers, task_id_for_request

    overrides: dict[str, object] = {}
    if args.tag is not None:
        overrides["tag"] = args.tag
    if args.application is not None:
        overrides["application"] = args.application
    if args.filter:
        overrides["filter"] = ",".join(args.filter)
    cfg = resolve_dragonfly(path=args.dragonfly_config, overrides=overrides)
    headers = request_headers(cfg, args.url, version=args.version)
    tid = task_id_for_request(args.url, headers, canonicalization=args.canonicalization)
    if out.json_mode:
        shown = {k: v for k, v in headers.items() if k.lower().startswith("x-dragonfly-")}
        out.result({"task_id": tid, "url": redact_url(args.url), "canonicalization": args.canonicalization,
                    "headers": shown})
    else:
        out.line(tid)
    return EXIT_OK


def cmd_install_agent(args: argparse.Namespace, out: Out) -> int:
    """``dfrepo install-agent``: put the Triton repository agent where Triton looks."""
    try:
        from ..triton.install import install_agent
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
