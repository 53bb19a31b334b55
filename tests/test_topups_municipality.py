"""Top-ups on a platform of several municipalities, and the refusal of an unregistered
``--municipality`` by every central command that takes one; on SQLite and PostgreSQL.

A partner belongs to one municipality and credits only its accounts: an account of another
is answered exactly as one that exists nowhere. Subsidies, monthly limits and terms are each
municipality's own. The money is checked against figures computed here from the terms.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from central import accounts, books, municipalities
from central.store import Store, open_store
from central.topups import (
    PartnerAuthError,
    TopupInvalidError,
    TopupTerms,
    UnknownAccountError,
    add_partner,
    authenticate,
    bought_in,
    check_partner,
    fund_subsidy,
    month_of,
    terms_from,
    topup,
)
from localpay.cli import cli
from localpay.errors import ConfigError, SyncError
from tests.pg_fixtures import pg_cluster, start_central, store_url  # noqa: F401

A, B = "goyang", "gimpo"
CARD_A, CARD_B, CARD_BOTH = "a1" * 12, "b2" * 12, "c3" * 12
#: shared terms, and Gimpo's own
TERMS_TOML = ('[topup]\nprogramme = "youth"\ndiscount_percent = 5\nmonthly_limit = 100000\n'
              f'[topup.{B}]\nprogramme = "youth"\ndiscount_percent = 10\n'
              "monthly_limit = 60000\n")
TERMS = terms_from({"programme": "youth", "discount_percent": 5, "monthly_limit": 100_000,
                    B: {"programme": "youth", "discount_percent": 10,
                        "monthly_limit": 60_000}}, "test")
_REF = itertools.count(1)


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(cli, ["central", *args])


def ok(*args: str) -> str:
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    return result.output


def citizen(store: Store, account: str, card: str, municipality: str) -> None:
    with store.tx() as tx:
        accounts.link(tx, account, card, municipality=municipality)


@dataclass
class Books:
    """What each municipality's books must hold, computed from the terms here."""

    funded: dict[str, int] = field(default_factory=dict)
    prices: dict[str, int] = field(default_factory=dict)
    cash: dict[tuple[str, str], int] = field(default_factory=dict)
    discounts: dict[str, int] = field(default_factory=dict)

    def fund(self, municipality: str, amount: int) -> None:
        self.funded[municipality] = self.funded.get(municipality, 0) + amount

    def sale(self, municipality: str, account: str, face: int, percent: int) -> None:
        discount = face * percent // 100
        self.prices[municipality] = self.prices.get(municipality, 0) + face - discount
        self.discounts[municipality] = self.discounts.get(municipality, 0) + discount
        key = (municipality, account)
        self.cash[key] = self.cash.get(key, 0) + face

    def check(self, store: Store) -> None:
        with store.tx(write=False) as tx:
            for (m, account), want in self.cash.items():
                assert books.balance(tx, books.pocket(account), municipality=m) == want
            for m, funded in self.funded.items():
                held = books.find_account(tx, books.programme_subsidy("youth"), municipality=m)
                assert held is not None and held.balance == funded - self.discounts.get(m, 0)
                assert books.balance(tx, books.BANK_OUTSIDE, municipality=m) == \
                    -(funded + self.prices.get(m, 0))
        for m in (A, B, municipalities.DEFAULT):
            assert books.check(store, m).balanced, m


@pytest.fixture
def store(store_url: str) -> Any:  # noqa: F811
    s = open_store(store_url)
    for m in (A, B):
        municipalities.add(s, m, m.title(), f"{m.title()} Pay")
    yield s
    assert books.check(s).balanced
    s.close()


# -- the library ---------------------------------------------------------------------------------

def test_terms_are_shared_unless_a_municipality_has_its_own() -> None:
    assert TERMS.of(A) == TopupTerms("youth", 5, 100_000, ()) == TERMS.of("default").of(A)
    assert TERMS.of(B) == TopupTerms("youth", 10, 60_000)
    with pytest.raises(ConfigError, match=r"\[topup.gimpo\] lacks monthly_limit"):
        terms_from({"programme": "youth", "discount_percent": 5, "monthly_limit": 1,
                    B: {"programme": "youth", "discount_percent": 10}}, "t")
    with pytest.raises(ConfigError, match=r"\[topup.Bad_Id\]: municipality id"):
        terms_from({"programme": "youth", "discount_percent": 5, "monthly_limit": 1,
                    "Bad_Id": {}}, "t")
    with pytest.raises(ConfigError, match=r"\[topup\] lacks"):
        terms_from({B: {"programme": "youth", "discount_percent": 10,
                        "monthly_limit": 1}}, "t")


def test_a_partner_belongs_to_one_municipality(store: Store) -> None:
    key_a = add_partner(store, "bank-a", municipality=A)
    key_b = add_partner(store, "bank-b", municipality=B)
    assert authenticate(store, key_a).municipality == A
    assert authenticate(store, key_b).municipality == B
    assert check_partner(store, key_a, municipality=A) == "bank-a"
    with pytest.raises(PartnerAuthError, match=r"^unknown partner key$"):
        check_partner(store, key_a, municipality=B)
    # a name is one partner on the platform: its key names no municipality
    for m in (A, B, municipalities.DEFAULT):
        with pytest.raises(TopupInvalidError, match="bank-a already has a key"):
            add_partner(store, "bank-a", municipality=m)
    with pytest.raises(municipalities.UnknownMunicipalityError,
                       match="unknown municipality 'nowhere'; registered: default, gimpo, "
                       "goyang"):
        add_partner(store, "bank-c", municipality="nowhere")
    with store.tx(write=False) as tx:
        assert tx.all("SELECT municipality_id, partner_id FROM partners "
                      "ORDER BY partner_id") == [(A, "bank-a"), (B, "bank-b")]


def test_staff_top_ups_stay_in_their_municipality(store: Store) -> None:
    want = Books()
    citizen(store, "alice", CARD_A, A)
    citizen(store, "bob", CARD_B, B)
    for m, amount in ((A, 50_000), (B, 30_000)):
        fund_subsidy(store, "youth", amount, "city", municipality=m)
        want.fund(m, amount)
    # B's account or card, sold in A: unknown, in the words of an account that exists nowhere
    for who in ("bob", CARD_B, "nobody"):
        with pytest.raises(UnknownAccountError) as there:
            topup(store, TERMS, who, 10_000, f"s-{next(_REF)}", municipality=A)
        assert str(there.value) == \
            f"{who!r} is neither an account nor a card or wallet linked to one"
    # the same staff reference in each municipality: two sales, each at its own terms
    done_a = topup(store, TERMS, "alice", 20_000, "desk-1", municipality=A)
    done_b = topup(store, TERMS, CARD_B, 20_000, "desk-1", municipality=B)
    assert (done_a.discount, done_b.discount) == (1_000, 2_000)
    want.sale(A, "alice", 20_000, 5)
    want.sale(B, "bob", 20_000, 10)
    assert topup(store, TERMS, "alice", 20_000, "desk-1", municipality=A).replayed
    want.check(store)


def test_partners_of_an_older_store_are_defaults(store_url: str) -> None:  # noqa: F811
    s = open_store(store_url)
    key = add_partner(s, "bank-old")
    with s.tx() as tx:  # as a store from before: no name index, a row naming no municipality
        tx.run("DROP INDEX partners_name")
        tx.run("UPDATE partners SET municipality_id = 'default'")
    s.close()
    s = open_store(store_url)  # the service opening it again
    try:
        assert authenticate(s, key).municipality == municipalities.DEFAULT
        municipalities.add(s, B, "Gimpo", "Gimpo Pay")
        with pytest.raises(TopupInvalidError, match="bank-old already has a key"):
            add_partner(s, "bank-old", municipality=B)
        with pytest.raises(SyncError, match=r"(?i)unique"), s.tx() as tx:
            tx.run("INSERT INTO partners (municipality_id, partner_id, key_hash, created_ms) "
                   "VALUES (?, 'bank-old', 'x', 0)", (B,))
    finally:
        s.close()


# -- the route, on a real `central serve` ---------------------------------------------------------

def sale(ref: str, account: str, face: int, paid: int) -> dict[str, Any]:
    return {"reference": ref, "account": account, "face_value": face, "paid": paid}


def test_partners_over_http_and_the_commands(store_url: str, tmp_path: Path) -> None:  # noqa: F811
    data = tmp_path / "data"
    where = ["--db", store_url, "--data", str(data)]
    terms = tmp_path / "terms.toml"
    terms.write_text(TERMS_TOML)
    ok("init", *where)
    for m in (A, B):
        ok("municipality", "add", m, *where, "--name", m.title(), "--currency", "Pay")
    ok("account", "link", *where, "--municipality", A, "alice", CARD_A)
    ok("account", "link", *where, "--municipality", A, "carol", CARD_BOTH)
    ok("account", "link", *where, "--municipality", B, "dave", CARD_BOTH)
    key_a = ok("topup", "partner", "add", *where, "--municipality", A, "bank-a"
               ).strip().splitlines()[-1]
    key_b = ok("topup", "partner", "add", *where, "--municipality", B, "bank-b"
               ).strip().splitlines()[-1]
    want = Books()
    assert "its subsidy holds 40,000 won" in ok(
        "topup", "fund", *where, "--municipality", A, "--programme", "youth", "--amount",
        "40000", "--ref", "city-a")
    want.fund(A, 40_000)
    server = start_central(store_url, data, command=("-m", "localpay", "central", "serve"),
                           extra=("--topup-terms", str(terms)))

    def post(key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        r = httpx.post(server.url + "/v1/topups", json=body,
                       headers={"Authorization": f"Bearer {key}"}, timeout=10)
        return r.status_code, {k: v for k, v in r.json().items() if k != "time_ms"}

    try:
        # "bob": not yet anywhere; then B's account. A's partner hears the same both times.
        nowhere = post(key_a, sale("r-1", "bob", 10_000, 9_500))
        assert nowhere[0] == 404 and nowhere[1]["error"] == "unknown_account"
        ok("account", "link", *where, "--municipality", B, "bob", CARD_B)
        assert post(key_a, sale("r-2", "bob", 10_000, 9_500)) == nowhere
        unknown_card = post(key_a, sale("r-3", "dd" * 12, 10_000, 9_500))
        elsewhere_card = post(key_a, sale("r-3", CARD_B, 10_000, 9_500))
        assert elsewhere_card[0] == 404
        assert elsewhere_card[1] == {**unknown_card[1], "message": unknown_card[1]["message"]
                                     .replace("dd" * 12, CARD_B)}
        # each partner sells its own municipality's currency at its terms; a card linked
        # in both credits the partner's municipality's account; references per partner
        assert post(key_a, sale("r-1", CARD_BOTH, 20_000, 19_000))[0] == 200
        want.sale(A, "carol", 20_000, 5)
        code, said = post(key_b, sale("r-1", CARD_BOTH, 20_000, 18_000))
        assert (code, said["error"]) == (422, "subsidy_exhausted"), said  # B's is unfunded
        ok("topup", "fund", *where, "--municipality", B, "--programme", "youth",
           "--amount", "5000", "--ref", "city-b")
        want.fund(B, 5_000)
        code, said = post(key_b, sale("r-1", CARD_BOTH, 20_000, 18_000))
        assert code == 200 and (said["account"], said["discount"]) == ("dave", 2_000), said
        want.sale(B, "dave", 20_000, 10)
        # limits per municipality: B's 60,000 is nearly used, A's 100,000 is not
        code, said = post(key_b, sale("r-2", CARD_BOTH, 50_000, 45_000))
        assert (code, said["error"]) == (422, "over_limit"), said
        assert post(key_a, sale("r-4", CARD_BOTH, 50_000, 47_500))[0] == 200
        want.sale(A, "carol", 50_000, 5)
    finally:
        server.stop()
    # the counter: staff of A cannot sell to B's account; staff of B can, at B's terms
    refused = run_cli("topup", "run", *where, "bob", "--face", "10000", "--terms", str(terms))
    assert refused.exit_code == 2 and "UnknownAccountError" in refused.output, refused.output
    sold = ok("topup", "run", *where, "--municipality", B, "bob", "--face", "10000",
              "--terms", str(terms), "--ref", "desk-1")
    assert "discount 1,000 won (youth)" in " ".join(sold.split()), sold
    want.sale(B, "bob", 10_000, 10)
    ok("topup", "partner", "disable", *where, "--municipality", B, "bank-b")
    gone = run_cli("topup", "partner", "disable", *where, "--municipality", A, "bank-b")
    assert gone.exit_code == 2 and "no partner bank-b" in gone.output, gone.output
    for m in (A, B):
        assert "the books balance" in ok("books", "check", *where, "--municipality", m)
    s = open_store(store_url)
    try:
        want.check(s)
        month = month_of(int(time.time() * 1000))
        assert bought_in(s, "carol", month, municipality=A) == 70_000
        assert bought_in(s, "dave", month, municipality=B) == 20_000
        with s.tx(write=False) as tx:
            assert tx.all("SELECT municipality_id, partner, ref, account_id FROM topups "
                          "ORDER BY municipality_id, partner, ref") == [
                (B, "bank-b", "r-1", "dave"), (B, "staff", "desk-1", "bob"),
                (A, "bank-a", "r-1", "carol"), (A, "bank-a", "r-4", "carol")]
    finally:
        s.close()


# -- an unregistered --municipality ---------------------------------------------------------------

REFUSED = [
    ("merchant", "list"), ("merchant", "show", "M1"),
    ("merchant", "add", "M1", "--name", "Shop", "--brn", "1208147521", "--category",
     "ksic:47121"),
    ("account", "link", "acc-1", "card-1"), ("account", "unlink", "card-1"),
    ("account", "show", "acc-1"),
    ("allowance", "fund", "--programme", "youth", "--amount", "1000"),
    ("allowance", "report"), ("allowance", "expire"),
    ("topup", "partner", "add", "bank-z"), ("topup", "partner", "disable", "bank-z"),
    ("topup", "fund", "--programme", "youth", "--amount", "1000"),
    ("topup", "run", "acc-1", "--face", "1000", "--terms", "TERMS"),
    ("settlement", "run", "--date", "2026-11-02"), ("settlement", "status"),
    ("pockets", "rules", "show"), ("pockets", "rules", "versions"), ("spend",),
]


@pytest.mark.parametrize("command", REFUSED, ids=[" ".join(c[:2]) for c in REFUSED])
def test_an_unregistered_municipality_is_refused(store_url: str, tmp_path: Path,  # noqa: F811
                                                 command: tuple[str, ...]) -> None:
    s = open_store(store_url)
    municipalities.add(s, A, "Goyang", "Goyang Pay")
    s.close()
    terms = tmp_path / "terms.toml"
    terms.write_text(TERMS_TOML)
    args = [str(terms) if a == "TERMS" else a for a in command]
    where = ["--db", store_url, "--data", str(tmp_path / "data")]
    ok("init", *where)  # the log key beside the store
    result = run_cli(*args, *where, "--municipality", "nowhere")
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        "Error: unknown municipality 'nowhere'; registered: default, goyang"]
    s = open_store(store_url)
    try:
        with s.tx(write=False) as tx:  # nothing was written
            for table in ("accounts", "merchants", "partners", "book_transfers", "topups"):
                assert tx.one(f"SELECT COUNT(*) FROM {table}") == (0,), table
    finally:
        s.close()
