"""Benchmark: a month's payout for a city's cards, settlement file included.

A synthetic month (March 2025, Seoul) of credits for ``cards`` cards: each card has a few
bus and local-food credits and some a refund, 90 % have a balance account (the others are
held), a few have a profile. The credits are written into the store directly (not timed:
``localpay bench incentives`` measures crediting); then :func:`central.payouts.payout` pays
the month and :func:`central.payouts.write_settlement` writes its CSV file, timed together,
with a raw ``write``+``fsync`` rate of the same disk measured beside them as the floor.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from central.incentives import CREDIT_COLUMNS
from central.payouts import payout, write_settlement
from central.store import Rows, Store, open_store
from localpay.cli.bench.validator import raw_fsync_rate

MONTH = "2025-03"
AFTER = 1_743_433_200_000 + 3_600_000   # 2025-04-01 01:00 in Seoul


def _fill(store: Store, cards: int, seed: int) -> int:
    rng = random.Random(seed)
    rows: list[tuple[Any, ...]] = []
    balances: list[tuple[str, int, int]] = []
    profiles: list[tuple[str, str, int]] = []
    points = 0
    note = json.dumps({"rate_bp": 30}, separators=(",", ":"))
    for c in range(cards):
        token = f"{c:032x}"
        tid = f"BUS-{c % 1500:04d}"
        for k in range(rng.randint(1, 8)):
            p = rng.choice((1500, 1400, 1200, 900))
            day = f"2025-03-{3 + k:02d}"
            rows.append((tid, c * 16 + k, c * 16 + k, token, "bus", p, p, 0, 1, day, MONTH, 0,
                         "{}"))
            points += p
        if rng.random() < 0.3:
            p = rng.randint(1, 300)
            rows.append((f"TILL-{c % 8000:04d}", c * 16 + 9, c * 16 + 9, token, "local_food", p,
                         p * 333, 0, 1, "2025-03-20", MONTH, 0, note))
            points += p
        if rng.random() < 0.9:
            balances.append((token, rng.randint(0, 50_000), 1))
        if rng.random() < 0.1:
            profiles.append((token, "youth", 0))
    with store.tx() as tx:
        tx.insert_all([Rows("incentive_credits", CREDIT_COLUMNS, rows)])
        tx.many("INSERT INTO balances (card_token, balance, version) VALUES (?, ?, ?)",
                balances)
        tx.many("INSERT INTO incentive_profiles (card_token, rider, updated_ms) "
                "VALUES (?, ?, ?)", profiles)
        if store.kind == "postgresql":
            # A month's credits reach the store over a month, long checkpointed by payout
            # day: the WAL of this bulk load is set-up, not part of the payout.
            tx.run("CHECKPOINT")
    return points


def bench_payout(cards: int = 100_000, store_url: str | None = None, *,
                 seed: int = 3) -> dict[str, Any]:
    """Pay a month for ``cards`` cards in ``store_url`` (an empty store; default SQLite in a
    temporary folder) and write the settlement file; the figures."""
    with tempfile.TemporaryDirectory(prefix="localpay-bench-payout-") as tmp:
        folder = Path(tmp)
        store = open_store(store_url or f"sqlite:///{folder / 'central.sqlite'}")
        try:
            t0 = time.perf_counter()
            points = _fill(store, cards, seed)
            load_s = time.perf_counter() - t0
            floor = raw_fsync_rate(folder, seconds=1.0)
            t1 = time.perf_counter()
            result = payout(store, MONTH, AFTER)
            t2 = time.perf_counter()
            written = write_settlement(store, MONTH, folder / f"points-{MONTH}.csv")
            t3 = time.perf_counter()
            fsync = None
            if store.kind == "postgresql":
                with store.tx(write=False) as tx:
                    fsync = tx.one("SHOW fsync")
        finally:
            store.close()
    return {
        "store": store.kind, "cards": cards, "points_credited": points,
        "paid_cards": result.cards, "paid_points": result.points,
        "held_cards": result.held_cards, "held_points": result.held_points,
        "settlement_cards": written, "load_s": round(load_s, 2),
        "payout_s": round(t2 - t1, 2), "settlement_s": round(t3 - t2, 2),
        "total_s": round(t3 - t1, 2), "fsyncs_per_s": round(floor),
        **({"postgresql_fsync": str(fsync[0])} if fsync is not None else {}),
        "cpus": os.cpu_count(),
    }
