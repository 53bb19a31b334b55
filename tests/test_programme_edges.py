"""Edges of per-municipality programmes: what a terminal of a municipality without a
programme is told, crediting a chunk that mixes such a municipality's entries with others',
an entry's municipality read from the log, a municipality's own yearly budget, a points
pocket opened by the payout, the waiting refunds of the day's report, and a rules version
recredited while a crediting run is between two chunks.

Every figure is worked out here from the settings written in this file (the shipped
defaults: the first ride of a weekday earns its fare back, capped at 2,900 a week for an
adult), not read from the code under test.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from central import accounts, books, municipalities, receivables
from central.incentive_rules import default_rules_text
from central.incentives import WEEK_COLUMNS, CreditEntry, credit_log, points_delta
from central.payouts import budget, fund_points, payout
from central.reconcile import report
from central.service import CentralLog, Ingested
from central.settlement import settle
from central.spending import SpendingPoster
from central.store import Rows
from central.versions import load_rules
from firmware_cfg.keys import public_hex
from tests.incentives_data import Chain, open_service, seoul_ms, tap_detail
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401
from tests.test_waiting_refunds import FEES, PAID, REFUND, _shop

NORTH, SOUTH = "north", "south"
CARD = "ab" * 32
#: a Friday evening of a week without public holidays (2025-03-10 to 03-16)
NOW = seoul_ms(2025, 3, 14, 20)


@pytest.fixture
def svc(store_url: str) -> Iterator[CentralLog]:  # noqa: F811
    s = open_service(store_url, followers=[])
    try:
        yield s
    finally:
        s.store.close()


def town(svc: CentralLog, mid: str, tid: str) -> Chain:
    if mid != "default":
        municipalities.add(svc.store, mid, mid.title(), f"{mid.title()} Pay")
    c = Chain(tid)
    svc.add_terminal(tid, bytes.fromhex(public_hex(c.key)), municipality=mid)
    return c


def rules_with(budget_points: int) -> str:
    text = default_rules_text()
    old = "yearly_budget_points = 2_000_000_000"
    assert old in text
    return text.replace(old, f"yearly_budget_points = {budget_points}", 1)


def test_a_municipality_without_programme_is_told_nothing_earns(svc: CentralLog) -> None:
    """Its terminals get the shipped summary with version 0, bus and local food off and no
    campaigns: they promise no points. default, holding nothing stored, is told the shipped
    programme as it is (version 1, both rules on); a municipality that loaded its rules is
    told them."""
    town(svc, NORTH, "BUS-N")
    town(svc, SOUTH, "BUS-S")
    load_rules(svc.store, default_rules_text(), municipality=SOUTH)
    none = points_delta(svc.store, 0, NOW, municipality=NORTH)["rules"]
    assert none["version"] == 0 and type(none["version"]) is int
    assert none["bus"] is False and none["local_food"] is False
    assert none["campaigns"] == {}
    for mid in ("default", SOUTH):
        summary = points_delta(svc.store, 0, NOW, municipality=mid)["rules"]
        assert summary["version"] == 1, mid
        assert summary["bus"] is True and summary["local_food"] is True, mid
        assert summary["weekly_cap"] == {"adult": 2900, "youth": 2020}, mid


def test_an_entry_without_programme_does_not_stop_the_chunk(svc: CentralLog) -> None:
    """A chunk whose first entry is of a municipality with no programme credits the entries
    after it: only that entry earns nothing."""
    north, home = town(svc, NORTH, "BUS-N"), town(svc, "default", "BUS-D")
    svc.ingest(north.terminal_id, [north.tap(CARD, seoul_ms(2025, 3, 10, 8))])
    svc.ingest(home.terminal_id, [home.tap(CARD, seoul_ms(2025, 3, 10, 9), fare=1500),
                                  home.tap(CARD, seoul_ms(2025, 3, 11, 9), fare=1400)])
    r = credit_log(svc.store, now_ms=NOW)
    # Monday's and Tuesday's first rides at default's bus, under the 2,900 cap
    assert (r.credits, r.points) == (2, 1500 + 1400)
    assert points_delta(svc.store, 0, NOW)["points"][CARD][0] == 2900
    assert CARD not in points_delta(svc.store, 0, NOW, municipality=NORTH)["points"]


def test_an_entry_keeps_its_detail_and_municipality() -> None:
    """CreditEntry.of takes the entry's detail and the municipality it is given."""
    c = Chain("BUS-N")
    wire = c.entry("tap", CARD, 1500, seoul_ms(2025, 3, 10, 8), detail=tap_detail())
    e = CreditEntry.of(Ingested(7, wire, "2025-03-10"), NORTH)
    assert (e.detail, e.municipality) == (tap_detail(), NORTH)
    assert (e.log_index, e.seq, e.effective_ms) == (7, 1, seoul_ms(2025, 3, 10, 8))
    assert CreditEntry.of(Ingested(7, wire, "2025-03-10")).municipality == "default"


def test_the_budget_is_the_municipalitys_own(svc: CentralLog) -> None:
    """A municipality's yearly budget is that of its own newest rules, not default's."""
    town(svc, NORTH, "BUS-N")
    load_rules(svc.store, rules_with(1_234_567), municipality=NORTH)
    assert budget(svc.store, 2025, municipality=NORTH).budget == 1_234_567
    assert budget(svc.store, 2025).budget == 2_000_000_000


def test_a_pocket_missing_from_an_older_store_is_opened_by_the_payout(svc: CentralLog) -> None:
    """An account of north whose points pocket an older version never opened: the payout
    opens it in north, at the payout's time, and pays the card's points into it."""
    bus = town(svc, NORTH, "BUS-N")
    load_rules(svc.store, default_rules_text(), municipality=NORTH)
    with svc.store.tx() as tx:
        accounts.link(tx, "A", CARD, municipality=NORTH)
        # as a store from before points pockets left it: the account without its pocket
        tx.run("DELETE FROM book_accounts WHERE municipality_id = ? AND account_id = ?",
               (NORTH, books.pocket("A", "points")))
    svc.ingest(bus.terminal_id, [bus.tap(CARD, seoul_ms(2025, 3, 10, 8), fare=1500)])
    credit_log(svc.store, now_ms=NOW)
    at = seoul_ms(2025, 4, 2, 9)
    fund_points(svc.store, 10_000, "fund-1", municipality=NORTH, at_ms=at - 1000)
    got = payout(svc.store, "2025-03", at, municipality=NORTH)
    # Monday's first ride: its fare, under the 2,900 cap
    assert (got.pocket_cards, got.pocket_points) == (1, 1500)
    with svc.store.tx(write=False) as tx:
        opened = tx.all("SELECT municipality_id, opened_ms FROM book_accounts "
                        "WHERE account_id = ?", (books.pocket("A", "points"),))
        assert books.balance(tx, books.pocket("A", "points"), municipality=NORTH) == 1500
    assert [(str(m), int(t)) for m, t in opened] == [(NORTH, at)]


@pytest.fixture
def posting(store_url: str) -> Iterator[CentralLog]:  # noqa: F811
    service = open_service(store_url, followers=[SpendingPoster()])
    yield service
    service.store.close()


def test_the_report_lists_a_refund_waiting_past_the_wait_by_the_clock(
        posting: CentralLog) -> None:
    """The day's report lists the refunds still waiting past the wait as of now, this
    host's clock in ms: a refund given three days and a quarter of an hour ago is listed,
    one given three days less a quarter of an hour ago is not yet."""
    wait_ms = receivables.DEFAULT_WAIT_DAYS * 86_400_000
    now_ms = time.time_ns() // 1_000_000
    given = now_ms - wait_ms - 15 * 60_000
    paid = given - 86_400_000
    till = _shop(posting)
    posting.ingest("T-LF01", [till.pay("card-a", PAID, paid, "general"),
                              till.pay("card-a", PAID, paid + 1000, "general")])
    pay_day = posting.day_of(paid)
    settle(posting.store, pay_day, fee_rules=FEES, now_ms=given - 1)
    posting.ingest("T-LF01", [till.refund("card-a", REFUND, 1, given),
                              till.refund("card-a", REFUND, 2, given + 30 * 60_000)])
    rep = report(posting, posting.day_of(given))
    assert rep.waiting_refunds == [{"terminal_id": "T-LF01", "seq": 3, "amount": REFUND,
                                    "since_ms": given}]


def caps_text(version: int, effective: str, adult_cap: int) -> str:
    text = default_rules_text()
    for old, new in (("version = 1", f"version = {version}"),
                     ("effective_from = 2025-01-01", f"effective_from = {effective}"),
                     ("adult = 2900", f"adult = {adult_cap}")):
        assert old in text
        text = text.replace(old, new, 1)
    return text


def test_a_recredit_between_two_chunks_is_seen_by_the_next(svc: CentralLog) -> None:
    """A rules version loaded with --recredit while a crediting run is between two chunks
    changes the cards' weeks; the run's next chunk credits on top of the weeks as recredited,
    so the week stays within its cap."""
    bus = town(svc, NORTH, "BUS-N")
    load_rules(svc.store, caps_text(1, "2025-01-01", 1000), municipality=NORTH)
    svc.ingest(bus.terminal_id, [bus.tap(CARD, seoul_ms(2025, 3, 10, 8), fare=1500),
                                 bus.tap(CARD, seoul_ms(2025, 3, 11, 8), fare=1500)])
    loaded: list[int] = []

    def between(done: int, size: int) -> None:
        if not loaded:
            # version 2, from 1 March: cap 2,900; Monday's ride is recredited under it
            load_rules(svc.store, caps_text(2, "2025-03-01", 2900), recredit=True,
                       municipality=NORTH)
            loaded.append(done)

    credit_log(svc.store, chunk=1, now_ms=NOW, progress=between)
    assert loaded
    # under version 2: Monday earns its fare (1,500), Tuesday what is left of 2,900
    monday = min(1500, 2900)
    tuesday = min(1500, 2900 - monday)
    doc = points_delta(svc.store, 0, NOW, municipality=NORTH)
    assert doc["points"][CARD][0] == monday + tuesday
    with svc.store.tx(write=False) as tx:
        total = sum(int(p) for (p,) in tx.all(
            "SELECT points FROM incentive_credits WHERE card_token = ? UNION ALL "
            "SELECT points FROM incentive_adjustments WHERE card_token = ?", (CARD, CARD)))
    assert total == monday + tuesday


def test_a_terminal_fetches_50000_balances_at_a_time(svc: CentralLog) -> None:
    """Balances go to a terminal 50,000 snapshots a time by default, never splitting a
    load: of 49,999 of one load and one each of two later loads, the 50,000th is of the
    second load, which goes whole with the third to the next answer."""
    first = {f"{n:064x}": n for n in range(49_999)}
    svc.set_balances(first)
    second, third = "e" * 64, "f" * 64
    svc.set_balances({second: 7})
    svc.set_balances({third: 8})
    page = svc.balances_delta(0)
    assert page["balances"] == first
    rest = svc.balances_delta(page["version"])
    assert rest["balances"] == {second: 7, third: 8}


def test_a_terminal_fetches_50000_weeks_at_a_time(svc: CentralLog) -> None:
    """Points go to a terminal 50,000 cards' weeks a time by default, never splitting a
    version: of 49,999 weeks of one version and one each of two later ones, the 50,000th is
    of the second, which goes whole with the third to the next answer. The weeks are written
    as crediting writes them (one version per crediting step), without crediting 50,000
    rides, so that the test costs little."""
    def week(n: int, version: int) -> tuple[object, ...]:
        return (f"{n:064x}", "2025-03-10", 1000 + n % 7, 1, version, "", "default")

    rows = [week(n, 50_000) for n in range(49_999)] + [week(49_999, 50_001),
                                                      week(50_000, 50_002)]
    with svc.store.tx() as tx:
        tx.insert_all([Rows("incentive_weeks", (*WEEK_COLUMNS, "municipality_id"), rows)])
    page = points_delta(svc.store, 0, NOW)
    assert page["points"] == {f"{n:064x}": [1000 + n % 7, 1, ""] for n in range(49_999)}
    assert page["version"] == 50_000
    rest = points_delta(svc.store, page["version"], NOW)
    assert rest["points"] == {f"{n:064x}": [1000 + n % 7, 1, ""] for n in (49_999, 50_000)}
