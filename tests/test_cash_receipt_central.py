"""Cash-receipt requests from the till to central and out to the issuing service, on SQLite
and a real PostgreSQL: two tills (two municipalities) pay, ask for cash receipts and sync up
through a real ``central serve``; ``central cash-receipts`` lists each municipality's own,
equal to the rows worked out here from what the tills did; and no won moved for a request:
the books balance, the payment transfers and the pocket are what the payments alone make,
and the settlement pays the merchant the payments less the refund.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import accounts, books, municipalities
from central import open_service as open_central
from central.merchants import Merchant, Registry
from central.reconcile import report
from central.service import CentralLog
from central.settlement import settle
from central.spending import load_rules
from drivers.virtual import VirtualReader
from firmware_cfg.config import DEFAULT, Config, brn_check_digit
from firmware_cfg.keys import DEMO_TOKEN_KEY, public_hex
from localpay.cli import cli
from localpay.pockets import DEFAULT_RULES
from localpay.types import Presentation
from offline_ledger import Ledger
from sync.client import SyncClient
from terminal import cash_receipt as cr
from terminal.cards import card_token
from terminal.core import Terminal
from tests.conftest import FakeClock
from tests.pg_fixtures import central, pg_cluster, store_url  # noqa: F401

SEOUL = ZoneInfo("Asia/Seoul")
UID = bytes.fromhex("08000001")
CARD = card_token(DEMO_TOKEN_KEY, "uid", UID)
PHONE = "01055501234"
NTS_CARD = "1234567890123456789"


def _brn(first9: str) -> str:
    return f"{first9[:3]}{first9[3:5]}{first9[5:]}{brn_check_digit(first9)}"


LOCAL = Merchant("M-LOCAL", "Ilsan Farm Store", _brn("134867268"), "ksic:47121")
NORTH = Merchant("M-NORTH", "North Bakery", _brn("105871111"), "ksic:47121")
#: the customer's own business, for an expense-proof receipt
CUSTOMER_BRN = _brn("220811234")


def token(kind: str, digits: str) -> str:
    return hmac.new(DEMO_TOKEN_KEY, f"cash_receipt_{kind}:{digits}".encode(),
                    hashlib.sha256).hexdigest()[:32]


def config_of(merchant: Merchant, tid: str) -> Config:
    base = DEFAULT.replace("terminal", role="till", id=tid, place=merchant.merchant_id)
    base = base.replace("risk", uid_max_amount=50_000, uid_card_offline_amount=100_000)
    return base.with_merchant(id=merchant.merchant_id, name=merchant.name, brn=merchant.brn,
                              category=merchant.category)


def present(reader: VirtualReader) -> Presentation:
    reader.present_uid(UID)
    p = reader.poll(1.0)
    assert p is not None
    return p


@pytest.fixture
def svc(store_url: str, tmp_path: Path) -> Iterator[CentralLog]:  # noqa: F811
    service = open_central(store_url, tmp_path / "data")
    service.store.init_schema()
    municipalities.add(service.store, "north", "North City", "north won")
    Registry(service.store).add(LOCAL)
    Registry(service.store, "north").add(NORTH)
    load_rules(service.store, DEFAULT_RULES)
    yield service
    service.store.close()


def register(svc: CentralLog, tid: str, merchant: Merchant,
             municipality: str) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    svc.add_terminal(tid, bytes.fromhex(public_hex(key)), municipality=municipality)
    Registry(svc.store, municipality).assign_terminal(tid, merchant.merchant_id)
    return key


def listed(url: str, data: Path, day: str, *extra: str) -> list[dict[str, object]]:
    result = CliRunner().invoke(cli, ["central", "cash-receipts", "--db", url,
                                      "--data", str(data), "--date", day, "--json", *extra])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def expected_row(terminal_id: str, merchant: Merchant, payment: int, request: int,
                 amount: int, purpose: str, kind: str, digits: str, display: str,
                 wall_ms: int, refunded: int = 0) -> dict[str, object]:
    return {"terminal_id": terminal_id, "merchant_id": merchant.merchant_id,
            "merchant_name": merchant.name, "brn": merchant.brn, "payment_seq": payment,
            "amount": amount, "purpose": purpose, "identity": kind,
            "token": token(kind, digits), "display": display,
            "time": datetime.fromtimestamp(wall_ms / 1000, SEOUL).isoformat(timespec="seconds"),
            "request_seq": request, "refunded": refunded, "problem": ""}


def test_requests_reach_central_listed_by_municipality_and_move_no_money(
        svc: CentralLog, tmp_path: Path, store_url: str  # noqa: F811
) -> None:
    with svc.store.tx() as tx:
        accounts.link(tx, "A", CARD)
        books.open_account(tx, books.BANK_OUTSIDE)
        books.transfer(tx, [books.Transfer(books.BANK_OUTSIDE, books.pocket("A"), 20_000,
                                           "topup", "topup:A")])
    key1 = register(svc, "TILL-1", LOCAL, "default")
    keyn = register(svc, "TILL-N", NORTH, "north")
    data = tmp_path / "data"
    clock = FakeClock(time.time())
    reader = VirtualReader()
    path1, pathn = tmp_path / "till1.sqlite", tmp_path / "tilln.sqlite"
    led1 = Ledger(path1, key=key1, terminal_id="TILL-1")
    ledn = Ledger(pathn, key=keyn, terminal_id="TILL-N")
    till1 = Terminal(config_of(LOCAL, "TILL-1"), led1, DEMO_TOKEN_KEY, clock=clock)
    tilln = Terminal(config_of(NORTH, "TILL-N"), ledn, DEMO_TOKEN_KEY, clock=clock)
    try:
        with central(store_url, data) as srv:
            client1 = SyncClient(path1, key1, srv.url, srv.verifier)
            clientn = SyncClient(pathn, keyn, srv.url, srv.verifier)
            client1.sync_once()  # the pockets down, as a till starts its day
            assert till1.pay(present(reader), 8_000).approved                     # seq 1
            phone_at = int(clock() * 1000)
            cr.request(till1, 1, cr.parse_identity(PHONE, "income_deduction"),
                       "income_deduction")                                          # seq 2
            clock.advance(60)
            assert till1.pay(present(reader), 2_000).approved                     # seq 3
            brn_at = int(clock() * 1000)
            cr.request(till1, 3, cr.parse_identity(CUSTOMER_BRN, "expense_proof"),
                       "expense_proof")                                             # seq 4
            clock.advance(60)
            assert till1.refund(3, 1_000).approved                                # seq 5
            assert till1.pay(present(reader), 1_500).approved                     # seq 6
            clock.advance(60)
            assert tilln.pay(present(reader), 3_000).approved                     # TILL-N 1
            card_at = int(clock() * 1000)
            cr.request(tilln, 1, cr.parse_identity(NTS_CARD, "income_deduction"),
                       "income_deduction")                                          # TILL-N 2
            # a request the till's own checks would refuse, signed all the same (a faulty
            # build): central lists it, and says what its chain does not bear out
            odd_at = int(clock() * 1000)
            ledn.append("cash_receipt", ref_seq=99, place="M-NORTH", wall_ms=odd_at, detail={
                "amount": 500, "purpose": "income_deduction", "identity": "phone",
                "token": token("phone", PHONE), "display": "010-****-1234",
                "payment_hash": "00000000"})                                        # TILL-N 3
            assert client1.sync_once().sent == 6
            assert clientn.sync_once().sent == 3
            client1.close()
            clientn.close()
        day = datetime.fromtimestamp(phone_at / 1000, SEOUL).date().isoformat()
        rows = listed(store_url, data, day, "--csv", str(tmp_path / "out" / "cr.csv"))
        assert rows == [
            expected_row("TILL-1", LOCAL, 1, 2, 8_000, "income_deduction", "phone", PHONE,
                         "010-****-1234", phone_at),
            expected_row("TILL-1", LOCAL, 3, 4, 2_000, "expense_proof", "brn", CUSTOMER_BRN,
                         "******" + CUSTOMER_BRN[-4:], brn_at, refunded=1_000),
        ]
        with (tmp_path / "out" / "cr.csv").open(encoding="utf-8", newline="") as fh:
            in_file = list(csv.DictReader(fh))
        assert in_file == [{k: str(v) for k, v in row.items()} for row in rows]
        assert listed(store_url, data, day, "--municipality", "north") == [
            expected_row("TILL-N", NORTH, 1, 2, 3_000, "income_deduction", "card", NTS_CARD,
                         "*" * 15 + NTS_CARD[-4:], card_at),
            {**expected_row("TILL-N", NORTH, 99, 3, 500, "income_deduction", "phone", PHONE,
                            "010-****-1234", odd_at),
             "problem": "payment 99 is not in the central chain"}]
        # nowhere at central either: not in the store, not in what the command prints
        if store_url.startswith("sqlite:///"):
            raw = Path(store_url.removeprefix("sqlite:///")).read_bytes()
            assert PHONE.encode() not in raw and NTS_CARD.encode() not in raw
        table = CliRunner().invoke(cli, ["central", "cash-receipts", "--db", store_url,
                                         "--data", str(data), "--date", day])
        assert table.exit_code == 0, table.output
        assert "Cash receipts for " + day + ": 2" in table.output
        assert PHONE not in table.output and CUSTOMER_BRN not in table.output

        # no money moved: the books post the payments and the refund only
        with svc.store.tx(write=False) as tx:
            moved = {str(r): int(a) for r, a in tx.all(
                "SELECT ref, amount FROM book_transfers WHERE code IN ('payment', 'refund')")}
            balance = {p.name: p.balance for p in accounts.pockets(tx, "A")}
        assert moved == {"pay:TILL-1:1:cash": 8_000, "pay:TILL-1:3:cash": 2_000,
                         "refund:TILL-1:5:cash": 1_000, "pay:TILL-1:6:cash": 1_500}
        assert balance["cash"] == 20_000 - 8_000 - 2_000 + 1_000 - 1_500
        assert books.check(svc.store).balanced
        # the terminal's own totals (a request counts 0 won) agree with central's
        rep = report(svc, day)
        lines = {(x.terminal_id, x.kind): x for x in rep.lines}
        assert (lines[("TILL-1", "cash_receipt")].central_count,
                lines[("TILL-1", "cash_receipt")].central_amount) == (2, 0)
        assert all(x.matches for x in rep.lines)
        run = settle(svc.store, day, now_ms=phone_at + 86_400_000)
        paid = {s.merchant_id: (s.gross, s.refunds) for s in run.settlements}
        assert paid == {"M-LOCAL": (8_000 + 2_000 + 1_500, 1_000)}
        assert books.check(svc.store).balanced
    finally:
        reader.close()
        led1.close()
        ledn.close()


def test_an_unknown_municipality_or_day_is_refused(svc: CentralLog, tmp_path: Path,
                                                   store_url: str) -> None:  # noqa: F811
    runner = CliRunner()
    base = ["central", "cash-receipts", "--db", store_url, "--data", str(tmp_path / "data")]
    bad_day = runner.invoke(cli, [*base, "--date", "2025-02-30"])
    assert bad_day.exit_code == 2 and "--date" in bad_day.output
    nowhere = runner.invoke(cli, [*base, "--date", "2025-03-04", "--municipality", "south"])
    assert nowhere.exit_code != 0 and "south" in nowhere.output
    empty = runner.invoke(cli, [*base, "--date", "2025-03-04"])
    assert empty.exit_code == 0 and "Cash receipts for 2025-03-04: 0" in empty.output
