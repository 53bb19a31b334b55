"""Entries for the incentive tests: signed chains with the details the rules read, Seoul
times computed independently of zoneinfo (Korea has kept UTC+9 without DST since 1988)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.incentives import IncentiveCrediter
from central.rules import default_hooks
from central.service import CentralLog
from central.store import open_store
from firmware_cfg.keys import public_hex
from offline_ledger.encoding import ZERO_HASH, EntryFields, encode, entry_hash
from sync.checkpoint import NoteSigner
from sync.protocol import WireEntry, decode_entry

KST = timedelta(hours=9)


def moved_clock(offset_s: float, *command: str) -> tuple[Callable[[], float], tuple[str, ...]]:
    """A wall clock ``offset_s`` seconds from the real one, for a sync client, and the
    ``python`` arguments that run ``localpay COMMAND...`` (say ``central serve``) on the
    same clock, for :func:`localpay.cli.bench.stacks.start_central`."""

    def clock() -> float:
        return time.time() + offset_s

    return clock, ("-c", "import time; real = time.time; "
                         f"time.time = lambda: real() + {offset_s!r}; "
                         "from localpay.cli.main import main; main()", *command)


def seoul_ms(y: int, mo: int, d: int, h: int = 8, mi: int = 0, s: int = 0) -> int:
    """Unix ms of a Seoul wall-clock time."""
    utc = datetime(y, mo, d, h, mi, s, tzinfo=UTC) - KST
    return int(utc.timestamp() * 1000)


def tap_detail(bus_type: str = "city", rider: str = "adult") -> str:
    return json.dumps({"bus_type": bus_type, "card": "1234", "rider": rider, "scheme": "uid"},
                      sort_keys=True, separators=(",", ":"))


def pay_detail(category: str = "local_food") -> str:
    return json.dumps({"merchant_category": category, "card": "1234", "rider": "adult",
                       "scheme": "uid"}, sort_keys=True, separators=(",", ":"))


@dataclass
class Chain:
    """One terminal's chain of signed entries, as its ledger would send them."""

    terminal_id: str
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    seq: int = 0
    prev: bytes = ZERO_HASH
    mono: int = 0

    def entry(self, kind: str, token: str, amount: int, wall_ms: int, *, detail: str = "{}",
              ref_seq: int = 0, place: str = "85") -> WireEntry:
        self.seq += 1
        self.mono = max(self.mono + 1, wall_ms)
        f = EntryFields(self.seq, kind, self.terminal_id, token, amount, ref_seq, place,
                        wall_ms, self.mono, detail, self.prev)
        data = encode(f)
        self.prev = entry_hash(data)
        return decode_entry(data, self.key.sign(data))

    def tap(self, token: str, wall_ms: int, fare: int = 1500, **kw: Any) -> WireEntry:
        return self.entry("tap", token, fare, wall_ms, detail=tap_detail(**kw))

    def pay(self, token: str, amount: int, wall_ms: int, category: str = "local_food"
            ) -> WireEntry:
        return self.entry("payment", token, amount, wall_ms, detail=pay_detail(category),
                          place="M-1")

    def refund(self, token: str, amount: int, ref_seq: int, wall_ms: int,
               kind: str = "refund") -> WireEntry:
        return self.entry(kind, token, amount, wall_ms, ref_seq=ref_seq, place="M-1",
                          detail=json.dumps({"merchant_category": "local_food"}))


def unsigned(terminal_id: str, seq: int, kind: str, token: str, amount: int, wall_ms: int,
             detail: str, ref_seq: int = 0, place: str = "85") -> WireEntry:
    """An entry for bulk crediting runs that never reach the chain (no signature)."""
    return WireEntry(seq, kind, terminal_id, token, amount, ref_seq, place, wall_ms, wall_ms,
                     detail, ZERO_HASH, b"", b"")


def open_service(store_url: str, **kw: Any) -> CentralLog:
    """A central log over ``store_url`` with the balance and fraud hooks and, unless ``kw``
    says otherwise, incentive crediting after every batch (close its store when done)."""
    kw.setdefault("hooks", default_hooks())
    kw.setdefault("followers", [IncentiveCrediter()])
    return CentralLog(open_store(store_url),
                      NoteSigner("test.example/log", Ed25519PrivateKey.generate()), **kw)


def chain(svc: CentralLog, tid: str) -> Chain:
    """A new terminal's chain, registered with ``svc``."""
    c = Chain(tid)
    svc.add_terminal(tid, bytes.fromhex(public_hex(c.key)))
    return c
