"""Losing the database server: a PostgreSQL primary with a synchronous standby
(``synchronous_commit = remote_apply``), the primary killed with SIGKILL while terminals sync
through a real ``central serve`` on a multi-host URL, the standby promoted.

What must hold afterwards, on the new primary: every batch a terminal saw acknowledged is
there, the log's root at every size a terminal was given is unchanged, every ledger is on the
chain exactly once, and no incentive point is credited twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import open_service, terminal_status
from central.store import PostgresStore, Store, open_store
from firmware_cfg.keys import public_hex
from localpay.cli.bench.traffic import WEEKDAY_MS, Traffic, card_token, tap_detail
from localpay.errors import SyncUnavailableError
from localpay.pgserver import PgCluster, multi_host_url, sync_primary_settings
from offline_ledger import Ledger
from offline_ledger.ledger import Entry
from sync import merkle
from sync.checkpoint import Checkpoint
from sync.client import Backoff, SyncClient
from sync.protocol import BatchReceipt
from tests.pg_fixtures import fill_ledger, pg_cluster, start_central  # noqa: F401

SERVE = ("-m", "localpay", "central", "serve")
STANDBY = "standby1"
SEOUL = ZoneInfo("Asia/Seoul")
FARE, ADULT_CAP = 1500, 2900        # the shipped rules: a city bus's fare, an adult's week
CARDS = 40                          # riders per bus, each tapping in turn
STEP_MS = 60_000                    # a tap a minute: 2,000 taps span Wednesday and Thursday


@pytest.fixture
def pair() -> Iterator[tuple[PgCluster, PgCluster]]:
    """A primary and its synchronous standby, of this test's own."""
    primary = PgCluster(settings=sync_primary_settings(STANDBY))
    standby: PgCluster | None = None
    try:
        standby = PgCluster.standby_of(primary, STANDBY)
        primary.wait_sync_standby(STANDBY)
        yield primary, standby
    finally:
        primary.destroy()
        if standby is not None:
            standby.destroy()


@dataclass(frozen=True)
class Ack:
    """A batch the terminal saw acknowledged: its last entry and the checkpoint given."""

    at: float
    last_seq: int
    size: int
    root: bytes


class RecordingClient(SyncClient):
    """The real sync client; it also keeps every receipt it accepted, with when."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.acks: list[Ack] = []

    def _check_receipt(self, receipt: BatchReceipt, last: Entry, state: dict[str, Any]) -> str:
        note = super()._check_receipt(receipt, last, state)
        cp = Checkpoint.verify(note, self.verifier)
        self.acks.append(Ack(time.monotonic(), last.seq, cp.size, cp.root))
        return note


def bus_traffic(n: int, prefix: str) -> Traffic:
    """``n`` adult taps on a city bus by ``CARDS`` riders of this bus only, in turn."""
    cards = [card_token(i % CARDS, prefix) for i in range(n)]
    return Traffic("tap", cards, [FARE] * n, [tap_detail("city", "adult")] * n)


def expected_points(walls: dict[str, list[int]]) -> dict[str, int]:
    """Each card's points, computed here from the taps' times: the first ride of each
    weekday earns its fare, at most ``ADULT_CAP`` a week (Monday to Sunday, in Seoul)."""
    out: dict[str, int] = {}
    for card, times in walls.items():
        days = sorted({datetime.fromtimestamp(t / 1000, SEOUL).date() for t in times})
        week: dict[date, int] = {}
        for day in days:
            if day.weekday() >= 5:
                continue
            monday = day - timedelta(days=day.weekday())
            got = week.get(monday, 0)
            week[monday] = got + max(0, min(FARE, ADULT_CAP - got))
        out[card] = sum(week.values())
    return out


def _sync(client: RecordingClient, out: list[Any]) -> threading.Thread:
    def run() -> None:
        try:
            out.append(client.sync_once())
        except BaseException as err:  # reported to the test thread
            out.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_primary_killed_mid_ingest_standby_promoted(
        tmp_path: Path, pair: tuple[PgCluster, PgCluster]) -> None:
    primary, standby = pair
    url = multi_host_url(primary, standby)
    data = tmp_path / "data"
    n, terminals = 2000, ("BUS-1", "BUS-2")
    keys = {t: Ed25519PrivateKey.generate() for t in terminals}
    svc = open_service(url, data)
    for t in terminals:
        svc.add_terminal(t, bytes.fromhex(public_hex(keys[t])))
    svc.store.close()
    paths = {}
    for i, t in enumerate(terminals):
        paths[t] = tmp_path / f"{t}.sqlite"
        fill_ledger(paths[t], keys[t], t, n, start_ms=WEEKDAY_MS, step_ms=STEP_MS,
                    traffic=bus_traffic(n, "ab"[i])).close()

    srv = start_central(url, data, command=SERVE, timeout=60)
    try:
        clients = {t: RecordingClient(paths[t], keys[t], srv.url, srv.verifier,
                                      batch_size=100, timeout_s=30, max_retries=100,
                                      backoff=Backoff(base=0.05, cap=0.5))
                   for t in terminals}
        outs: dict[str, list[Any]] = {t: [] for t in terminals}
        threads = [_sync(clients[t], outs[t]) for t in terminals]
        deadline = time.monotonic() + 30
        while min(len(c.acks) for c in clients.values()) < 4:  # a fifth of the batches
            assert time.monotonic() < deadline, f"the terminals did not start syncing: {outs}"
            time.sleep(0.01)
        killed_at = time.monotonic()
        primary.kill()
        before = {t: [a for a in clients[t].acks if a.at < killed_at] for t in terminals}
        time.sleep(1.0)  # the time it takes to decide on a failover, at the very least
        standby.promote()
        for thread in threads:
            thread.join(60)
        for t in terminals:
            assert len(outs[t]) == 1 and not isinstance(outs[t][0], BaseException), outs[t]
            clients[t].close()
    finally:
        srv.stop()
    log = srv.log_path.read_text()
    assert "unreachable, trying again" in log  # requests waited for the new primary
    # mid-ingest: some batches acknowledged by the old primary, most of them still to send
    acked_before = sum(a[-1].last_seq for a in before.values() if a)
    assert 0 < acked_before < len(terminals) * n // 2
    # the rest was acknowledged after the kill, by the new primary: whether a terminal had to
    # send a batch again (a retry) or central's reconnect held it until the promotion depends
    # on where the kill fell, and on a loaded machine it often fell between requests
    assert all(len(clients[t].acks) > len(before[t]) for t in terminals)

    store = open_store(standby.url())  # the new primary alone, not through the multi-host URL
    try:
        with store.tx(write=False) as tx:
            leaves = [merkle.leaf_hash(bytes(r[0])) for r in
                      tx.all("SELECT data FROM entries ORDER BY log_index")]
            indexes = [int(r[0]) for r in tx.all("SELECT log_index FROM entries "
                                                  "ORDER BY log_index")]
            held = {(str(r[0]), int(r[1])): bytes(r[2]) for r in
                    tx.all("SELECT terminal_id, seq, data FROM entries")}
            stored_roots = {int(r[0]): bytes(r[1]) for r in
                            tx.all("SELECT size, root FROM checkpoints")}
            credits = tx.all("SELECT card_token, terminal_id, seq, points FROM "
                             "incentive_credits")
            cursor, size = tx.one("SELECT c.next_index, s.size FROM incentive_cursor c, "
                                  "log_state s") or (0, 0)
    finally:
        store.close()
    assert indexes == list(range(len(indexes))) and size == len(leaves) == len(terminals) * n

    walls: dict[str, list[int]] = {}
    for t in terminals:
        with Ledger(paths[t], key=keys[t]) as led:
            assert led.synced_upto() == n
            ledger = {e.seq: e for e in led.entries()}
        # every entry exactly once, byte for byte as the terminal signed it
        assert {s: d for (tid, s), d in held.items() if tid == t} == {
            s: e.encoded() for s, e in ledger.items()}
        for e in ledger.values():
            walls.setdefault(e.fields.card_token, []).append(e.fields.wall_ms)
        # every batch acknowledged before the kill is on the new primary, and the log's root
        # at each size a terminal was given, before the kill or after, is unchanged
        assert before[t] and all((t, a.last_seq) in held for a in before[t])
        for a in clients[t].acks:
            assert merkle.root(leaves[:a.size]) == a.root == stored_roots[a.size]
    assert all(a.size <= len(leaves) for t in terminals for a in before[t])

    # credited once: the points of each card are what its taps earn, by a count made here
    assert int(cursor) == size
    want = expected_points(walls)
    got: dict[str, int] = {}
    for card, _, _, points in credits:
        got[card] = got.get(card, 0) + int(points)
    assert got == {c: p for c, p in want.items() if p}
    assert len({(tid, seq) for _, tid, seq, _ in credits}) == len(credits)
    # the data are what they are meant to be: each rider reaches the week's cap
    assert sum(want.values()) == len(terminals) * CARDS * ADULT_CAP


def test_store_reconnects_to_the_promoted_standby(pair: tuple[PgCluster, PgCluster]) -> None:
    primary, standby = pair
    store = open_store(multi_host_url(primary, standby))
    assert isinstance(store, PostgresStore)
    try:
        with store.tx() as a, store.tx() as b:  # two pooled connections to the primary
            a.run("CREATE TABLE marks (n BIGINT PRIMARY KEY)")
            b.one("SELECT 1")
        with store.tx() as tx:
            tx.run("INSERT INTO marks VALUES (1)")  # answered: on the standby too
        primary.kill()
        promoter = threading.Timer(1.5, standby.promote)
        promoter.start()
        started = time.monotonic()
        # the request that meets the dead server fails, and the other pooled connection
        # to it is dropped with its own
        with pytest.raises(SyncUnavailableError, match="failed"), store.tx() as tx:
            tx.run("INSERT INTO marks VALUES (2)")
        # the next transaction waits for the promoted standby instead of failing
        with store.tx() as tx:
            tx.run("INSERT INTO marks VALUES (3)")
            marks = [int(r[0]) for r in tx.all("SELECT n FROM marks ORDER BY n")]
        waited = time.monotonic() - started
        promoter.join()
    finally:
        store.close()
    assert marks == [1, 3]
    assert 1.0 < waited < store.reconnect_s
    assert standby.query("SELECT n FROM marks ORDER BY n") == [(1,), (3,)]


def test_first_requests_of_many_terminals_at_once(pg_cluster: PgCluster) -> None:  # noqa: F811
    """A central just started meets its terminals' first requests all at once: each makes
    the revocation table where missing, and PostgreSQL's CREATE TABLE IF NOT EXISTS fails
    one of two concurrent ones (a duplicate key in pg_type), which refused a batch."""
    errors: list[BaseException] = []
    for _ in range(6):
        store = open_store(pg_cluster.new_schema())
        start = threading.Barrier(8)

        def first_request(store: Store = store, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                terminal_status.ensure_schema(store)
            except BaseException as err:  # reported to the test thread
                errors.append(err)

        threads = [threading.Thread(target=first_request) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        store.close()
    assert errors == []
