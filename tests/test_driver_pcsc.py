"""The ``pcsc`` backend against the real stack: pyscard -> pcscd -> vpcd -> a card in Python.

Nothing of pyscard or pcscd is mocked: the card is a :class:`drivers.emulators.vpcd_card.VpcdCard`
speaking the vpcd socket protocol, exactly what a card on a reader looks like to pcscd.
Recovery is tested by really stopping and restarting the pcscd the tests started.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers import acr122u, open_reader
from drivers.emulators.emv_card import EmvCard
from drivers.emulators.vpcd_card import (
    ATR_CONTACT_T0,
    ATR_CONTACT_T1,
    ATR_ISO_DEP,
    ATR_STORAGE,
    contactless_atr,
)
from drivers.pcsc import PcscReader, match_reader, parse_atr
from firmware_cfg.config import DEFAULT
from localpay.errors import CardRemovedError, ParseError, ReaderUnavailableError
from offline_ledger import Ledger
from terminal.cards import find_application
from terminal.core import Terminal
from terminal.risk import Reason
from tests.hw_fixtures import PcscStack, pcsc, pcsc_stack  # noqa: F401

TOKEN_KEY = bytes(range(32))
SELECT_PPSE = bytes.fromhex("00a404000e325041592e5359532e444446303100")


def echo(apdu: bytes) -> bytes:
    """A card that answers every command with its own INS and P1 then 90 00."""
    return apdu[1:3] + b"\x90\x00"


@pytest.fixture()
def reader(pcsc: PcscStack) -> Iterator[PcscReader]:  # noqa: F811
    r = PcscReader(pcsc.readers[0][0], debounce_s=1.0)
    yield r
    r.close()


# -- ATR and reader names (pure functions) -------------------------------------------------


@pytest.mark.parametrize(("atr", "protocols", "contactless", "storage"), [
    (ATR_ISO_DEP, (0, 1), True, False),
    (ATR_STORAGE, (0, 1), True, True),
    (ATR_CONTACT_T0, (0,), False, False),
    (ATR_CONTACT_T1, (1,), False, False),
    (contactless_atr(b"\x80\x73"), (0, 1), True, False),
])
def test_atr_parsing(atr: bytes, protocols: tuple[int, ...], contactless: bool,
                     storage: bool) -> None:
    parsed = parse_atr(atr)
    assert parsed.protocols == protocols
    assert parsed.contactless is contactless
    assert parsed.storage is storage
    assert parsed.tck_ok in (True, None)


def test_atr_storage_historical_bytes() -> None:
    parsed = parse_atr(ATR_STORAGE)
    assert parsed.historical.hex() == "804f0ca00000030603000100000000"
    assert parsed.tck_ok is True


@pytest.mark.parametrize("bad", [b"", b"\x3b", b"\x12\x00", bytes.fromhex("3b8f8001804f"),
                                 bytes.fromhex("3b80"), bytes.fromhex("3b0301020304"),
                                 bytes.fromhex("3b8080010101")])
def test_malformed_atr_raises_parse_error(bad: bytes) -> None:
    with pytest.raises(ParseError):
        parse_atr(bad)


def test_atr_with_wrong_check_byte_is_flagged() -> None:
    assert parse_atr(bytes.fromhex("3b80800102")).tck_ok is False


def test_reader_pattern_matching() -> None:
    names = ["Identiv uTrust 3700 F [CCID Interface] 00 00", "ACS ACR122U PICC Interface 00 00",
             "ACS ACR1252 1S CL Reader [ACR1252 Dual Reader PICC] 00 00"]
    assert match_reader(names, "") == names[1]
    assert match_reader(names, "acr122") == names[1]
    assert match_reader(names, "ACS ACR1252*") == names[2]
    assert match_reader(names, "*utrust*") == names[0]
    assert match_reader(names, "omnikey") is None
    assert match_reader([], "") is None


# -- cards through pcscd ---------------------------------------------------------------------


def test_uid_only_card_is_presented_with_its_uid(pcsc: PcscStack,  # noqa: F811
                                                 reader: PcscReader) -> None:
    card = pcsc.card(uid=bytes.fromhex("04a1b2c3d4e5f6"))
    pcsc.insert(card)
    p = reader.poll(10.0)
    assert p is not None and p.kind == "card"
    assert p.uid == bytes.fromhex("04a1b2c3d4e5f6")
    assert p.protocol == "UID" and p.atr == ATR_STORAGE
    assert p.reader == pcsc.readers[0][0]
    found = find_application(p)
    assert found is not None and found[0] == "uid"
    # the pseudo-APDU GET DATA reached the card side, as a contactless reader sends it
    assert card.apdus == [bytes.fromhex("ffca000000")]


def test_apdu_exchange_over_t1_contactless(pcsc: PcscStack,  # noqa: F811
                                           reader: PcscReader) -> None:
    card = pcsc.card(handler=echo)
    pcsc.insert(card)
    p = reader.poll(10.0)
    assert p is not None and p.protocol == "T=1" and p.uid == card.uid
    assert p.channel is not None
    assert p.channel.transmit(bytes.fromhex("00b2010c00")) == bytes.fromhex("b2019000")
    assert reader.transmit(bytes.fromhex("80ca9f3600")) == bytes.fromhex("ca9f9000")
    assert card.apdus[-2:] == [bytes.fromhex("00b2010c00"), bytes.fromhex("80ca9f3600")]


@pytest.mark.parametrize(("atr", "protocol"), [(ATR_CONTACT_T0, "T=0"),
                                               (ATR_CONTACT_T1, "T=1")])
def test_contact_cards_t0_and_t1(pcsc: PcscStack, reader: PcscReader,  # noqa: F811
                                 atr: bytes, protocol: str) -> None:
    emv = EmvCard(contact=True, t0=protocol == "T=0")
    card = pcsc.card(handler=emv.handle, atr=atr)
    pcsc.insert(card)
    p = reader.poll(10.0)
    assert p is not None and p.protocol == protocol and p.atr == atr
    assert p.uid == b""  # a contact card has no UID, and is not sent the contactless GET DATA
    response = reader.transmit(bytes.fromhex("00a404000e315041592e5359532e444446303100"))
    if protocol == "T=0":
        assert response[:1] == b"\x61"  # the T=0 card says how much is waiting
    else:
        assert response[-2:] == b"\x90\x00" and response[0] == 0x6F


def test_emv_card_answers_ppse_through_pcscd(pcsc: PcscStack,  # noqa: F811
                                             reader: PcscReader) -> None:
    card = pcsc.card(handler=EmvCard().handle)
    pcsc.insert(card)
    p = reader.poll(10.0)
    assert p is not None
    response = reader.transmit(SELECT_PPSE)
    assert response[-2:] == b"\x90\x00"
    assert bytes.fromhex("d4100000030001") in response


def test_card_left_on_reader_is_presented_once(pcsc: PcscStack,  # noqa: F811
                                               reader: PcscReader) -> None:
    card = pcsc.card()
    pcsc.insert(card)
    assert reader.poll(10.0) is not None
    assert reader.poll(1.5) is None  # still lying there: not a second tap
    pcsc.pull(card)
    assert reader.poll(1.0) is None
    pcsc.insert(card)  # put back at once, well inside the debounce time: a new tap
    again = reader.poll(10.0)
    assert again is not None and again.uid == card.uid


def test_card_pulled_mid_transaction_gives_card_removed(pcsc: PcscStack,  # noqa: F811
                                                        reader: PcscReader) -> None:
    card = pcsc.card(handler=echo, remove_after=3)  # GET DATA UID, then two APDUs, then gone
    pcsc.insert(card)
    assert reader.poll(10.0) is not None
    assert reader.transmit(bytes.fromhex("00a4040000"))[-2:] == b"\x90\x00"
    assert reader.transmit(bytes.fromhex("00b2010c00"))[-2:] == b"\x90\x00"
    with pytest.raises(CardRemovedError):
        reader.transmit(bytes.fromhex("00b2020c00"))
    with pytest.raises(CardRemovedError):  # and it stays abandoned
        reader.transmit(bytes.fromhex("00b2020c00"))
    # the next card on the same reader is read normally, with no restart of anything
    pcsc.pull(card)
    fresh = pcsc.card(handler=echo, uid=bytes.fromhex("08000001"))
    pcsc.insert(fresh)
    p = reader.poll(10.0)
    assert p is not None and p.uid == bytes.fromhex("08000001")
    assert reader.transmit(bytes.fromhex("00b2010c00")) == bytes.fromhex("b2019000")


def test_exclusive_access_while_a_card_is_in_use(pcsc: PcscStack,  # noqa: F811
                                                 reader: PcscReader) -> None:
    card = pcsc.card(handler=echo)
    pcsc.insert(card)
    assert reader.poll(10.0) is not None
    with closing(PcscReader(pcsc.readers[0][0])) as other:
        assert other.poll(1.0) is None  # the card is ours until we let it go
        reader.close()
        p = other.poll(10.0)
        assert p is not None
        assert other.transmit(bytes.fromhex("00b2010c00")) == bytes.fromhex("b2019000")


def test_shared_mode_holds_a_transaction(pcsc: PcscStack) -> None:  # noqa: F811
    card = pcsc.card(handler=echo)
    pcsc.insert(card)
    with closing(PcscReader(pcsc.readers[0][0], share="shared")) as r:
        p = r.poll(10.0)
        assert p is not None
        assert r.transmit(bytes.fromhex("00b2010c00")) == bytes.fromhex("b2019000")


def test_two_readers_by_pattern(pcsc: PcscStack) -> None:  # noqa: F811
    second_name = pcsc.readers[1][0]
    card = pcsc.card(1, handler=echo, uid=bytes.fromhex("08222222"))
    pcsc.insert(card, 1)
    with closing(PcscReader(second_name)) as r:
        p = r.poll(10.0)
        assert p is not None and p.reader == second_name and p.uid == card.uid


def test_open_reader_by_registry_name(pcsc: PcscStack) -> None:  # noqa: F811
    with open_reader("pcsc", reader=pcsc.readers[0][0]) as r:
        assert isinstance(r, PcscReader)
        assert r.senses == frozenset({"card"})


def test_no_matching_reader_is_described(pcsc: PcscStack) -> None:  # noqa: F811
    with closing(PcscReader("no such reader anywhere")) as r:
        assert r.poll(0.6) is None
        assert "no reader matching 'no such reader anywhere'" in r.describe()
        assert pcsc.readers[0][0] in r.describe()


def test_stop_wakes_a_blocked_poll(pcsc: PcscStack, reader: PcscReader) -> None:  # noqa: F811
    import threading

    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(reader.poll(60.0)))
    t.start()
    reader.stop()
    t.join(10.0)
    assert not t.is_alive() and result == [None]


# -- ACR122U feedback ------------------------------------------------------------------------


def test_acr122u_led_and_buzzer_pseudo_apdus(pcsc: PcscStack) -> None:  # noqa: F811
    card = pcsc.card(handler=echo, reader_apdus=True)
    pcsc.insert(card)
    with closing(PcscReader(pcsc.readers[0][0], feedback=True)) as r:
        assert r.poll(10.0) is not None
        assert r.signal(True) is True
        assert r.signal(False) is True
    assert card.apdus[-2:] == [acr122u.approved(), acr122u.declined()]
    assert acr122u.approved().hex() == "ff0040a80402010101"


def test_no_feedback_on_readers_that_are_not_acr122u(pcsc: PcscStack,  # noqa: F811
                                                     reader: PcscReader) -> None:
    card = pcsc.card(handler=echo, reader_apdus=True)
    pcsc.insert(card)
    assert reader.poll(10.0) is not None
    assert reader.signal(True) is False
    assert not any(acr122u.is_led_buzzer(a) for a in card.apdus)


def test_acr122u_command_bounds() -> None:
    with pytest.raises(ParseError):
        acr122u.led_buzzer(0x100, 1, 1, 1, 0)
    with pytest.raises(ParseError):
        acr122u.led_buzzer(0, 1, 1, 1, 4)


# -- recovery: the service and the reader go away and come back -----------------------------


def test_pcscd_restart_recovers_without_reopening(pcsc: PcscStack,  # noqa: F811
                                                  reader: PcscReader) -> None:
    card = pcsc.card(handler=echo)
    pcsc.insert(card)
    assert reader.poll(10.0) is not None
    pcsc.restart()  # the card's socket dies with the old pcscd
    with pytest.raises(CardRemovedError):
        reader.transmit(bytes.fromhex("00b2010c00"))
    assert reader.poll(0.5) is None  # the service is back; no card yet
    card2 = pcsc.card(handler=echo, uid=bytes.fromhex("08333333"))
    pcsc.insert(card2)
    p = reader.poll(15.0)
    assert p is not None and p.uid == bytes.fromhex("08333333")
    assert reader.transmit(bytes.fromhex("00b2010c00")) == bytes.fromhex("b2019000")


def test_pcscd_down_while_polling_then_back(pcsc: PcscStack,  # noqa: F811
                                            reader: PcscReader) -> None:
    assert reader.poll(0.3) is None
    pcsc.stop()
    assert reader.poll(1.2) is None  # no exception: it waits for the service
    assert "not available" in reader.describe()
    pcsc.start()
    card = pcsc.card(handler=echo)
    pcsc.insert(card)
    p = reader.poll(15.0)
    assert p is not None and p.uid == card.uid


def test_reader_unplugged_and_plugged_back(pcsc: PcscStack,  # noqa: F811
                                           reader: PcscReader) -> None:
    card = pcsc.card()
    pcsc.insert(card)
    assert reader.poll(10.0) is not None
    pcsc.restart(with_readers=False)  # the service stays, the reader is gone
    assert reader.poll(1.2) is None
    assert "no reader matching" in reader.describe()
    pcsc.restart(with_readers=True)  # plugged back
    card2 = pcsc.card(uid=bytes.fromhex("08444444"))
    pcsc.insert(card2)
    p = reader.poll(15.0)
    assert p is not None and p.uid == bytes.fromhex("08444444")


def test_no_service_at_open_is_a_clear_error(pcsc: PcscStack) -> None:  # noqa: F811
    pcsc.stop()
    with pytest.raises(ReaderUnavailableError, match="pcscd"):
        open_reader("pcsc")
    pcsc.start()


# -- end to end: a transaction abandoned mid-way leaves no ledger entry ----------------------


def _validator(tmp_path: Path) -> Terminal:
    cfg = DEFAULT.replace("terminal", id="BUS-TEST-0001", role="validator", place="85")
    ledger = Ledger(tmp_path / "ledger.sqlite", key=Ed25519PrivateKey.generate(),
                    terminal_id=cfg.terminal.id)
    return Terminal(cfg, ledger, TOKEN_KEY)


def test_terminal_declines_card_removed_with_no_ledger_entry(
        pcsc: PcscStack, reader: PcscReader, tmp_path: Path) -> None:  # noqa: F811
    importlib.import_module("terminal.cards_all")  # registers the EMV card application
    validator = _validator(tmp_path)
    assert validator.ledger is not None
    try:
        card = pcsc.card(handler=EmvCard().handle, remove_after=3)  # gone after PPSE + SELECT
        pcsc.insert(card)
        p = reader.poll(10.0)
        assert p is not None
        before = validator.ledger.head.seq
        decision = validator.tap(p)
        assert decision.outcome == "declined" and decision.reason is Reason.CARD_REMOVED
        assert validator.ledger.head.seq == before
        # the same terminal and reader then take the next card normally
        pcsc.pull(card)
        ok = pcsc.card(handler=EmvCard(pan="9410123456781111").handle,
                       uid=bytes.fromhex("08555555"))
        pcsc.insert(ok)
        p2 = reader.poll(10.0)
        assert p2 is not None
        decision2 = validator.tap(p2)
        assert decision2.approved, decision2
        assert validator.ledger.head.seq == before + 1
        assert decision2.card is not None and decision2.card.display == "941012******1111"
    finally:
        validator.ledger.close()
