"""Edges of the central log (central.service) by municipality: whose deny list an overdraft
at a terminal lands in, which cards' deny-list changes and balances a municipality's
terminals are told, the check that a card's balance belongs to one municipality across
batches of cards, and a service told to trust every stated time."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator

import pytest

from central import accounts, municipalities
from central.service import CentralLog
from firmware_cfg.keys import public_hex
from localpay.errors import SyncAuthError
from tests.incentives_data import Chain, open_service, pay_detail, seoul_ms
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401

HIDDEN, SEEN, OWN = "c1" * 32, "c2" * 32, "c3" * 32


@pytest.fixture
def svc(store_url: str) -> Iterator[CentralLog]:  # noqa: F811
    log = open_service(store_url, followers=[])
    municipalities.add(log.store, "gimpo", "Gimpo", "Gimpo Pay")
    yield log
    log.store.close()


def gimpo_till(svc: CentralLog, tid: str = "T-GP") -> Chain:
    c = Chain(tid)
    svc.add_terminal(tid, bytes.fromhex(public_hex(c.key)), municipality="gimpo")
    return c


def test_an_overdraft_at_a_terminal_denies_the_card_in_the_terminals_municipality(
        svc: CentralLog) -> None:
    c = gimpo_till(svc)
    svc.set_balances({SEEN: 1_000}, municipality="gimpo")
    svc.ingest("T-GP", [c.entry("payment", SEEN, 1_500, seoul_ms(2025, 3, 10, 9),
                                detail=pay_detail(), place="M-1")])
    assert svc.deny_delta(0, municipality="gimpo")["add"] == {SEEN: "overdraft"}
    assert svc.deny_delta(0, terminal="T-GP")["add"] == {SEEN: "overdraft"}
    assert svc.deny_delta(0)["add"] == {}
    assert svc.balances_delta(0, municipality="gimpo")["balances"] == {SEEN: 1_000 - 1_500}


def test_the_municipality_of_a_terminal(svc: CentralLog) -> None:
    gimpo_till(svc)
    assert svc.terminal_municipality("T-GP") == "gimpo"
    with pytest.raises(SyncAuthError, match=r"^unknown terminal 'T-NONE'$"):
        svc.terminal_municipality("T-NONE")


def test_a_terminals_municipality_is_read_while_a_batch_is_written(svc: CentralLog) -> None:
    """Asked on every request of a terminal: it does not queue behind a writer (SQLite in
    WAL mode lets readers through; a write transaction would wait)."""
    gimpo_till(svc)
    got: list[str] = []
    with svc.store.tx():
        reader = threading.Thread(target=lambda: got.append(svc.terminal_municipality("T-GP")))
        reader.start()
        reader.join(5)
        finished = not reader.is_alive()
    reader.join()
    assert finished and got == ["gimpo"]


def link_cards(svc: CentralLog) -> None:
    """HIDDEN belongs to an account of Gimpo only, OWN to one of default, SEEN to none."""
    with svc.store.tx() as tx:
        accounts.link(tx, "gp-citizen", HIDDEN, municipality="gimpo")
        accounts.link(tx, "citizen", OWN)


def test_a_card_of_another_municipality_only_is_never_told_on_the_deny_list(
        svc: CentralLog) -> None:
    link_cards(svc)
    svc.deny(HIDDEN, "stolen")          # version 1: before the others, and never told
    svc.deny(SEEN, "lost")
    svc.deny(OWN, "stolen")
    svc.deny(OWN, "found", remove=True)
    svc.deny(HIDDEN, "found", remove=True)
    assert svc.deny_delta(0) == {"version": 5, "add": {SEEN: "lost"}, "remove": [OWN]}
    # the other municipality's terminals are told of it
    svc.deny(HIDDEN, "stolen", municipality="gimpo")
    assert svc.deny_delta(0, municipality="gimpo") == {"version": 6, "add": {HIDDEN: "stolen"},
                                                       "remove": []}


def test_a_card_of_another_municipality_only_is_never_told_its_balance(
        svc: CentralLog) -> None:
    link_cards(svc)
    svc.set_balances({HIDDEN: 100, SEEN: 200, OWN: 300})
    assert svc.balances_delta(0) == {"version": 1, "balances": {SEEN: 200, OWN: 300}}


def tokens(n: int) -> list[str]:
    return sorted(hashlib.sha256(str(i).encode()).hexdigest() for i in range(n))


def test_a_card_held_elsewhere_is_found_in_any_batch_of_5000_cards(svc: CentralLog) -> None:
    """Cards are checked 5,000 at a time; the 5,001st and the 10,001st are checked too."""
    cards = tokens(10_001)
    for n, held in ((5_001, cards[5_000]), (10_001, cards[10_000])):
        with svc.store.tx() as tx:
            tx.run("DELETE FROM balances")
        svc.set_balances({held: 1}, municipality="gimpo")
        with pytest.raises(municipalities.CrossMunicipalityError) as err:
            svc.set_balances(dict.fromkeys(cards[:n], 5))
        assert str(err.value) == (f"card {held[:12]}… has its balance in municipality "
                                  "'gimpo', not 'default'; nothing was loaded")
        with svc.store.tx(write=False) as tx:
            assert tx.all("SELECT card_token, balance, municipality_id FROM balances") == [
                (held, 1, "gimpo")]


def test_a_service_trusting_every_time_takes_the_first_instant_as_stated(
        store_url: str) -> None:  # noqa: F811
    svc = open_service(store_url, followers=[], earliest_ms=0)
    try:
        c = Chain("T-1")
        svc.add_terminal("T-1", bytes.fromhex(public_hex(c.key)))
        svc.ingest("T-1", [c.entry("tap", SEEN, 1_500, 0)])
        with svc.store.tx(write=False) as tx:
            assert tx.all("SELECT effective_ms, day FROM entries") == [(0, "1970-01-01")]
            assert tx.all("SELECT rule FROM flags") == []
    finally:
        svc.store.close()


def test_with_one_municipality_registered_nothing_is_filtered(store_url: str) -> None:  # noqa: F811
    """With one municipality registered every card is told, whatever account links say:
    the filter by municipality is not applied until a second one is registered."""
    svc = open_service(store_url, followers=[])
    try:
        with svc.store.tx() as tx:
            accounts.link(tx, "old", HIDDEN, municipality="legacy")
        svc.deny(HIDDEN, "stolen")
        svc.set_balances({HIDDEN: 700})
        assert svc.deny_delta(0)["add"] == {HIDDEN: "stolen"}
        assert svc.balances_delta(0)["balances"] == {HIDDEN: 700}
    finally:
        svc.store.close()
