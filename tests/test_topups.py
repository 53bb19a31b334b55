"""Buying local currency at a discount (central/topups.py, POST /v1/topups, `central topup`),
on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import json
import math
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from central import accounts, books, open_service
from central.store import Store, open_store
from central.topups import (
    MonthlyLimitError,
    PaidMismatchError,
    PartnerAuthError,
    ReferenceReusedError,
    SubsidyExhaustedError,
    TopupInvalidError,
    TopupTerms,
    UnknownAccountError,
    add_partner,
    bought_in,
    check_partner,
    disable_partner,
    fund_subsidy,
    load_terms,
    month_of,
    terms_from,
    topup,
)
from localpay.cli import cli
from localpay.errors import BooksError, ConfigError
from tests.pg_fixtures import pg_cluster, start_central, store_url  # noqa: F401

SEOUL = ZoneInfo("Asia/Seoul")
CARD = "c0ffee" * 4
TERMS5 = TopupTerms("youth", 5, 500_000)
TERMS10 = TopupTerms("youth", 10, 500_000)
#: 2026-11-15 12:00 in Seoul
NOV = int(datetime(2026, 11, 15, 12, tzinfo=SEOUL).timestamp() * 1000)


def seoul_ms(year: int, month: int, day: int) -> int:
    """Midnight starting that day in Seoul, in Unix ms."""
    return int(datetime(year, month, day, tzinfo=SEOUL).timestamp() * 1000)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:  # noqa: F811
    s = open_store(store_url)
    yield s
    assert books.check(s).balanced, "the books must balance after every test"
    s.close()


def citizen(store: Store, account: str = "alice", card: str | None = CARD,
            municipality: str = "default") -> None:
    with store.tx() as tx:
        accounts.create(tx, account, municipality=municipality)
        if card:
            accounts.link(tx, account, card, municipality=municipality)


def cash(store: Store, account: str = "alice", municipality: str = "default") -> int:
    with store.tx(write=False) as tx:
        return books.balance(tx, books.pocket(account), municipality=municipality)


def subsidy_left(store: Store, programme: str = "youth", municipality: str = "default") -> int:
    with store.tx(write=False) as tx:
        found = books.find_account(tx, books.programme_subsidy(programme),
                                   municipality=municipality)
    return 0 if found is None else found.balance


def dump(store: Store) -> tuple[list[tuple[Any, ...]], ...]:
    """What the books and the top-ups hold: a refusal must leave it as it was."""
    with store.tx(write=False) as tx:
        return (tx.all("SELECT * FROM book_accounts ORDER BY municipality_id, account_id"),
                tx.all("SELECT * FROM book_transfers ORDER BY municipality_id, transfer_id"),
                tx.all("SELECT * FROM topups ORDER BY municipality_id, partner, ref"))


@pytest.fixture
def ready(store: Store) -> Store:
    """alice (card CARD linked) and bob; the youth programme's subsidy holds 1,000,000 won."""
    citizen(store)
    citizen(store, "bob", None)
    fund_subsidy(store, "youth", 1_000_000, "city-2026-11")
    return store


def expected(face: int, percent: int) -> tuple[int, int]:
    """(price, discount), computed apart from the module: the exact discount is a fraction
    of won; the citizen's price is the exact price rounded up to the won."""
    exact_price = Fraction(face * (100 - percent), 100)
    price = math.ceil(exact_price)
    return price, face - price


# -- terms ---------------------------------------------------------------------------------------

def test_terms_from_a_table() -> None:
    assert terms_from({"programme": "youth", "discount_percent": 10, "monthly_limit": 500_000},
                      "t.toml") == TopupTerms("youth", 10, 500_000)


@pytest.mark.parametrize(("table", "says"), [
    ({"programme": "youth", "discount_percent": 10}, "lacks monthly_limit"),
    ({"programme": "youth", "discount_percent": 10, "monthly_limit": 1, "cap": 2},
     "unknown keys cap"),
    ({"programme": "youth", "discount_percent": True, "monthly_limit": 1}, "whole number"),
    ({"programme": "youth", "discount_percent": 10, "monthly_limit": False}, "whole number"),
    ({"programme": "youth", "discount_percent": 5.0, "monthly_limit": 1}, "whole number"),
    ({"programme": "youth", "discount_percent": "5", "monthly_limit": 1}, "whole number"),
    ({"programme": "youth", "discount_percent": 51, "monthly_limit": 1}, "between 0 and 50"),
    ({"programme": "youth", "discount_percent": -1, "monthly_limit": 1}, "between 0 and 50"),
    ({"programme": "youth", "discount_percent": 5, "monthly_limit": -1}, "monthly_limit"),
    ({"programme": "yo:uth", "discount_percent": 5, "monthly_limit": 1}, "programme"),
    ({"programme": 7, "discount_percent": 5, "monthly_limit": 1}, "programme"),
])
def test_terms_refused(table: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError, match=says) as err:
        terms_from(table, "t.toml")
    assert "t.toml" in str(err.value)


def test_load_terms(tmp_path: Path) -> None:
    path = tmp_path / "terms.toml"
    path.write_text('[topup]\nprogramme = "youth"\ndiscount_percent = 5\n'
                    "monthly_limit = 300_000\n")
    assert load_terms(path) == TopupTerms("youth", 5, 300_000)
    for text, says in (('[topup]\nprogramme = "y"\n[other]\n', "unknown keys other"),
                       ("[nothing]\n", "unknown keys nothing"), ("", "no \\[topup\\]"),
                       ("[topup\n", "terms.toml"), ("topup = 5\n", "must be a table")):
        path.write_text(text)
        with pytest.raises(ConfigError, match=says):
            load_terms(path)


# -- the arithmetic ------------------------------------------------------------------------------

FACES = [1, 19, 20, 99, 100, 101, 9_999, 10_000, 10_001, 33_333, 49_999, 50_000, 123_457]


@pytest.mark.parametrize("percent", [5, 10])
def test_discount_rounds_in_the_programmes_favour(percent: int) -> None:
    terms = TopupTerms("youth", percent, 1)
    for face in FACES:
        price, discount = expected(face, percent)
        assert (terms.price(face), terms.discount(face)) == (price, discount), face
        # never less than the rule; never a won more than needed
        assert price * 100 >= face * (100 - percent) > (price - 1) * 100


@pytest.mark.parametrize("terms", [TERMS5, TERMS10], ids=["5%", "10%"])
def test_topup_posts_price_and_discount(ready: Store, terms: TopupTerms) -> None:
    total = 0
    for n, face in enumerate([10_000, 9_999, 33_333, 1]):
        price, discount = expected(face, terms.discount_percent)
        before = subsidy_left(ready)
        done = topup(ready, terms, CARD, face, f"sale-{n}", paid=price)
        total += face
        assert (done.account, done.face, done.price, done.discount) == \
            ("alice", face, price, discount)
        assert done.cash_balance == cash(ready) == total
        assert before - subsidy_left(ready) == discount
        assert not done.replayed
    with ready.tx(write=False) as tx:
        moves = {(p.code, p.debit, p.amount) for p in books.transfers_of(
            tx, books.pocket("alice"))}
    assert ("topup", books.BANK_OUTSIDE, expected(10_000, terms.discount_percent)[0]) in moves
    assert ("subsidy", "programme:youth:subsidy",
            expected(10_000, terms.discount_percent)[1]) in moves
    # face 1 has no discount: one transfer, no subsidy line of 0 won
    assert sum(1 for code, _, _ in moves if code == "subsidy") == 3


def test_no_discount_needs_no_subsidy(store: Store) -> None:
    citizen(store)
    done = topup(store, TopupTerms("plain", 0, 100_000), "alice", 50_000, "s1")
    assert (done.price, done.discount, cash(store)) == (50_000, 0, 50_000)
    with store.tx(write=False) as tx:
        assert books.find_account(tx, "programme:plain:subsidy") is None


# -- the monthly limit ---------------------------------------------------------------------------

def test_limit_at_its_exact_boundary(ready: Store) -> None:
    terms = TopupTerms("youth", 10, 100_000)
    topup(ready, terms, "alice", 60_000, "a", now_ms=NOV)
    before = dump(ready)
    with pytest.raises(MonthlyLimitError, match="40,000 won left, 40,001 won asked"):
        topup(ready, terms, "alice", 40_001, "b", now_ms=NOV)
    assert dump(ready) == before
    done = topup(ready, terms, CARD, 40_000, "c", now_ms=NOV)   # the card: the same account
    assert done.cash_balance == 100_000
    with pytest.raises(MonthlyLimitError, match="0 won left, 1 won asked"):
        topup(ready, terms, "alice", 1, "d", now_ms=NOV)
    # the limit is per account: bob is untouched by alice's month
    assert topup(ready, terms, "bob", 100_000, "e", now_ms=NOV).face == 100_000
    assert bought_in(ready, "alice", "2026-11") == 100_000


def test_limit_counts_every_partner(ready: Store) -> None:
    terms = TopupTerms("youth", 5, 50_000)
    topup(ready, terms, "alice", 30_000, "x", now_ms=NOV)
    with pytest.raises(MonthlyLimitError, match="20,000 won left"):
        topup(ready, terms, "alice", 30_000, "x", partner="bank1", now_ms=NOV)


def test_limit_months_are_seoul_months(ready: Store) -> None:
    terms = TopupTerms("youth", 10, 100_000)
    last_ms_of_november = seoul_ms(2026, 12, 1) - 1
    topup(ready, terms, "alice", 100_000, "nov", now_ms=last_ms_of_november)
    with pytest.raises(MonthlyLimitError, match="in 2026-11"):
        topup(ready, terms, "alice", 1, "nov-2", now_ms=last_ms_of_november)
    # 2026-12-01 00:00 in Seoul is still 30 November in UTC: a month by UTC would refuse it
    first_ms_of_december = seoul_ms(2026, 12, 1)
    assert datetime.fromtimestamp(first_ms_of_december / 1000, ZoneInfo("UTC")).month == 11
    assert month_of(first_ms_of_december) == "2026-12"
    topup(ready, terms, "alice", 100_000, "dec", now_ms=first_ms_of_december)
    with pytest.raises(MonthlyLimitError, match="in 2026-12"):
        topup(ready, terms, "alice", 1, "dec-2", now_ms=first_ms_of_december + 3_600_000)
    assert cash(ready) == 200_000
    assert bought_in(ready, "alice", "2026-11") == bought_in(ready, "alice", "2026-12")


# -- idempotency ---------------------------------------------------------------------------------

def test_the_same_sale_again_moves_nothing(ready: Store) -> None:
    first = topup(ready, TERMS10, CARD, 20_000, "r1", partner="bank1", paid=18_000)
    before = dump(ready)
    again = topup(ready, TERMS10, CARD, 20_000, "r1", partner="bank1", paid=18_000)
    assert dump(ready) == before
    assert again.replayed and again.as_json() == {**first.as_json(), "replayed": True}
    # answered as first done even when the terms changed since, and with the paid unsaid
    assert topup(ready, TERMS5, CARD, 20_000, "r1", partner="bank1").price == 18_000
    # a later sale does not change what the first one answers
    topup(ready, TERMS10, CARD, 10_000, "r2", partner="bank1")
    assert topup(ready, TERMS10, CARD, 20_000, "r1", partner="bank1").cash_balance == 20_000
    # the reference is the partner's own: another partner's r1 is another sale
    assert not topup(ready, TERMS10, CARD, 20_000, "r1", partner="bank2").replayed
    assert cash(ready) == 50_000


@pytest.mark.parametrize(("who", "face", "paid"), [
    (CARD, 30_000, None), ("alice", 20_000, None), ("bob", 20_000, None),
    (CARD, 20_000, 19_000)])
def test_the_same_reference_with_other_details_is_refused(ready: Store, who: str, face: int,
                                                          paid: int | None) -> None:
    topup(ready, TERMS10, CARD, 20_000, "r1", partner="bank1", paid=18_000)
    before = dump(ready)
    with pytest.raises(ReferenceReusedError, match="reference r1 of partner bank1"):
        topup(ready, TERMS10, who, face, "r1", partner="bank1", paid=paid)
    assert dump(ready) == before


def test_a_replay_does_not_need_the_card_still_linked(ready: Store) -> None:
    topup(ready, TERMS10, CARD, 20_000, "r1")
    with ready.tx() as tx:
        accounts.unlink(tx, CARD)
    assert topup(ready, TERMS10, CARD, 20_000, "r1").replayed
    with pytest.raises(UnknownAccountError):
        topup(ready, TERMS10, CARD, 20_000, "r2")


def test_concurrent_repeats_post_once(ready: Store) -> None:
    results: list[Any] = []

    def sell() -> None:
        try:
            results.append(topup(ready, TERMS10, CARD, 20_000, "race", partner="bank1"))
        except Exception as err:  # reported below, as the test's failure
            results.append(err)

    threads = [threading.Thread(target=sell) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(not isinstance(r, Exception) for r in results), results
    assert sorted(r.replayed for r in results) == [False] + [True] * 5
    assert cash(ready) == 20_000


def test_concurrent_sales_keep_the_limit(ready: Store) -> None:
    terms = TopupTerms("youth", 10, 100_000)
    results: list[Any] = []

    def sell(n: int) -> None:
        try:
            results.append(topup(ready, terms, CARD, 20_000, f"sale-{n}", now_ms=NOV))
        except MonthlyLimitError as err:
            results.append(err)

    threads = [threading.Thread(target=sell, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(isinstance(r, MonthlyLimitError) for r in results) == 3, results
    assert cash(ready) == bought_in(ready, "alice", "2026-11") == 100_000


# -- refusals ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "error", "says"), [
    ({"paid": 19_000}, PaidMismatchError, "costs 18,000 won; 19,000 won was paid"),
    ({"who": "nobody"}, UnknownAccountError, "neither an account"),
    ({"who": "w:unlinked"}, UnknownAccountError, "neither an account"),
    ({"face": 0}, TopupInvalidError, "between 1"),
    ({"face": -5}, TopupInvalidError, "between 1"),
    ({"face": True}, TopupInvalidError, "whole number"),
    ({"face": 20_000.0}, TopupInvalidError, "whole number"),
    ({"face": "20000"}, TopupInvalidError, "whole number"),
    ({"paid": 0}, TopupInvalidError, "between 1"),
    ({"ref": "has space"}, TopupInvalidError, "reference"),
    ({"ref": ""}, TopupInvalidError, "reference"),
    ({"partner": "a.b"}, TopupInvalidError, "partner"),
    ({"face": 600_000}, MonthlyLimitError, "500,000 won left, 600,000 won asked"),
])
def test_refusals_write_nothing(ready: Store, kwargs: dict[str, Any], error: type,
                                says: str) -> None:
    args: dict[str, Any] = {"who": CARD, "face": 20_000, "ref": "r"}
    args.update(kwargs)
    before = dump(ready)
    with pytest.raises(error, match=says):
        topup(ready, TERMS10, args.pop("who"), args.pop("face"), args.pop("ref"), **args)
    assert dump(ready) == before
    assert issubclass(error, BooksError)


def test_the_subsidy_must_hold_the_discount(store: Store) -> None:
    citizen(store)
    before = dump(store)
    with pytest.raises(SubsidyExhaustedError, match="holds 0 won; this discount needs 2,000"):
        topup(store, TERMS10, "alice", 20_000, "r1")
    assert dump(store) == before
    assert fund_subsidy(store, "youth", 2_500, "f1") == 2_500
    assert fund_subsidy(store, "youth", 2_500, "f1") == 2_500       # the same payment again
    topup(store, TERMS10, "alice", 20_000, "r1")
    with pytest.raises(SubsidyExhaustedError, match="holds 500 won; this discount needs 1,000"):
        topup(store, TERMS10, "alice", 10_000, "r2")
    # the books refuse the same overdraft on their own
    with store.tx() as tx, pytest.raises(BooksError, match="holds 500 won"):
        books.transfer(tx, [books.Transfer("programme:youth:subsidy", books.pocket("alice"),
                                           1_000, "subsidy", "by-hand")])
    with store.tx(write=False) as tx:
        assert books.balance(tx, "programme:youth:funding") == 0
        assert books.balance(tx, books.BANK_OUTSIDE) == -(2_500 + 18_000)


def test_fund_refusals(store: Store) -> None:
    for programme, amount, ref in (("yo:uth", 1, "f"), ("youth", 0, "f"), ("youth", 1, "a b"),
                                   ("youth", True, "f")):
        with pytest.raises(TopupInvalidError):
            fund_subsidy(store, programme, amount, ref)
    fund_subsidy(store, "youth", 100, "f")
    with pytest.raises(BooksError, match="fund:f"):
        fund_subsidy(store, "youth", 200, "f")


# -- partners ------------------------------------------------------------------------------------

def test_partner_keys(store: Store) -> None:
    key = add_partner(store, "bank1")
    other = add_partner(store, "app")
    assert key.startswith("bank1.") and len(key) > 40
    assert check_partner(store, key) == "bank1" and check_partner(store, other) == "app"
    with store.tx(write=False) as tx:
        rows = tx.all("SELECT * FROM partners ORDER BY partner_id")
    assert key not in repr(rows) and key.split(".", 1)[1] not in repr(rows)
    secret = key.split(".", 1)[1]
    for wrong in (key + "x", key[:-1], "app." + secret, "nobody." + secret, secret, "", ".",
                  "bank1.", " " + key, "a" * 300):
        with pytest.raises(PartnerAuthError):
            check_partner(store, wrong)
    with pytest.raises(PartnerAuthError):
        check_partner(store, key, municipality="elsewhere")
    disable_partner(store, "bank1")
    with pytest.raises(PartnerAuthError, match="disabled"):
        check_partner(store, key)
    assert check_partner(store, other) == "app"
    with pytest.raises(TopupInvalidError, match="already has a key"):
        add_partner(store, "bank1")
    with pytest.raises(TopupInvalidError, match="staff"):
        add_partner(store, "staff")
    with pytest.raises(TopupInvalidError, match="no partner"):
        disable_partner(store, "nobody")


# -- the property --------------------------------------------------------------------------------

_RUN = itertools.count()
PEOPLE = ("p0", "p1", "p2")
SALE = st.tuples(st.sampled_from(PEOPLE), st.integers(1, 60_000), st.sampled_from([5, 10]),
                 st.integers(0, 7), st.integers(0, 2), st.booleans())


@dataclass
class Tally:
    """What the top-ups should have done, kept apart from the module."""

    subsidy: int
    limit: int
    cash: dict[str, int] = field(default_factory=dict)
    months: dict[tuple[str, str], int] = field(default_factory=dict)
    sales: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    discounts: int = 0
    prices: int = 0

    def sell(self, who: str, holder: str, face: int, percent: int, ref: str,
             month: str) -> str:
        if ref in self.sales:
            # a repeat names the same card or account, as the first did
            return "replayed" if self.sales[ref][:2] == (holder, face) else "reused"
        price, discount = expected(face, percent)
        if self.months.get((who, month), 0) + face > self.limit:
            return "over_limit"
        if discount > self.subsidy:
            return "exhausted"
        self.sales[ref] = (holder, face, price)
        self.months[(who, month)] = self.months.get((who, month), 0) + face
        self.cash[who] = self.cash.get(who, 0) + face
        self.subsidy -= discount
        self.discounts += discount
        self.prices += price
        return "done"


OUTCOME = {MonthlyLimitError: "over_limit", SubsidyExhaustedError: "exhausted",
           ReferenceReusedError: "reused"}


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sales=st.lists(SALE, min_size=1, max_size=14), funded=st.integers(1, 12_000),
       limit=st.integers(1, 120_000))
def test_random_topups_keep_the_books(store: Store, sales: list[tuple[Any, ...]],
                                      funded: int, limit: int) -> None:
    town = f"m{next(_RUN)}"      # each example its own municipality: fresh books
    for person in PEOPLE:
        citizen(store, person, f"card-{person}", municipality=town)
    fund_subsidy(store, "youth", funded, "fund", municipality=town)
    tally = Tally(funded, limit)
    for who, face, percent, ref_n, month_n, by_card in sales:
        ref = f"r{ref_n}"
        now = seoul_ms(2026, 10 + month_n, 28)
        holder = f"card-{who}" if by_card else who
        want = tally.sell(who, holder, face, percent, ref, month_of(now))
        try:
            done = topup(store, TopupTerms("youth", percent, limit), holder, face, ref,
                         municipality=town, now_ms=now)
            got = "replayed" if done.replayed else "done"
        except (MonthlyLimitError, SubsidyExhaustedError, ReferenceReusedError) as err:
            got = OUTCOME[type(err)]
        event(got)
        assert got == want, (who, face, percent, ref, got, want)
    assert books.check(store, town).balanced
    for person in PEOPLE:
        assert cash(store, person, town) == tally.cash.get(person, 0)
    assert funded - subsidy_left(store, municipality=town) == tally.discounts
    with store.tx(write=False) as tx:
        assert books.balance(tx, books.BANK_OUTSIDE, municipality=town) == \
            -(funded + tally.prices)


# -- the HTTP route ------------------------------------------------------------------------------

class Api:
    """The real app (``create_app``) on a loopback port, served by uvicorn in a thread."""

    def __init__(self, service: Any, terms: TopupTerms | None) -> None:
        import uvicorn

        from central.app import create_app

        self.service = service
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        config = uvicorn.Config(create_app(service, topup_terms=terms), log_level="warning",
                                access_log=False, log_config=None, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run,
                                        kwargs={"sockets": [self._sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline and self._thread.is_alive(), "did not start"
            time.sleep(0.01)

    def post(self, body: Any, key: str | None, *, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> httpx.Response:
        sent = dict(headers or {})
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        content = raw if raw is not None else json.dumps(body).encode()
        return httpx.post(self.url + "/v1/topups", content=content, headers=sent, timeout=10)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()


@dataclass
class Served:
    api: Api
    store: Store
    key: str


@pytest.fixture
def served(store_url: str, tmp_path: Path) -> Iterator[Served]:  # noqa: F811
    service = open_service(store_url, tmp_path / "data")
    citizen(service.store)
    fund_subsidy(service.store, "youth", 1_000_000, "city")
    key = add_partner(service.store, "bank1")
    api = Api(service, TopupTerms("youth", 10, 100_000))
    yield Served(api, service.store, key)
    api.stop()
    assert books.check(service.store).balanced
    service.store.close()


def sale(ref: Any = "b-1", account: Any = CARD, face: Any = 20_000, paid: Any = 18_000,
         **more: Any) -> dict[str, Any]:
    return {"reference": ref, "account": account, "face_value": face, "paid": paid, **more}


def test_http_sale_and_its_replay(served: Served) -> None:
    from sync.protocol import H_NONCE, H_SIGNATURE, response_message, unb64

    r = served.api.post(sale(), served.key, headers={H_NONCE: "n1"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert {k: v for k, v in doc.items() if k != "time_ms"} == {
        "reference": "b-1", "account": "alice", "face_value": 20_000, "price": 18_000,
        "discount": 2_000, "cash_balance": 20_000, "replayed": False}
    # signed by the answer key the log key names, as every answer of the service
    from sync.protocol import ANSWER_KEY_PATH, open_answer_key

    answers = open_answer_key(httpx.get(served.api.url + ANSWER_KEY_PATH).json()["note"],
                              served.api.service.signer.verifier)
    answers.public_key.verify(unb64(r.headers[H_SIGNATURE], "sig"),
                              response_message("n1", 200, r.content))
    before = dump(served.store)
    again = served.api.post(sale(), served.key).json()
    assert again["replayed"] is True and again["cash_balance"] == 20_000
    assert dump(served.store) == before
    assert cash(served.store) == 20_000


def test_http_needs_a_partner_key(served: Served) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from sync.protocol import H_NONCE, H_SIGNATURE, H_TERMINAL, H_TIME, b64, request_message

    before = dump(served.store)
    secret = served.key.split(".", 1)[1]
    for key in (None, "nobody." + secret, served.key + "0", secret):
        r = served.api.post(sale(), key)
        assert r.status_code == 401, (key, r.text)
        assert r.json()["error"] == "refused" and r.json()["kind"] == "partner_refused"
    for header in (f"Basic {served.key}", "Bearer", served.key):
        r = served.api.post(sale(), None, headers={"Authorization": header})
        assert r.status_code == 401, header
    # a registered terminal's valid signature opens nothing here
    terminal_key = Ed25519PrivateKey.generate()
    served.api.service.add_terminal("T1", terminal_key.public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw))
    body = json.dumps(sale()).encode()
    now = int(time.time() * 1000)
    signature = terminal_key.sign(request_message("POST", "/v1/topups", now, "n1", body))
    r = served.api.post(None, None, raw=body, headers={
        H_TERMINAL: "T1", H_TIME: str(now), H_NONCE: "n1", H_SIGNATURE: b64(signature)})
    assert r.status_code == 401, r.text
    disable_partner(served.store, "bank1")
    assert served.api.post(sale(), served.key).status_code == 401
    assert dump(served.store) == before


@pytest.mark.parametrize(("body", "says"), [
    (sale(face=20_000.0), "face_value must be a whole number of won, not 20000.0"),
    (sale(face="20000"), "face_value must be a whole number"),
    (sale(face=True), "face_value must be a whole number"),
    (sale(paid=None), "paid must be a whole number"),
    (sale(paid=1.8e4), "paid must be a whole number"),
    (sale(ref=7), "reference must be text"),
    (sale(account=["alice"]), "account must be text"),
    (sale(tip=1), "unknown keys tip"),
    ({"reference": "b", "account": CARD, "face_value": 1}, "paid is required"),
    ([sale()], "a JSON object"),
    (sale(face=0, paid=1), "between 1"),
    (sale(ref="with space"), "reference"),
])
def test_http_malformed_bodies(served: Served, body: Any, says: str) -> None:
    before = dump(served.store)
    r = served.api.post(body, served.key)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "malformed" and says in r.json()["message"]
    assert dump(served.store) == before


@pytest.mark.parametrize("raw", [b"", b"{", b'{"reference": "a", "reference": "b", '
                                 b'"account": "x", "face_value": 1, "paid": 1}', b"\xff"])
def test_http_not_json(served: Served, raw: bytes) -> None:
    r = served.api.post(None, served.key, raw=raw)
    assert r.status_code == 400 and r.json()["error"] == "malformed", r.text


def test_http_refusals(served: Served) -> None:
    assert served.api.post(sale(), served.key).status_code == 200
    before = dump(served.store)
    cases = [
        (sale(face=30_000, paid=27_000), 409, "reference_reused", "was a top-up of"),
        (sale("b-2", account="nobody"), 404, "unknown_account", "neither an account"),
        (sale("b-2", paid=20_000), 422, "paid_mismatch", "costs 18,000 won"),
        (sale("b-2", face=80_001, paid=72_001), 422, "over_limit",
         "80,000 won left, 80,001 won asked"),
    ]
    for body, status, code, says in cases:
        r = served.api.post(body, served.key)
        assert (r.status_code, r.json()["error"]) == (status, code), r.text
        assert says in r.json()["message"]
    assert dump(served.store) == before
    r = served.api.post(sale("b-3", face=80_000, paid=72_000), served.key)
    assert r.status_code == 200 and r.json()["cash_balance"] == 100_000


def test_http_subsidy_exhausted(served: Served) -> None:
    with served.store.tx() as tx:
        accounts.create(tx, "carol")
    other = Api(served.api.service, TopupTerms("empty", 10, 100_000))
    try:
        r = other.post(sale(account="carol"), served.key)
    finally:
        other.stop()
    assert (r.status_code, r.json()["error"]) == (422, "subsidy_exhausted"), r.text


def test_http_without_terms(served: Served) -> None:
    bare = Api(served.api.service, None)
    try:
        r = bare.post(sale(), served.key)
        assert r.status_code == 503, r.text
        assert r.json()["message"] == "top-ups are not configured"
        assert bare.post(sale(), "nobody.x").status_code == 401
    finally:
        bare.stop()


# -- the commands --------------------------------------------------------------------------------

def run_cli(*args: str) -> Any:
    result = CliRunner().invoke(cli, ["central", *args], catch_exceptions=False)
    return result


def test_commands_and_the_served_route(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = f"sqlite:///{tmp_path / 'central.sqlite'}"
    where = ["--db", db, "--data", str(data)]
    terms = tmp_path / "terms.toml"
    terms.write_text('[topup]\nprogramme = "youth"\ndiscount_percent = 5\n'
                     "monthly_limit = 300000\n")
    s = open_store(db)
    citizen(s)
    s.close()
    assert run_cli("init", *where).exit_code == 0  # the log key beside the store
    added = run_cli("topup", "partner", "add", *where, "bank1")
    assert added.exit_code == 0, added.output
    key = added.stdout.strip().splitlines()[-1]
    funded = run_cli("topup", "fund", *where, "--programme", "youth", "--amount", "50000",
                     "--ref", "city-1")
    assert "its subsidy holds 50,000 won" in funded.output, funded.output
    sold = run_cli("topup", "run", *where, CARD, "--face", "10000", "--terms", str(terms),
                   "--ref", "desk-1")
    assert sold.exit_code == 0, sold.output
    said = " ".join(sold.output.split())
    for line in ("price 9,500 won", "discount 500 won (youth)", "cash balance 10,000 won"):
        assert line in said, sold.output
    again = run_cli("topup", "run", *where, CARD, "--face", "10000", "--terms", str(terms),
                    "--ref", "desk-1")
    assert "already done" in again.output and "10,000 won" in again.output
    refused = run_cli("topup", "run", *where, "alice", "--face", "290001", "--terms",
                      str(terms), "--paid", "1")
    assert refused.exit_code == 2 and "PaidMismatchError" in refused.output, refused.output
    refused = run_cli("topup", "run", *where, "alice", "--face", "290001", "--terms",
                      str(terms))
    assert refused.exit_code == 2 and "290,000 won left" in refused.output, refused.output
    bad = tmp_path / "bad.toml"
    bad.write_text('[topup]\nprogramme = "youth"\ndiscount_percent = 60\nmonthly_limit = 1\n')
    assert "between 0 and 50" in run_cli("serve", *where, "--topup-terms", str(bad)).output
    server = start_central(db, data, command=("-m", "localpay", "central", "serve"),
                           extra=("--topup-terms", str(terms)))
    try:
        r = httpx.post(server.url + "/v1/topups", json=sale("b-1", face=20_000, paid=19_000),
                       headers={"Authorization": f"Bearer {key}"}, timeout=10)
    finally:
        server.stop()
    assert r.status_code == 200, r.text
    assert (r.json()["price"], r.json()["cash_balance"]) == (19_000, 30_000)
    checked = run_cli("books", "check", *where)
    assert checked.exit_code == 0 and "the books balance" in checked.output
    assert run_cli("topup", "partner", "disable", *where, "bank1").exit_code == 0
