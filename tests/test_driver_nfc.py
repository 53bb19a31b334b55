"""The ``nfc`` backend against real nfcpy: its ``udp`` driver on loopback, a card emulated
by nfcpy on the other end (in a thread, and in a second process).

Nothing of nfcpy is mocked. What cannot exist here is the USB hardware itself: the ACR122U
checks are tested only as far as they do not need a device on the bus (said below).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from drivers import open_reader
from drivers.emulators.emv_card import EmvCard
from drivers.emulators.nfc_emulator import NfcCardEmulator
from drivers.nfc import NfcReader, acr122u_conflict, pcscd_running
from localpay.errors import CardRemovedError, ReaderError, ReaderUnavailableError
from terminal.cards import find_application
from tests.hw_fixtures import PcscStack, pcsc_stack  # noqa: F401

SELECT_PPSE = bytes.fromhex("00a404000e325041592e5359532e444446303100")
AID = bytes.fromhex("d4100000030001")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def port() -> int:
    return free_udp_port()


@pytest.fixture()
def reader(port: int) -> Iterator[NfcReader]:
    r = NfcReader(f"udp:127.0.0.1:{port}")
    yield r
    r.close()


@pytest.fixture()
def cards() -> Iterator[list[NfcCardEmulator]]:
    made: list[NfcCardEmulator] = []
    yield made
    for card in made:
        card.remove()


def test_iso_dep_card_exchanges_apdus(port: int, reader: NfcReader,
                                      cards: list[NfcCardEmulator]) -> None:
    card = NfcCardEmulator(port, EmvCard().handle, uid=bytes.fromhex("08a1a2a3"))
    cards.append(card)
    card.insert()
    p = reader.poll(20.0)
    assert p is not None and p.kind == "card"
    assert p.protocol == "ISO-DEP" and p.uid == bytes.fromhex("08a1a2a3")
    assert p.channel is reader
    response = p.channel.transmit(SELECT_PPSE)
    assert response[-2:] == b"\x90\x00" and AID in response
    assert card.apdus == [SELECT_PPSE]


def test_uid_only_card(port: int, reader: NfcReader, cards: list[NfcCardEmulator]) -> None:
    card = NfcCardEmulator(port, None, uid=bytes.fromhex("08112233"))
    cards.append(card)
    card.insert()
    p = reader.poll(20.0)
    assert p is not None and p.protocol == "UID" and p.channel is None
    assert p.uid == bytes.fromhex("08112233")
    found = find_application(p)
    assert found is not None and found[0] == "uid"
    with pytest.raises(CardRemovedError):
        reader.transmit(SELECT_PPSE)  # a UID card talks no APDUs


def test_seven_byte_uid(port: int, reader: NfcReader, cards: list[NfcCardEmulator]) -> None:
    card = NfcCardEmulator(port, EmvCard().handle, uid=bytes.fromhex("08010203040506"))
    cards.append(card)
    card.insert()
    p = reader.poll(20.0)
    assert p is not None and p.uid == bytes.fromhex("08010203040506")


def test_card_staying_in_field_is_presented_once(port: int, reader: NfcReader,
                                                 cards: list[NfcCardEmulator]) -> None:
    card = NfcCardEmulator(port, EmvCard().handle)
    cards.append(card)
    card.insert()
    assert reader.poll(20.0) is not None
    assert reader.poll(1.5) is None  # still there (presence checks answered)
    card.remove()
    assert reader.poll(2.0) is None  # gone: the reader notices and senses again
    card.insert()
    again = reader.poll(20.0)
    assert again is not None and again.uid == card.uid


def test_card_removed_mid_transaction(port: int, reader: NfcReader,
                                      cards: list[NfcCardEmulator]) -> None:
    card = NfcCardEmulator(port, EmvCard().handle, remove_after=1)
    cards.append(card)
    card.insert()
    assert reader.poll(20.0) is not None
    assert reader.transmit(SELECT_PPSE)[-2:] == b"\x90\x00"
    with pytest.raises(CardRemovedError):
        reader.transmit(bytes.fromhex("00a4040007d410000003000100"))
    with pytest.raises(CardRemovedError):
        reader.transmit(SELECT_PPSE)
    card.remove()
    fresh = NfcCardEmulator(port, EmvCard().handle, uid=bytes.fromhex("08999999"))
    cards.append(fresh)
    fresh.insert()
    p = reader.poll(20.0)
    assert p is not None and p.uid == bytes.fromhex("08999999")
    assert reader.transmit(SELECT_PPSE)[-2:] == b"\x90\x00"


def test_card_emulated_by_a_second_process(port: int, reader: NfcReader) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "drivers.emulators.nfc_emulator", "--port", str(port), "--emv",
         "--uid", "08abcdef"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(b"card on udp port")
        p = reader.poll(20.0)
        assert p is not None and p.uid == bytes.fromhex("08abcdef")
        response = reader.transmit(SELECT_PPSE)
        assert response[-2:] == b"\x90\x00" and AID in response
    finally:
        proc.terminate()
        proc.wait(15)


def test_device_reopens_after_close(port: int, cards: list[NfcCardEmulator]) -> None:
    card = NfcCardEmulator(port, EmvCard().handle)
    cards.append(card)
    for _ in range(3):
        with open_reader("nfc", path=f"udp:127.0.0.1:{port}") as r:
            card.insert()
            p = r.poll(20.0)
            assert p is not None
            assert r.transmit(SELECT_PPSE)[-2:] == b"\x90\x00"
        card.remove()


def test_stop_ends_a_blocked_poll(reader: NfcReader) -> None:
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(reader.poll(120.0)))
    t.start()
    reader.stop()
    t.join(15.0)
    assert not t.is_alive() and result == [None]


def test_closed_reader_refuses_work(port: int) -> None:
    r = NfcReader(f"udp:127.0.0.1:{port}")
    r.close()
    r.close()  # twice is fine
    with pytest.raises(ReaderError):
        r.poll(0.1)


@pytest.mark.parametrize("path", ["usb:ffff:fffe", "tty:NOSUCHTTY:pn532", "bogus:thing"])
def test_missing_device_is_a_clear_error(path: str) -> None:
    with pytest.raises(ReaderUnavailableError, match="cannot open nfc reader"):
        NfcReader(path, open_attempts=1)


def test_acr122u_conflict_is_only_claimed_for_usb_paths() -> None:
    # The positive case needs an ACR122U on the USB bus, which this machine cannot have;
    # what is checked here is that other paths are never blamed on pcscd.
    for path in ("udp:127.0.0.1:1", "tty:AMA0:pn532", "usb:054c:06c1"):
        assert acr122u_conflict(path) is None


def test_pcscd_detection_sees_the_running_service(pcsc_stack: PcscStack) -> None:  # noqa: F811
    assert pcscd_running() is True
