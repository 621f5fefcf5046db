"""A TCP relay on 127.0.0.1 that can cut or stall connections (asyncpg's fuzzer idea)."""

from __future__ import annotations

import socket
import threading


class FaultProxy:
    """Relays bytes to ``target``; ``cut_after(n)`` resets connections after n bytes
    from the server side, ``stall()`` stops forwarding, ``restore()`` heals."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._cut_after: int | None = None
        self._cuts_left = 0
        self._stalled = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.connections = 0
        self._socks: list[socket.socket] = []

    def __enter__(self) -> FaultProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._listener.close()
        for s in list(self._socks):
            try:
                s.close()
            except OSError:
                pass

    def cut_after(self, nbytes: int, times: int = 1) -> None:
        self._cut_after, self._cuts_left = nbytes, times

    def stall(self) -> None:
        self._stalled.set()

    def restore(self) -> None:
        self._cut_after = None
        self._stalled.clear()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(self.target)
            self._socks += [client, upstream]
            with self._lock:
                limit = None
                if self._cut_after is not None and self._cuts_left > 0:
                    self._cuts_left -= 1
                    limit = self._cut_after
            threading.Thread(target=self._pump, args=(client, upstream, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, limit), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                while self._stalled.is_set() and not self._stop.is_set():
                    self._stop.wait(0.05)
                if limit is not None and sent + len(data) > limit:
                    dst.sendall(data[: limit - sent])
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            close_pair(src, dst)


def close_pair(*socks: socket.socket) -> None:
    """Shut down and close both ends; shutdown() wakes the sibling pump blocked in recv(),
    close() alone would not."""
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            s.close()
        except OSError:
            pass
