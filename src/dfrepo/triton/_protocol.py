"""Wire format between the C shim (``agent_shim.c``) and the Python worker.

Control socket (``AF_UNIX``/``SOCK_SEQPACKET``): the worker sends :data:`HELLO` once
when it is ready; the shim then sends one byte per action with the action channel's
file descriptor attached (``SCM_RIGHTS``).  EOF on it means "exit now".

Action channel (``AF_UNIX``/``SOCK_STREAM``, one per action): frames of a 4-byte
big-endian length followed by one UTF-8 JSON object.  See ``agent_shim.c`` for the
message shapes; :mod:`dfrepo.triton.worker` is the only reader on this side.  Requests
carry the action's ``deadline`` and a ``worker_deadline`` a margin before it; a worker
still busy then answers with ``"retire": true`` and the shim replaces it.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

__all__ = ["HELLO", "MAX_FRAME", "PROTOCOL_VERSION", "ProtocolError", "read_frame", "write_frame"]

PROTOCOL_VERSION = 1
HELLO = b"DFREPO-WORKER 1 "  # followed by the worker's pid
MAX_FRAME = 16 * 1024 * 1024
_HEADER = struct.Struct(">I")


class ProtocolError(Exception):
    """The peer closed the channel or sent something that is not a frame."""


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise ProtocolError("channel closed")
        chunks += chunk
    return bytes(chunks)


def read_frame(sock: socket.socket) -> dict[str, Any]:
    """Read one frame; raise :class:`ProtocolError` on EOF or garbage."""
    (size,) = _HEADER.unpack(_recv_exact(sock, 4))
    if size > MAX_FRAME:
        raise ProtocolError(f"frame of {size} bytes exceeds {MAX_FRAME}")
    try:
        obj = json.loads(_recv_exact(sock, size).decode("utf-8", errors="replace"))
    except ValueError as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("frame is not a JSON object")
    return obj


def write_frame(sock: socket.socket, obj: dict[str, Any]) -> None:
    """Write one frame. ASCII-only JSON, so the C reader never sees raw UTF-8 escapes."""
    body = json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    sock.sendall(_HEADER.pack(len(body)) + body)
