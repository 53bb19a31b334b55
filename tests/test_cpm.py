"""EMVCo consumer-presented mode: the published example, the rules, round trip, payment."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings

import terminal.cards_all  # noqa: F401 - registers the QR application
from drivers import wait
from drivers.virtual import VirtualReader
from firmware_cfg.config import DEFAULT
from firmware_cfg.keys import DEMO_TOKEN_KEY
from localpay.errors import QRFormatError
from offline_ledger import Ledger
from terminal import tlv
from terminal.cards import card_token
from terminal.core import Terminal
from terminal.qr import cpm, detect
from terminal.risk import Reason
from terminal.tlv import Tlv
from tests.strategies_cards import cpm_objects

EXAMPLE = json.loads((Path(__file__).parent / "data" / "cpm_examples.json").read_text())["valid"][0]
AID = bytes.fromhex("D4100000030001")
PAN = "9410123456789012"


def test_published_example() -> None:
    code = cpm.parse(EXAMPLE["payload"])
    assert [a.find(0x4F).value.hex().upper() for a in code.applications] == EXAMPLE["aids"]  # type: ignore[union-attr]
    assert [a.find(0x50).value.decode() for a in code.applications] == EXAMPLE["labels"]  # type: ignore[union-attr]
    assert code.value(0x5F20) == EXAMPLE["cardholder_name"].encode()
    assert code.value(0x5F2D) == EXAMPLE["language"].encode()
    assert code.value(0x9F10) == bytes.fromhex(EXAMPLE["iad"])
    assert code.value(0x9F26) == bytes.fromhex(EXAMPLE["cryptogram"])
    assert code.value(0x9F37) == bytes.fromhex(EXAMPLE["unpredictable_number"])
    assert code.atc == EXAMPLE["atc"]
    assert detect(EXAMPLE["payload"]) == "cpm"
    assert cpm.encode(code.objects) == EXAMPLE["payload"]


@settings(max_examples=200, deadline=None)
@given(cpm_objects())
def test_round_trip(objs: list[Tlv]) -> None:
    text = cpm.encode(objs)
    assert cpm.parse(text).objects == tuple(objs)


def b64(*objs: Tlv) -> str:
    return base64.b64encode(tlv.encode(objs)).decode()


PFI = Tlv.build(0x85, b"CPV01")
APP = Tlv.build(0x61, [Tlv.build(0x4F, AID), Tlv.build(0x5A, bytes.fromhex(PAN))])


@pytest.mark.parametrize("text, message", [
    ("hQVDUFYwMQ", "Base64"),
    ("hQVDUFYwMQ=!", "Base64"),
    (base64.b64encode(b"\x85\x05CPV01\x61\x05\x4f").decode(), "BER-TLV"),
    (b64(APP, PFI), "must come first"),
    (b64(Tlv.build(0x85, b"CPV02"), APP), "'CPV02'"),
    (b64(PFI), "at least one Application Template"),
    (b64(PFI, APP, Tlv.build(0x62, []), Tlv.build(0x62, [])), "more than one Common Data"),
    (b64(PFI, PFI, APP), "more than one Payload Format"),
    (b64(PFI, Tlv.build(0x61, [Tlv.build(0x5A, bytes.fromhex(PAN))])), "ADF Name"),
    (b64(PFI, Tlv.build(0x61, [Tlv.build(0x4F, b"1234")])), "bad length: ADF Name"),
    (b64(PFI, Tlv.build(0x61, [Tlv.build(0x4F, AID)])), "no PAN"),
    (b64(PFI, Tlv.build(0x61, [Tlv.build(0x4F, AID), Tlv.build(0x4F, AID)])), "duplicate tag"),
    (b64(PFI, Tlv.build(0x61, [Tlv.build(0x4F, AID), Tlv.build(0x5A, bytes(11))])),
     "bad length: Application PAN"),
    (b64(PFI, Tlv.build(0x61, [Tlv.build(0x4F, AID), Tlv.build(0x5A, bytes.fromhex(PAN)),
                              Tlv.build(0x64, [])])), "does not belong"),
])
def test_rule_violations(text: str, message: str) -> None:
    with pytest.raises(QRFormatError, match=message):
        cpm.parse(text)


def test_pan_in_common_data_serves_every_application() -> None:
    text = b64(PFI, Tlv.build(0x61, [Tlv.build(0x4F, AID)]),
               Tlv.build(0x62, [Tlv.build(0x5A, bytes.fromhex(PAN))]))
    assert cpm.parse(text).pan() == PAN


def test_pan_from_track2() -> None:
    text = cpm.build(AID, PAN, expiry="2812")
    assert cpm.parse(text).value(0x5A) is None
    assert cpm.parse(text).pan() == PAN


# -- paying with a CPM code at a till -------------------------------------------------------


@pytest.fixture
def till(tmp_path: Path) -> Iterator[tuple[Terminal, Ledger]]:
    ledger = Ledger(tmp_path / "ledger.sqlite", key=Ed25519PrivateKey.generate(),
                    terminal_id="T-TEST-01")
    cfg = DEFAULT.replace("terminal", role="till", id="T-TEST-01", place="M0001")
    clock = 1_790_000_000.0
    yield Terminal(cfg, ledger, DEMO_TOKEN_KEY, clock=lambda: clock,
                   read_options={"ledger": ledger}), ledger
    ledger.close()


def test_cpm_pays_with_the_card_token_and_refuses_a_replay(
        till: tuple[Terminal, Ledger], tmp_path: Path) -> None:
    terminal, ledger = till
    reader = VirtualReader()
    code = cpm.build(AID, PAN, label="LOCALPAY", atc=7)
    reader.present_code(code)
    first = terminal.pay(wait(reader, 1), 4500)
    assert first.approved, first.detail
    assert first.card is not None and first.card.scheme == "cpm"
    assert first.card.token == card_token(DEMO_TOKEN_KEY, "pan", PAN)
    assert first.card.display == "941012******9012" and first.card.atc == 7
    reader.present_code(code)
    again = terminal.pay(wait(reader, 1), 4500)
    assert again.reason is Reason.QR_REPLAY
    ledger.close()
    assert PAN.encode() not in (tmp_path / "ledger.sqlite").read_bytes()


def test_cpm_of_a_foreign_scheme_is_unsupported(till: tuple[Terminal, Ledger]) -> None:
    terminal, _ = till
    decision = terminal.pay(_qr(EXAMPLE["payload"]), 1000)
    assert decision.reason is Reason.UNSUPPORTED


def test_malformed_cpm_is_qr_invalid(till: tuple[Terminal, Ledger]) -> None:
    terminal, _ = till
    decision = terminal.pay(_qr("hQVDUFYwMWEA"), 1000)
    assert decision.reason is Reason.QR_INVALID


def _qr(text: str):  # type: ignore[no-untyped-def]
    reader = VirtualReader()
    reader.present_code(text)
    return wait(reader, 1)


def test_cpm_5_1_1_7_the_till_charges_the_template_it_accepted(
        till: tuple[Terminal, Ledger]) -> None:
    """A wallet's code whose first template is a scheme this till does not take (Discover)
    and whose second is ours is charged with the second template's PAN, label and ATC."""
    terminal, ledger = till

    def t(tag: str, value: bytes) -> bytes:
        return bytes.fromhex(tag) + bytes([len(value)]) + value

    foreign_pan = "6011000990139424"
    payload = (t("85", b"CPV01")
               + t("61", t("4F", bytes.fromhex("A0000001523010")) + t("50", b"DISCOVER")
                   + t("5A", bytes.fromhex(foreign_pan)) + t("9F36", b"\x00\x03"))
               + t("61", t("4F", AID) + t("50", b"LOCALPAY")
                   + t("5A", bytes.fromhex(PAN)) + t("9F36", b"\x00\x09")))
    decision = terminal.pay(_qr(base64.b64encode(payload).decode("ascii")), 2_500)
    assert decision.approved, decision.detail
    assert decision.card is not None
    assert decision.card.token == card_token(DEMO_TOKEN_KEY, "pan", PAN)
    assert decision.card.token != card_token(DEMO_TOKEN_KEY, "pan", foreign_pan)
    assert decision.card.display == "941012******9012" and decision.card.label == "LOCALPAY"
    assert decision.card.aid == AID.hex().upper() and decision.card.atc == 9
    assert ledger.count() == 1
