"""EMV cards through the real core and the virtual reader: selection, T=0 / T=1, the PAN
token, terminal risk management (Book 3 §10.6) and its TVR bits (Annex C5)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import terminal.cards_all  # noqa: F401 - registers the EMV application
from drivers import wait
from drivers.emulators.emv_card import DirectoryEntry, EmvCard
from drivers.virtual import VirtualCard, VirtualReader
from firmware_cfg.config import DEFAULT
from firmware_cfg.keys import DEMO_TOKEN_KEY
from localpay.errors import APDUError
from localpay.types import Presentation
from offline_ledger import Ledger
from terminal.cards import card_token
from terminal.core import Decision, Terminal
from terminal.emv import risk
from terminal.emv.risk import TrmInput, TrmParams, Tvr, assess
from terminal.risk import Reason
from terminal.transmission import Transmission, describe

PAN = "9410123456789012"
UID = bytes.fromhex("04a1b2c3")
NOW = 1_790_000_000.0  # 2026-09-21 in Seoul


class Channel:
    """A card channel straight onto an emulated card, counting commands."""

    def __init__(self, card: EmvCard) -> None:
        self.card, self.sent = card, []  # type: ignore[var-annotated]

    def transmit(self, apdu: bytes) -> bytes:
        self.sent.append(apdu)
        return self.card.handle(apdu)


# -- transmission: the one place for 61xx and 6Cxx -----------------------------------------


def test_t0_case4_uses_get_response() -> None:
    ch = Channel(EmvCard(t0=True))
    tx = Transmission(ch, "T=0")
    rsp = tx.select(bytes.fromhex("D4100000030001"))
    assert rsp.ok and rsp.data.startswith(b"\x6f")
    assert ch.sent[0][-1] != 0x00 or len(ch.sent[0]) == 5 + 7  # no Le on a T=0 case 4
    assert ch.sent[1][:4] == bytes.fromhex("00C00000") and ch.sent[1][4] == len(rsp.data)


def test_t0_wrong_le_resends_with_6cxx_length() -> None:
    card = EmvCard(t0=True)
    ch = Channel(card)
    tx = Transmission(ch, "T=0")
    tx.select(card.aid)
    rsp = tx.read_record(2, 1)
    assert rsp.ok and rsp.data[0] == 0x70
    assert ch.sent[-2][-1] == 0x00 and ch.sent[-1][-1] == len(rsp.data)


def test_t1_gets_data_directly() -> None:
    ch = Channel(EmvCard())
    tx = Transmission(ch, "T=1")
    assert tx.select(bytes.fromhex("D4100000030001")).ok and len(ch.sent) == 1


def test_status_word_table() -> None:
    assert describe(0x6A82) == "6A82 file or application not found"
    assert describe(0x6C10).startswith("6C10 wrong Le")
    assert describe(0x1234) == "1234 unknown status"


def test_card_that_never_stops_saying_61xx() -> None:
    class Stuck:
        def transmit(self, apdu: bytes) -> bytes:
            return b"\x61\x10"

    with pytest.raises(APDUError, match="kept answering 61xx"):
        Transmission(Stuck()).select(b"\xa0\x00\x00\x00\x03")


# -- through the core -----------------------------------------------------------------------


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = Ledger(tmp_path / "ledger.sqlite", key=Ed25519PrivateKey.generate(),
                 terminal_id="T-TEST-01")
    yield led
    led.close()


def till(ledger: Ledger, **options: Any) -> Terminal:
    cfg = DEFAULT.replace("terminal", role="till", id="T-TEST-01", place="M0001")
    return Terminal(cfg, ledger, DEMO_TOKEN_KEY, clock=lambda: NOW,
                    read_options={"ledger": ledger, **options})


def present(card: EmvCard, *, protocol: str | None = None, **vc: Any) -> Presentation:
    reader = VirtualReader()
    reader.present_card(VirtualCard(uid=UID, handler=card.handle, **vc))
    p = wait(reader, 1)
    return dataclasses.replace(p, protocol=protocol) if protocol else p


def tvr(decision: Decision) -> bytes:
    assert decision.card is not None
    return bytes.fromhex(decision.card.extra["tvr"])


@pytest.mark.parametrize("kwargs, protocol", [
    ({}, None),                                    # contactless, ISO-DEP: PPSE
    ({"t0": True}, None),                           # contactless behind a T=0 chip
    ({"contact": True, "t0": True}, "T=0"),          # contact T=0: PSE + GET RESPONSE
    ({"contact": True}, "T=1"),                     # contact T=1: PSE
    ({"contact": True}, None),                      # PPSE refused: falls back to the PSE
])
def test_card_is_read_and_paid(ledger: Ledger, tmp_path: Path, kwargs: dict[str, Any],
                               protocol: str | None) -> None:
    card = EmvCard(**kwargs)
    decision = till(ledger).pay(present(card, protocol=protocol), 5000)
    assert decision.approved, decision.detail
    c = decision.card
    assert c is not None and c.scheme == "emv" and c.label == "LOCALPAY"
    assert c.token == card_token(DEMO_TOKEN_KEY, "pan", PAN)
    assert c.display == "941012******9012" and c.aid == "D4100000030001"
    assert c.atc == card.atc == 2  # GPO incremented it
    assert decision.entry is not None and decision.entry.fields.card_token == c.token
    ledger.close()
    assert PAN.encode() not in (tmp_path / "ledger.sqlite").read_bytes()


def test_pdol_is_filled_from_terminal_data(ledger: Ledger) -> None:
    card = EmvCard(pdol=bytes.fromhex("9F02069F1A025F2A029A039C019F3704"))
    assert till(ledger).pay(present(card), 12345).approved
    data = card.gpo_data or b""
    assert data[:6] == bytes.fromhex("000000012345")   # 9F02 amount, n12
    assert data[6:10] == bytes.fromhex("04100410")     # country and currency: Korea, KRW
    assert data[10:13] == bytes.fromhex("260921")      # 9A: the terminal's date (Seoul)
    assert data[13:14] == b"\x00" and len(data) == 18  # 9C purchase, 9F37 four bytes


def test_priority_and_unsupported_applications(ledger: Ledger) -> None:
    card = EmvCard()
    foreign = bytes.fromhex("A0000000031010")
    card.directory = [DirectoryEntry(foreign, "VISA", 1),
                      DirectoryEntry(bytes.fromhex("D410000003000199"), "CONFIRM", 0x81),
                      DirectoryEntry(card.aid, "LOCALPAY", 2)]
    t = till(ledger, emv_aids=[foreign, card.aid])
    decision = t.pay(present(card), 1000)
    # the VISA entry has priority 1 but this card cannot select it: the next one is taken
    assert decision.approved and decision.card is not None
    assert decision.card.aid == "D4100000030001"


def test_no_directory_falls_back_to_the_aid_list(ledger: Ledger) -> None:
    card = EmvCard()
    card.directory = []
    assert till(ledger).pay(present(card), 1000).approved


def test_a_card_with_no_accepted_application_is_unsupported(ledger: Ledger) -> None:
    # Discover is not in the default [emv] aids: tapping again would not help, so not
    # "unreadable" but "not accepted here"
    card = EmvCard(aid=bytes.fromhex("A0000001523010"))
    decision = till(ledger).pay(present(card), 1000)
    assert decision.reason is Reason.UNSUPPORTED and "no application" in decision.detail
    assert ledger.count() == 0


def test_card_removed_mid_read(ledger: Ledger) -> None:
    decision = till(ledger).pay(present(EmvCard(), remove_after=3), 1000)
    assert decision.reason is Reason.CARD_REMOVED and ledger.count() == 0


def test_garbage_answers_are_unreadable(ledger: Ledger) -> None:
    card = EmvCard()
    card.extra_records[(2, 1)] = bytes.fromhex("7005") + b"\x5a\x08\x94"  # truncated
    decision = till(ledger).pay(present(card), 1000)
    assert decision.reason is Reason.UNREADABLE and PAN not in decision.detail


def test_duplicate_data_object_ends_the_transaction(ledger: Ledger) -> None:
    card = EmvCard()
    card.extra_records[(2, 2)] = bytes.fromhex("70045F240128")  # 5F24 again, in record 2
    assert till(ledger).pay(present(card), 1000).reason is Reason.UNREADABLE


# -- terminal risk management ---------------------------------------------------------------


def test_floor_limit_is_greater_or_equal_and_counts_the_last_amount(ledger: Ledger) -> None:
    t = till(ledger, emv_floor_limit=30_000)
    assert t.pay(present(EmvCard()), 20_000).approved
    # 20,000 logged + 10,000 now = 30,000 >= floor limit: declined, byte 4 bit 8
    second = t.pay(present(EmvCard()), 10_000)
    assert second.reason is Reason.EMV_DECLINED
    assert tvr(second)[3] & 0x80 and "floor limit" in second.card.extra["why"]  # type: ignore[union-attr]
    assert second.card.extra["last_amount"] == 20_000  # type: ignore[union-attr]
    # another card has no logged amount: 10,000 alone is under the limit
    other = EmvCard(pan="9410999988887777")
    assert t.pay(present(other), 10_000).approved


def test_floor_limit_exact_amount(ledger: Ledger) -> None:
    t = till(ledger, emv_floor_limit=5_000)
    assert t.pay(present(EmvCard()), 5_000).reason is Reason.EMV_DECLINED
    assert t.pay(present(EmvCard(pan="9410999988887777")), 4_999).approved


def test_velocity_lcol_ucol(ledger: Ledger) -> None:
    card = EmvCard(atc=7)  # after GPO: ATC 8, LATC 0 -> 8 offline; LCOL 5 < 8 <= UCOL 10
    ok = till(ledger).pay(present(card), 1000)
    assert ok.approved  # the lower limit alone only asks to go online
    assert tvr(ok)[3] & 0x40 and not tvr(ok)[3] & 0x20 and tvr(ok)[1] & 0x08  # new card
    card = EmvCard(atc=10)  # ATC 11 - LATC 0 = 11 > UCOL 10
    declined = till(ledger).pay(present(card), 1000)
    assert declined.reason is Reason.EMV_DECLINED and tvr(declined)[3] & 0x60 == 0x60


def test_velocity_without_latc_sets_both_bits(ledger: Ledger) -> None:
    card = EmvCard()
    card.latc = None  # GET DATA 9F13 answers 6A88
    decision = till(ledger).pay(present(card), 1000)
    assert decision.reason is Reason.EMV_DECLINED and tvr(decision)[3] & 0x60 == 0x60
    assert not tvr(decision)[1] & 0x08  # no LATC, so no "new card" either


def test_no_velocity_when_card_has_no_limits(ledger: Ledger) -> None:
    card = EmvCard(atc=500)
    card.lcol = card.ucol = None
    decision = till(ledger).pay(present(card), 1000)
    assert decision.approved and tvr(decision)[3] == 0


def test_random_selection_declines_offline(ledger: Ledger) -> None:
    t = till(ledger, emv_target_percent=20, emv_max_target_percent=20, emv_random=lambda: 20)
    decision = t.pay(present(EmvCard()), 1000)
    assert decision.reason is Reason.EMV_DECLINED and tvr(decision)[3] & 0x10
    t = till(ledger, emv_target_percent=20, emv_max_target_percent=20, emv_random=lambda: 21)
    assert t.pay(present(EmvCard()), 1000).approved


def test_exception_file_is_the_deny_list(ledger: Ledger) -> None:
    ledger.apply_deny_delta(1, {card_token(DEMO_TOKEN_KEY, "pan", PAN): "stolen"})
    decision = till(ledger).pay(present(EmvCard()), 1000)
    assert decision.reason is Reason.DENY_LISTED and tvr(decision)[0] & 0x10


def test_expired_card(ledger: Ledger) -> None:
    decision = till(ledger).pay(present(EmvCard(expiry="2608")), 1000)  # August 2026
    assert decision.reason is Reason.EMV_DECLINED and tvr(decision)[1] & 0x40
    assert till(ledger).pay(present(EmvCard(expiry="2609")), 1000).approved  # to 30 Sep


def test_validator_tap_with_emv(ledger: Ledger) -> None:
    cfg = DEFAULT.replace("terminal", role="validator", id="B", place="85")
    bus = Terminal(cfg, ledger, DEMO_TOKEN_KEY, clock=lambda: NOW,
                   read_options={"ledger": ledger})
    first = bus.tap(present(EmvCard()))
    assert first.approved and first.entry is not None
    assert first.entry.fields.detail and '"atc":2' in first.entry.fields.detail
    assert bus.tap(present(EmvCard())).outcome == "already_paid"


# -- the TVR table and the rules in isolation ----------------------------------------------


def test_tvr_bits_match_book3_annex_c5() -> None:
    expected = {
        "offline data authentication was not performed": (1, 0x80),
        "ICC data missing": (1, 0x20),
        "card appears on terminal exception file": (1, 0x10),
        "expired application": (2, 0x40),
        "application not yet effective": (2, 0x20),
        "new card": (2, 0x08),
        "transaction exceeds floor limit": (4, 0x80),
        "lower consecutive offline limit exceeded": (4, 0x40),
        "upper consecutive offline limit exceeded": (4, 0x20),
        "transaction selected randomly for online processing": (4, 0x10),
        "merchant forced transaction online": (4, 0x08),
    }
    by_name = {name: bit for bit, name in risk.TVR_BITS.items()}
    for name, bit in expected.items():
        assert by_name[name] == bit, name
    assert (risk.FLOOR_LIMIT, risk.LCOL_EXCEEDED, risk.UCOL_EXCEEDED, risk.RANDOM_SELECTED) == (
        (4, 0x80), (4, 0x40), (4, 0x20), (4, 0x10))
    assert risk.EXCEPTION_FILE == (1, 0x10) and risk.NEW_CARD == (2, 0x08)
    t = Tvr()
    t.set(risk.FLOOR_LIMIT)
    t.set(risk.EXPIRED)
    assert t.hex() == "0040008000"


@pytest.mark.parametrize("amount, rnd, selected", [
    (5_000, 10, True), (5_000, 11, False),       # below threshold: target percent 10
    (10_000, 10, True), (10_000, 11, False),     # at the threshold: still 10
    (20_000, 30, True), (20_000, 31, False),     # halfway: 10 + (50-10)*10000/20000 = 30
    (29_999, 49, True), (29_999, 50, False),     # just under the floor: 49.998
    (30_000, 1, False),                          # at the floor limit: no random selection
])
def test_random_selection_interpolation(amount: int, rnd: int, selected: bool) -> None:
    params = TrmParams(floor_limit=30_000, threshold=10_000, target_percent=10,
                       max_target_percent=50)
    assert risk.randomly_selected(params, amount, rnd) is selected


def test_random_number_only_drawn_below_floor_limit() -> None:
    drawn: list[int] = []

    def rand() -> int:
        drawn.append(1)
        return 99

    params = TrmParams(floor_limit=1000, threshold=500)
    assess(params, TrmInput(amount=1000), rand)
    assert drawn == []
    assess(params, TrmInput(amount=999), rand)
    assert drawn == [1]


def test_iac_can_add_assessed_bits_but_not_oda() -> None:
    params = TrmParams(floor_limit=10**9)
    # IAC-Default asking to decline on "ODA not performed" and on "new card"
    data = TrmInput(amount=100, atc=2, latc=0, lcol=5, ucol=10,
                    iac_default=bytes.fromhex("8008000000"))
    result = assess(params, data, lambda: 99)
    assert result.declined and result.reasons == ["new card"]
    assert result.tvr.hex() == "8008000000" and result.tsi == risk.TSI_TRM_PERFORMED


def test_params_are_checked() -> None:
    with pytest.raises(ValueError):
        TrmParams(target_percent=60, max_target_percent=50)
    with pytest.raises(ValueError):
        TrmParams(floor_limit=100, threshold=200)
