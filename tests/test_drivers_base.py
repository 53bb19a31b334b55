"""The reader template methods, the registry and redaction, through the virtual backend."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from drivers import BACKENDS, open_reader, redact, wait
from drivers.base import Reader, redact_apdu
from drivers.virtual import VirtualCard, VirtualReader
from localpay.errors import (
    APDUError,
    CardRemovedError,
    ReaderError,
    ReaderTimeoutError,
    ReaderUnavailableError,
)
from localpay.types import Presentation


def test_open_reader_registry() -> None:
    reader = open_reader("virtual", name="till reader")
    try:
        assert isinstance(reader, VirtualReader) and reader.name == "till reader"
    finally:
        reader.close()
    with pytest.raises(ReaderUnavailableError, match="unknown reader kind 'usb'"):
        open_reader("usb")


def test_missing_dependency_is_clear_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(BACKENDS, "fancy", ("drivers.no_such_module", "X", "fancy"))
    with pytest.raises(ReaderUnavailableError, match=r"localpay\[fancy\]"):
        open_reader("fancy")


def test_poll_times_out_and_wait_raises() -> None:
    with VirtualReader() as reader:
        started = time.monotonic()
        assert reader.poll(0.05) is None
        assert time.monotonic() - started >= 0.05
        with pytest.raises(ReaderTimeoutError, match="nothing presented"):
            wait(reader, 0.01)


def test_stop_releases_a_blocked_poll() -> None:
    with VirtualReader() as reader:
        result: list[Presentation | None] = []
        thread = threading.Thread(target=lambda: result.append(reader.poll(None)))
        thread.start()
        time.sleep(0.1)
        reader.stop()
        thread.join(5)
        assert not thread.is_alive() and result == [None]


def test_presentations_carry_time_and_kind() -> None:
    with VirtualReader() as reader:
        reader.present_code("hello")
        reader.present_uid(b"\x01\x02\x03\x04")
        code = wait(reader, 1)
        card = wait(reader, 1)
    assert code.kind == "qr" and code.payload == "hello" and code.sensed_at > 0
    assert card.kind == "card" and card.uid == b"\x01\x02\x03\x04" and card.protocol == "UID"


class Flaky(Reader):
    """A backend that keeps reporting the same card, as a card resting on a reader does."""

    kind = "flaky"
    senses = frozenset({"card"})

    def __init__(self) -> None:
        super().__init__("flaky", debounce_s=10)
        self.answer: bytes = b"\x90\x00"
        self.fail: Exception | None = None

    def _poll_internal(self, timeout: float) -> Presentation | None:
        if self.fail is not None:
            raise self.fail
        return Presentation("card", self.name, uid=b"\xaa", channel=self)

    def _transmit_internal(self, apdu: bytes) -> bytes:
        return self.answer


def test_debounce_and_forget() -> None:
    reader = Flaky()
    assert reader.poll(0.1) is not None
    assert reader.poll(0.1) is None  # the same card, still resting there
    reader.forget()
    assert reader.poll(0.1) is not None
    reader.close()


def test_backend_errors_are_wrapped_once() -> None:
    reader = Flaky()
    reader.fail = OSError("usb gone")
    with pytest.raises(ReaderError, match="usb gone") as err:
        reader.poll(0.1)
    assert isinstance(err.value.__cause__, OSError)
    reader.answer = b"\x90"
    with pytest.raises(APDUError, match="SW1 SW2"):
        reader.transmit(b"\x00\xa4\x04\x00")
    with pytest.raises(APDUError, match="at least 4"):
        reader.transmit(b"\x00")
    reader.close()
    with pytest.raises(ReaderError, match="closed"):
        reader.poll(0.1)


def test_virtual_card_answers_then_leaves() -> None:
    with VirtualReader() as reader:
        reader.present_card(VirtualCard(uid=b"\x01", handler=lambda a: a[:2] + b"\x90\x00",
                                        remove_after=2))
        card = wait(reader, 1)
        assert card.channel is not None
        assert card.channel.transmit(b"\x00\xa4\x04\x00") == b"\x00\xa4\x90\x00"
        assert reader.transmit(b"\x00\xb2\x01\x0c") == b"\x00\xb2\x90\x00"
        with pytest.raises(CardRemovedError):
            reader.transmit(b"\x00\xb2\x02\x0c")
        reader.present_code("x")
        wait(reader, 1)
        with pytest.raises(CardRemovedError):
            reader.transmit(b"\x00\xb2\x02\x0c")


def test_pan_redaction(caplog: pytest.LogCaptureFixture) -> None:
    assert redact("card 9410123456789012 ok") == "card 941012******9012 ok"
    assert redact("amount 15000 id 123456") == "amount 15000 id 123456"
    assert "9410123456789012" not in redact_apdu(bytes.fromhex("5a0894101234567890129000"))
    caplog.set_level(logging.DEBUG, logger="drivers.base")
    with VirtualReader() as reader:
        reader.present_card(VirtualCard(uid=b"\x01", handler=lambda a: bytes.fromhex(
            "70125a0894101234567890125f24032812319000")))
        wait(reader, 1)
        reader.transmit(b"\x00\xb2\x01\x0c\x00")
    assert "94101234567890" not in caplog.text
    assert "<redacted>" in caplog.text
