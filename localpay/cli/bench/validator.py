"""``localpay bench``: tap-to-decision on the validator path against what the disk allows.

An approval costs one durable commit, so the honest yardstick is the disk's own rate of
``write`` + ``fsync`` of a small record, measured in the same folder in the same run.

At each ledger size the ledger is built afresh as a validator that has recorded that many
taps would hold it: real signed, chained entries by a pool of riders (one card per
``ENTRIES_PER_CARD`` entries), and every table a tap reads filled in proportion: the cards'
counters (one row per card seen), balances (the city's snapshot: one per card), the deny
list (one card in ``DENIED_EVERY``), this week's points snapshot and rider profiles, with the
rules summary a sync brings so the points estimate runs as in service. The measured taps
are by returning riders (``RETURNING`` of them, last seen over an hour ago) and new cards.
Whether latency grows with the ledger is then a measurement, not a consequence of empty
tables.
"""

from __future__ import annotations

import json
import os
import random
import resource
import sqlite3
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.incentive_rules import Rules
from firmware_cfg.config import DEFAULT, Config
from firmware_cfg.keys import DEMO_TOKEN_KEY
from localpay.cli import simulate
from localpay.cli.bench.traffic import YOUTH_EVERY, tap_detail
from offline_ledger import Ledger, encoding
from offline_ledger.encoding import EntryFields
from terminal.cards import card_token
from terminal.core import Terminal

Progress = Callable[[str], None]

#: ledger entries per distinct card: riders come back (2.6 taps a day, over several days)
ENTRIES_PER_CARD = 4
#: one card of the city in this many is on the deny list (lost, stolen, overdrawn)
DENIED_EVERY = 50
#: share of the cards seen that have bus points this week (the points snapshot)
POINTS_SHARE = 0.5
#: share of the measured taps made by cards already in the ledger
RETURNING = 0.7
#: the ledger's last entry is this long before the measured taps (outside the
#: duplicate-tap window, so a returning rider is charged, not "already paid")
END_GAP_MS = 3_600_000
#: time between two prefilled taps
STEP_MS = 1000

def raw_fsync_rate(folder: Path, seconds: float = 2.0, record: int = 128) -> float:
    """Appends of ``record`` bytes each followed by ``fsync``, per second."""
    path = folder / "fsync-probe.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    data = os.urandom(record)
    n = 0
    try:
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            os.write(fd, data)
            os.fsync(fd)
            n += 1
            if n % 16 == 0 and time.perf_counter() >= deadline:
                break
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return n / elapsed


def card_pool(size: int, taps: int) -> tuple[int, int]:
    """(cards seen in a ledger of ``size`` entries, first card of the ``taps`` measured):
    the measured cards are the pool's last ``RETURNING`` share, then new ones."""
    pool = max(1, size // ENTRIES_PER_CARD)
    returning = min(pool, int(taps * RETURNING))
    return pool, pool - returning


def prefill(path: Path, key: Ed25519PrivateKey, terminal_id: str, size: int, *,
            pool: int, measured: range, token_key: bytes = DEMO_TOKEN_KEY,
            now_ms: int | None = None, progress: Progress | None = None) -> dict[str, int]:
    """Build the ledger at ``path`` afresh with ``size`` real, signed, chained taps by the
    cards ``0 .. pool-1`` of :func:`localpay.cli.simulate.card_uid` (each at least once),
    and fill the tables a tap reads in proportion (see the module docstring). Cards in
    ``measured`` are kept off the deny list. Returns the rows of each table.

    Bulk inserts with ``synchronous=OFF`` (this is set-up, not the thing measured); the
    entries are indistinguishable from appended ones and ``verify`` accepts them, and the
    side tables hold what the ledger's own appends and a sync would have left.
    """
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    Ledger(path, key=key, terminal_id=terminal_id, tail_check=0).close()
    rng = random.Random(size)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    tokens = [card_token(token_key, "uid", simulate.card_uid(k)) for k in range(pool)]
    youth = {k for k in range(pool) if k % YOUTH_EVERY == 0}
    details = {r: tap_detail("city", r) for r in ("adult", "youth")}
    fares = {"adult": DEFAULT.fares.adult, "youth": DEFAULT.fares.youth}
    # card -> [offline amount, offline count, last tap mono, last tap seq, last amount]
    counters: dict[int, list[int]] = {}
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=OFF")
        seq, prev = 0, bytes(32)
        wall = now - END_GAP_MS - size * STEP_MS
        chunk = 20_000
        while seq < size:
            rows = []
            for _ in range(min(chunk, size - seq)):
                k = seq if seq < pool else rng.randrange(pool)
                seq += 1
                wall += STEP_MS
                rider = "youth" if k in youth else "adult"
                fare = fares[rider]
                f = EntryFields(seq, "tap", terminal_id, tokens[k], fare, 0, "85", wall, wall,
                                details[rider], prev)
                data = encoding.encode(f)
                digest = encoding.entry_hash(data)
                rows.append((*_values(f), digest, key.sign(data)))
                prev = digest
                c = counters.get(k)
                if c is None:
                    counters[k] = [fare, 1, wall, seq, fare]
                else:
                    c[0] += fare
                    c[1] += 1
                    c[2], c[3], c[4] = wall, seq, fare
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO entries VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            conn.execute("COMMIT")
            if progress:
                progress(f"ledger filled to {seq:,} entries")
        tables = _fill_side_tables(conn, tokens, counters, youth, measured, size, now, rng)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return {"entries": size, **tables}


def _fill_side_tables(conn: sqlite3.Connection, tokens: list[str],
                      counters: dict[int, list[int]], youth: set[int], measured: range,
                      size: int, now: int, rng: random.Random) -> dict[str, int]:
    """Counters, balances, deny list, points snapshot and rider profiles, in one
    transaction of bulk inserts."""
    pool = len(tokens)
    # a deny list is the city's: cards that never tapped here, and some that did
    denied = [card_token(DEMO_TOKEN_KEY, "uid", simulate.card_uid(pool + len(measured) + j))
              for j in range(max(1, pool // DENIED_EVERY // 2))]
    denied += [tokens[k] for k in range(0, pool, DENIED_EVERY * 2) if k not in measured]
    rules = Rules.default()
    today = rules.calendar().day(now)
    monday = (today - timedelta(days=today.weekday())).isoformat()
    snapshot = [(tokens[k], monday, rng.choice((1500, 2900)), rng.randrange(1, 32),
                 "youth" if k in youth else "", now)
                for k in range(pool) if rng.random() < POINTS_SHARE]
    conn.execute("BEGIN")
    # the prefill ends synced (synced_upto below): no offline amount left on any card, as a
    # sync's recount leaves it; the last tap of each card stays for the duplicate window
    conn.executemany("INSERT INTO card_counters VALUES (?,0,0,?,?,?)",
                     [(tokens[k], c[2], c[3], c[4]) for k, c in counters.items()])
    # enough left that a returning rider is charged, not declined for balance
    conn.executemany("INSERT INTO balances VALUES (?,?,?,?)",
                     [(tokens[k], counters.get(k, [0])[0] + rng.randrange(10_000, 100_000),
                       size, now) for k in range(pool)])
    conn.executemany("INSERT OR REPLACE INTO deny_list VALUES (?,?,?)",
                     [(t, 1, "lost") for t in denied])
    conn.execute("UPDATE sync_state SET deny_version = 1, synced_upto = ?", (size,))
    conn.executemany("INSERT INTO points_snapshot VALUES (?,?,?,?,?,?)", snapshot)
    summary = json.dumps(rules.summary(today), sort_keys=True, separators=(",", ":"))
    conn.execute("UPDATE points_state SET version = 1, rules = ?", (summary,))
    conn.executemany("INSERT INTO rider_categories VALUES (?,?,?)",
                     [(tokens[k], "youth", 1) for k in sorted(youth)])
    conn.execute("UPDATE riders_state SET version = 1")
    conn.execute("COMMIT")
    return {name: int(conn.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0])
            for name in ("card_counters", "balances", "deny_list", "points_snapshot",
                         "rider_categories")}


def _values(f: EntryFields) -> tuple[Any, ...]:
    return (f.seq, f.kind, f.terminal_id, f.card_token, f.amount, f.ref_seq, f.place,
            f.wall_ms, f.mono, f.detail, f.prev_hash)


def run(
    *,
    sizes: list[int],
    taps: int = 5000,
    folder: Path | None = None,
    config: Config = DEFAULT,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Measure ``taps`` validator taps at each ledger size in ``sizes`` (ascending)."""
    if taps < 1 or not sizes:
        raise ValueError("bench needs at least one tap and one ledger size")
    own_tmp = None
    if folder is None:
        own_tmp = tempfile.TemporaryDirectory(prefix="localpay-bench-")
        folder = Path(own_tmp.name)
    try:
        return _run(sorted(sizes), taps, folder, config, progress)
    finally:
        if own_tmp is not None:
            own_tmp.cleanup()


def _run(sizes: list[int], taps: int, folder: Path, config: Config,
         progress: Progress | None) -> dict[str, Any]:
    say = progress or (lambda _msg: None)
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "bench-ledger.sqlite"
    key = Ed25519PrivateKey.generate()
    config = simulate.simulation_config(config, "validator")
    say("measuring raw write+fsync rate of the disk")
    fsyncs = raw_fsync_rate(folder)
    stages: list[dict[str, Any]] = []
    for size in sizes:
        pool, first_card = card_pool(size, taps)
        tables = prefill(db, key, config.terminal.id, size, pool=pool,
                         measured=range(first_card, first_card + taps), progress=say)
        ledger = Ledger(db, key=key, terminal_id=config.terminal.id)
        try:
            terminal = Terminal(config, ledger, DEMO_TOKEN_KEY)
            say(f"{taps:,} taps at {ledger.head.seq:,} entries, "
                f"{tables['card_counters']:,} cards seen")
            figures = simulate.run(terminal, taps, first_card=first_card)
            stage = figures.as_dict(terminal)
            stage["ledger_entries_before"] = size
            stage["returning_taps"] = min(taps, pool - first_card)
            stage["tables"] = tables
            stages.append(stage)
        finally:
            ledger.close()
    first, last = stages[0], stages[-1]
    all_tps = sum(s["presentations"] for s in stages) / sum(s["seconds"] for s in stages)
    worst_p99 = max(float(s["p99_ms"]) for s in stages)
    return {
        "benchmark": "validator tap-to-decision (read, decide, sign, durable commit)",
        "machine": f"{os.cpu_count()} cores, {os.uname().machine}",
        "disk_folder": str(folder),
        "taps_per_stage": taps,
        "p50_ms": last["p50_ms"],
        "p99_ms": worst_p99,
        "max_ms": max(float(s["max_ms"]) for s in stages),
        "taps_per_s": round(all_tps, 1),
        "fsyncs_per_s": round(fsyncs, 1),
        "ratio": round(all_tps / fsyncs, 3),
        "p99_growth": round(float(last["p99_ms"]) / float(first["p99_ms"]), 3)
        if first["p99_ms"] else None,
        "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "stages": [
            {k: s[k] for k in ("ledger_entries_before", "p50_ms", "p99_ms", "max_ms",
                               "taps_per_s", "approved", "declined", "returning_taps",
                               "tables")}
            for s in stages
        ],
    }
