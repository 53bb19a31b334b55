"""Pockets from central to the till and back, on SQLite and a real PostgreSQL: the signed
``GET /v1/pockets`` snapshot (its municipality only, deltas by version), a till that syncs it
down, pays offline split by pocket and syncs up, the books that post the same parts, and
``central report`` with no overdraft, then with one by pocket when two tills spend the same
allowance offline. A property test holds the terminal's split and central's to the won for
random rules, balances and merchants. Every figure is worked out by hand in the test."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from central import accounts, allowances, books, municipalities, pocket_snapshot
from central import open_service as open_central
from central.merchants import Merchant, Registry
from central.reconcile import report
from central.service import CentralLog
from central.spending import load_rules
from drivers.virtual import VirtualReader
from firmware_cfg.config import DEFAULT, Config
from firmware_cfg.keys import DEMO_TOKEN_KEY, public_hex
from localpay.pockets import DEFAULT_RULES, MerchantFacts, parse_rules
from localpay.types import Presentation
from offline_ledger import Ledger
from offline_ledger import pockets as lp
from sync.client import SyncClient
from sync.protocol import decode_entry
from terminal.cards import card_token
from terminal.core import Terminal
from tests.books_world import CAFE, LOCAL, balanced_world, shop_brn
from tests.conftest import FakeClock
from tests.pg_fixtures import central, pg_cluster, store_url  # noqa: F401

#: cash anywhere, points anywhere but large marts, the youth allowance in retail (KSIC 47)
RULES = DEFAULT_RULES + """
[[pocket]]
id = "youth"
kind = "allowance"
allow_categories = ["ksic:47"]
"""

UID = bytes.fromhex("08000001")
CARD = card_token(DEMO_TOKEN_KEY, "uid", UID)


def seoul_today() -> date:
    return lp.seoul_day(int(time.time() * 1000))


def config_of(merchant: Merchant, tid: str) -> Config:
    base = DEFAULT.replace("terminal", role="till", id=tid, place=merchant.merchant_id)
    base = base.replace("risk", uid_max_amount=50_000, uid_card_offline_amount=100_000)
    return base.with_merchant(id=merchant.merchant_id, name=merchant.name, brn=merchant.brn,
                              category=merchant.category, region=merchant.region,
                              memberships=merchant.memberships)


def present(reader: VirtualReader, uid: bytes = UID) -> Presentation:
    reader.present_uid(uid)
    p = reader.poll(1.0)
    assert p is not None
    return p


@pytest.fixture
def reader() -> Iterator[VirtualReader]:
    r = VirtualReader()
    yield r
    r.close()


def open_account(svc: CentralLog, account: str, card: str, *, cash: int = 0,
                 youth: int = 0, expires: str | None = None,
                 municipality: str = "default") -> None:
    """The account with ``card`` linked, ``cash`` topped up and a youth grant of ``youth``
    (issued from its funded budget, as the programme does)."""
    with svc.store.tx() as tx:
        accounts.link(tx, account, card, municipality=municipality)
        if cash:
            books.open_account(tx, books.BANK_OUTSIDE, municipality=municipality)
            books.transfer(tx, [books.Transfer(books.BANK_OUTSIDE, books.pocket(account),
                                               cash, "topup", f"topup:{account}")],
                           municipality=municipality)
    if youth:
        day = expires or (seoul_today() + timedelta(days=30)).isoformat()
        allowances.fund(svc.store, "youth", youth, f"fund-{account}",
                        municipality=municipality)
        allowances.issue(svc.store, "youth", f"recipient\n{account}\n", youth, day, day[:7],
                         municipality)


def pockets_of(svc: CentralLog, account: str) -> dict[str, int]:
    with svc.store.tx(write=False) as tx:
        return {p.name: p.balance for p in accounts.pockets(tx, account)}


def pay_refs(svc: CentralLog) -> dict[str, int]:
    with svc.store.tx(write=False) as tx:
        rows = tx.all("SELECT ref, amount FROM book_transfers WHERE code = 'payment'")
    return {str(r): int(a) for r, a in rows}


@pytest.fixture
def svc(store_url: str, tmp_path: Path) -> Iterator[CentralLog]:  # noqa: F811
    service = open_central(store_url, tmp_path / "data")
    service.store.init_schema()
    load_rules(service.store, RULES)
    yield from balanced_world(service, (LOCAL, CAFE))


def register(svc: CentralLog, tid: str, merchant: Merchant | None,
             municipality: str = "default") -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    svc.add_terminal(tid, bytes.fromhex(public_hex(key)), municipality=municipality)
    if merchant is not None:
        Registry(svc.store, municipality).assign_terminal(tid, merchant.merchant_id)
    return key


# -- the snapshot at central ------------------------------------------------------------------


def test_the_snapshot_is_the_merchants_municipality_in_deltas(svc: CentralLog) -> None:
    expires = (seoul_today() + timedelta(days=10)).isoformat()
    open_account(svc, "A", CARD, cash=10_000, youth=5_000, expires=expires)
    open_account(svc, "B", "b2" * 32, cash=700)
    # another municipality's citizen and merchant: never in this till's answer
    municipalities.add(svc.store, "other", "Elsewhere City", "Elsewhere Pay")
    Registry(svc.store, "other").add(Merchant("M-ELSE", "Elsewhere", shop_brn("220811234"),
                                              "ksic:47111", municipality_id="other"))
    open_account(svc, "Z", "c3" * 32, cash=900, municipality="other")
    register(svc, "TILL-1", LOCAL)
    register(svc, "TILL-Z", Merchant("M-ELSE", "Elsewhere", shop_brn("220811234"), "ksic:47111",
                                     municipality_id="other"), "other")
    register(svc, "LOOSE", None)

    first = pocket_snapshot.delta(svc.store, "TILL-1", 0, every_ms=0)
    assert (first["municipality"], first["merchant"], first["rules"]) == (
        "default", "M-LOCAL", RULES)
    assert first["rules_version"] == 1
    assert first["cards"] == {CARD: {"cash": [10_000, [], None], "points": [0, [], None],
                                     "youth": [5_000, [expires], None]},
                              "b2" * 32: {"cash": [700, [], None], "points": [0, [], None]}}
    other = pocket_snapshot.delta(svc.store, "TILL-Z", 0, every_ms=0)
    assert other["municipality"] == "other" and list(other["cards"]) == ["c3" * 32]
    assert pocket_snapshot.delta(svc.store, "LOOSE", 0) == pocket_snapshot.EMPTY
    # nothing moved: a till holding the version learns nothing
    assert pocket_snapshot.delta(svc.store, "TILL-1", first["version"],
                                 every_ms=0)["cards"] == {}
    # a payment moves A's cash: only A comes down, with a newer version
    with svc.store.tx() as tx:
        books.open_account(tx, books.merchant_payable("M-LOCAL"))
        books.transfer(tx, [books.Transfer(books.pocket("A"), books.merchant_payable(
            "M-LOCAL"), 2_500, "payment", "pay:test:1:cash")])
    later = pocket_snapshot.delta(svc.store, "TILL-1", first["version"], every_ms=0)
    assert later["version"] > first["version"]
    assert later["cards"] == {CARD: {"cash": [7_500, [], None], "points": [0, [], None],
                                     "youth": [5_000, [expires], None]}}
    # an unlinked card is told once, as null
    with svc.store.tx() as tx:
        accounts.unlink(tx, "b2" * 32)
    gone = pocket_snapshot.delta(svc.store, "TILL-1", later["version"], every_ms=0)
    assert gone["cards"] == {"b2" * 32: None}
    assert pocket_snapshot.delta(svc.store, "TILL-1", gone["version"],
                                 every_ms=0)["cards"] == {}


# -- a till, offline, and the books ----------------------------------------------------------


def test_sync_down_pay_offline_sync_up_and_the_books_agree(
        svc: CentralLog, tmp_path: Path, reader: VirtualReader, store_url: str  # noqa: F811
) -> None:
    open_account(svc, "A", CARD, cash=10_000, youth=5_000)
    key = register(svc, "TILL-1", LOCAL)
    path = tmp_path / "till.sqlite"
    ledger = Ledger(path, key=key, terminal_id="TILL-1")
    till = Terminal(config_of(LOCAL, "TILL-1"), ledger, DEMO_TOKEN_KEY,
                    clock=FakeClock(time.time()))
    with central(store_url, tmp_path / "data") as srv:
        client = SyncClient(path, key, srv.url, srv.verifier)
        down = client.sync_once()
        assert down.pockets == 1
        held = lp.card_pockets(ledger, CARD, seoul_today())
        assert held is not None
        assert {b.pocket: b.balance for b in held.balances} == {
            "cash": 10_000, "points": 0, "youth": 5_000}
        # offline: the till decides alone
        decision = till.pay(present(reader), 8_000)
        assert decision.split == (("youth", 5_000), ("cash", 3_000))
        # and gives 4,000 back, newest drawn first: all the cash, then 1,000 of youth
        assert till.refund(1, 4_000).split == (("cash", 3_000), ("youth", 1_000))
        up = client.sync_once()
        assert up.sent == 2
        # central posted the same parts, and reversed them the same way
        with svc.store.tx(write=False) as tx:
            moved = {str(r): int(a) for r, a in tx.all(
                "SELECT ref, amount FROM book_transfers WHERE code IN ('payment', 'refund')")}
        assert moved == {"pay:TILL-1:1:youth": 5_000, "pay:TILL-1:1:cash": 3_000,
                         "refund:TILL-1:2:cash": 3_000, "refund:TILL-1:2:youth": 1_000}
        # 10,000 - 3,000 + 3,000 cash; 5,000 - 5,000 + 1,000 youth
        assert pockets_of(svc, "A") == {"cash": 10_000, "points": 0, "youth": 1_000}
        rep = report(svc, seoul_today().isoformat())
        assert rep.pocket_overdrafts == [] and rep.pocket_flags == []
        # the next round (after central's refresh interval) brings the books' balances,
        # and the offline amounts start again from nothing
        time.sleep(pocket_snapshot.REFRESH_MS / 1000 + 0.2)
        client.sync_once()
        held = lp.card_pockets(ledger, CARD, seoul_today())
        assert held is not None
        assert {b.pocket: b.balance for b in held.balances} == {"cash": 10_000, "points": 0,
                                                                "youth": 1_000}
        assert lp.state(ledger).municipality == "default"
        # the till leaves its merchant: the empty answer makes it forget every card
        with svc.store.tx() as tx:
            tx.run("DELETE FROM merchant_terminals WHERE terminal_id = 'TILL-1'")
        client.sync_once()
        client.close()
    assert lp.card_pockets(ledger, CARD, seoul_today()) is None
    assert lp.state(ledger) == lp.PocketState()
    assert till.pay(present(reader), 1_000).split == ()
    ledger.close()


def test_two_tills_spending_one_allowance_offline_is_an_overdraft_by_pocket(
        svc: CentralLog, tmp_path: Path, reader: VirtualReader, store_url: str  # noqa: F811
) -> None:
    open_account(svc, "A", CARD, youth=5_000)
    tills = []
    for tid in ("TILL-1", "TILL-2"):
        key = register(svc, tid, LOCAL)
        path = tmp_path / f"{tid}.sqlite"
        ledger = Ledger(path, key=key, terminal_id=tid)
        tills.append((tid, path, key, ledger, Terminal(
            config_of(LOCAL, tid), ledger, DEMO_TOKEN_KEY, clock=FakeClock(time.time()))))
    with central(store_url, tmp_path / "data") as srv:
        clients = [SyncClient(p, k, srv.url, srv.verifier) for _, p, k, _, _ in tills]
        for client in clients:
            client.sync_once()
        # each till sees youth 5,000 and spends 4,000 of it offline
        for _, _, _, _, till in tills:
            assert till.pay(present(reader), 4_000).split == (("youth", 4_000),)
        for client in clients:
            client.sync_once()
            client.close()
    # the first posted takes 4,000; the second finds 1,000: 3,000 owed, lacking in youth
    assert pay_refs(svc) == {"pay:TILL-1:1:youth": 4_000, "pay:TILL-2:1:youth": 1_000,
                             "pay-owed:TILL-2:1": 3_000}
    rep = report(svc, seoul_today().isoformat())
    assert [(o["terminal_id"], o["pocket"], o["amount"]) for o in rep.pocket_overdrafts] == [
        ("TILL-2", "youth", 3_000)]
    assert rep.pocket_flags == []
    for _, _, _, ledger, _ in tills:
        ledger.close()


# -- the property: the terminal's split is central's -----------------------------------------

CATEGORIES = ("ksic:47121", "ksic:56221", "mcc:5411")
REGIONS = ("ilsan-dong", "hwajeong-dong")


@st.composite
def programme(draw: st.DrawFn) -> dict[str, Any]:
    """Random rules (cash, points, up to two allowances), a merchant, pocket balances with
    grant expiries around today, and a few payments."""
    today = seoul_today()
    rules = ['[[pocket]]\nid = "cash"\nkind = "cash"']
    points_rule = '[[pocket]]\nid = "points"\nkind = "points"'
    if draw(st.booleans()):
        points_rule += '\nexclude_memberships = ["large-mart"]'
    rules.append(points_rule)
    grants: dict[str, list[tuple[int, str]]] = {}
    for name in draw(st.sampled_from([(), ("aa",), ("aa", "bb")])):
        lines = [f'[[pocket]]\nid = "{name}"\nkind = "allowance"']
        allowed = draw(st.lists(st.sampled_from(("ksic:47", "ksic:56", "mcc:5411")),
                                unique=True, max_size=2))
        if allowed:
            lines.append(f"allow_categories = {json.dumps(allowed)}")
        if draw(st.booleans()):
            lines.append(f'regions = ["{draw(st.sampled_from(REGIONS))}"]')
        if draw(st.booleans()):
            lines.append(f"expires = {today + timedelta(days=draw(st.integers(-1, 3)))}")
        per_payment = draw(st.none() | st.integers(1, 6_000))
        per_day = draw(st.none() | st.integers(per_payment or 1, 12_000))
        if per_payment:
            lines.append(f"per_payment = {per_payment}")
        if per_day:
            lines.append(f"per_day = {per_day}")
        rules.append("\n".join(lines))
        grants[name] = [(draw(st.integers(1, 8_000)),
                         (today + timedelta(days=draw(st.integers(0, 40)))).isoformat())
                        for _ in range(draw(st.integers(1, 2)))]
    return {
        "rules": "\n\n".join(rules) + "\n",
        "category": draw(st.sampled_from(CATEGORIES)),
        "region": draw(st.sampled_from(REGIONS)),
        "large_mart": draw(st.booleans()),
        "cash": draw(st.integers(0, 15_000)),
        "points": draw(st.integers(0, 5_000)),
        "grants": grants,
        "payments": draw(st.lists(st.integers(1, 12_000), min_size=1, max_size=3)),
    }


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=programme())
def test_the_terminals_split_is_centrals_and_never_ineligible(
        svc: CentralLog, tmp_path: Path, reader: VirtualReader, case: dict[str, Any]) -> None:
    n = _next()  # a fresh account, card, till and merchant per example
    account, tid, mid = f"P{n}", f"TILL-P{n}", f"M-P{n}"
    uid = n.to_bytes(4, "big")
    card = card_token(DEMO_TOKEN_KEY, "uid", uid)
    merchant = Merchant(mid, "Random Shop", shop_brn("134867268"), case["category"],
                        region=case["region"],
                        memberships=("large-mart",) if case["large_mart"] else ())
    Registry(svc.store).add(merchant)
    load_rules(svc.store, case["rules"])
    rules = parse_rules(case["rules"])
    with svc.store.tx() as tx:
        accounts.link(tx, account, card)
        books.open_account(tx, books.BANK_OUTSIDE)
        for a in (books.programme_funding("goyang"), books.programme_points("goyang")):
            books.open_account(tx, a)
        moves = [books.Transfer(books.BANK_OUTSIDE, books.programme_funding("goyang"),
                                10**9, "funding", f"fund:{account}")]
        if case["cash"]:
            moves.append(books.Transfer(books.BANK_OUTSIDE, books.pocket(account),
                                        case["cash"], "topup", f"topup:{account}"))
        if case["points"]:
            moves += [books.Transfer(books.programme_funding("goyang"),
                                     books.programme_points("goyang"), case["points"],
                                     "budget", f"budget-points:{account}"),
                      books.Transfer(books.programme_points("goyang"),
                                     books.pocket(account, "points"), case["points"],
                                     "points_payout", f"payout:{account}")]
        books.transfer(tx, moves)
    funded = {"cash": case["cash"], "points": case["points"]}
    for name, grants in case["grants"].items():
        for i, (won, expires) in enumerate(grants):
            allowances.fund(svc.store, name, won, f"f{account}-{i}")
            # a period per grant, all before any expiry (grants expire today or later)
            allowances.issue(svc.store, name, f"recipient\n{account}\n", won, expires,
                             f"{int(expires[:4]) - 1}-{i + 1:02d}")
        funded[name] = sum(w for w, _ in grants)
    key = register(svc, tid, merchant)
    ledger = Ledger(tmp_path / f"{tid}.sqlite", key=key, terminal_id=tid)
    try:
        doc = pocket_snapshot.delta(svc.store, tid, 0, every_ms=0)
        lp.store(ledger, lp.PocketState(doc["version"], doc["municipality"], doc["merchant"],
                                        doc["rules_version"], doc["rules"]),
                 {t: {p: (w[0], w[1], w[2]) for p, w in c.items()} if c else None
                  for t, c in doc["cards"].items()})
        till = Terminal(config_of(merchant, tid), ledger, DEMO_TOKEN_KEY,
                        clock=FakeClock(time.time()))
        facts = MerchantFacts(mid, merchant.category, merchant.region,
                              frozenset(merchant.memberships))
        day = seoul_today()
        approved = []
        for amount in case["payments"]:
            decision = till.pay(present(reader, uid), amount)
            if not decision.approved:
                assert decision.reason is not None and decision.reason.value in (
                    "no_eligible_pocket", "insufficient_balance")
                continue
            approved.append(decision)
            assert sum(w for _, w in decision.split) == amount
            for pocket, _ in decision.split:
                # never a pocket that may not pay here, or has expired today
                assert rules[pocket].pays_at(facts)
                assert rules[pocket].expires is None or rules[pocket].expires >= day
        entries = [decode_entry(e.encoded(), e.signature) for e in ledger.entries()]
        if entries:  # every payment declined: nothing to post
            svc.ingest(tid, entries)
        with svc.store.tx(write=False) as tx:
            posted = {int(s): json.loads(str(p)) for s, p in tx.all(
                "SELECT seq, parts FROM pocket_postings WHERE terminal_id = ?", (tid,))}
            flags = tx.all("SELECT reason FROM pocket_flags WHERE terminal_id = ?", (tid,))
        assert flags == []
        for decision in approved:
            assert decision.entry is not None
            assert posted[decision.entry.seq] == [list(p) for p in decision.split]
        # what each pocket paid, tallied from the terminal's splits, left the books
        spent: dict[str, int] = {}
        for decision in approved:
            for pocket, won in decision.split:
                spent[pocket] = spent.get(pocket, 0) + won
        assert pockets_of(svc, account) == {
            p: funded.get(p, 0) - spent.get(p, 0) for p in pockets_of(svc, account)}
    finally:
        ledger.close()


_COUNTER = iter(range(1, 10**6))


def _next() -> int:
    return next(_COUNTER)

