"""Real stacks for benchmarks and tests: a throwaway PostgreSQL cluster, the central service
in its own process, and ledgers filled fast.

PostgreSQL: ``initdb`` + ``pg_ctl`` from Debian's postgresql package on a free loopback port,
as the ``postgres`` user when we are root (initdb refuses root). Benchmarks run it with fsync
on, as in production; the test suite's clusters run without it, for speed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from localpay.cli.bench.traffic import Traffic
from localpay.errors import LocalpayError
from localpay.pgserver import PgCluster, free_port  # noqa: F401 - re-exported for the tests
from offline_ledger import Ledger
from offline_ledger.encoding import EntryFields, encode, entry_hash

# The folder our packages are imported from (a checkout or site-packages), so that a child
# Python finds the same code as this one.
ROOT = Path(__file__).resolve().parents[3]


# -- the central service in its own process ------------------------------------------------------


class BenchError(LocalpayError):
    """What a benchmark measured did not happen as it should (an answer the service should
    not give, rows a floor did not write): the figure would mean nothing."""


@dataclass
class CentralProcess:
    url: str
    port: int
    data: Path
    db: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def verifier(self) -> str:
        from central.keys import load_signer

        return load_signer(self.data, create=False).verifier.text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def start_central(db: str, data: Path, *, port: int | None = None, extra: tuple[str, ...] = (),
                  timeout: float = 60.0,
                  command: tuple[str, ...] = ("-m", "central")) -> CentralProcess:
    """``python -m central`` (or ``command``, e.g. ``-m localpay central serve``) on a free
    loopback port; returns once it answers (``central serve`` starts a worker process a
    core by default, each importing the service: slow on a busy machine)."""
    port = port or free_port()
    data.mkdir(parents=True, exist_ok=True)
    log_path = data / f"server-{port}.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, *command, "--db", db, "--data", str(data), "--port",
             str(port), *extra], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=data)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"central server exited: {log_path.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"central server did not start: {log_path.read_text()[-2000:]}")
        time.sleep(0.05)
    return CentralProcess(url, port, data, db, proc, log_path)


@contextlib.contextmanager
def central(db: str, data: Path, **kw: Any) -> Iterator[CentralProcess]:
    server = start_central(db, data, **kw)
    try:
        yield server
    finally:
        server.stop()


# -- ledgers -------------------------------------------------------------------------------------


def new_terminal_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def fill_ledger(path: Path, key: Ed25519PrivateKey, terminal_id: str, n: int, *,
                start_ms: int | None = None, step_ms: int = 1000, cards: int = 50,
                place: str = "85", amount: int = 1500, kind: str = "tap",
                traffic: Traffic | None = None) -> Ledger:
    """Append ``n`` valid, signed entries in one transaction (test data only: a real
    terminal commits each entry on its own), then reopen through :class:`Ledger`.

    ``traffic`` (:mod:`localpay.cli.bench.traffic`) gives each entry's kind, card, amount
    and detail as a terminal records them; without it, ``cards`` cards pay ``amount`` with
    an empty detail."""
    Ledger(path, key=key, terminal_id=terminal_id).close()
    conn = sqlite3.connect(str(path), isolation_level=None)
    row = conn.execute("SELECT seq, entry_hash, mono FROM entries ORDER BY seq DESC LIMIT 1"
                       ).fetchone()
    seq, prev, mono = (row[0], row[1], row[2]) if row else (0, bytes(32), 0)
    wall = start_ms if start_ms is not None else int(time.time() * 1000) - n * step_ms
    rows = []
    for i in range(n):
        seq += 1
        wall += step_ms
        mono = max(mono + 1, wall)
        token, value, detail = _entry_of(traffic, i, f"{(i % cards):064x}", amount)
        what = traffic.kind if traffic is not None else kind
        f = EntryFields(seq, what, terminal_id, token, value, 0, place, wall, mono, detail, prev)
        data = encode(f)
        digest = entry_hash(data)
        rows.append((seq, what, terminal_id, token, value, 0, place, wall, mono, detail, prev,
                     digest, key.sign(data)))
        prev = digest
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO entries (seq, kind, terminal_id, card_token, amount, ref_seq, "
                     "place, wall_ms, mono, detail, prev_hash, entry_hash, signature) VALUES "
                     "(?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    conn.execute("COMMIT")
    conn.close()
    return Ledger(path, key=key, terminal_id=terminal_id)


def _entry_of(traffic: Traffic | None, i: int, token: str, amount: int) -> tuple[str, int, str]:
    """(card, amount, detail) of entry ``i``: from ``traffic`` (cycled) when given."""
    if traffic is None:
        return token, amount, "{}"
    k = i % len(traffic)
    return traffic.cards[k], traffic.amounts[k], traffic.details[k]


def signed_entries(key: Ed25519PrivateKey, terminal_id: str, n: int, *, seq0: int = 1,
                   prev: bytes = bytes(32), wall0: int = 1_790_000_000_000,
                   step_ms: int = 1000, cards: list[str] | None = None, amount: int = 1500,
                   kind: str = "tap", place: str = "85",
                   traffic: Traffic | None = None) -> list[Any]:
    """``n`` chained, signed entries as the service receives them (``WireEntry``);
    ``traffic`` as for :func:`fill_ledger`."""
    from sync.protocol import decode_entry

    out = []
    wall = wall0
    what = traffic.kind if traffic is not None else kind
    for i in range(n):
        default = cards[i % len(cards)] if cards else f"{i % 7:064x}"
        token, value, detail = _entry_of(traffic, i, default, amount)
        f = EntryFields(seq0 + i, what, terminal_id, token, value, 0, place, wall, wall, detail,
                        prev)
        data = encode(f)
        out.append(decode_entry(data, key.sign(data)))
        prev = entry_hash(data)
        wall += step_ms
    return out
