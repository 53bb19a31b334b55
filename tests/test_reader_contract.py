"""One contract, every card backend (python-can style): ``virtual``, ``pcsc`` and ``nfc``.

Each backend gets a *bench*: the reader, and a way to put a card in its field and take it
out, through the real stack of that backend (vpcd under pcscd, nfcpy's udp driver).
"""

from __future__ import annotations

import importlib
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers import Reader
from drivers.emulators.emv_card import EmvCard
from drivers.emulators.nfc_emulator import NfcCardEmulator
from drivers.nfc import NfcReader
from drivers.pcsc import PcscReader
from drivers.virtual import VirtualCard, VirtualReader
from firmware_cfg.config import DEFAULT
from localpay.errors import APDUError, CardRemovedError, ReaderError
from offline_ledger import Ledger
from terminal.cards import find_application
from terminal.core import Terminal
from terminal.risk import Reason
from tests.hw_fixtures import PcscStack, pcsc_stack  # noqa: F401

SELECT_PPSE = bytes.fromhex("00a404000e325041592e5359532e444446303100")
Handler = Callable[[bytes], bytes]


@dataclass
class Bench:
    reader: Reader
    #: present(uid, handler or None, remove_after) puts a card in the field
    present: Callable[[bytes, Handler | None, int | None], None]
    take_away: Callable[[], None]
    cleanups: list[Callable[[], None]] = field(default_factory=list)


def _virtual_bench() -> Bench:
    reader = VirtualReader("contract virtual")

    def present(uid: bytes, handler: Handler | None, remove_after: int | None) -> None:
        reader.present_card(VirtualCard(uid=uid, handler=handler, remove_after=remove_after))

    return Bench(reader, present, lambda: None)


def _pcsc_bench(stack: PcscStack) -> Bench:
    stack.ensure_healthy()
    reader = PcscReader(stack.readers[0][0])
    current: list[object] = []

    def present(uid: bytes, handler: Handler | None, remove_after: int | None) -> None:
        # the UID GET DATA the reader sends first counts as one APDU on the card side
        after = None if remove_after is None else remove_after + 1
        card = stack.card(0, handler, uid=uid, remove_after=after)
        stack.insert(card)
        current.append(card)

    def take_away() -> None:
        while current:
            stack.pull(current.pop())  # type: ignore[arg-type]

    return Bench(reader, present, take_away, [stack.remove_cards])


def _nfc_bench() -> Bench:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    reader = NfcReader(f"udp:127.0.0.1:{port}")
    current: list[NfcCardEmulator] = []

    def present(uid: bytes, handler: Handler | None, remove_after: int | None) -> None:
        card = NfcCardEmulator(port, handler, uid=uid, remove_after=remove_after)
        card.insert()
        current.append(card)

    def take_away() -> None:
        while current:
            current.pop().remove()

    return Bench(reader, present, take_away, [take_away])


@pytest.fixture(params=["virtual", "pcsc", "nfc"])
def bench(request: pytest.FixtureRequest) -> Iterator[Bench]:
    if request.param == "virtual":
        b = _virtual_bench()
    elif request.param == "pcsc":
        b = _pcsc_bench(request.getfixturevalue("pcsc_stack"))
    else:
        b = _nfc_bench()
    yield b
    b.reader.close()
    for cleanup in b.cleanups:
        cleanup()


def _validator(tmp_path: Path) -> Terminal:
    importlib.import_module("terminal.cards_all")
    cfg = DEFAULT.replace("terminal", id="BUS-CONTRACT-1", role="validator", place="85")
    ledger = Ledger(tmp_path / "ledger.sqlite", key=Ed25519PrivateKey.generate(),
                    terminal_id=cfg.terminal.id)
    return Terminal(cfg, ledger, bytes(32))


def test_senses_cards(bench: Bench) -> None:
    assert "card" in bench.reader.senses


def test_nothing_presented_gives_none(bench: Bench) -> None:
    assert bench.reader.poll(0.5) is None


def test_uid_card(bench: Bench) -> None:
    bench.present(bytes.fromhex("08a0b0c0"), None, None)
    p = bench.reader.poll(20.0)
    assert p is not None and p.kind == "card" and p.uid == bytes.fromhex("08a0b0c0")
    found = find_application(p)
    assert found is not None and found[0] == "uid"


def test_apdu_round_trip(bench: Bench) -> None:
    bench.present(bytes.fromhex("08a0b0c1"), EmvCard().handle, None)
    p = bench.reader.poll(20.0)
    assert p is not None and p.channel is not None
    response = p.channel.transmit(SELECT_PPSE)
    assert response[-2:] == b"\x90\x00" and bytes.fromhex("d4100000030001") in response


def test_short_apdu_is_refused_before_the_card(bench: Bench) -> None:
    bench.present(bytes.fromhex("08a0b0c2"), EmvCard().handle, None)
    assert bench.reader.poll(20.0) is not None
    with pytest.raises(APDUError):
        bench.reader.transmit(b"\x00\xa4")


def test_card_removed_mid_transaction(bench: Bench) -> None:
    bench.present(bytes.fromhex("08a0b0c3"), EmvCard().handle, 1)
    assert bench.reader.poll(20.0) is not None
    assert bench.reader.transmit(SELECT_PPSE)[-2:] == b"\x90\x00"
    with pytest.raises(CardRemovedError):
        bench.reader.transmit(SELECT_PPSE)


def test_stop_wakes_poll(bench: Bench) -> None:
    out: list[object] = []
    t = threading.Thread(target=lambda: out.append(bench.reader.poll(120.0)))
    t.start()
    bench.reader.stop()
    t.join(15.0)
    assert not t.is_alive() and out == [None]


def test_closed_reader_refuses(bench: Bench) -> None:
    bench.reader.close()
    bench.reader.close()
    with pytest.raises(ReaderError):
        bench.reader.poll(0.1)
    with pytest.raises(ReaderError):
        bench.reader.transmit(SELECT_PPSE)


def test_emv_tap_approved_then_card_removed_declined(bench: Bench, tmp_path: Path) -> None:
    validator = _validator(tmp_path)
    ledger = validator.ledger
    assert ledger is not None
    try:
        bench.present(bytes.fromhex("08a0b0c4"), EmvCard(pan="9410123456784444").handle, None)
        p = bench.reader.poll(20.0)
        assert p is not None
        ok = validator.tap(p)
        assert ok.approved, ok
        assert ok.card is not None and ok.card.display == "941012******4444"
        assert ledger.head.seq == 1
        bench.take_away()
        bench.present(bytes.fromhex("08a0b0c5"), EmvCard(pan="9410123456785555").handle, 2)
        p2 = bench.reader.poll(20.0)
        assert p2 is not None
        gone = validator.tap(p2)
        assert gone.outcome == "declined" and gone.reason is Reason.CARD_REMOVED
        assert ledger.head.seq == 1  # nothing recorded for the abandoned transaction
    finally:
        ledger.close()
