"""Citizens' accounts: links of cards and wallets, moves, lookups, pockets, and the
``localpay central account`` commands, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from central import accounts, books
from central.store import Store, open_store
from localpay.cli.accounts import account as account_cli
from localpay.errors import ConfigError
from tests.central_data import initialised_data
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:  # noqa: F811
    s = open_store(store_url)
    yield s
    # whatever a test did, the books still balance
    assert books.check(s).balanced
    s.close()


def run(store_url: str, *args: str) -> tuple[int, str, str]:  # noqa: F811
    result = CliRunner().invoke(account_cli, [args[0], "--db", store_url, "--data",
                                              initialised_data(), *args[1:]])
    return result.exit_code, result.stdout, result.stderr


def test_link_opens_the_account_with_its_pockets(store: Store) -> None:
    with store.tx() as tx:
        assert accounts.link(tx, "alice", "card1") is None
        assert accounts.exists(tx, "alice")
        assert accounts.holders(tx, "alice") == ["card1"]
        assert [(p.name, p.balance) for p in accounts.pockets(tx, "alice")] == \
            [("cash", 0), ("points", 0)]
        # linking it again where it is changes nothing
        assert accounts.link(tx, "alice", "card1") is None
        assert accounts.holders(tx, "alice") == ["card1"]


def test_a_card_moves_whole_and_says_from_where(store: Store) -> None:
    with store.tx() as tx:
        accounts.link(tx, "alice", "card1")
        accounts.link(tx, "alice", "w:app-7")
        assert accounts.link(tx, "bob", "card1") == "alice"
        assert accounts.holders(tx, "alice") == ["w:app-7"]
        assert accounts.holders(tx, "bob") == ["card1"]
        assert accounts.resolve(tx, "card1") == "bob"
        assert accounts.resolve(tx, "w:app-7") == "alice"


def test_unlink_keeps_the_account_and_its_money(store: Store) -> None:
    with store.tx() as tx:
        accounts.link(tx, "alice", "card1")
        books.open_account(tx, books.BANK_OUTSIDE)
        books.transfer(tx, [books.Transfer(books.BANK_OUTSIDE, books.pocket("alice"), 7_000,
                                           "topup", "top-1")])
        assert accounts.unlink(tx, "card1") == "alice"
        assert accounts.holders(tx, "alice") == []
        assert accounts.exists(tx, "alice")
        assert accounts.resolve(tx, "alice") == "alice"
        assert {p.name: p.balance for p in accounts.pockets(tx, "alice")}["cash"] == 7_000
        with pytest.raises(ConfigError, match="neither an account"):
            accounts.resolve(tx, "card1")


def test_pockets_show_every_pocket_with_its_book_balance(store: Store) -> None:
    with store.tx() as tx:
        accounts.create(tx, "alice")
        accounts.create(tx, "alice2")  # its pockets share alice's prefix but not hers
        books.open_account(tx, books.BANK_OUTSIDE)
        books.open_account(tx, books.pocket("alice", "youth"))
        books.transfer(tx, [
            books.Transfer(books.BANK_OUTSIDE, books.pocket("alice"), 5_000, "topup", "t1"),
            books.Transfer(books.BANK_OUTSIDE, books.pocket("alice2"), 9_000, "topup", "t2"),
            books.Transfer(books.BANK_OUTSIDE, books.pocket("alice", "youth"), 1_234,
                           "correction", "t3")])
        got = {p.name: p.balance for p in accounts.pockets(tx, "alice")}
    assert got == {"cash": 5_000, "points": 0, "youth": 1_234}


def test_municipalities_keep_their_own_links(store: Store) -> None:
    with store.tx() as tx:
        accounts.link(tx, "alice", "card1", municipality="goyang")
        accounts.link(tx, "bob", "card1", municipality="gimpo")
        assert accounts.resolve(tx, "card1", municipality="goyang") == "alice"
        assert accounts.resolve(tx, "card1", municipality="gimpo") == "bob"
        with pytest.raises(ConfigError):
            accounts.resolve(tx, "card1")


@pytest.mark.parametrize("call, match", [
    (lambda tx: accounts.link(tx, "alice", "card 1"), "neither a card token"),
    (lambda tx: accounts.link(tx, "alice", "x:y"), "neither a card token"),
    (lambda tx: accounts.link(tx, "-alice", "card1"), "account id"),
    (lambda tx: accounts.link(tx, "al ice", "card1"), "account id"),
    (lambda tx: accounts.unlink(tx, "card9"), "not linked"),
    (lambda tx: accounts.unlink(tx, "bad card"), "neither a card token"),
    (lambda tx: accounts.resolve(tx, "nobody"), "neither an account"),
    (lambda tx: accounts.resolve(tx, "w:nobody"), "neither an account"),
])
def test_each_refusal_is_a_config_error_and_changes_nothing(store: Store, call: object,
                                                            match: str) -> None:
    with store.tx() as tx:
        accounts.link(tx, "bob", "card2")
    with pytest.raises(ConfigError, match=match), store.tx() as tx:
        call(tx)  # type: ignore[operator]
    with store.tx(write=False) as tx:
        assert tx.all("SELECT account_id FROM accounts ORDER BY account_id") == [("bob",)]
        assert tx.all("SELECT holder, account_id FROM account_links") == [("card2", "bob")]


def test_the_commands_link_move_show_and_unlink(store: Store, store_url: str  # noqa: F811
                                                ) -> None:
    code, out, _ = run(store_url, "link", "alice", "card1")
    assert code == 0 and "card1 linked to account alice" in out and "moved" not in out
    code, out, _ = run(store_url, "link", "bob", "card1")
    assert code == 0 and "moved from account alice" in out
    run(store_url, "link", "bob", "w:app-1")
    code, out, _ = run(store_url, "show", "card1")
    assert code == 0
    assert "account  bob" in out and "card1, w:app-1" in out and "cash" in out
    code, out, _ = run(store_url, "show", "w:app-1", "--json")
    assert json.loads(out) == {"account": "bob", "municipality": "default",
                               "holders": ["card1", "w:app-1"],
                               "pockets": {"cash": 0, "points": 0}, "grants": []}
    code, out, _ = run(store_url, "unlink", "card1")
    assert code == 0 and "unlinked from account bob" in out
    code, _, err = run(store_url, "unlink", "card1")
    assert code == 1 and "not linked" in err
    code, _, err = run(store_url, "show", "card1")
    assert code == 1 and "neither an account" in err
    code, _, err = run(store_url, "show", "alice", "--municipality", "other")
    assert code == 2 and "unknown municipality 'other'" in err


def test_show_lists_grants_with_their_expiry(store: Store, store_url: str  # noqa: F811
                                             ) -> None:
    from central import allowances

    allowances.fund(store, "youth", 50_000, "f1")
    with store.tx() as tx:
        accounts.link(tx, "alice", "card1")
    allowances.issue(store, "youth", "recipient\ncard1\n", 20_000, "2026-12-31", "2026-11")
    _, out, _ = run(store_url, "show", "alice", "--json")
    shown = json.loads(out)
    assert shown["pockets"] == {"cash": 0, "points": 0, "youth": 20_000}
    assert [(g["programme"], g["period"], g["amount"], g["expires"], g["expired_amount"])
            for g in shown["grants"]] == [("youth", "2026-11", 20_000, "2026-12-31", None)]
    _, out, _ = run(store_url, "show", "card1")
    assert "youth" in out and "2026-12-31" in out and "20,000" in out
