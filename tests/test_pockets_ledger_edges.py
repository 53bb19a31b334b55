"""Edges of the pockets held in the terminal's ledger (offline_ledger/pockets.py) that the till
tests leave unsaid: the Seoul day, a pocket's expiry, the snapshot's state and rows as stored,
a card's pockets on a day, the counters an entry moves, an entry's split as read back, what a
refund gives back to each pocket, and the words of each read that fails. Every figure is
worked out by hand in the test."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime

import pytest

from localpay.errors import LedgerError
from localpay.pockets import PocketBalance
from offline_ledger import Ledger
from offline_ledger import pockets as lp

CARD = "card-a"
OTHER = "card-b"
RULES = "# the rules' text, held as sent"


def ms(text: str) -> int:
    """A UTC time as ms since the epoch, worked out apart from the code under test."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def rows(ledger: Ledger, table: str) -> list[tuple[object, ...]]:
    return ledger._conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()


@contextmanager
def gone(ledger: Ledger, table: str) -> Iterator[None]:
    """``table`` out of reach (a real SQLite error), put back afterwards."""
    ledger._conn.execute(f"ALTER TABLE {table} RENAME TO {table}_gone")
    try:
        yield
    finally:
        ledger._conn.execute(f"ALTER TABLE {table}_gone RENAME TO {table}")


def pay(ledger: Ledger, parts: list[tuple[str, int]], day: date, *, card: str = CARD) -> int:
    """A payment whose split is ``parts``, counted as the till counts it; its seq."""
    amount = sum(w for _, w in parts)
    entry = ledger.append("payment", card_token=card, amount=amount, offline_delta=amount,
                          detail={"split": [[p, w] for p, w in parts]},
                          also=lp.counting(card, parts, day))
    return entry.seq


def give_back(ledger: Ledger, seq: int, amount: int, day: date, kind: str = "refund"
              ) -> list[tuple[str, int]]:
    """A refund (or void) of ``amount`` of payment ``seq``, split as the till splits it."""
    entry = ledger.entry(seq)
    assert entry is not None
    back = lp.refund_parts(ledger, seq, entry.fields.detail, amount)
    ledger.append(kind, card_token=entry.fields.card_token, amount=amount, ref_seq=seq,
                  offline_delta=-amount, detail={"split": [[p, w] for p, w in back]},
                  also=lp.counting(entry.fields.card_token, back, day, back=True))
    return back


# -- the day and the expiry -------------------------------------------------------------------


def test_the_seoul_day_turns_at_three_in_the_afternoon_utc() -> None:
    # Seoul is UTC+9 all year: midnight there is 15:00 UTC the day before
    assert lp.seoul_day(ms("2026-11-26T14:59:59.999")) == date(2026, 11, 26)
    assert lp.seoul_day(ms("2026-11-26T15:00:00.000")) == date(2026, 11, 27)
    assert lp.seoul_day(ms("2026-12-31T15:00:00.000")) == date(2027, 1, 1)


def test_the_expiry_is_the_soonest_running_grant_still_valid_that_day() -> None:
    running = ["2026-12-09", "2026-12-03", "2026-11-01"]
    assert lp.expiry_on(running, "", date(2026, 11, 30)) == date(2026, 12, 3)
    # the expiry day itself still counts as running
    assert lp.expiry_on(running, "", date(2026, 12, 3)) == date(2026, 12, 3)
    assert lp.expiry_on(running, "", date(2026, 12, 4)) == date(2026, 12, 9)
    assert lp.expiry_on(running, "2026-10-15", date(2026, 12, 9)) == date(2026, 12, 9)


def test_with_none_running_the_expiry_is_the_latest_of_the_others() -> None:
    running = ["2026-12-03", "2026-12-09", "2026-11-01"]
    assert lp.expiry_on(running, "", date(2026, 12, 10)) == date(2026, 12, 9)
    assert lp.expiry_on(running, "2026-10-15", date(2026, 12, 10)) == date(2026, 12, 9)
    assert lp.expiry_on([], "2026-10-15", date(2026, 12, 10)) == date(2026, 10, 15)
    assert lp.expiry_on(["2026-10-01"], "2026-10-15", date(2026, 12, 10)) == date(2026, 10, 15)
    assert lp.expiry_on([], "", date(2026, 12, 10)) is None


# -- the snapshot held ------------------------------------------------------------------------


def test_a_new_ledger_holds_the_empty_state(ledger: Ledger) -> None:
    assert lp.state(ledger) == lp.PocketState(0, "", "", 0, "")


def test_the_state_and_the_rows_are_stored_as_sent(ledger: Ledger) -> None:
    snapshot = lp.PocketState(7, "gimpo", "M-STORE", 3, RULES)
    lp.store(ledger, snapshot, {
        CARD: {"cash": (1_200, [], None), "youth": (5_000, ["2026-12-09", "2026-12-03"],
                                                     "2026-10-15")},
        OTHER: {"points": (40, [], "")},
    })
    assert lp.state(ledger) == snapshot
    # the running expiries sorted, as JSON; no ended expiry as ''
    assert rows(ledger, "pocket_balances") == [
        (CARD, "cash", 1_200, "[]", ""),
        (CARD, "youth", 5_000, '["2026-12-03", "2026-12-09"]', "2026-10-15"),
        (OTHER, "points", 40, "[]", "")]


def test_a_card_sent_again_replaces_its_rows_and_leaves_the_others(ledger: Ledger) -> None:
    lp.store(ledger, lp.PocketState(1), {CARD: {"cash": (1, [], None), "points": (2, [], None)},
                                         OTHER: {"cash": (3, [], None)}})
    lp.store(ledger, lp.PocketState(2), {CARD: {"points": (9, [], None)}})
    assert rows(ledger, "pocket_balances") == [(CARD, "points", 9, "[]", ""),
                                               (OTHER, "cash", 3, "[]", "")]
    # none any more, and an empty mapping: both leave the card without rows
    lp.store(ledger, lp.PocketState(3), {CARD: None})
    lp.store(ledger, lp.PocketState(4), {OTHER: {}})
    assert rows(ledger, "pocket_balances") == []
    assert lp.state(ledger).version == 4


def test_a_reset_forgets_every_card_first(ledger: Ledger) -> None:
    lp.store(ledger, lp.PocketState(1), {CARD: {"cash": (1, [], None)},
                                         OTHER: {"cash": (3, [], None)}})
    lp.store(ledger, lp.PocketState(2, "other"), {OTHER: {"cash": (5, [], None)}}, reset=True)
    assert rows(ledger, "pocket_balances") == [(OTHER, "cash", 5, "[]", "")]
    assert lp.state(ledger) == lp.PocketState(2, "other")


def test_a_snapshot_that_cannot_be_stored_is_a_ledger_error_and_changes_nothing(
        ledger: Ledger) -> None:
    lp.store(ledger, lp.PocketState(1, "default", "M-1"), {CARD: {"cash": (1, [], None)}})
    with gone(ledger, "pocket_state"):
        with pytest.raises(LedgerError, match=r"^pocket snapshot not stored: no such table: "
                                              r"pocket_state$"):
            lp.store(ledger, lp.PocketState(2, "default", "M-2"), {CARD: None}, reset=True)
        with pytest.raises(LedgerError, match=r"^cannot read the pocket snapshot's state: "
                                              r"no such table: pocket_state$"):
            lp.state(ledger)
    # all or nothing: the card's row is still there
    assert rows(ledger, "pocket_balances") == [(CARD, "cash", 1, "[]", "")]
    assert lp.state(ledger) == lp.PocketState(1, "default", "M-1")


# -- a card's pockets on a day ----------------------------------------------------------------


def test_a_card_central_sent_nothing_for_has_no_pockets(ledger: Ledger) -> None:
    lp.store(ledger, lp.PocketState(1), {OTHER: {"cash": (1, [], None)}})
    assert lp.card_pockets(ledger, CARD, date(2026, 11, 26)) is None


def test_balances_less_the_offline_spending_with_the_expiry_of_the_day(ledger: Ledger) -> None:
    day = date(2026, 12, 4)
    lp.store(ledger, lp.PocketState(1), {CARD: {
        "cash": (10_000, [], None),
        "youth": (5_000, ["2026-12-09", "2026-12-03"], None),
        "old": (300, [], "2026-10-15"),
    }})
    held = lp.card_pockets(ledger, CARD, day)
    assert held is not None
    assert sorted(held.balances, key=lambda b: b.pocket) == [
        PocketBalance("cash", 10_000, None), PocketBalance("old", 300, date(2026, 10, 15)),
        PocketBalance("youth", 5_000, date(2026, 12, 9))]
    assert held.spent_today == {}
    pay(ledger, [("youth", 1_000), ("cash", 2_500)], day)
    pay(ledger, [("cash", 500)], day)
    held = lp.card_pockets(ledger, CARD, day)
    assert held is not None
    by_pocket = {b.pocket: b.balance for b in held.balances}
    assert by_pocket == {"cash": 10_000 - 2_500 - 500, "youth": 5_000 - 1_000, "old": 300}
    assert held.spent_today == {"youth": 1_000, "cash": 2_500 + 500}


def test_what_was_spent_on_another_day_is_not_spent_today(ledger: Ledger) -> None:
    monday, tuesday = date(2026, 11, 30), date(2026, 12, 1)
    lp.store(ledger, lp.PocketState(1), {CARD: {"cash": (9_000, [], None),
                                                "points": (900, [], None)}})
    pay(ledger, [("points", 400), ("cash", 1_000)], monday)
    held = lp.card_pockets(ledger, CARD, tuesday)
    assert held is not None and held.spent_today == {}
    assert sorted(held.balances, key=lambda b: b.pocket) == [
        PocketBalance("cash", 8_000, None), PocketBalance("points", 500, None)]
    # a payment on the new day restarts that pocket's day; the other keeps monday's
    pay(ledger, [("cash", 700)], tuesday)
    assert rows(ledger, "pocket_counters") == [
        (CARD, "cash", 1_700, "2026-12-01", 700), (CARD, "points", 400, "2026-11-30", 400)]
    held = lp.card_pockets(ledger, CARD, tuesday)
    assert held is not None and held.spent_today == {"cash": 700}


def test_a_day_counted_at_zero_is_not_listed(ledger: Ledger) -> None:
    day = date(2026, 12, 1)
    lp.store(ledger, lp.PocketState(1), {CARD: {"cash": (9_000, [], None)}})
    # a counter of that day with nothing spent (a row written by something else)
    ledger._conn.execute("INSERT INTO pocket_counters VALUES (?, 'cash', 0, ?, 0)",
                         (CARD, day.isoformat()))
    held = lp.card_pockets(ledger, CARD, day)
    assert held is not None and held.spent_today == {}


def test_pockets_that_cannot_be_read_are_a_ledger_error(ledger: Ledger) -> None:
    lp.store(ledger, lp.PocketState(1), {CARD: {"cash": (1, [], None)}})
    with gone(ledger, "pocket_counters"), pytest.raises(
            LedgerError, match=r"^cannot read the card's pockets: no such table: pocket_counters$"):
        lp.card_pockets(ledger, CARD, date(2026, 12, 1))


# -- the counters an entry moves --------------------------------------------------------------


def test_refunds_take_off_the_offline_amount_floored_at_zero_never_the_day(
        ledger: Ledger) -> None:
    day = date(2026, 12, 1)
    lp.store(ledger, lp.PocketState(1), {CARD: {"cash": (9_000, [], None),
                                                "points": (900, [], None)}})
    seq = pay(ledger, [("points", 300), ("cash", 1_000)], day)
    ledger.mark_synced(seq, "cp")  # the offline amounts restart at 0
    assert rows(ledger, "pocket_counters") == [(CARD, "cash", 0, "2026-12-01", 1_000),
                                               (CARD, "points", 0, "2026-12-01", 300)]
    later = pay(ledger, [("cash", 200)], day)
    # a refund of the synced payment: newest drawn first, cash 1,000 then points 100
    assert give_back(ledger, seq, 1_100, date(2026, 12, 2)) == [("cash", 1_000), ("points", 100)]
    assert rows(ledger, "pocket_counters") == [(CARD, "cash", 0, "2026-12-01", 1_200),
                                               (CARD, "points", 0, "2026-12-01", 300)]
    assert later > seq


# -- an entry's split, read back --------------------------------------------------------------


@pytest.mark.parametrize("detail", [
    "", "not json", "[1, 2]", '"text"', "{}", '{"split": null}', '{"split": {"cash": 5}}',
    '{"split": [["cash"]]}', '{"split": [["cash", 1, 2]]}', '{"split": [["cash", "x"]]}',
    '{"split": [7]}', '{"split": [["cash", null]]}',
])
def test_a_detail_without_a_split_this_terminal_wrote_has_none(detail: str) -> None:
    assert lp.split_of(detail) == []


def test_a_split_is_read_back_in_its_order() -> None:
    assert lp.split_of('{"scheme": "x", "split": [["youth", 3000], ["cash", 2000]]}') == [
        ("youth", 3_000), ("cash", 2_000)]
    # what json gives back is made text and whole won
    assert lp.split_of('{"split": [[7, "15"], ["cash", 2.0]]}') == [("7", 15), ("cash", 2)]
    assert lp.split_of('{"split": []}') == []


# -- what a refund gives back -----------------------------------------------------------------


def test_a_payment_without_a_split_gives_back_to_no_pocket(ledger: Ledger) -> None:
    entry = ledger.append("payment", card_token=CARD, amount=1_000, offline_delta=1_000,
                          detail={"scheme": "x"})
    assert lp.refund_parts(ledger, entry.seq, entry.fields.detail, 1_000) == []


def test_refunds_give_back_newest_first_never_more_than_a_pocket_has_left(
        ledger: Ledger) -> None:
    day = date(2026, 12, 1)
    lp.store(ledger, lp.PocketState(1), {CARD: {"cash": (9_000, [], None),
                                                "points": (900, [], None),
                                                "youth": (5_000, [], None)}})
    seq = pay(ledger, [("youth", 3_000), ("points", 800), ("cash", 1_200)], day)
    entry = ledger.entry(seq)
    assert entry is not None
    # a single won back is given back, from the newest drawn; one won past cash's 1,200 goes
    # to points, drawn before it
    assert lp.refund_parts(ledger, seq, entry.fields.detail, 1) == [("cash", 1)]
    assert lp.refund_parts(ledger, seq, entry.fields.detail, 1_201) == [("cash", 1_200),
                                                                         ("points", 1)]
    # another payment's refund does not count against this one
    other = pay(ledger, [("cash", 50)], day)
    assert give_back(ledger, other, 50, day) == [("cash", 50)]
    # exactly cash's 1,200: points untouched, the loop ends there
    assert give_back(ledger, seq, 1_200, day) == [("cash", 1_200)]
    # cash has nothing left of it: points 800, then youth 100
    assert give_back(ledger, seq, 900, day) == [("points", 800), ("youth", 100)]
    # what is left of it: youth 3,000 - 100
    assert lp.refund_parts(ledger, seq, entry.fields.detail, 5_000) == [("youth", 2_900)]
    assert give_back(ledger, seq, 2_900, day, kind="void") == [("youth", 2_900)]
    assert lp.refund_parts(ledger, seq, entry.fields.detail, 1) == []
    assert rows(ledger, "pocket_counters") == [(CARD, "cash", 0, "2026-12-01", 1_250),
                                               (CARD, "points", 0, "2026-12-01", 800),
                                               (CARD, "youth", 0, "2026-12-01", 3_000)]


def test_refunds_that_cannot_be_read_are_a_ledger_error(ledger: Ledger) -> None:
    seq = pay(ledger, [("cash", 10)], date(2026, 12, 1))
    entry = ledger.entry(seq)
    assert entry is not None
    ledger._conn.execute("ALTER TABLE entries RENAME TO entries_gone")
    try:
        message = f"cannot read the refunds of entry {seq}: no such table: entries"
        with pytest.raises(LedgerError, match=f"^{re.escape(message)}$"):
            lp.refund_parts(ledger, seq, entry.fields.detail, 10)
    finally:
        ledger._conn.execute("ALTER TABLE entries_gone RENAME TO entries")


def test_recount_restarts_from_the_entries_after_the_synced_one() -> None:
    statements = lp.recount(41)
    assert [params for _, params in statements] == [(), (41,)]
    # the statements of RECOUNT, in its order: the reset first, then the count with the seq
    assert [sql for sql, _ in statements] == [lp.RECOUNT[0][0], lp.RECOUNT[1][0]]
    assert lp.RECOUNT[1][0].count("?") == 1 and "?" not in lp.RECOUNT[0][0]
