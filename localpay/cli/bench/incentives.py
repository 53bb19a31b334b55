"""Benchmark: incentive crediting for a day of a city the size of Goyang.

A synthetic Wednesday (12 March 2025, Seoul): ``events`` taps and purchases, 75 % bus taps
on 1,500 validators by riders of whom most already rode on Monday and Tuesday (their week
rows are loaded first, so caps bite), 25 % purchases on 8,000 tills of which 30 % are
local-food stores, 2 % of those refunded. Details are those terminals write
(:mod:`localpay.cli.bench.traffic`). Each terminal sends its entries of each sync round as
batches of the terminal's default size (``[central] batch_size``), in time order (hourly
rounds by default), and the batches enter the central log in that order. The chain itself
(signatures, Merkle tree) is not part of this figure: ``localpay bench central`` measures
ingest; here each batch is written into the log's ``entries`` table directly (``load_s``).

``follow="batch"`` (the default, and what production does): each batch is appended in its own
transaction and then credited by :func:`central.incentives.credit_log`, as the service's
:class:`central.incentives.IncentiveCrediter` does after every committed batch. With
``--store postgresql`` the cluster runs with fsync on, and nothing is checkpointed by hand.

``follow="backlog"`` (a capacity figure, not what production does): the whole day is loaded in
one bulk insert, checkpointed (PostgreSQL), and then credited in one catch-up run of
``chunk`` log entries per transaction, as after an outage of the crediter.

Reported: ``credit_s``, the time spent crediting (its SQL and commits included), beside the
raw ``write``+``fsync`` rate of the disk the benchmark's temporary folder is on.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from central.incentives import CreditResult, credit_log
from central.service import Ingested
from central.store import ENTRY_COLUMNS, Store, open_store
from localpay.cli.bench.traffic import BATCH, payment_detail, tap_detail
from localpay.cli.bench.validator import raw_fsync_rate
from localpay.encoding import canonical_detail
from localpay.errors import ConfigError
from sync.protocol import WireEntry

DAY_MS = 1_741_705_200_000          # 2025-03-12 00:00 in Seoul (UTC+9)
WEEK = "2025-03-10"
_HOUR = 3_600_000
_ZERO = bytes(32)


MODES = {
    "batch": "production: each batch appended, then credited (credit_log), as the service "
             "does after every committed batch",
    "backlog": "capacity, not production: the day bulk-loaded and checkpointed before the "
               "timer, then credited in one catch-up run",
}


def _day(events: int, seed: int) -> tuple[dict[str, list[tuple[int, str, str, int, str, int]]],
                                          list[tuple[str, str, int, int, int]], list[str]]:
    rng = random.Random(seed)
    taps = events * 3 // 4
    riders = max(taps * 10 // 26, 1)
    shoppers = max((events - taps) * 4 // 5, 1)
    details = {(b, r): tap_detail(b, r) for b in ("city", "village", "express")
               for r in ("adult", "youth")}
    food = payment_detail("local_food")
    general = payment_detail("general")
    # what a till writes into a refund (terminal.core)
    refund = canonical_detail({"clock": "synchronised", "merchant_category": "local_food"})
    by_terminal: dict[str, list[tuple[int, str, str, int, str, int]]] = defaultdict(list)
    weeks: list[tuple[str, str, int, int, int]] = []
    youth: list[str] = []
    for r in range(riders):
        token = f"r{r:031x}"
        if r % 10 == 0:
            youth.append(token)
        before = rng.random()
        if before < 0.6:   # rode Monday and Tuesday already
            weeks.append((token, WEEK, 2900 if r % 10 else 1800, 0b11, 0))
        elif before < 0.8:
            weeks.append((token, WEEK, 1500 if r % 10 else 900, 0b01, 0))
    for _ in range(taps):
        r = rng.randrange(riders)
        bus = rng.choices(("city", "village", "express"), (7, 2, 1))[0]
        rider = "youth" if r % 10 == 0 else "adult"
        wall = DAY_MS + rng.randrange(5 * _HOUR, 24 * _HOUR)
        fare = {"city": 1500, "village": 1200, "express": 2800}[bus] * (6 if r % 10 == 0
                                                                        else 10) // 10
        by_terminal[f"BUS-{rng.randrange(1500):04d}"].append(
            (wall, "tap", f"r{r:031x}", fare, details[(bus, rider)], 0))
    for _ in range(events - taps):
        till = rng.randrange(8000)
        wall = DAY_MS + rng.randrange(8 * _HOUR, 23 * _HOUR)
        detail = food if till % 10 < 3 else general
        by_terminal[f"TILL-{till:04d}"].append(
            (wall, "payment", f"s{rng.randrange(shoppers):031x}", rng.randrange(1000, 80_000),
             detail, 0))
    for tid, evs in by_terminal.items():
        evs.sort()
        if tid.startswith("TILL") and int(tid[5:]) % 10 < 3:
            # after every payment of the day, so the payments keep their sequence numbers
            refunds = [(DAY_MS + 23 * _HOUR + 1_800_000 + n, "refund", tok, amt // 2, refund,
                        n + 1)
                       for n, (w, _, tok, amt, _, _) in enumerate(evs) if rng.random() < 0.02]
            evs.extend(refunds)
            evs.sort(key=lambda e: e[0])
    return by_terminal, weeks, youth


def _batches(by_terminal: dict[str, list[tuple[int, str, str, int, str, int]]],
             round_ms: int) -> list[list[Ingested]]:
    rounds: dict[int, list[tuple[str, list[WireEntry]]]] = defaultdict(list)
    for tid in sorted(by_terminal):
        per_hour: dict[int, list[WireEntry]] = defaultdict(list)
        for n, (wall, kind, token, amount, detail, ref) in enumerate(by_terminal[tid], 1):
            per_hour[(wall - DAY_MS) // round_ms].append(WireEntry(
                n, kind, tid, token, amount, ref, tid, wall, wall, detail, _ZERO, b"", b""))
        for hour, items in per_hour.items():
            for i in range(0, len(items), BATCH):
                rounds[hour].append((tid, items[i : i + BATCH]))
    out: list[list[Ingested]] = []
    index = 0
    for hour in sorted(rounds):
        for _, items in rounds[hour]:
            batch = []
            for e in items:
                batch.append(Ingested(index, e, "2025-03-12"))
                index += 1
            out.append(batch)
    return out


def load_log(store: Store, batches: Sequence[Sequence[Ingested]]) -> None:
    """Append ``batches`` to the central log's ``entries`` as ingest would store them, without
    hashes, signatures or tree (crediting reads none of them); the log size follows."""
    rows = [(item.log_index, item.entry.terminal_id, item.entry.seq, item.entry.kind,
             item.entry.card_token, item.entry.amount, item.entry.place, item.entry.wall_ms,
             item.day, b"", b"", b"", item.entry.ref_seq, item.entry.detail,
             item.entry.wall_ms)
            for batch in batches for item in batch]
    if not rows:
        return
    with store.tx() as tx:
        tx.lock_log()
        tx.bulk("entries", ENTRY_COLUMNS, rows)
        tx.run("UPDATE log_state SET size = ? WHERE id = 1", (rows[-1][0] + 1,))


def _prepare(store: Store, weeks: list[tuple[str, str, int, int, int]], youth: list[str]) -> None:
    with store.tx() as tx:
        tx.bulk("incentive_weeks", ("card_token", "week_start", "points", "days_mask",
                                    "version"), weeks)
        tx.bulk("incentive_profiles", ("card_token", "rider", "updated_ms"),
                [(t, "youth", 0) for t in youth])
    if store.kind == "postgresql":
        with store.tx() as tx:
            tx.run("ANALYZE incentive_weeks")
            tx.run("ANALYZE incentive_profiles")


def bench_incentives(events: int = 1_500_000, store_url: str | None = None, *,
                     follow: str = "batch", chunk: int = 5000, seed: int = 12,
                     round_s: int = 3600) -> dict[str, Any]:
    """Credit a synthetic Goyang day of ``events`` taps and purchases into ``store_url``
    (default: SQLite in a temporary folder; give an empty store). Each terminal sends what
    it recorded in each ``round_s`` seconds as batches of the terminal's default size: 3600
    is an hourly sync, 86400 a day's backlog. ``follow`` (see :data:`MODES`): ``batch``
    credits after each batch as production does, ``backlog`` credits the day's log in one
    catch-up run of ``chunk`` entries per transaction. Returns the figures."""
    if follow not in MODES:
        raise ConfigError(f"follow must be backlog or batch, not {follow!r}")
    t0 = time.perf_counter()
    by_terminal, weeks, youth = _day(events, seed)
    batches = _batches(by_terminal, round_s * 1000)
    made_s = time.perf_counter() - t0
    now = DAY_MS + 86_400_000
    with tempfile.TemporaryDirectory(prefix="localpay-bench-incentives-") as tmp:
        # the disk's own floor, beside the figure (PostgreSQL's data may be on another disk)
        floor = raw_fsync_rate(Path(tmp), seconds=1.0)
        store = open_store(store_url or f"sqlite:///{Path(tmp) / 'central.sqlite'}")
        try:
            _prepare(store, weeks, youth)
            load_s = credit_s = 0.0
            result = CreditResult()
            if follow == "backlog":
                t1 = time.perf_counter()
                load_log(store, batches)
                if store.kind == "postgresql":
                    # The day's entries arrived over a day, not in one COPY: the checkpoint
                    # that so much WAL at once calls for belongs to the setup, not the timing.
                    with store.tx() as tx:
                        tx.run("CHECKPOINT")
                load_s = time.perf_counter() - t1
                t1 = time.perf_counter()
                result = credit_log(store, chunk=chunk, now_ms=now)
                credit_s = time.perf_counter() - t1
            else:
                for batch in batches:
                    t1 = time.perf_counter()
                    load_log(store, [batch])
                    t2 = time.perf_counter()
                    r = credit_log(store, chunk=chunk, now_ms=now)
                    credit_s += time.perf_counter() - t2
                    load_s += t2 - t1
                    result.credits += r.credits
                    result.points += r.points
            with store.tx(write=False) as tx:
                row = tx.one("SELECT COUNT(*), COALESCE(SUM(points), 0) FROM incentive_credits")
                adj = tx.one("SELECT COUNT(*), COALESCE(SUM(points), 0) FROM "
                             "incentive_adjustments")
                fsync = tx.one("SHOW fsync") if store.kind == "postgresql" else None
            kind = store.kind
        finally:
            store.close()
    held = (int(row[0]), int(row[1])) if row else (0, 0)
    moved = (int(adj[0]), int(adj[1])) if adj else (0, 0)
    return {
        "store": kind, "events": events, "terminals": len(by_terminal), "round_s": round_s,
        "batches": len(batches), "batch_size": BATCH, "follow": follow, "mode": MODES[follow],
        "chunk": chunk,
        **({"postgresql_fsync": str(fsync[0])} if fsync is not None else {}),
        "riders_with_week_so_far": len(weeks), "credits": result.credits,
        "points": result.points,
        # first rides that arrived after a later ride of the same day took its credit over
        "adjustments": moved[0],
        "stored": {"credits": held[0], "adjustments": moved[0], "points": held[1] + moved[1]},
        "credit_s": round(credit_s, 2), "load_s": round(load_s, 2),
        "events_per_s": round(events / credit_s) if credit_s else None,
        "generate_s": round(made_s, 2), "fsyncs_per_s": round(floor),
    }
