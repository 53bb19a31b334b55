"""Edges of ``central report``'s Z-report matching (central.reconcile): which entries a
till's closing is set against, how each figure is read from the closing and from the log,
and how a difference is named; and the terminals that never synced, by the day they were
registered."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from central.reconcile import Report, report
from central.service import CentralLog
from tests.incentives_data import Chain, chain, open_service, seoul_ms
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401

DAY = "2025-03-10"
A, B = "a" * 32, "b" * 32


@pytest.fixture
def svc(store_url: str) -> Iterator[CentralLog]:  # noqa: F811
    log = open_service(store_url, followers=[])
    yield log
    log.store.close()


def text(detail: dict[str, Any]) -> str:
    return json.dumps(detail, sort_keys=True, separators=(",", ":"))


def money(c: Chain, kind: str, amount: int, hour: int, *, clerk: str | None = None,
          split: list[list[Any]] | None = None, ref_seq: int = 0, token: str = A,
          day: int = 10) -> Any:
    info: dict[str, Any] = {"merchant_category": "local_food"}
    if clerk is not None:
        info["clerk"] = clerk
    if split is not None:
        info["split"] = split
    return c.entry(kind, token, amount, seoul_ms(2025, 3, day, hour), detail=text(info),
                   ref_seq=ref_seq, place="M-1")


def closing(c: Chain, hour: int, detail: dict[str, Any] | str, day: int = 10) -> Any:
    raw = detail if isinstance(detail, str) else text(detail)
    return c.entry("z_report", "", 0, seoul_ms(2025, 3, day, hour), detail=raw, place="M-1")


def z_of(figures: dict[str, Any], day: str = DAY, last_seq: int | None = None
         ) -> dict[str, Any]:
    out: dict[str, Any] = {"day": day, **figures}
    if last_seq is not None:
        out["last_seq"] = last_seq
    return out


def day_of_till(svc: CentralLog) -> tuple[Chain, list[Any]]:
    """A till's day: three payments (two clerks and one with no sign-in), a partial refund
    and a void, a tap (no money of the till's) and an entry of the day before."""
    c = chain(svc, "T-1")
    entries = [
        money(c, "payment", 700, 9, clerk="junho", split=[["cash", 700]], day=9),   # 1
        money(c, "payment", 6_000, 9, clerk="junho", split=[["cash", 5_000],
                                                             ["youth", 1_000]]),    # 2
        money(c, "payment", 2_500, 10, clerk="minji", split=[["cash", 2_500]]),    # 3
        money(c, "payment", 1_200, 11, split=[["points", 1_200]], token=B),        # 4
        money(c, "refund", 1_000, 12, clerk="minji", split=[["youth", 1_000]],
              ref_seq=2),                                                           # 5
        money(c, "void", 2_500, 13, clerk="minji", split=[["cash", 2_500]],
              ref_seq=3),                                                           # 6
        c.tap(A, seoul_ms(2025, 3, 10, 14)),                                        # 7
    ]
    return c, entries


# the figures of entries 2..6, worked out by hand from what day_of_till did
TRUE = {
    "count": [["payment", 3], ["refund", 1], ["void", 1]],
    "amount": [["payment", 9_700], ["refund", 1_000], ["void", 2_500]],
    # cash 5,000 + 2,500 - 2,500; youth 1,000 - 1,000 (0: left out); points 1,200
    "pockets": [["cash", 5_000], ["points", 1_200], ["youth", 0]],
    "clerk_paid": [["", 1_200], ["junho", 6_000], ["minji", 2_500]],
    "clerk_paid_count": [["", 1], ["junho", 1], ["minji", 1]],
    "clerk_back": [["minji", 3_500]],
    "clerk_back_count": [["minji", 2]],
}


def test_a_true_closing_matches_and_a_second_counts_up_to_itself(svc: CentralLog) -> None:
    c, entries = day_of_till(svc)
    z1 = closing(c, 15, z_of(TRUE, last_seq=6))                                    # 8
    later = money(c, "payment", 300, 16, clerk="junho", split=[["cash", 300]])      # 9
    # the second closing counts the later payment too
    second = {**TRUE, "count": [["payment", 4], ["refund", 1], ["void", 1]],
              "amount": [["payment", 10_000], ["refund", 1_000], ["void", 2_500]],
              "pockets": [["cash", 5_300], ["points", 1_200]],
              "clerk_paid": [["", 1_200], ["junho", 6_300], ["minji", 2_500]],
              "clerk_paid_count": [["", 1], ["junho", 2], ["minji", 1]]}
    z2 = closing(c, 17, z_of(second, last_seq=9))                                  # 10
    svc.ingest("T-1", [*entries, z1, later, z2])
    rep = report(svc, DAY)
    assert rep.z_reports == [
        {"terminal_id": "T-1", "seq": 8, "last_seq": 6, "matches": True},
        {"terminal_id": "T-1", "seq": 10, "last_seq": 9, "matches": True}]
    assert rep.z_report_differences == []
    # a closing of the day before is not this day's
    assert report(svc, "2025-03-09").z_reports == []


def test_each_figure_that_differs_is_one_line(svc: CentralLog) -> None:
    c, entries = day_of_till(svc)
    forged = {
        # one payment fewer told than the log holds; a void of 1 won the log does not have
        "count": [["payment", 2], ["refund", 1], ["void", 1], ["voidx", 1]],
        "amount": [["payment", 9_700], ["refund", 1_000], ["void", 2_500]],
        # points left out (central alone: 1,200), a pocket the log never had (terminal alone)
        "pockets": [["cash", 5_000], ["gift", 1]],
        "clerk_paid": [["", 1_200], ["junho", 6_000], ["minji", 2_500]],
        "clerk_paid_count": [["", 1], ["junho", 1], ["minji", 1]],
        # the clerk's given-back count left out: central alone (2)
        "clerk_back": [["minji", 3_500]],
    }
    z = closing(c, 15, z_of(forged))                                               # 8
    svc.ingest("T-1", [*entries, z])
    rep = report(svc, DAY)
    # no last_seq told: read as 0
    assert rep.z_reports == [{"terminal_id": "T-1", "seq": 8, "last_seq": 0, "matches": False}]
    assert rep.z_report_differences == [
        {"terminal_id": "T-1", "seq": 8, "figure": figure, "terminal": told, "central": held}
        for figure, told, held in [
            ("clerk_back_count.minji", 0, 2),
            ("count.payment", 2, 3),
            ("count.voidx", 1, 0),
            ("pocket.gift", 1, 0),
            ("pocket.points", 0, 1_200)]]
    assert not rep.clean
    assert rep.as_json()["z_reports"] == rep.z_reports
    assert rep.as_json()["z_report_differences"] == rep.z_report_differences


def test_figures_of_one_won_or_one_entry_are_still_differences(svc: CentralLog) -> None:
    """A figure one side states as 1 and the other leaves out: the missing side reads 0."""
    c = chain(svc, "T-1")
    paid = money(c, "payment", 1, 9, clerk="junho", split=[["cash", 1]])
    told = {"count": [["refund", 1]], "amount": [["refund", 1]]}
    z = closing(c, 10, z_of(told, last_seq=1))
    svc.ingest("T-1", [paid, z])
    rep = report(svc, DAY)
    figures = {d["figure"]: (d["terminal"], d["central"]) for d in rep.z_report_differences}
    assert figures == {"count.payment": (0, 1), "amount.payment": (0, 1),
                       "count.refund": (1, 0), "amount.refund": (1, 0),
                       "pocket.cash": (0, 1), "clerk_paid.junho": (0, 1),
                       "clerk_paid_count.junho": (0, 1)}


def test_the_differences_of_every_closing_are_kept(svc: CentralLog) -> None:
    c = chain(svc, "T-1")
    paid = money(c, "payment", 4_000, 9, clerk="junho")
    z1 = closing(c, 10, z_of({"count": [["payment", 2]], "amount": [["payment", 4_000]],
                              "clerk_paid": [["junho", 4_000]],
                              "clerk_paid_count": [["junho", 1]]}))
    z2 = closing(c, 11, z_of({"count": [["payment", 1]], "amount": [["payment", 4_500]],
                              "clerk_paid": [["junho", 4_000]],
                              "clerk_paid_count": [["junho", 1]]}))
    svc.ingest("T-1", [paid, z1, z2])
    rep = report(svc, DAY)
    assert [(d["seq"], d["figure"], d["terminal"], d["central"])
            for d in rep.z_report_differences] == [(2, "count.payment", 2, 1),
                                                   (3, "amount.payment", 4_500, 4_000)]
    assert [z["matches"] for z in rep.z_reports] == [False, False]


def test_a_closing_of_another_day_whose_detail_holds_the_day_is_passed_over(
        svc: CentralLog) -> None:
    """The closings are found by the text ``"day":"D"`` in their detail; one whose day is
    another (the text matched elsewhere in it) is passed over, and the next still read."""
    c = chain(svc, "T-1")
    paid = money(c, "payment", 4_000, 9, clerk="junho")
    # a detail whose "day" is said twice: JSON keeps the last one
    odd = closing(c, 10, '{"day":"' + DAY + '","day":"2025-03-11","count":[["payment",9]]}')
    true = closing(c, 11, z_of({"count": [["payment", 1]], "amount": [["payment", 4_000]],
                                "clerk_paid": [["junho", 4_000]],
                                "clerk_paid_count": [["junho", 1]]}))
    svc.ingest("T-1", [paid, odd, true])
    rep = report(svc, DAY)
    assert rep.z_reports == [{"terminal_id": "T-1", "seq": 3, "last_seq": 0, "matches": True}]
    assert rep.z_report_differences == []


def test_entries_the_log_cannot_read_add_only_their_kind_and_amount(svc: CentralLog) -> None:
    """A money entry whose detail is not a JSON object counts by kind and amount only (no
    pocket, the clerk of no sign-in); the closing's own table entries that are not
    [name, whole number] pairs, and tables that are not lists, are not read."""
    c = chain(svc, "T-1")
    entries = [c.entry("payment", A, 1_500, seoul_ms(2025, 3, 10, 9), detail="[1,2]",
                       place="M-1"),
               c.entry("payment", A, 500, seoul_ms(2025, 3, 10, 10), detail="not json",
                       place="M-1"),
               c.entry("payment", A, 200, seoul_ms(2025, 3, 10, 11), detail="",
                       place="M-1")]
    told = {"count": [["payment", 3], ["payment", 1, 7], ["refund", "1"], "void"],
            "amount": [["payment", 2_200]],
            "pockets": "cash",
            "clerk_paid": [["", 2_000], ["", 200]],
            "clerk_paid_count": [["", 3]]}
    z = closing(c, 12, z_of(told))
    svc.ingest("T-1", [*entries, z])
    rep = report(svc, DAY)
    assert rep.z_report_differences == []
    assert rep.z_reports == [{"terminal_id": "T-1", "seq": 4, "last_seq": 0, "matches": True}]


def test_a_closing_with_a_table_not_a_list_still_reads_the_others(svc: CentralLog) -> None:
    c = chain(svc, "T-1")
    paid = money(c, "payment", 900, 9, clerk="minji", split=[["cash", 900]])
    told = {"count": "one", "amount": [["payment", 900]], "pockets": [["cash", 900]],
            "clerk_paid": [["minji", 900]], "clerk_paid_count": [["minji", 1]]}
    z = closing(c, 10, z_of(told))
    svc.ingest("T-1", [paid, z])
    rep = report(svc, DAY)
    assert [(d["figure"], d["terminal"], d["central"]) for d in rep.z_report_differences] == [
        ("count.payment", 0, 1)]


def test_only_the_terminals_own_entries_of_the_day_before_the_closing_count(
        svc: CentralLog) -> None:
    c = chain(svc, "T-1")
    other = chain(svc, "T-2")
    svc.ingest("T-2", [money(other, "payment", 8_000, 9, clerk="junho")])
    mine = [money(c, "payment", 1_000, 8, day=9),            # the day before
            money(c, "payment", 2_000, 9, clerk="junho")]
    z = closing(c, 10, z_of({"count": [["payment", 1]], "amount": [["payment", 2_000]],
                             "clerk_paid": [["junho", 2_000]],
                             "clerk_paid_count": [["junho", 1]]}))
    after = money(c, "payment", 3_000, 11, clerk="junho")
    svc.ingest("T-1", [*mine, z, after])
    rep = report(svc, DAY)
    assert rep.z_reports == [{"terminal_id": "T-1", "seq": 3, "last_seq": 0, "matches": True}]


def test_a_terminal_registered_on_the_day_with_nothing_sent_is_named(svc: CentralLog) -> None:
    chain(svc, "T-QUIET")
    today = svc.day_of(int(time.time() * 1000))
    rep = report(svc, today)
    assert rep.never_synced == [{"terminal_id": "T-QUIET", "registered": today}]
    assert rep.as_json()["never_synced"] == rep.never_synced
    assert rep.clean  # listed, not a difference
    # the day before it was registered it is not named
    yesterday = svc.day_of(int(time.time() * 1000) - 86_400_000)
    assert report(svc, yesterday).never_synced == []


def test_the_json_of_an_empty_days_report_names_its_municipality() -> None:
    out = Report("2025-03-10", municipality="gimpo").as_json()
    assert out["municipality"] == "gimpo" and out["day"] == "2025-03-10"


def test_pocket_problems_are_reported_in_their_own_municipality_only(
        store_url: str) -> None:  # noqa: F811
    from central import accounts, municipalities
    from central.incentives import IncentiveCrediter
    from central.merchants import Registry
    from central.spending import SpendingPoster
    from tests.test_spending import LOCAL, till

    svc = open_service(store_url, followers=[IncentiveCrediter(), SpendingPoster()])
    try:
        Registry(svc.store).add(LOCAL)
        municipalities.add(svc.store, "gimpo", "Gimpo", "Gimpo Pay")
        with svc.store.tx() as tx:
            accounts.link(tx, "A", A)          # an account with nothing in its pockets
        shop = till(svc, "TILL-L", LOCAL)
        svc.ingest("TILL-L", [shop.pay(A, 3_000, seoul_ms(2026, 11, 3, 10)),
                              shop.pay(B, 500, seoul_ms(2026, 11, 3, 11))])
        rep = report(svc, "2026-11-03")
        # the 3,000 won its cash pocket could not cover; the card with no account at all
        assert rep.pocket_overdrafts == [
            {"municipality": "default", "terminal_id": "TILL-L", "seq": 1, "account": "A",
             "pocket": "cash", "amount": 3_000}]
        assert rep.pocket_flags == [
            {"municipality": "default", "reason": "no_account", "terminal_id": "TILL-L",
             "seq": 2, "card_token": B, "detail": '{"amount":500}'}]
        assert not rep.clean
        elsewhere = report(svc, "2026-11-03", "gimpo")
        assert (elsewhere.pocket_overdrafts, elsewhere.pocket_flags) == ([], [])
        assert elsewhere.as_json()["municipality"] == "gimpo"
    finally:
        svc.store.close()
