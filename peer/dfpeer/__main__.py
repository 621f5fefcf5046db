"""``python -m dfpeer``: run the stand-in peer as its own process.

Prints the bound port on stdout (one line) and, with ``--ready-file``, writes it
there atomically once the socket is listening.  SIGTERM/SIGINT stop it cleanly.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from .server import PeerConfig, PeerCore, PeerServer


class _Stop(Exception):
    """Raised by the SIGTERM/SIGINT handler to leave ``serve_forever`` at once."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dfpeer", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="bind port; 0 = a free port (default)")
    parser.add_argument("--data-dir", required=True, type=Path, help="task store directory")
    parser.add_argument("--parent", help="parent peer URL (http://host:port): pieces come from it first")
    parser.add_argument("--rule", action="append", default=[], help="proxy rule regex (repeatable)")
    parser.add_argument("--ready-file", type=Path, help="write the bound port here when ready")
    parser.add_argument("--canonicalization", choices=("A", "B"), default="B",
                        help="task-ID URL canonicalization: A = dfdaemon <= 1.5.1, B = after PR #2014 (default)")
    parser.add_argument("--verify-origin", action="store_true", help="verify origin TLS certificates")
    parser.add_argument("--ca-file", help="CA bundle for --verify-origin")
    parser.add_argument("--concurrent-pieces", type=int, default=8, help="piece downloads per request (default 8)")
    parser.add_argument("--server-ip", help="value of X-Dragonfly-Server-IP (default: --host)")
    parser.add_argument("--disable-back-to-source", action="store_true", help="never fetch pieces from the origin")
    parser.add_argument("--legacy-range-200", action="store_true",
                        help="answer ranges with 200 + Content-Range (dfdaemon < 1.3.11)")
    parser.add_argument("--small-to-source", action=argparse.BooleanOptionalAction, default=True,
                        help="a range or object of <= 4 MiB skips the parent and comes from the origin "
                             "(dfdaemon >= 1.4.2; default on); --no-small-to-source for older daemons")
    parser.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s dfpeer %(levelname)s %(message)s")
    config = PeerConfig(
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        parent=args.parent,
        rules=tuple(args.rule),
        canonicalization=args.canonicalization,
        verify_origin=args.verify_origin,
        ca_file=args.ca_file,
        concurrent_pieces=max(1, args.concurrent_pieces),
        server_ip=args.server_ip,
        disable_back_to_source=args.disable_back_to_source,
        legacy_range_200=args.legacy_range_200,
        small_to_source=args.small_to_source,
    )
    server = PeerServer(PeerCore(config))
    port = int(server.server_address[1])

    def _stop(signum: int, frame: FrameType | None) -> None:
        raise _Stop(signum)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(port, flush=True)
    if args.ready_file is not None:
        tmp = args.ready_file.with_name(args.ready_file.name + ".tmp")
        tmp.write_text(f"{port}\n")
        os.replace(tmp, args.ready_file)
    try:
        server.serve_forever(poll_interval=0.2)
    except _Stop:
        pass
    finally:
        server.server_close()
        server.close_all()
        server.core.upstream.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
