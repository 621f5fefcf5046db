"""Measure the stand-in peer's local-hit throughput: ``python -m dfpeer.bench``.

Starts a :class:`~dfpeer.testing.RangeOrigin` and ``python -m dfpeer`` as two
child processes, fills the cache once (the "cold" figure is bounded by the
pure-Python origin), then times whole-object GETs
of the (page-cached) task with a raw-socket client that ``recv_into``\\ s a
reused buffer, so the figure is the peer's ceiling, not a client's.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .api import PeerProcess

_ORIGIN_SCRIPT = """
import os, sys, time
from dfpeer.testing import RangeOrigin
origin = RangeOrigin().start()
origin.put("/bench/blob.bin", os.urandom(1 << 20) * int(sys.argv[1]))
print(origin.port, flush=True)
sys.stdin.read()
"""


def fetch(port: int, url: str, headers: dict[str, str] | None = None) -> tuple[int, float]:
    """GET *url* through the proxy on *port*; return (body bytes, seconds)."""
    request = f"GET {url} HTTP/1.1\r\nHost: bench\r\nX-Dragonfly-Use-P2P: true\r\n"
    for name, value in (headers or {}).items():
        request += f"{name}: {value}\r\n"
    request += "Connection: close\r\n\r\n"
    buf = bytearray(4 << 20)
    view = memoryview(buf)
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("no response head")
            head += chunk
        head_bytes, _, rest = head.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1]) for line in head_bytes.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        got = len(rest)
        while got < length:
            n = sock.recv_into(view)
            if not n:
                break
            got += n
    return got, time.perf_counter() - started


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    size = args.size_mib << 20
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    origin = subprocess.Popen([sys.executable, "-c", _ORIGIN_SCRIPT, str(args.size_mib)], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert origin.stdout is not None and origin.stdin is not None
    try:
        port = int(origin.stdout.readline())
        url = f"http://127.0.0.1:{port}/bench/blob.bin?X-Amz-Signature=x"
        _run(url, size, args.repeat)
    finally:
        origin.stdin.close()
        origin.wait(10)


def _run(url: str, size: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory(prefix="dfpeer-bench-") as tmp:
        with PeerProcess(os.path.join(tmp, "data")) as peer:
            got, seconds = fetch(peer.port, url)
            assert got == size, got
            print(f"cold (pure-Python origin, not a target): {size / seconds / 1e9:.2f} GB/s")
            rates = []
            for _ in range(repeat):
                got, seconds = fetch(peer.port, url)
                assert got == size, got
                rates.append(size / seconds / 1e9)
            rates.sort()
            print(f"hit {size >> 20} MiB x{repeat}: best {rates[-1]:.2f} GB/s, "
                  f"median {rates[len(rates) // 2]:.2f} GB/s")
            stats = peer.stats()
            print(f"origin_bytes={stats['origin_bytes']} served_bytes={stats['served_bytes']} "
                  f"local_hits={stats['local_hits']}")


if __name__ == "__main__":
    main()
