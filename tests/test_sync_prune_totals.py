"""A day's totals stay whole when its entries are pruned (the terminal's report to central).

The terminal reports each day's totals it touched (count and amount by kind); central
reconciles them against the entries it holds. The totals were counted from the entries
still in the ledger, and `ledger prune` keeps only the last 1,000 proven ones: a busy day
that straddled a prune was reported again with only its later entries, replacing the good
report (the day's reconciliation then failed with nothing to explain it), and a day whose
report was still owed when all its entries were pruned was dropped unreported. Pruning now
keeps what it removes summed by quarter hour and kind (migration ``0007_pruned_sums``).

Against a real ``central serve``; the transport that fails the totals route stands in for a
proxy in front of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import open_service
from central.reconcile import report
from localpay.cli.bench.traffic import WEEKDAY_MS
from localpay.errors import SyncUnavailableError
from offline_ledger import Ledger
from sync.client import SyncClient
from tests.pg_fixtures import CentralProcess, central_with_terminal, fill_ledger
from tests.test_sync_unavailable import FailingProxy

TID = "BUS-PRUNE"
FIRST, LATER = 300, 20
#: the first entries, one a second from 05:00 in Seoul, then the later ones at 09:00
LATER_MS = WEEKDAY_MS + 4 * 3_600_000
DAY = datetime.fromtimestamp(WEEKDAY_MS / 1000, ZoneInfo("Asia/Seoul")).strftime("%Y-%m-%d")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[CentralProcess, Ed25519PrivateKey, str, Path]]:
    with central_with_terminal(tmp_path, TID) as stack:
        yield stack


def _append_later(path: Path, key: Ed25519PrivateKey) -> list[int]:
    amounts = [1000 + 50 * i for i in range(LATER)]
    with Ledger(path, key=key) as led:
        for i, amount in enumerate(amounts):
            led.append("tap", card_token=f"later-{i}", amount=amount, place="85",
                       wall_ms=LATER_MS + 1000 * i, offline_delta=0, tap=True)
    return amounts


def _prune(path: Path, key: Ed25519PrivateKey, keep: int) -> int:
    with Ledger(path, key=key) as led:
        return led.prune(led.synced_upto() - keep, led.sync_checkpoint())


def _central_totals(db: str, data: Path) -> tuple[list[tuple[str, int, int]], bool]:
    """What central holds as the terminal's report of the day, and whether the day's
    reconciliation of this terminal matches its entries."""
    svc = open_service(db, data)
    try:
        with svc.store.tx(write=False) as tx:
            rows = tx.all("SELECT kind, count, amount FROM terminal_totals WHERE "
                          "terminal_id = ? AND day = ? ORDER BY kind", (TID, DAY))
        lines = [line for line in report(svc, DAY).lines if line.terminal_id == TID]
    finally:
        svc.store.close()
    assert lines, "the day's reconciliation has no line for the terminal"
    return [(str(k), int(n), int(a)) for k, n, a in rows], all(line.matches for line in lines)


@pytest.mark.parametrize("keep", [50, 0])
def test_a_day_reported_again_after_a_prune_keeps_its_pruned_entries(
        stack: tuple[CentralProcess, Ed25519PrivateKey, str, Path], tmp_path: Path,
        keep: int) -> None:
    server, key, db, data = stack
    path = tmp_path / "ledger.sqlite"
    fill_ledger(path, key, TID, FIRST, start_ms=WEEKDAY_MS, amount=1500).close()
    with SyncClient(path, key, server.url, server.verifier) as client:
        assert client.sync_once().days_reported == [DAY]
    assert _central_totals(db, data) == ([("tap", FIRST, FIRST * 1500)], True)
    assert _prune(path, key, keep) == FIRST - keep
    later = _append_later(path, key)
    with SyncClient(path, key, server.url, server.verifier) as client:
        summary = client.sync_once()
    assert summary.sent == LATER and summary.days_reported == [DAY]
    # worked out here from what was written: 300 taps of 1,500 won and the 20 later ones
    assert _central_totals(db, data) == ([("tap", FIRST + LATER,
                                           FIRST * 1500 + sum(later))], True)


def test_a_day_owed_its_report_is_reported_whole_after_its_entries_are_pruned(
        stack: tuple[CentralProcess, Ed25519PrivateKey, str, Path], tmp_path: Path) -> None:
    server, key, db, data = stack
    path = tmp_path / "ledger.sqlite"
    fill_ledger(path, key, TID, FIRST, start_ms=WEEKDAY_MS, amount=1500).close()
    # the batches are held, the totals route is away: the day's report is owed
    with SyncClient(path, key, server.url, server.verifier, max_retries=0,
                    transport=FailingProxy("/v1/totals", times=1, status=503)) as client:
        with pytest.raises(SyncUnavailableError, match=r"^POST /v1/totals: HTTP 503$"):
            client.sync_once()
    with Ledger(path, key=key) as led:
        assert led.synced_upto() == FIRST
    assert _central_totals(db, data)[0] == []
    assert _prune(path, key, 0) == FIRST
    with SyncClient(path, key, server.url, server.verifier) as client:
        summary = client.sync_once()
    assert summary.sent == 0 and summary.days_reported == [DAY]
    assert _central_totals(db, data) == ([("tap", FIRST, FIRST * 1500)], True)
