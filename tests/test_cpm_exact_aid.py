"""EMVCo CPM §5.1.1.7 (the terminal pays with the template whose AID it accepts), with the AID
matched as ``[emv] aids`` says for cards (EMV 4.3 Book 1 §12.3.1): an entry without ``*``
matches only the same AID, one with ``*`` any longer AID that starts with it. The codes are
written byte by byte here."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import terminal.cards_all  # noqa: F401 - registers the QR application
from drivers import wait
from drivers.virtual import VirtualReader
from firmware_cfg.config import DEFAULT, EmvSection
from firmware_cfg.keys import DEMO_TOKEN_KEY
from offline_ledger import Ledger
from terminal.cards import card_token
from terminal.core import Terminal
from terminal.emv.reader import terminal_aids
from terminal.qr import cpm
from terminal.risk import Reason

PAN = "9410123456789012"
PAN_BYTES = bytes.fromhex("9410123456789012")


def code(*aids: bytes) -> str:
    """``85 05 "CPV01"``, then per AID ``61 L (4F L aid)(5A 08 pan)``, Base64."""
    raw = bytes.fromhex("8505") + b"CPV01"
    for aid in aids:
        inner = bytes([0x4F, len(aid)]) + aid + bytes([0x5A, 8]) + PAN_BYTES
        raw += bytes([0x61, len(inner)]) + inner
    return base64.b64encode(raw).decode("ascii")


OWN = bytes.fromhex("D4100000030001")  # [emv] aids default: exact (no *)
OWN_LONGER = bytes.fromhex("D410000003000199")  # starts with it, one byte more
VISA = bytes.fromhex("A0000000031010")  # default A0000000031010*: partial
VISA_CREDIT = bytes.fromhex("A000000003101001")


def test_cpm_5_1_1_7_exact_aid_bytes() -> None:
    assert base64.b64decode(code(OWN_LONGER)) == bytes.fromhex(
        "8505435056303161144f08d410000003000199" "5a089410123456789012")
    aids = terminal_aids(EmvSection(aids=("D4100000030001", "A0000000031010*")))
    # exact: the same AID only
    assert cpm.parse(code(OWN)).accepting(aids) is not None
    assert cpm.parse(code(OWN_LONGER)).accepting(aids) is None
    # partial: the same AID and any longer one
    assert cpm.parse(code(VISA)).accepting(aids) is not None
    chosen = cpm.parse(code(OWN_LONGER, VISA_CREDIT)).accepting(aids)
    assert chosen is not None and chosen.aid == VISA_CREDIT and chosen.chosen == 1
    # a shorter code AID never matches a longer configured one
    assert cpm.parse(code(OWN[:6])).accepting(aids) is None
    # the card path's own rule, the same answers (one function for both)
    for aid in (OWN, OWN_LONGER, VISA, VISA_CREDIT, OWN[:6]):
        card = any(t.matches(aid) for t in aids)
        assert (cpm.parse(code(aid)).accepting(aids) is not None) is card, aid.hex()


@pytest.fixture
def till(tmp_path: Path) -> Iterator[Terminal]:
    ledger = Ledger(tmp_path / "ledger.sqlite", key=Ed25519PrivateKey.generate(),
                    terminal_id="T-TEST-01")
    cfg = DEFAULT.replace("terminal", role="till", id="T-TEST-01", place="M0001")
    yield Terminal(cfg, ledger, DEMO_TOKEN_KEY, clock=lambda: 1_790_000_000.0,
                   read_options={"ledger": ledger})
    ledger.close()


def pay(till: Terminal, text: str, amount: int):  # type: ignore[no-untyped-def]
    reader = VirtualReader()
    reader.present_code(text)
    return till.pay(wait(reader, 1), amount)


def test_cpm_5_1_1_7_exact_aid_at_the_till(till: Terminal) -> None:
    # the shipped [emv] aids list the scheme's own application without *
    assert "D4100000030001" in DEFAULT.emv.aids
    refused = pay(till, code(OWN_LONGER), 1_000)
    assert refused.reason is Reason.UNSUPPORTED
    taken = pay(till, code(OWN), 1_000)
    assert taken.approved, taken.detail
    assert taken.card is not None and taken.card.token == card_token(DEMO_TOKEN_KEY, "pan",
                                                                     PAN)
