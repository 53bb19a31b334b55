"""A loopback TCP proxy that injects network faults between terminals and the central service.

Two ways of use:

- ``CuttingProxy(port, seed)`` cuts every connection after a random number of bytes: odd
  connections while the client sends (mid-request), even ones while the service answers
  (mid-answer). Seeded, so a run can be repeated (``tests/test_sync_faults.py``).
- ``CuttingProxy(port, seed, cut_connections=False)`` forwards faithfully until told
  otherwise: :meth:`CuttingProxy.down` cuts every open connection at once and refuses new
  ones for a while (a bus in a tunnel, a dead mobile cell), :meth:`CuttingProxy.delay` holds
  every chunk in either direction for a while (a congested link), :meth:`CuttingProxy.cut`
  cuts what is open now and lets the next connection through (``tests/city``).
"""

from __future__ import annotations

import contextlib
import math
import random
import socket
import threading
import time


class CuttingProxy:
    """Forwards loopback TCP to ``upstream_port``, with the faults of the module docstring."""

    def __init__(self, upstream_port: int, seed: int = 7, *, cut_connections: bool = True,
                 port: int = 0) -> None:
        self.upstream = upstream_port
        self.rng = random.Random(seed)
        self.cut_connections = cut_connections
        self.sock = socket.create_server(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.count = 0
        self.cuts = 0
        #: connections refused while down, and chunks held while delayed
        self.refused = 0
        self.delayed = 0
        self._stop = False
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._down_until = 0.0
        self._delay_until = 0.0
        self._delay_s = 0.0
        threading.Thread(target=self._accept, daemon=True).start()

    # -- faults on demand ---------------------------------------------------------------------

    def cut(self) -> int:
        """Cut every open connection now (both ways, no goodbye); how many were open."""
        with self._lock:
            open_now = list(self._open)
        for s in open_now:
            _close(s)
        return len(open_now) // 2

    def down(self, seconds: float = math.inf) -> int:
        """Cut every open connection and refuse new ones for ``seconds`` (until :meth:`up`
        when not given); how many were open."""
        with self._lock:
            self._down_until = max(self._down_until, time.monotonic() + seconds)
        return self.cut()

    def up(self) -> None:
        """The network is back: new connections pass again."""
        with self._lock:
            self._down_until = 0.0

    def delay(self, seconds: float, per_chunk_s: float) -> None:
        """Hold every chunk ``per_chunk_s`` before forwarding it, for ``seconds``."""
        with self._lock:
            self._delay_until = time.monotonic() + seconds
            self._delay_s = per_chunk_s

    def _held_for(self) -> float:
        with self._lock:
            return self._delay_s if time.monotonic() < self._delay_until else 0.0

    def _is_down(self) -> bool:
        with self._lock:
            return time.monotonic() < self._down_until

    # -- forwarding ---------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self._is_down():
                self.refused += 1
                _close(conn)
                continue
            self.count += 1
            up_budget = down_budget = None
            if self.cut_connections:
                up_budget = self.rng.randint(20_000, 250_000) if self.count % 2 else None
                down_budget = None if self.count % 2 else self.rng.randint(500, 6000)
            try:
                up = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
                up.settimeout(None)
            except OSError:
                _close(conn)
                continue
            pair = (conn, up)
            with self._lock:
                # accepted as the network went down: cut too, as down() would have
                refused = time.monotonic() < self._down_until
                if not refused:
                    self._open.update(pair)
            if refused:
                self.refused += 1
                _close(conn)
                _close(up)
                continue
            threading.Thread(target=self._pipe, args=(conn, up, up_budget, pair),
                             daemon=True).start()
            threading.Thread(target=self._pipe, args=(up, conn, down_budget, pair),
                             daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, budget: int | None,
              pair: tuple[socket.socket, socket.socket]) -> None:
        sent = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                held = self._held_for()
                if held:
                    self.delayed += 1
                    time.sleep(held)
                if budget is not None and sent + len(data) > budget:
                    dst.sendall(data[: max(budget - sent, 1)])
                    self.cuts += 1
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        with self._lock:
            self._open.difference_update(pair)
        for s in pair:
            _close(s)

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        self.cut()


def _close(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    s.close()
