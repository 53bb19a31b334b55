"""Receipts (issue #17): the ESC/POS byte stream decoded back and compared with a receipt
worked out here by hand, e-receipts verified and tampered ones refused, reprints equal to the
first print, and a serial printer over a real pty answering DLE EOT "paper out".

Mocked: only the printer itself, which cannot exist here. Its side of the pty is a thread
that answers DLE EOT with the status bytes an Epson-compatible printer sends (ESC/POS
reference, DLE EOT n=1/2/4) and keeps whatever else it is sent.
"""

from __future__ import annotations

import base64
import hashlib
import os
import select
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pygame
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.emulators.emv_card import EmvCard
from drivers.printer import (
    SerialPrinter,
    VirtualPrinter,
    format_printer_spec,
    open_printer,
    parse_printer_spec,
    render,
)
from drivers.virtual import VirtualCard, VirtualReader
from firmware_cfg.config import DEFAULT, LOCAL_FIELDS, Config, brn_check_digit, dumps, loads
from firmware_cfg.keys import DEMO_TOKEN_KEY, public_hex
from kiosk_ui.draw import Painter
from kiosk_ui.engine import Engine
from kiosk_ui.fonts import load_fonts
from kiosk_ui.i18n import Language, tr
from kiosk_ui.model import Event, KioskModel, Pay, ReceiptFault, Result, ResultView, Screen
from localpay.cli import cli
from localpay.errors import (
    ConfigError,
    PrinterOfflineError,
    PrinterPaperOutError,
    PrinterUnavailableError,
    QRFormatError,
)
from offline_ledger import Ledger
from terminal import receipt as rc
from terminal.cards import card_token
from terminal.core import Decision, Terminal
from tests.receipt_tills import Till, open_till, till_home

PAN = "9410123456789012"
BRN9 = "134867268"
BRN = f"{BRN9[:3]}-{BRN9[3:5]}-{BRN9[5:]}{brn_check_digit(BRN9)}"


# -- an ESC/POS reader written for the test, apart from drivers.printer --------------------------


def decode_escpos(stream: bytes) -> list[str]:
    """The printed lines of one ESC/POS job; fails on any command it does not know, so a
    stray byte in the stream cannot pass unseen."""
    assert stream.startswith(b"\x1b@"), "a job starts with ESC @"
    lines: list[str] = []
    text = bytearray()
    kanji = False
    i = 0
    while i < len(stream):
        b = stream[i]
        if b == 0x1B:  # ESC
            cmd = stream[i + 1]
            i += 2 if cmd == ord("@") else 3  # ESC @ ; ESC a n, ESC E n, ESC d n
            continue
        if b == 0x1C:  # FS & (Kanji on), FS . (off)
            kanji = {ord("&"): True, ord("."): False}[stream[i + 1]]
            i += 2
            continue
        if b == 0x1D:  # GS V m n (m 65/66: feed and cut)
            assert stream[i + 1] == ord("V") and stream[i + 2] in (65, 66)
            i += 4
            continue
        if b == 0x0A:
            lines.append(text.decode("euc-kr") if kanji else text.decode("ascii"))
            text.clear()
            i += 1
            continue
        assert b >= 0x20, f"unknown control byte 0x{b:02X} at {i}"
        if b >= 0x80:
            assert kanji, "a double-byte character outside Kanji mode"
            text += stream[i:i + 2]
            i += 2
        else:
            text.append(b)
            i += 1
    assert not text, "text after the last line feed"
    assert stream.endswith(b"\x1dV\x42\x00\x1c."), "a job ends with the cut and Kanji off"
    return lines


# -- a till, its ledger and a card -------------------------------------------------------------


def till_config(printer: str = "virtual") -> Config:
    base = DEFAULT.replace("terminal", role="till", id="T-TILL-07", place="M-ILSAN",
                           merchant_category="general")
    base = base.replace("readers", printer=printer)
    return base.with_merchant(id="M-ILSAN", name="일산 농부상점", brn=BRN,
                              category="ksic:47121")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return till_home(tmp_path, till_config())


@pytest.fixture
def till(home: Path) -> Iterator[Till]:
    with open_till(home / "ledger.sqlite", till_config()) as opened:
        yield opened


def pay(terminal: Terminal, reader: VirtualReader, amount: int) -> Decision:
    reader.present_card(VirtualCard(uid=bytes.fromhex("08e70001"),
                                    handler=EmvCard(pan=PAN).handle))
    presented = reader.poll(1.0)
    assert presented is not None
    decision = terminal.pay(presented, amount)
    assert decision.approved, decision
    return decision


def shown_of(decision: Decision) -> rc.Shown:
    card = decision.card
    assert card is not None
    return rc.Shown(aid=card.aid, label=card.label, points=decision.points,
                    balance=decision.balance)


def expected_lines(ledger: Ledger, seq: int, balance: int, points: int | None) -> list[str]:
    """The receipt worked out by hand: figures from the test's own inputs, the approval
    reference from SHA-256 of the entry's bytes."""
    entry = ledger.entry(seq)
    assert entry is not None
    approval = f"{seq}-{hashlib.sha256(entry.encoded()).digest()[:4].hex().upper()}"
    rule = "-" * 42
    out = [
        "일산 농부상점",
        "가맹점 Merchant M-ILSAN",
        f"사업자번호 BRN {BRN}",
        "단말기 Terminal T-TILL-07",
        "일시 Date 2027-01-15 17:00:00 KST",
        rule,
        # 결제 is two wide characters: 4 + 1 + 7 + gap + 7 ("12,300" and 원, 2 wide) = 42
        "결제 Payment" + " " * (42 - 12 - 8) + "12,300원",
        rule,
        "카드 Card 941012******9012",
        "  LOCALPAY",
        "  AID D4100000030001",
        f"승인번호 Approval {approval}",
    ]
    if points is not None:
        left = "적립 포인트 Points earned"
        right = f"{points:,}P"
        out.append(left + " " * (42 - (len(left) + 5) - len(right)) + right)
    out.append("잔액 Balance left" + " " * (42 - 17 - 8) + f"{balance:,}원")
    out.append("감사합니다 Thank you")
    return out


# -- the byte stream ----------------------------------------------------------------------------


def test_printed_stream_decodes_to_the_receipt_worked_out_by_hand(till) -> None:
    terminal, ledger, reader = till
    token = card_token(DEMO_TOKEN_KEY, "pan", PAN)
    ledger.set_balances({token: 50_000}, as_of_seq=0)
    decision = pay(terminal, reader, 12_300)
    assert decision.card is not None and decision.card.token == token
    printer = VirtualPrinter()
    desk = rc.ReceiptDesk(terminal.config, printer,
                          rc.ReceiptJournal(rc.journal_path(ledger.path or Path())))
    assert desk.issue(decision.entry, shown_of(decision)) is None
    assert len(printer.jobs) == 1
    got = decode_escpos(printer.jobs[0])
    assert got == expected_lines(ledger, 1, 50_000 - 12_300, decision.points)
    # never a full PAN, in any encoding, anywhere in the stream
    assert PAN.encode() not in printer.output
    assert not rc.ReceiptJournal(rc.journal_path(ledger.path or Path())).unprinted()


def test_hangul_is_euc_kr_in_kanji_mode_and_controls_cannot_get_through() -> None:
    stream = render(["가게", "똠양꿍 \x1b@x"])
    assert "가게".encode("euc-kr") in stream  # B0 A1 B0 D4: KS X 1001, not UTF-8
    assert "가게".encode() not in stream
    # 똠 is not in KS X 1001 (CP949 only): a ? rather than loose jamo or a wrong syllable
    assert decode_escpos(stream) == ["가게", "?양꿍 @x"]


def test_pan_truncation_is_the_second_lock() -> None:
    assert rc.truncate_pan("card 9410123456789012") == "card 941012******9012"
    assert rc.truncate_pan("941012******9012") == "941012******9012"


# -- reprint --------------------------------------------------------------------------------------


def test_reprint_from_the_ledger_equals_the_first_print(till, home: Path) -> None:
    terminal, ledger, reader = till
    decision = pay(terminal, reader, 8_000)
    first = VirtualPrinter()
    journal = rc.ReceiptJournal(rc.journal_path(home / "ledger.sqlite"))
    assert rc.ReceiptDesk(terminal.config, first, journal).issue(
        decision.entry, shown_of(decision)) is None
    entry = ledger.entry(1)
    assert entry is not None
    again = VirtualPrinter()
    again.print_lines(rc.lines(rc.from_entry(entry, terminal.config, journal.shown(1))))
    assert again.jobs == first.jobs  # byte for byte
    # and the command a clerk runs shows the same lines (it reads the ledger read-only)
    result = CliRunner().invoke(cli, ["--home", str(home), "receipt", "show", "1"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == decode_escpos(first.jobs[0])
    result = CliRunner().invoke(cli, ["--home", str(home), "receipt", "print", "1",
                                      "--printer", "virtual"])
    assert result.exit_code == 0, result.output
    assert f"({len(first.jobs[0])} bytes captured)" in result.output


def test_a_bus_tap_has_no_receipt(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.sqlite", key=Ed25519PrivateKey.generate(),
                terminal_id="V-1") as led:
        entry = led.append("tap", card_token="ab", amount=1500, place="85", detail={},
                           wall_ms=1, offline_delta=1500, tap=True)
        with pytest.raises(Exception, match="only"):
            rc.from_entry(entry, DEFAULT)


# -- e-receipts -----------------------------------------------------------------------------------


def test_e_receipt_verifies_and_tampering_is_refused(till, home: Path) -> None:
    terminal, ledger, reader = till
    decision = pay(terminal, reader, 12_300)
    assert decision.entry is not None
    payload = rc.e_receipt(decision.entry)
    assert payload.startswith("LPR1:") and "=" not in payload
    found = rc.verify(payload, ledger.public_key)
    assert found.fields == decision.entry.fields
    assert found.entry.entry_hash == decision.entry.entry_hash

    # 12,300 won becomes 1,300 won: same length, the signature no longer matches
    body = bytearray(base64.urlsafe_b64decode(payload[5:] + "=" * (-len(payload[5:]) % 4)))
    raw = decision.entry.encoded()
    at = 2 + raw.index((12_300).to_bytes(8, "big"))
    body[at:at + 8] = (1_300).to_bytes(8, "big")
    forged = "LPR1:" + base64.urlsafe_b64encode(bytes(body)).rstrip(b"=").decode()
    with pytest.raises(QRFormatError, match="signature does not verify"):
        rc.verify(forged, ledger.public_key)
    with pytest.raises(QRFormatError, match="signature"):  # another terminal's key
        rc.verify(payload, Ed25519PrivateKey.generate().public_key())
    with pytest.raises(QRFormatError):
        rc.verify(payload[:-3], ledger.public_key)
    with pytest.raises(QRFormatError, match="starts with"):
        rc.verify("LPW1." + payload[5:], ledger.public_key)

    runner = CliRunner()
    key = public_hex(ledger.public_key)
    ok = runner.invoke(cli, ["--home", str(home), "receipt", "verify", payload, "--key", key])
    assert ok.exit_code == 0, ok.output
    assert "e-receipt VALID: terminal T-TILL-07, entry 1, payment 12,300 won" in ok.output
    assert "941012******9012" in ok.output
    saved = home / "receipt.txt"
    saved.write_text(forged + "\n", encoding="utf-8")
    bad = runner.invoke(cli, ["--home", str(home), "receipt", "verify", str(saved)])
    assert bad.exit_code == 1
    assert "e-receipt INVALID" in bad.output


# -- a serial printer on a pty -----------------------------------------------------------------


class PtyPrinter:
    """The printer's end of a pty: answers DLE EOT with ``self.answers[n]``, keeps the rest."""

    READY: ClassVar[dict[int, int]] = {1: 0x12, 2: 0x12, 4: 0x12}
    # offline because of it (n=1); stopped by paper end (n=2); the roll sensor sees its end
    PAPER_OUT: ClassVar[dict[int, int]] = {1: 0x1A, 2: 0x32, 4: 0x72}

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        tty.setraw(self.master)
        self.path = os.ttyname(self.slave)
        self.answers: dict[int, int] | None = dict(self.READY)
        self.received = bytearray()
        self.asked: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pending = b""
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                continue
            try:
                pending += os.read(self.master, 4096)
            except OSError:
                return
            while pending:
                at = pending.find(b"\x10\x04")
                if at < 0 or len(pending) < at + 3:
                    keep = pending if at < 0 else pending[:at]
                    self.received += keep
                    pending = b"" if at < 0 else pending[at:]
                    break
                self.received += pending[:at]
                n = pending[at + 2]
                pending = pending[at + 3:]
                self.asked.append(n)
                if self.answers is not None:
                    os.write(self.master, bytes([self.answers[n]]))

    def wait_received(self, size: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < size and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def pty_printer() -> Iterator[PtyPrinter]:
    p = PtyPrinter()
    yield p
    p.close()


def test_paper_out_on_a_serial_printer_the_payment_stands_and_prints_later(
        till, home: Path, pty_printer: PtyPrinter) -> None:
    terminal, ledger, reader = till
    pty_printer.answers = dict(PtyPrinter.PAPER_OUT)
    journal = rc.ReceiptJournal(rc.journal_path(home / "ledger.sqlite"))
    with SerialPrinter(pty_printer.path, baudrate=19200) as printer:
        desk = rc.ReceiptDesk(terminal.config, printer, journal)
        decision = pay(terminal, reader, 12_300)
        said = desk.issue(decision.entry, shown_of(decision))
        assert said == "out of paper"
        assert ledger.head.seq == 1 and ledger.entry(1) is not None  # the payment stands
        assert pty_printer.asked[:3] == [1, 2, 4]
        assert pty_printer.received == b""  # not half a receipt into an empty printer
        assert journal.unprinted() == [1]

        pty_printer.answers = dict(PtyPrinter.READY)  # the clerk put a new roll in
        entry = ledger.entry(1)
        assert entry is not None
        printer.print_lines(rc.lines(rc.from_entry(entry, terminal.config, journal.shown(1))))
    virtual = VirtualPrinter()
    virtual.print_lines(rc.lines(rc.from_entry(entry, terminal.config, journal.shown(1))))
    pty_printer.wait_received(len(virtual.output))
    assert bytes(pty_printer.received) == bytes(virtual.output)
    assert decode_escpos(bytes(pty_printer.received))[0] == "일산 농부상점"


def test_a_silent_or_missing_printer_is_a_typed_error(pty_printer: PtyPrinter) -> None:
    pty_printer.answers = None  # switched off: nothing answers
    with SerialPrinter(pty_printer.path, status_timeout_s=0.2) as printer:
        with pytest.raises(PrinterOfflineError, match="no answer to DLE EOT"):
            printer.print_lines(["x"])
    with pytest.raises(PrinterUnavailableError):
        open_printer("serial:/dev/localpay-no-such-printer")
    with pytest.raises(PrinterUnavailableError, match="usb:0419:3c00"):
        open_printer("usb:0419:3c00")  # python-escpos and pyusb for real; no such device here
    paper = VirtualPrinter()
    paper.paper_out = True
    with pytest.raises(PrinterPaperOutError, match="out of paper"):
        paper.print_lines(["x"])
    assert paper.output == b""


def test_kiosk_payment_stands_when_the_printer_is_out_of_paper(till, home: Path) -> None:
    terminal, ledger, reader = till
    printer = VirtualPrinter()
    printer.paper_out = True
    journal = rc.ReceiptJournal(rc.journal_path(home / "ledger.sqlite"))
    engine = Engine(terminal, reader.poll, receipts=rc.ReceiptDesk(terminal.config, printer,
                                                                     journal))
    engine.start()
    try:
        engine.send(Pay(12_300, "card"))
        time.sleep(0.05)
        reader.present_card(VirtualCard(uid=bytes.fromhex("08e70001"),
                                        handler=EmvCard(pan=PAN).handle))
        seen: list[Event] = []
        deadline = time.monotonic() + 10
        while not any(isinstance(e, ReceiptFault) for e in seen) and \
                time.monotonic() < deadline:
            seen += engine.events()
            time.sleep(0.01)
    finally:
        engine.stop()
    results = [e for e in seen if isinstance(e, Result)]
    assert results and results[0].view.outcome == "approved"
    faults = [e for e in seen if isinstance(e, ReceiptFault)]
    assert faults == [ReceiptFault(1, "out of paper")]
    # what the clerk reads, on the result screen and on the keypad until the next sale
    model = KioskModel(role="till", language="en")
    for event in seen:
        model.on_event(event)
    assert model.receipt_fault == ReceiptFault(1, "out of paper")
    assert tr("en", model.receipt_fault.key, seq=1) == \
        "Receipt not printed: out of paper. Reprint: entry 1"
    assert tr("ko", model.receipt_fault.key, seq=1) == "영수증 미출력: 용지 없음. 재출력: 1번"
    assert ledger.head.seq == 1 and printer.output == b""
    printer.paper_out = False
    entry = ledger.entry(1)
    assert entry is not None
    printer.print_lines(rc.lines(rc.from_entry(entry, terminal.config, journal.shown(1))))
    assert decode_escpos(bytes(printer.output))[6].endswith("12,300원")


# -- specs and config --------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["virtual", "serial:/dev/ttyUSB0", "serial:/dev/ttyS1:9600",
                                  "usb:0419:3c00"])
def test_printer_specs_round_trip(text: str) -> None:
    assert format_printer_spec(parse_printer_spec(text)) == text


@pytest.mark.parametrize("text", ["", "lp0", "usb:419:3c00", "usb:zzzz:0001", "serial:",
                                  "virtual:x", "serial:/dev/ttyS1:0"])
def test_bad_printer_specs_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_printer_spec(text)


def test_printer_is_a_local_config_key() -> None:
    assert "readers.printer" in LOCAL_FIELDS
    assert loads(dumps(till_config("serial:/dev/ttyUSB0:19200"))).readers.printer == \
        "serial:/dev/ttyUSB0:19200"
    with pytest.raises(ConfigError, match=r"readers\.printer"):
        loads(dumps(DEFAULT.replace("readers", printer="lp:/dev/usb/lp0")))


@pytest.mark.parametrize("size", [(800, 480), (1280, 720)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("language", ["ko", "en"])
def test_the_clerk_reads_the_receipt_fault_in_its_box(size: tuple[int, int],
                                                       language: Language) -> None:
    from kiosk_ui.screens import Statics, render

    painter = Painter(pygame.Surface(size), load_fonts())
    model = KioskModel(role="till", language=language)
    view = ResultView(outcome="approved", action="payment", amount=12_300, balance=37_700,
                      points_now=36, seq=123456, card="941012******9012",
                      split=(("youth", 5_000), ("cash", 7_300)))
    model.on_event(Result(view))
    model.on_event(ReceiptFault(123456, "out of paper"))
    for screen in (Screen.RESULT, Screen.KEYPAD):
        model.screen = screen
        render(painter, model, Statics())
        found = [r for r in painter.records if r.name == "receipt_fault"]
        assert len(found) == 1, screen
        rec = found[0]
        assert rec.text == tr(language, "receipt_paper_out", seq=123456)
        assert rec.fits and rec.inside() and rec.size >= rec.min_size, (screen, rec)


def test_reprint_command_on_a_printer_out_of_paper_says_so(till, home: Path,
                                                          pty_printer: PtyPrinter) -> None:
    terminal, _, reader = till
    pay(terminal, reader, 5_000)
    pty_printer.answers = dict(PtyPrinter.PAPER_OUT)
    spec = f"serial:{pty_printer.path}"
    out = CliRunner().invoke(cli, ["--home", str(home), "receipt", "print", "1",
                                   "--printer", spec])
    assert out.exit_code == 2
    assert f"PrinterPaperOutError: {spec}: out of paper" in out.output
    pty_printer.answers = dict(PtyPrinter.READY)
    out = CliRunner().invoke(cli, ["--home", str(home), "receipt", "print", "1",
                                   "--printer", spec])
    assert out.exit_code == 0, out.output
    pty_printer.wait_received(200)
    assert "5,000원" in "".join(decode_escpos(bytes(pty_printer.received)))


def test_a_refund_receipt_names_the_payment_it_gives_back(till) -> None:
    terminal, _, reader = till
    pay(terminal, reader, 12_300)
    refund = terminal.refund(1, 3_000)
    assert refund.approved and refund.entry is not None
    printer = VirtualPrinter()
    assert rc.ReceiptDesk(terminal.config, printer).issue(refund.entry, rc.Shown()) is None
    got = decode_escpos(printer.jobs[0])
    assert "환불 Refund" + " " * (42 - 11 - 7) + "3,000원" in got
    assert "원거래 Original 1" in got
    assert got[-2].startswith("승인번호 Approval 2-")


def test_the_e_receipt_qr_scans_back_and_verifies(till, home: Path) -> None:
    from pyzbar.pyzbar import ZBarSymbol, decode

    terminal, ledger, reader = till
    pay(terminal, reader, 12_300)
    png = home / "receipt-1.png"
    out = CliRunner().invoke(cli, ["--home", str(home), "receipt", "show", "1", "--payload",
                                   "--qr", str(png)])
    assert out.exit_code == 0, out.output
    payload = out.output.splitlines()[-1]
    image = pygame.image.load(str(png))
    w, h = image.get_size()
    grey = bytes(pygame.image.tobytes(image, "RGB")[0::3])  # black and white: one channel
    found = decode((grey, w, h), symbols=[ZBarSymbol.QRCODE])
    assert [f.data.decode() for f in found] == [payload]
    assert rc.verify(payload, ledger.public_key).fields.amount == 12_300


def test_run_opens_its_printer_when_a_receipt_is_due(till, home: Path, tmp_path: Path) -> None:
    """``localpay run``'s printer: one missing at start is the clerk's "missing" (the payment
    stands), and once it is plugged in the next receipt prints on it, with no restart."""
    from localpay.cli.ui import _Printer

    terminal, ledger, reader = till
    link = tmp_path / "printer-port"
    desk = rc.ReceiptDesk(terminal.config, _Printer(f"serial:{link}"),
                          rc.ReceiptJournal(rc.journal_path(home / "ledger.sqlite")))
    first = pay(terminal, reader, 4_000)
    assert desk.issue(first.entry, shown_of(first)) == "missing"
    assert ledger.entry(first.entry.seq) is not None
    plugged = PtyPrinter()
    try:
        link.symlink_to(plugged.path)
        second = pay(terminal, reader, 5_000)
        assert desk.issue(second.entry, shown_of(second)) is None
        virtual = VirtualPrinter()
        virtual.print_lines(rc.lines(rc.from_entry(second.entry, terminal.config,
                                                   shown_of(second))))
        plugged.wait_received(len(virtual.output))
        assert bytes(plugged.received) == bytes(virtual.output)
    finally:
        desk.printer.close()  # type: ignore[union-attr]
        plugged.close()
    with pytest.raises(ConfigError):
        _Printer("lpt1")
