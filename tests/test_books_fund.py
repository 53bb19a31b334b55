"""Funding a programme's budget in the central books (``central.books.fund_budget``): the two
transfers it posts and their refs, codes, times and municipality, the accounts it opens, its
answer (whether it moved anything, the budget's balance after), its idempotency on the ref,
and the refs it refuses; on SQLite and PostgreSQL."""

# The fixture `store` comes from tests/test_books.py and is a parameter by name:
# ruff: noqa: F811

from __future__ import annotations

import re

import pytest

from central import books
from central.books import BANK_OUTSIDE, Transfer, find_account, fund_budget, transfers_of
from central.store import Store
from localpay.errors import ConfigError
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401
from tests.test_books import bal, dump, post, store  # noqa: F401 - fixtures used by name

PROGRAMME = "youth"
FUNDING = "programme:youth:funding"
BUDGET = "programme:youth:points"
#: a fixed time, so that what the books stamp can be compared with it
AT = 1_780_000_000_123


def rows(store: Store, account_id: str, municipality: str = "default"
         ) -> list[tuple[str, str, int, str, str, int]]:
    """The transfers touching ``account_id``, oldest first, without their ids."""
    with store.tx(write=False) as tx:
        found = transfers_of(tx, account_id, municipality=municipality)
    return [(p.debit, p.credit, p.amount, p.code, p.ref, p.at_ms) for p in reversed(found)]


def test_funding_goes_through_the_programme_account_into_the_budget(store: Store) -> None:
    assert (books.programme_funding(PROGRAMME), books.programme_points(PROGRAMME)) == (
        FUNDING, BUDGET)
    assert fund_budget(store, PROGRAMME, BUDGET, 5_000, "r1", "points", at_ms=AT) == (True, 5_000)
    # bank:outside -> funding -> budget, the same 5,000 won each, refs named by the kind
    assert rows(store, FUNDING) == [
        (BANK_OUTSIDE, FUNDING, 5_000, "funding", "points-funding:youth:r1", AT),
        (FUNDING, BUDGET, 5_000, "budget", "points-budget:youth:r1", AT)]
    assert (bal(store, BANK_OUTSIDE), bal(store, FUNDING), bal(store, BUDGET)) == (
        -5_000, 0, 5_000)
    with store.tx(write=False) as tx:
        for account_id, kind in ((BANK_OUTSIDE, "outside"), (FUNDING, "funding"),
                                 (BUDGET, "points")):
            account = find_account(tx, account_id)
            assert account is not None
            assert (account.kind, account.opened_ms) == (kind, AT)
    # a second ref adds to what the budget holds: 5,000 + 3,000
    expected = 5_000 + 3_000
    assert fund_budget(store, PROGRAMME, BUDGET, 3_000, "r2", "points", at_ms=AT + 1) == (
        True, expected)
    assert [r[4] for r in rows(store, BUDGET)] == ["points-budget:youth:r1",
                                                   "points-budget:youth:r2"]


def test_the_same_ref_again_moves_nothing_and_says_so(store: Store) -> None:
    assert fund_budget(store, PROGRAMME, BUDGET, 2_000, "once", "points", at_ms=AT) == (
        True, 2_000)
    before = dump(store)
    assert fund_budget(store, PROGRAMME, BUDGET, 2_000, "once", "points", at_ms=AT + 5) == (
        False, 2_000)
    assert dump(store) == before
    # another kind of ref is another funding: allowance-... beside points-...
    assert fund_budget(store, PROGRAMME, BUDGET, 700, "once", "allowance", at_ms=AT) == (
        True, 2_000 + 700)


def test_a_half_posted_funding_still_reports_the_half_it_moved(store: Store) -> None:
    # the budget's transfer of ref r9 was posted on its own (the funding account paid from
    # another ref): funding r9 now moves the bank's half only, and that is moving something
    with store.tx() as tx:
        for account_id in (BANK_OUTSIDE, FUNDING, BUDGET):
            books.open_account(tx, account_id, at_ms=AT)
    post(store, Transfer(BANK_OUTSIDE, FUNDING, 900, "funding", "seed"),
         Transfer(FUNDING, BUDGET, 900, "budget", "points-budget:youth:r9"))
    assert fund_budget(store, PROGRAMME, BUDGET, 900, "r9", "points", at_ms=AT) == (True, 900)
    assert (bal(store, BANK_OUTSIDE), bal(store, FUNDING), bal(store, BUDGET)) == (
        -1_800, 900, 900)


def test_each_municipality_funds_its_own_books(store: Store) -> None:
    assert fund_budget(store, PROGRAMME, BUDGET, 4_000, "g1", "points", municipality="gimpo",
                       at_ms=AT) == (True, 4_000)
    assert (bal(store, BUDGET, "gimpo"), bal(store, BANK_OUTSIDE, "gimpo")) == (4_000, -4_000)
    assert [r[4] for r in rows(store, FUNDING, "gimpo")] == [
        "points-funding:youth:g1", "points-budget:youth:g1"]
    with store.tx(write=False) as tx:
        for account_id in (BANK_OUTSIDE, FUNDING, BUDGET):
            assert find_account(tx, account_id) is None
            assert find_account(tx, account_id, municipality="gimpo") is not None
    # the same ref in the default municipality is a funding of its own
    assert fund_budget(store, PROGRAMME, BUDGET, 1_000, "g1", "points", at_ms=AT) == (
        True, 1_000)


@pytest.mark.parametrize("ref", ["a:b", "a b", "", "x" * 101, "tab\there", 7, None])
def test_a_ref_that_cannot_name_a_transfer_is_refused_and_nothing_is_written(
        store: Store, ref: object) -> None:
    before = dump(store)
    message = f"funding ref {ref!r}: 1 to 100 characters, no ':' and no spaces"
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        fund_budget(store, PROGRAMME, BUDGET, 1_000, ref, "points")  # type: ignore[arg-type]
    assert dump(store) == before


@pytest.mark.parametrize("ref", ["x", "x" * 100, "2026-11_a.b"])
def test_refs_of_one_to_a_hundred_characters_are_taken(store: Store, ref: str) -> None:
    assert fund_budget(store, PROGRAMME, BUDGET, 1, ref, "points", at_ms=AT) == (True, 1)
    assert rows(store, BUDGET)[0][4] == f"points-budget:youth:{ref}"
