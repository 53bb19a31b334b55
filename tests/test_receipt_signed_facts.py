"""The receipt facts a till signs into its payment entry: the card application's AID and
label, the points the purchase earns and the balance left. They verify with the e-receipt,
a reprint needs no ``receipts.jsonl`` for them, a changed balance breaks the signature, an
entry written before them still reprints from the journal, and a validator's tap does not
grow. Every figure is worked out in the test from its own inputs."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import segno
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.emulators.emv_card import EmvCard
from drivers.printer import VirtualPrinter
from drivers.virtual import VirtualCard, VirtualReader
from firmware_cfg.config import DEFAULT, Config, brn_check_digit
from firmware_cfg.keys import DEMO_TOKEN_KEY, public_hex
from localpay.cli import cli
from localpay.errors import QRFormatError
from localpay.pockets import DEFAULT_RULES
from offline_ledger import Entry, Ledger
from offline_ledger import pockets as lp
from terminal import receipt as rc
from terminal.cards import card_token
from terminal.core import Decision, Terminal
from tests.receipt_tills import NOW, Till, open_till, till_home

PAN = "9410123456789012"
TOKEN = card_token(DEMO_TOKEN_KEY, "pan", PAN)
AID = "D4100000030001"
LABEL = "LOCALPAY CHECK16"  # 16 characters: the most an EMV label (tag 50) holds
BRN9 = "134867268"
BRN = f"{BRN9[:3]}-{BRN9[3:5]}-{BRN9[5:]}{brn_check_digit(BRN9)}"
RATE_BP = 500  # 5 % of a local-food purchase
BALANCE = 50_000
#: the terminal's points rules summary, as the sync client stores it
RULES = json.dumps({"version": 1, "timezone": "Asia/Seoul", "bus": False, "bus_types": [],
                    "weekly_cap": {}, "holidays": [], "local_food": True, "rate_bp": RATE_BP,
                    "merchant_categories": ["local_food"]})


def till_config() -> Config:
    base = DEFAULT.replace("terminal", role="till", id="T-TILL-07", place="M-ILSAN",
                           merchant_category="local_food")
    base = base.replace("readers", printer="virtual")
    return base.with_merchant(id="M-ILSAN", name="일산 농부상점", brn=BRN,
                              category="ksic:47121")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return till_home(tmp_path, till_config())


def _funded(ledger: Ledger) -> None:
    ledger.set_balances({TOKEN: BALANCE}, as_of_seq=0)
    ledger.set_points_snapshot({}, 1, RULES)


@pytest.fixture
def till(home: Path) -> Iterator[Till]:
    with open_till(home / "ledger.sqlite", till_config(), _funded) as opened:
        yield opened


def pay(terminal: Terminal, reader: VirtualReader, amount: int) -> Decision:
    reader.present_card(VirtualCard(uid=bytes.fromhex("08e70001"),
                                    handler=EmvCard(pan=PAN, label=LABEL).handle))
    presented = reader.poll(1.0)
    assert presented is not None
    decision = terminal.pay(presented, amount)
    assert decision.approved and decision.entry is not None, decision
    return decision


def detail(entry: Entry) -> dict[str, object]:
    doc = json.loads(entry.fields.detail)
    assert isinstance(doc, dict)
    return doc


def journal_of(ledger: Ledger) -> rc.ReceiptJournal:
    return rc.ReceiptJournal(rc.journal_path(ledger.path or Path()))


def show(home: Path, seq: int) -> list[str]:
    out = CliRunner().invoke(cli, ["--home", str(home), "receipt", "show", str(seq)])
    assert out.exit_code == 0, out.output
    return out.output.splitlines()


def fact_lines(points: int, balance: int) -> list[str]:
    """The receipt's four fact lines worked out by hand: 42 columns, Hangul two wide."""
    left, right = "적립 포인트 Points earned", f"{points:,}P"
    bal_left, bal_right = "잔액 Balance left", f"{balance:,}원"
    return [f"  {LABEL}", f"  AID {AID}",
            left + " " * (42 - (len(left) + 5) - len(right)) + right,
            bal_left + " " * (42 - (len(bal_left) + 2) - (len(bal_right) + 1)) + bal_right]


def forge_balance(payload: str, entry: Entry, was: int, now: int) -> str:
    """``payload`` with the signed balance ``was`` replaced by ``now`` (same digits count)."""
    body = bytearray(base64.urlsafe_b64decode(payload[5:] + "=" * (-len(payload[5:]) % 4)))
    old, new = f'"bal":{was}'.encode(), f'"bal":{now}'.encode()
    assert len(old) == len(new)
    at = 2 + entry.encoded().index(old)
    body[at:at + len(old)] = new
    return "LPR1:" + base64.urlsafe_b64encode(bytes(body)).rstrip(b"=").decode()


# -- the facts are signed ---------------------------------------------------------------------


def test_the_facts_are_in_the_signed_entry_bytes_and_verify(till) -> None:
    terminal, ledger, reader = till
    decision = pay(terminal, reader, 12_300)
    points, left = 12_300 * 5 // 100, BALANCE - 12_300  # 615 points, 37,700 won
    # what the customer was shown is what the entry signs
    assert (decision.points, decision.balance) == (points, left)
    raw = decision.entry.encoded()
    for text in (f'"aid":"{AID}"', f'"lbl":"{LABEL}"', f'"pts":{points}', f'"bal":{left}'):
        assert text.encode() in raw, text
    found = rc.verify(rc.e_receipt(decision.entry), ledger.public_key)
    assert {k: detail(found.entry)[k] for k in ("aid", "lbl", "pts", "bal")} == {
        "aid": AID, "lbl": LABEL, "pts": points, "bal": left}
    made = rc.from_entry(found.entry, terminal.config)
    assert made.signed and made.shown == rc.Shown(AID, LABEL, points, left)


def test_a_reprint_without_the_journal_still_shows_the_facts(till, home: Path) -> None:
    terminal, ledger, reader = till
    decision = pay(terminal, reader, 8_000)
    first = VirtualPrinter()
    journal = journal_of(ledger)
    assert rc.ReceiptDesk(terminal.config, first, journal).issue(
        decision.entry, rc.Shown(AID, LABEL, decision.points, decision.balance)) is None
    # the journal keeps whether it printed, not a copy of facts the entry signs
    assert journal.shown(1) == rc.Shown() and not journal.unprinted()
    journal.path.unlink()
    got = show(home, 1)
    want = fact_lines(8_000 * 5 // 100, BALANCE - 8_000)
    assert [line for line in got if line in want] == want
    again = VirtualPrinter()
    again.print_lines(got)
    assert again.jobs == first.jobs  # the first print, byte for byte, with no journal


def test_a_journal_cannot_change_what_a_signed_entry_says(till, home: Path) -> None:
    terminal, ledger, reader = till
    pay(terminal, reader, 8_000)
    journal_of(ledger).record(1, rc.Shown("A000000000", "EDITED", 99_999, 1_000_000),
                              printed=True)
    got = show(home, 1)
    assert "  EDITED" not in got and "  AID A000000000" not in got
    assert fact_lines(400, BALANCE - 8_000)[2:] == [
        line for line in got if line.startswith(("적립", "잔액"))]


def test_receipt_verify_prints_the_signed_facts(till, home: Path) -> None:
    terminal, ledger, reader = till
    decision = pay(terminal, reader, 12_300)
    payload = rc.e_receipt(decision.entry)
    out = CliRunner().invoke(cli, ["--home", str(home), "receipt", "verify", payload,
                                   "--key", public_hex(ledger.public_key)])
    assert out.exit_code == 0, out.output
    assert out.output.splitlines()[-1] == (
        f"signed facts: AID {AID}, label {LABEL}, points earned 615, "
        f"balance left {BALANCE - 12_300:,} won")


def test_an_e_receipt_with_a_changed_balance_fails(till, home: Path) -> None:
    terminal, ledger, reader = till
    decision = pay(terminal, reader, 12_300)
    payload = rc.e_receipt(decision.entry)
    forged = forge_balance(payload, decision.entry, BALANCE - 12_300, 97_700)
    assert rc.parse_e_receipt(forged).fields.detail.count('"bal":97700') == 1
    with pytest.raises(QRFormatError, match="signature does not verify"):
        rc.verify(forged, ledger.public_key)
    out = CliRunner().invoke(cli, ["--home", str(home), "receipt", "verify", forged])
    assert out.exit_code == 1 and "e-receipt INVALID" in out.output
    assert "97,700" not in out.output


# -- what is signed only when known -----------------------------------------------------------


def test_only_the_facts_known_are_signed(till) -> None:
    terminal, ledger, reader = till
    # a UID card: no application, so no AID or label; its balance is known, points too
    uid = bytes.fromhex("04a1b2c3")
    ledger.set_balances({TOKEN: BALANCE, card_token(DEMO_TOKEN_KEY, "uid", uid): 9_000},
                        as_of_seq=0)
    reader.present_uid(uid)
    presented = reader.poll(1.0)
    assert presented is not None
    decision = terminal.pay(presented, 2_000)
    assert decision.approved and decision.entry is not None
    got = detail(decision.entry)
    assert {k: got.get(k) for k in ("aid", "lbl", "pts", "bal")} == {
        "aid": None, "lbl": None, "pts": 100, "bal": 7_000}
    # no rules and no balance for a card: nothing signed, the entry is as before
    other = bytes.fromhex("04a1b2c4")
    ledger.set_points_snapshot({}, 2, "")
    terminal.points._next = 0.0  # look at the rules again now rather than in a minute
    reader.present_uid(other)
    presented = reader.poll(1.0)
    assert presented is not None
    bare = terminal.pay(presented, 1_000)
    assert bare.approved and bare.entry is not None
    assert (bare.points, bare.balance) == (None, None)
    assert not {"aid", "lbl", "pts", "bal"} & set(detail(bare.entry))


def test_signed_facts_and_their_reading() -> None:
    assert rc.signed_facts("", "", None, None) == {}
    assert rc.signed_facts(AID, LABEL, 0, -300) == {"aid": AID, "lbl": LABEL, "pts": 0,
                                                    "bal": -300}
    assert rc.facts_of({"rider": "adult"}) is None
    # a value of another type is not a figure: never printed as one
    assert rc.facts_of({"pts": True, "bal": "5"}) == rc.Shown()
    assert rc.facts_of({"bal": 0}) == rc.Shown(balance=0)


def test_a_validator_tap_signs_none_of_them(tmp_path: Path) -> None:
    from tests.conftest import FakeClock, present

    bus_rules = json.dumps({"version": 1, "timezone": "Asia/Seoul", "bus": True,
                            "bus_types": ["city"], "weekly_cap": {"adult": 10_000},
                            "holidays": [], "local_food": False, "rate_bp": 0,
                            "merchant_categories": []})
    config = DEFAULT.replace("terminal", role="validator", id="V-1", place="85",
                             bus_type="city")
    uid = bytes.fromhex("04a1b2c3")
    reader = VirtualReader()
    with Ledger(tmp_path / "v.sqlite", key=Ed25519PrivateKey.generate(),
                terminal_id="V-1") as led:
        led.set_balances({card_token(DEMO_TOKEN_KEY, "uid", uid): 20_000}, as_of_seq=0)
        led.set_points_snapshot({}, 1, bus_rules)
        clock = FakeClock(NOW)
        decision = Terminal(config, led, DEMO_TOKEN_KEY, clock=clock).tap(present(reader, uid))
        reader.close()
        assert decision.approved and decision.entry is not None
        fare = config.fares.default_fare
        # shown on the screen as before: a weekday's first ride earns its fare in points
        assert (decision.points, decision.balance) == (fare, 20_000 - fare)
        assert not {"aid", "lbl", "pts", "bal"} & set(detail(decision.entry))


# -- entries written before the facts were signed ---------------------------------------------


def test_an_old_entry_without_the_keys_reprints_from_the_journal(till, home: Path) -> None:
    terminal, ledger, _ = till
    entry = ledger.append("payment", card_token=TOKEN, amount=8_000, place="M-ILSAN",
                          detail={"scheme": "emv", "card": "941012******9012",
                                  "rider": "adult", "merchant_category": "local_food"},
                          wall_ms=int(NOW * 1000), offline_delta=8_000)
    journal_of(ledger).record(entry.seq, rc.Shown(AID, LABEL, 400, BALANCE - 8_000),
                              printed=True)
    got = show(home, entry.seq)
    want = fact_lines(400, BALANCE - 8_000)
    assert [line for line in got if line in want] == want
    assert not rc.from_entry(entry, terminal.config).signed
    journal_of(ledger).path.unlink()
    assert not [line for line in show(home, entry.seq) if line in want]


# -- the e-receipt's size ---------------------------------------------------------------------


@pytest.mark.parametrize("balance", [BALANCE, 9_999_999])
def test_a_two_pocket_split_e_receipt_fits_the_screen_at_four_pixels_a_module(
        till, balance: int) -> None:
    terminal, ledger, reader = till
    terminal.clerk = "C01"
    ledger.set_balances({TOKEN: balance}, as_of_seq=0)
    lp.store(ledger, lp.PocketState(1, "default", "M-ILSAN", 1, DEFAULT_RULES),
             {TOKEN: {"cash": (40_000, [], None), "points": (2_000, [], None)}})
    decision = pay(terminal, reader, 12_300)
    assert decision.split == (("points", 2_000), ("cash", 10_300))
    assert detail(decision.entry)["bal"] == balance - 12_300
    payload = rc.e_receipt(decision.entry)
    entry_bytes = len(decision.entry.encoded())
    # the length, the entry, the 64-byte signature; base64 without padding
    assert len(payload) == 5 + -(-(2 + entry_bytes + 64) * 4 // 3)
    qr = segno.make_qr(payload, error="m", mode="byte")
    modules = 17 + 4 * qr.version
    print(f"entry {entry_bytes} bytes, e-receipt {len(payload)} characters, "
          f"QR version {qr.version} ({modules} modules)")
    # kiosk_ui/ereceipt.py's 420-pixel box at 4 pixels a module, with the 4-module margin
    assert (modules + 8) * 4 <= 420


# -- central reads the entry by key: the new ones change nothing there ------------------------


def test_central_ingests_and_credits_a_payment_that_signs_its_facts(till, tmp_path: Path
                                                                   ) -> None:
    from central.payouts import statement
    from sync.protocol import decode_entry
    from tests.incentives_data import open_service

    terminal, ledger, reader = till
    decision = pay(terminal, reader, 12_345)
    assert {"aid", "lbl", "pts", "bal"} <= set(detail(decision.entry))
    svc = open_service(f"sqlite:///{tmp_path / 'central.sqlite'}")
    try:
        svc.add_terminal("T-TILL-07", ledger.public_key.public_bytes_raw())
        wire = decode_entry(decision.entry.encoded(), decision.entry.signature)
        assert svc.ingest("T-TILL-07", [wire]).accepted == 1
        # central's own local-food rate, 30 basis points: 12,345 won earns 37
        got = statement(svc.store, TOKEN)
        assert [(e["rule"], e["points"]) for e in got["entries"]] == [
            ("local_food", 12_345 * 30 // 10_000)]
    finally:
        svc.store.close()
