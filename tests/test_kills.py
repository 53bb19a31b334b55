"""``kill -9`` of ``localpay run`` and of ``central serve``, mixed, at random moments: no
approval a rider saw is lost and none is counted twice (issue #20, the suite's short run).

The cycle and its checks live in :mod:`tests.kills`, shared with ``tests/soak_kills.py``
(1,000 cycles in ``make soak``). The seed is printed; ``LOCALPAY_KILLS_SEED=N`` replays
one.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from tests.kills import FARE, TERMINAL_ID, KillCheckError, KillWorld, seed_from_env
from tests.pg_fixtures import pg_cluster  # noqa: F401 - fixture

KILLS = 14


def test_kills_of_kiosk_and_service_lose_nothing_and_count_nothing_twice(
        pg_cluster, tmp_path: Path) -> None:  # noqa: F811
    seed = seed_from_env(20261127)
    print(f"kills seed {seed} (replay: LOCALPAY_KILLS_SEED={seed})")
    db = pg_cluster.new_database()
    world = KillWorld(tmp_path, db, seed)
    figures = world.run(KILLS)  # raises KillCheckError on any broken promise
    where = f"seed {seed}: {figures.as_dict()}"
    assert figures.cycles == KILLS, where
    assert figures.terminal_kills >= 3 and figures.central_kills >= 3, where
    # the kiosk's own thread synced between kills: the service's kills met live traffic
    assert figures.synced_by_kiosk > 0, where
    assert figures.reported >= KILLS, where
    assert figures.ledger_entries == figures.central_entries >= figures.reported, where

    # Money, computed here from what the kiosk reported: every approval is one adult fare
    # of a validator, and central's sum for the terminal's taps is that many fares.
    lines = [json.loads(r) for r in world.trace.read_text().splitlines() if r.endswith("}")]
    assert {(r["kind"], r["amount"]) for r in lines} == {("tap", FARE)}, where
    with psycopg.connect(db) as conn:
        taps = conn.execute(
            "SELECT count(*), sum(amount) FROM entries WHERE terminal_id = %s AND kind = "
            "'tap'", (TERMINAL_ID,)).fetchone()
        credited = conn.execute(
            "SELECT count(DISTINCT seq), count(*), sum(points) FROM incentive_credits "
            "WHERE terminal_id = %s", (TERMINAL_ID,)).fetchone()
    assert taps is not None and credited is not None
    count, total = taps
    assert count == figures.ledger_entries - _non_taps(world), where
    assert total == FARE * count, where
    # each tap is a new wallet's first ride of the weekday (or none on a weekend or a
    # holiday): credited at most once per entry, never more points than its fare
    assert credited[0] == credited[1] <= count, where
    assert (credited[2] or 0) <= FARE * credited[1], where

    # the checks catch what they are for: a reported approval the ledger lacks fails
    last = max(int(r["seq"]) for r in lines)
    with world.trace.open("a") as f:
        f.write(json.dumps({"seq": last + 1000, "entry_hash": "00" * 32, "amount": FARE,
                            "kind": "tap"}) + "\n")
    with pytest.raises(KillCheckError, match="reported approvals lost"):
        world.check()


def _non_taps(world: KillWorld) -> int:
    from offline_ledger import Ledger

    with Ledger(world.home.ledger_path) as ledger:
        return sum(1 for e in ledger.entries() if e.kind != "tap")
