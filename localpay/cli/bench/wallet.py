"""Wallet QR tap-to-decision: parse, verify the signature, decide, durably commit.

``bench_wallet(taps)`` runs real wallet codes through :class:`terminal.core.Terminal` (a
till, over a fresh ledger with ``synchronous=FULL`` in a temporary folder) and reports the
latency of each ``pay()``: detection, Base32, Ed25519 verification, the nonce lookup, the
risk rules and the signed, durable ledger append. Making the codes is not timed. Beside the
figure, its floors: the signature check alone (``verify_*``) and the raw ``write``+``fsync``
rate of the same disk (``fsyncs_per_s``; ``localpay bench`` passes the one it measured in
the same folder).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_cfg.config import DEFAULT
from firmware_cfg.keys import DEMO_TOKEN_KEY, demo_issuer_key
from localpay.cli.bench.validator import raw_fsync_rate
from localpay.types import Presentation
from offline_ledger import Ledger
from terminal import cards_all  # noqa: F401 - registers the QR application
from terminal.core import Terminal
from terminal.qr import wallet


def _percentile(sorted_ms: list[float], q: float) -> float:
    idx = min(len(sorted_ms) - 1, max(0, round(q * (len(sorted_ms) - 1))))
    return round(sorted_ms[idx], 3)


def bench_wallet(taps: int = 2000, folder: Path | None = None, *,
                 fsyncs_per_s: float | None = None) -> dict[str, Any]:
    """Measure ``taps`` wallet-QR payments; return p50/p99/max in ms and the rate, beside
    the disk's ``fsyncs_per_s`` (measured here when not given)."""
    if taps < 1:
        raise ValueError("bench needs at least one tap")
    issuer = demo_issuer_key()
    config = DEFAULT.replace("terminal", id="BENCH-TILL-01", role="till", place="M0001")
    config = config.replace("risk", card_offline_count=10**9, card_offline_amount=10**12,
                            terminal_exposure=10**15)
    # a folder of its own every run (inside ``folder`` when given: the disk to measure)
    own = tempfile.TemporaryDirectory(prefix="localpay-bench-qr-", dir=folder)
    folder = Path(own.name)
    start = 1_790_000_000
    codes = [wallet.make(issuer, f"bench-{i % 500:04d}", now=start, ttl_s=60)
             for i in range(taps)]
    # the code's own share: detection, Base32 and the Ed25519 verification alone
    pub = issuer.public_key()
    verify_ms: list[float] = []
    for code in codes:
        t0 = time.perf_counter()
        wallet.verify(code, [pub])
        verify_ms.append((time.perf_counter() - t0) * 1000)
    verify_ms.sort()
    if fsyncs_per_s is None:
        fsyncs_per_s = raw_fsync_rate(folder, seconds=1.0)
    ledger = Ledger(folder / "bench-qr.sqlite", key=Ed25519PrivateKey.generate(),
                    terminal_id=config.terminal.id)
    try:
        terminal = Terminal(config, ledger, DEMO_TOKEN_KEY, clock=lambda: start + 1.0,
                            read_options={"wallet_issuer_keys": [issuer.public_key()]})
        lat: list[float] = []
        approved = 0
        began = time.perf_counter()
        for code in codes:
            p = Presentation(kind="qr", reader="bench", payload=code)
            t0 = time.perf_counter()
            decision = terminal.pay(p, 1000)
            lat.append((time.perf_counter() - t0) * 1000)
            approved += decision.approved
        seconds = time.perf_counter() - began
    finally:
        ledger.close()
        own.cleanup()
    lat.sort()
    return {
        "benchmark": "wallet QR: parse, Ed25519 verify, decide, durable commit",
        "machine": f"{os.cpu_count()} cores, {os.uname().machine}",
        "taps": taps,
        "approved": approved,
        "p50_ms": _percentile(lat, 0.50),
        "p99_ms": _percentile(lat, 0.99),
        "max_ms": round(lat[-1], 3),
        "taps_per_s": round(taps / seconds, 1),
        "target_p99_ms": 3.0,
        "verify_p50_ms": _percentile(verify_ms, 0.50),
        "verify_p99_ms": _percentile(verify_ms, 0.99),
        "fsyncs_per_s": round(fsyncs_per_s, 1),
        "ratio": round(taps / seconds / fsyncs_per_s, 3),
    }
