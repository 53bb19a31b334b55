"""Cash-receipt requests (현금영수증) at the till: the number checked, recorded as a signed
``cash_receipt`` entry that holds only its keyed token, refused when it cannot stand, printed
on the receipt and its reprint, keyed on the kiosk (real app, real engine, dummy video) and
played by ``localpay replay``.

Tokens are worked out here from DESIGN.md's definition (HMAC-SHA-256 with the token key,
hex, first 32 characters), not through the code under test.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pygame
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.printer import VirtualPrinter
from drivers.virtual import VirtualReader
from firmware_cfg.config import DEFAULT, Config, brn_check_digit, dumps
from firmware_cfg.keys import DEMO_TOKEN_KEY
from kiosk_ui.app import KioskApp
from kiosk_ui.i18n import tr
from kiosk_ui.model import Screen
from localpay.cli import cli
from offline_ledger import Ledger
from terminal import cash_receipt as cr
from terminal import receipt as rc
from terminal.clock import ClockTrust
from terminal.core import Terminal
from terminal.home import Home, open_terminal
from tests.conftest import present
from tests.receipt_tills import Till, open_till
from tests.test_kiosk_flow import Clock, key, pump, touch

PHONE = "01098765432"
CARD = "9410876543210987"
BRN9 = "220811234"
BRN = BRN9 + str(brn_check_digit(BRN9))
BAD_BRN = BRN9 + str((brn_check_digit(BRN9) + 1) % 10)
MINJI = bytes.fromhex("08a10001")


def token(kind: str, digits: str, key_: bytes = DEMO_TOKEN_KEY) -> str:
    return hmac.new(key_, f"cash_receipt_{kind}:{digits}".encode(),
                    hashlib.sha256).hexdigest()[:32]


def till_config() -> Config:
    cfg = DEFAULT.replace("terminal", role="till", id="T-CR-01", place="M-CR",
                          merchant_category="general", language="ko",
                          merchant_name="Test Store")
    # a UID card pays up to the sale's limit here: the amounts are the test's, not the risk's
    cfg = cfg.replace("risk", uid_max_amount=50_000, uid_card_offline_amount=100_000)
    return cfg.replace("readers", printer="virtual")


@pytest.fixture
def till(tmp_path: Path) -> Iterator[Till]:
    with open_till(tmp_path / "till" / "ledger.sqlite", till_config()) as opened:
        yield opened


def pay(terminal: Terminal, reader: VirtualReader, amount: int) -> int:
    decision = terminal.pay(present(reader, MINJI), amount)
    assert decision.approved and decision.entry is not None
    return decision.entry.seq


# -- the number ------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "purpose", "kind", "display"), [
    ("010-9876-5432", "income_deduction", "phone", "010-****-5432"),
    ("0109876543", "income_deduction", "phone", "010-***-6543"),
    (CARD, "income_deduction", "card", "************0987"),
    ("1234 5678 9012 3", "expense_proof", "card", "*********0123"),
    (BRN, "expense_proof", "brn", "******" + BRN[-4:]),
    (f"{BRN[:3]}-{BRN[3:5]}-{BRN[5:]}", "expense_proof", "brn", "******" + BRN[-4:]),
])
def test_well_formed_numbers(text: str, purpose: cr.Purpose, kind: str, display: str) -> None:
    identity = cr.parse_identity(text, purpose)
    assert identity.kind == kind
    assert identity.display == display
    digits = "".join(c for c in text if c.isdigit())
    assert identity.digits == digits
    assert digits not in repr(identity)


@pytest.mark.parametrize(("text", "purpose", "words"), [
    ("01198765432", "income_deduction", "mobile number"),     # not 010
    ("010987654", "income_deduction", "mobile number"),       # 9 digits
    ("010987654321", "income_deduction", "mobile number"),    # 12 digits
    ("12345678901234567890", "income_deduction", "mobile number"),  # 20 digits
    (PHONE, "expense_proof", "registration number"),          # a phone is no business's
    (BAD_BRN, "expense_proof", "check digit"),
    ("010-98a7-6543", "income_deduction", "digits only"),
    ("", "income_deduction", "digits only"),
])
def test_malformed_numbers_are_refused_without_repeating_them(text: str, purpose: cr.Purpose,
                                                              words: str) -> None:
    with pytest.raises(cr.CashReceiptInputError) as caught:
        cr.parse_identity(text, purpose)
    assert words in str(caught.value)
    if len(text) >= 4:
        assert text not in str(caught.value)


def test_purposes_by_either_name() -> None:
    assert cr.parse_purpose("소득공제") == cr.parse_purpose("income") == "income_deduction"
    assert cr.parse_purpose("지출증빙") == cr.parse_purpose("expense_proof") == "expense_proof"
    with pytest.raises(cr.CashReceiptInputError, match="expected income_deduction"):
        cr.parse_purpose("donation")


# -- the ledger entry ------------------------------------------------------------------------


def test_the_request_is_a_signed_entry_holding_the_token_never_the_number(till) -> None:
    terminal, ledger, reader = till
    seq = pay(terminal, reader, 12_300)
    payment = ledger.entry(seq)
    assert payment is not None
    exposure = ledger.exposure
    entry = cr.request(terminal, seq, cr.parse_identity(PHONE, "income_deduction"),
                       "income_deduction")
    assert (entry.seq, entry.kind, entry.amount, entry.fields.ref_seq) == (seq + 1,
                                                                          "cash_receipt", 0, seq)
    assert entry.fields.card_token == ""
    assert json.loads(entry.fields.detail) == {
        "amount": 12_300, "purpose": "income_deduction", "identity": "phone",
        "token": token("phone", PHONE), "display": "010-****-5432",
        "payment_hash": payment.entry_hash[:4].hex(),
        "clock": json.loads(payment.fields.detail)["clock"]}
    assert ledger.exposure == exposure  # no money: the card's offline counters stay
    ledger.verify()  # signed and chained like every entry
    found = cr.find(ledger, seq)
    assert found is not None and found.seq == entry.seq and found.token == token("phone", PHONE)
    # nowhere on disk: the ledger, its WAL and anything beside it
    ledger.close()
    folder = ledger.path.parent
    raw = b"".join(p.read_bytes() for p in folder.iterdir() if p.is_file())
    assert raw  # the files are read
    assert PHONE.encode() not in raw and PHONE[3:].encode() not in raw
    assert token("phone", PHONE).encode() in raw


def test_refusals_record_nothing(till) -> None:
    terminal, ledger, reader = till
    phone = cr.parse_identity(PHONE, "income_deduction")
    paid = pay(terminal, reader, 5_000)
    partly = pay(terminal, reader, 7_000)
    voided = pay(terminal, reader, 3_000)
    assert terminal.refund(partly, 1_000).approved
    assert terminal.void(voided).approved
    refund_seq = ledger.head.seq - 1
    first = cr.request(terminal, paid, phone, "income_deduction")
    cases = [(999, "unknown_entry"), (refund_seq, "not_a_payment"),
             (first.seq, "not_a_payment"), (partly, "refunded"), (voided, "refunded"),
             (paid, "already_requested")]
    for seq, code in cases:
        head = ledger.head.seq
        with pytest.raises(cr.CashReceiptRefused) as caught:
            cr.request(terminal, seq, phone, "income_deduction")
        assert caught.value.code == code, seq
        assert ledger.head.seq == head
    assert PHONE not in "".join(str(c) for c in cases)


def test_a_validator_takes_no_cash_receipt(ledger: Ledger) -> None:
    validator = Terminal(DEFAULT, ledger, DEMO_TOKEN_KEY)
    with pytest.raises(cr.CashReceiptRefused) as caught:
        cr.request(validator, 1, cr.parse_identity(PHONE, "income_deduction"),
                   "income_deduction")
    assert caught.value.code == "not_a_till"


def test_the_receipt_and_its_reprint_show_the_masked_identity(till) -> None:
    terminal, ledger, reader = till
    seq = pay(terminal, reader, 8_800)
    payment = ledger.entry(seq)
    assert payment is not None
    before = rc.lines(rc.from_entry(payment, terminal.config, None,
                                    rc.cash_receipt_of(ledger, payment)))
    assert not any("현금영수증" in line for line in before)
    cr.request(terminal, seq, cr.parse_identity(BRN, "expense_proof"), "expense_proof")
    after = rc.lines(rc.from_entry(payment, terminal.config, None,
                                   rc.cash_receipt_of(ledger, payment)))
    at = after.index("현금영수증 Cash receipt")
    assert after[at + 1] == f"  지출증빙 Expense proof ******{BRN[-4:]}"
    assert not any(BRN in line for line in after)


# -- the kiosk -------------------------------------------------------------------------------


@pytest.fixture
def kiosk(tmp_path: Path) -> Iterator[Callable[[], tuple[KioskApp, VirtualReader, Ledger,
                                                          VirtualPrinter]]]:
    made: list[tuple[KioskApp, VirtualReader, Ledger, VirtualPrinter]] = []

    def make() -> tuple[KioskApp, VirtualReader, Ledger, VirtualPrinter]:
        cfg = till_config()
        ledger = Ledger(tmp_path / "kiosk" / "ledger.sqlite", key=Ed25519PrivateKey.generate(),
                        terminal_id=cfg.terminal.id)
        terminal = Terminal(cfg, ledger, DEMO_TOKEN_KEY,
                            clock_trust=ClockTrust(ledger, ntp=lambda: True))
        reader = VirtualReader("test reader")
        printer = VirtualPrinter()
        desk = rc.ReceiptDesk(cfg, printer, rc.ReceiptJournal(tmp_path / "kiosk" / "r.jsonl"))
        app = KioskApp(terminal, reader.poll, size=(800, 480), receipts=desk)
        app.model.clock = Clock()
        app.start()
        made.append((app, reader, ledger, printer))
        return app, reader, ledger, printer

    yield make
    for app, reader, ledger, _ in made:
        app.close()
        reader.close()
        ledger.close()


def _drawn(app: KioskApp) -> dict[str, str]:
    return {r.name: r.text for r in app.painter.records}


def _kiosk_pay(app: KioskApp, reader: VirtualReader, amount: str) -> None:
    for d in amount:
        touch(app, f"digit:{d}")
    touch(app, "pay:card")
    reader.present_uid(MINJI)
    pump(app, lambda: app.model.screen == Screen.RESULT, "payment decision")


def test_kiosk_cash_receipt_after_a_payment_then_from_today(kiosk) -> None:
    app, reader, ledger, printer = kiosk()
    _kiosk_pay(app, reader, "15000")
    seq = ledger.head.seq
    jobs = len(printer.jobs)
    touch(app, "cashreceipt")
    assert app.model.screen == Screen.CASH_RECEIPT
    # a business's number with a digit wrong: told on the form, nothing asked of the ledger
    touch(app, "cr:expense")
    for d in BAD_BRN:
        touch(app, f"digit:{d}")
    touch(app, "cr:go")
    assert _drawn(app)["cr_note"] == tr("ko", "cr_brn_check")
    assert ledger.head.seq == seq
    for _ in BAD_BRN:
        key(app, pygame.K_BACKSPACE)
    touch(app, "cr:income")
    for d in PHONE:
        key(app, getattr(pygame, f"K_{d}"))
    touch(app, "cr:go")
    pump(app, lambda: app.model.cash is not None and bool(app.model.cash.done),
         "the request recorded")
    assert ledger.head.seq == seq + 1
    entry = ledger.entry(seq + 1)
    assert entry is not None and entry.kind == "cash_receipt" and entry.fields.ref_seq == seq
    assert json.loads(entry.fields.detail)["token"] == token("phone", PHONE)
    assert _drawn(app)["cr_number"] == "010-****-5432"  # the number is gone from the screen
    # the payment's receipt again, now with its cash receipt (masked) line
    pump(app, lambda: len(printer.jobs) > jobs, "the reprint")
    reprint = printer.jobs[-1]
    assert b"Cash receipt" in reprint and b"5432" in reprint and PHONE.encode() not in reprint
    touch(app, "ok")
    assert app.model.screen == Screen.KEYPAD and app.model.cash is None

    # from Today: the same payment again is refused, and says so
    touch(app, "menu:today")
    pump(app, lambda: app.button_rect(f"row:{seq}") is not None, "today's payment row")
    assert app.button_rect(f"row:{seq + 1}") is None  # the request is no payment row
    touch(app, f"row:{seq}")
    assert app.model.screen == Screen.CASH_RECEIPT
    for d in CARD:
        touch(app, f"digit:{d}")
    touch(app, "cr:go")
    pump(app, lambda: app.model.cash is not None and app.model.cash.message != "",
         "the refusal")
    assert _drawn(app)["cr_note"] == tr("ko", "cr_already_requested")
    assert ledger.head.seq == seq + 1
    key(app, pygame.K_ESCAPE)
    assert app.model.screen == Screen.TODAY


# -- localpay replay -------------------------------------------------------------------------


def _home(path: Path) -> Home:
    path.mkdir(parents=True)
    (path / "terminal.toml").write_text(dumps(till_config()), encoding="utf-8")
    home = Home(path)
    terminal = open_terminal(home, home.config(), create_keys=True)
    assert terminal.ledger is not None
    terminal.ledger.close()
    return home


def _write(path: Path, lines: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def test_replay_cash_receipt_lines(tmp_path: Path) -> None:
    home = _home(tmp_path / "home")

    def at(t: str) -> str:
        return f"2027-01-15T{t}+09:00"

    scenario = _write(tmp_path / "day.jsonl", [
        {"at": at("10:00:00"), "pay": {"uid": "08a10001", "amount": 9000}},
        {"at": at("10:00:30"), "cash-receipt": {"seq": 1, "number": PHONE,
                                                 "purpose": "income_deduction"}},
        {"at": at("10:01:00"), "cash-receipt": {"seq": 1, "number": CARD,
                                                 "purpose": "소득공제"}},
        {"at": at("10:02:00"), "cash-receipt": {"seq": 7, "number": BRN,
                                                 "purpose": "expense_proof"}},
        {"at": at("18:00:00"), "close": True},
    ])
    result = CliRunner().invoke(cli, ["--home", str(home.path), "replay", str(scenario)])
    assert result.exit_code == 0, result.output
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert out[0]["outcome"] == "approved" and out[0]["seq"] == 1
    key_ = home.token_key(home.config())
    assert out[1] == {"cash_receipt": {
        "seq": 2, "payment_seq": 1, "payment_hash": out[1]["cash_receipt"]["payment_hash"],
        "amount": 9000, "purpose": "income_deduction", "identity": "phone",
        "token": token("phone", PHONE, key_), "display": "010-****-5432"}}
    assert out[2]["cash_receipt"]["refused"] == "already_requested"
    assert out[3]["cash_receipt"]["refused"] == "unknown_entry"
    # the Z report counts no money for a request
    assert out[4]["z_report"]["seq"] == 3
    with Ledger(home.ledger_path) as ledger:
        payment = ledger.entry(1)
        assert payment is not None
        assert out[1]["cash_receipt"]["payment_hash"] == payment.entry_hash[:4].hex()
        assert [e.kind for e in ledger.entries()] == ["payment", "cash_receipt", "z_report"]
    assert PHONE not in result.output and CARD not in result.output
    # the reprint from the ledger (`localpay receipt show`) carries the request, masked
    shown = CliRunner().invoke(cli, ["--home", str(home.path), "receipt", "show", "1"])
    assert shown.exit_code == 0, shown.output
    printed = shown.output.splitlines()
    at = printed.index("현금영수증 Cash receipt")
    assert printed[at + 1] == "  소득공제 Income deduction 010-****-5432"
    assert PHONE not in shown.output


@pytest.mark.parametrize(("number", "purpose", "words"), [
    ("0101234", "income_deduction", "mobile number"),
    (BAD_BRN, "expense_proof", "check digit"),
    (PHONE, "gift", "expected income_deduction"),
])
def test_replay_refuses_a_bad_cash_receipt_line_before_playing(tmp_path: Path, number: str,
                                                              purpose: str, words: str) -> None:
    home = _home(tmp_path / "home")
    scenario = _write(tmp_path / "bad.jsonl", [
        {"at": "2027-01-15T10:00:00+09:00", "pay": {"uid": "08a10001", "amount": 9000}},
        {"at": "2027-01-15T10:01:00+09:00",
         "cash-receipt": {"seq": 1, "number": number, "purpose": purpose}},
    ])
    result = CliRunner().invoke(cli, ["--home", str(home.path), "replay", str(scenario)])
    assert result.exit_code == 2
    assert "line 2" in result.output and words in result.output
    assert number not in result.output
    with Ledger(home.ledger_path) as ledger:
        assert ledger.count() == 0  # nothing played


def test_reading_back_an_entry_that_is_no_request_is_a_typed_error(till) -> None:
    terminal, ledger, reader = till
    seq = pay(terminal, reader, 1_000)
    payment = ledger.entry(seq)
    assert payment is not None
    with pytest.raises(cr.CashReceiptInputError, match="is a payment"):
        cr.of_entry(payment)
    odd = ledger.append("cash_receipt", ref_seq=seq, detail={"amount": 1_000})
    with pytest.raises(cr.CashReceiptInputError, match=f"entry {odd.seq}: not a cash-receipt"):
        cr.of_entry(odd)
    wrong = ledger.append("cash_receipt", ref_seq=seq, detail={
        "amount": 1_000, "payment_hash": "00", "purpose": "income_deduction",
        "identity": "email", "token": "t", "display": "d"})
    with pytest.raises(cr.CashReceiptInputError, match="identity 'email'"):
        cr.of_entry(wrong)
