"""The persistent helper process behind ``libtritonrepoagent_dragonfly.so``.

The C shim starts ``<python> -c <bootstrap> <record> <fd>`` once (again after a crash)
and hands it one socket per repository-agent action; each action runs in its own thread,
so LOADs of different models proceed concurrently.  The worker exits when the control
socket closes (agent ``Finalize`` or tritonserver gone).

Deadlines: the shim sends each action's deadline and a ``worker_deadline`` a margin
before it.  An action still running then is answered here with ``UNAVAILABLE`` and
``"retire": true`` (its thread cannot be stopped from outside), its staging directory is
removed, and the shim replaces this process once its other actions are answered.  If
the process cannot even do that, the shim kills it at the deadline itself.

Run by hand for debugging: ``python -m dfrepo.triton.worker <fd>``.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import stages
from ..errors import (
    ConfigError,
    CredentialsError,
    DfrepoError,
    ObjectNotFoundError,
    RepoAgentError,
)
from ..redact import redact_urls
from ._protocol import HELLO, ProtocolError, read_frame, write_frame
from .agent import LoadContext, RepoAgent, resolve_agent_class

__all__ = ["Dispatcher", "error_reply", "main"]

log = logging.getLogger("dfrepo.triton")

_ACTIONS = {
    "LOAD": "load",
    "LOAD_COMPLETE": "load_complete",
    "LOAD_FAIL": "load_fail",
    "UNLOAD": "unload",
    "UNLOAD_COMPLETE": "unload_complete",
}
_TERMINAL = ("LOAD_FAIL", "UNLOAD_COMPLETE")
_CODES = ("UNKNOWN", "INTERNAL", "NOT_FOUND", "INVALID_ARG", "UNAVAILABLE", "UNSUPPORTED",
          "ALREADY_EXISTS")


def _error_code(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    if isinstance(code, str) and code in _CODES:
        return code
    if isinstance(exc, (ObjectNotFoundError, FileNotFoundError)):
        return "NOT_FOUND"
    if isinstance(exc, (ConfigError, CredentialsError)):
        return "INVALID_ARG"
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return "UNAVAILABLE"
    return "INTERNAL"


def one_line(text: str) -> str:
    """Collapse *text* to one line and strip query strings (signatures) from URLs."""
    text = redact_urls(text)
    return " | ".join(part.strip() for part in text.splitlines() if part.strip())


def error_reply(exc: BaseException, *, agent: str, action: str, model: str, location: str) -> dict[str, Any]:
    """Turn an exception into the shim's error frame (one line, no secrets)."""
    detail = str(exc) or type(exc).__name__
    if not isinstance(exc, DfrepoError):
        detail = f"{type(exc).__name__}: {detail}"
    where = one_line(location)
    message = one_line(f"dfrepo agent '{agent}': {action} of model '{model}' ({where}) failed: {detail}")
    return {"op": "done", "ok": False, "code": _error_code(exc), "message": message}


@dataclass
class _ModelEntry:
    agent: RepoAgent
    agent_name: str


class Dispatcher:
    """Runs actions against per-model agent instances. Thread-safe across models."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, _ModelEntry] = {}

    def agent_name(self, key: str, parameters: dict[str, Any]) -> str:
        """The name messages use for the agent of model ``key``."""
        with self._lock:
            entry = self._models.get(key)
        return entry.agent_name if entry is not None else str(parameters.get("dfrepo.agent") or "dragonfly")

    def _entry(self, key: str, action: str, parameters: dict[str, str]) -> _ModelEntry:
        with self._lock:
            entry = self._models.get(key)
        if entry is None or action == "LOAD":
            cls = resolve_agent_class(parameters)
            agent = cls()
            entry = _ModelEntry(agent, getattr(agent, "name", None) or cls.__name__)
            with self._lock:
                self._models[key] = entry
        return entry

    def run(self, request: dict[str, Any], sock: socket.socket | _Channel | None) -> dict[str, Any]:
        """Run one action request; return the ``done`` frame (never raises)."""
        channel = _Channel(sock) if isinstance(sock, socket.socket) else sock
        action = str(request.get("action", ""))
        key = str(request.get("model", ""))
        location = str(request.get("location", ""))
        artifact = str(request.get("artifact_type", "FILESYSTEM"))
        parameters = {str(k): str(v) for k, v in (request.get("parameters") or {}).items()}
        config = request.get("config") if isinstance(request.get("config"), dict) else {}
        ctx = LoadContext(
            action=action,  # type: ignore[arg-type]  # the shim sends only the five action names
            location=location,
            artifact_type="REMOTE_FILESYSTEM" if artifact == "REMOTE_FILESYSTEM" else "FILESYSTEM",
            parameters=parameters,
            model_config=config,
            acquire=(lambda: _acquire(channel, ctx)) if channel is not None else None,
        )
        agent_name = parameters.get("dfrepo.agent") or "dragonfly"
        try:
            method_name = _ACTIONS.get(action)
            if method_name is None:
                raise RepoAgentError(f"unknown action {action!r}", code="INVALID_ARG")
            entry = self._entry(key, action, parameters)
            agent_name = entry.agent_name
            result = getattr(entry.agent, method_name)(ctx)
            new_location = None
            if action == "LOAD" and result is not None:
                new_location = os.path.abspath(os.fspath(result))
                if not os.path.isdir(new_location):
                    raise RepoAgentError(
                        f"load() returned {new_location!r}, which is not a directory",
                        code="INTERNAL",
                    )
            return {"op": "done", "ok": True, "location": new_location}
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            log.debug("action failed", exc_info=True)
            return error_reply(exc, agent=agent_name, action=action, model=ctx.model_name,
                               location=location)
        finally:
            if action in _TERMINAL:
                with self._lock:
                    self._models.pop(key, None)


class _Channel:
    """One action socket, shared by the action's thread and its deadline.

    Once the deadline has answered, the action's thread may no longer write (it would
    garble the frames); an ``acquire`` it still attempts then fails.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()
        self.abandoned = False
        self.acquired: str | None = None

    def send(self, obj: dict[str, Any]) -> None:
        with self.lock:
            if self.abandoned:
                raise ProtocolError("the action passed its deadline and was abandoned")
            write_frame(self.sock, obj)

    def receive(self) -> dict[str, Any]:
        return read_frame(self.sock)


def _acquire(channel: _Channel | None, ctx: LoadContext) -> str:
    assert channel is not None
    channel.send({"op": "acquire"})
    reply = channel.receive()
    if reply.get("ok") is True and reply.get("path"):
        channel.acquired = str(reply["path"])
        return channel.acquired
    raise RepoAgentError(
        f"Triton refused a local directory for model '{ctx.model_name}': "
        f"{reply.get('message') or 'no reason given'}",
        code=str(reply.get("code") or "INTERNAL"),
    )


def _seconds(value: Any) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if seconds > 0 else None


def _model_name(request: dict[str, Any]) -> str:
    config = request.get("config")
    name = config.get("name") if isinstance(config, dict) else None
    if not name:
        location = str(request.get("location", "")).split("?", 1)[0].rstrip("/")
        name = os.path.basename(location) or location
    return str(name)


#: Triton's acquired directories are ``mkdtemp("/tmp/folderXXXXXX")``; pulls stage beside them.
_TRITON_TMP = Path("/tmp")


def _remove_stages(acquired: str | None, pid: int) -> None:
    """Remove the staging dirs this process made for ``acquired`` (an abandoned pull)."""
    if acquired:
        stages.remove_own(Path(os.path.normpath(acquired)), pid)


def _remove_dead_stages(root: Path = _TRITON_TMP) -> None:
    """Remove stages of pulls into Triton's dirs whose process is gone (a worker killed at
    its deadline cannot clean up after itself).  Live and foreign processes are left alone."""
    stages.remove_dead(root)


def _deadline_reply(dispatcher: Dispatcher, request: dict[str, Any], waited: float,
                    channel: _Channel) -> dict[str, Any]:
    """The answer for an action still running at its worker deadline."""
    action = str(request.get("action", ""))
    agent = dispatcher.agent_name(str(request.get("model", "")), request.get("parameters") or {})
    deadline = _seconds(request.get("deadline"))
    source = str(request.get("deadline_source") or "")
    limit = f"{deadline:g} s" if deadline else f"{waited:g} s"
    if source:
        limit += f" ({source})"
    _remove_stages(channel.acquired, os.getpid())
    message = one_line(
        f"dfrepo agent '{agent}': {action} of model '{_model_name(request)}' did not finish "
        f"within its deadline of {limit}; gave up after {waited:.1f} s and the Python worker "
        f"(pid {os.getpid()}) is replaced")
    return {"op": "done", "ok": False, "code": "UNAVAILABLE", "message": message, "retire": True}


def serve_channel(dispatcher: Dispatcher, sock: socket.socket) -> None:
    """Serve one action channel: read the request, run it, send the ``done`` frame.

    With a ``worker_deadline`` in the request the action runs in a thread of its own and
    is answered (``UNAVAILABLE``, ``retire``) when it is still running by then.
    """
    channel = _Channel(sock)
    with sock:
        try:
            request = read_frame(sock)
            budget = _seconds(request.get("worker_deadline"))
            if budget is None:
                reply = dispatcher.run(request, channel)
            else:
                started = time.monotonic()
                box: list[dict[str, Any]] = []

                def run() -> None:
                    try:
                        box.append(dispatcher.run(request, channel))
                    except BaseException as exc:  # SystemExit from an agent: this action fails
                        box.append(error_reply(
                            exc, agent=dispatcher.agent_name(str(request.get("model", "")),
                                                             request.get("parameters") or {}),
                            action=str(request.get("action", "")), model=_model_name(request),
                            location=str(request.get("location", ""))))

                runner = threading.Thread(target=run, name=f"{threading.current_thread().name}-run",
                                          daemon=True)
                runner.start()
                runner.join(budget)
                with channel.lock:
                    if not box:  # still running: nothing it does may reach the shim any more
                        channel.abandoned = True
                if channel.abandoned:
                    reply = _deadline_reply(dispatcher, request, time.monotonic() - started, channel)
                else:
                    reply = box[0]
            with channel.lock:
                write_frame(sock, reply)
        except (ProtocolError, OSError) as exc:
            # The shim went away mid-action (Triton shutting down): nothing to tell.
            print(f"[dfrepo-agent] worker: action channel broken: {exc}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Worker entry point. ``argv[0]`` is the control socket's file descriptor."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m dfrepo.triton.worker <control-fd>", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Triton's Ctrl-C is not ours; EOF is
    level = os.environ.get("DFREPO_AGENT_LOG_LEVEL")
    if level:
        logging.basicConfig(level=level.upper(), stream=sys.stderr,
                            format="[dfrepo-agent] %(levelname)s %(name)s: %(message)s")
    ctl = socket.socket(fileno=int(args[0]))
    dispatcher = Dispatcher()
    ctl.send(HELLO + str(os.getpid()).encode())
    threading.Thread(target=_remove_dead_stages, name="dfrepo-stage-sweep", daemon=True).start()
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(ctl, 16, 8)
        except InterruptedError:  # pragma: no cover - PEP 475 retries
            continue
        except OSError:
            break
        if not msg and not fds:
            break  # EOF: Finalize, or tritonserver is gone
        for fd in fds:
            channel = socket.socket(fileno=fd)
            threading.Thread(target=serve_channel, args=(dispatcher, channel),
                             name=f"dfrepo-action-{fd}", daemon=True).start()
    sys.stdout.flush()
    sys.stderr.flush()
    # Daemon threads may still hold half-done work for a Triton that is gone; do not
    # wait for them (and do not run interpreter teardown with them alive).
    os._exit(0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
