"""``KIND[:ARGS]`` reader specs: parsing, formatting and opening."""

from __future__ import annotations

import pytest
from hypothesis import given

from drivers.spec import ReaderSpec, format_reader_spec, open_spec, parse_reader_spec
from drivers.virtual import VirtualReader
from localpay.errors import ConfigError
from tests.strategies_readers import reader_specs


@pytest.mark.parametrize(("text", "kind", "options"), [
    ("virtual", "virtual", {}),
    ("pcsc", "pcsc", {}),
    ("pcsc:ACS ACR122U", "pcsc", {"reader": "ACS ACR122U"}),
    ("pcsc:Identiv*:00", "pcsc", {"reader": "Identiv*:00"}),
    ("nfc", "nfc", {"path": "usb"}),
    ("nfc:usb:072f:2200", "nfc", {"path": "usb:072f:2200"}),
    ("nfc:tty:AMA0:pn532", "nfc", {"path": "tty:AMA0:pn532"}),
    ("nfc:tty:S0:pn532", "nfc", {"path": "tty:S0:pn532"}),
    ("nfc:udp:127.0.0.1:54321", "nfc", {"path": "udp:127.0.0.1:54321"}),
    ("serial:/dev/ttyACM0", "serial", {"port": "/dev/ttyACM0"}),
    ("serial:/dev/ttyACM0:115200", "serial", {"port": "/dev/ttyACM0", "baudrate": 115200}),
    ("serial:loop://", "serial", {"port": "loop://"}),
    ("camera", "camera", {}),
    ("camera:1", "camera", {"index": 1}),
    ("camera:/dev/video2", "camera", {"device": "/dev/video2"}),
    (" PCSC:ACR1252 ", "pcsc", {"reader": "ACR1252"}),
])
def test_parse(text: str, kind: str, options: dict[str, object]) -> None:
    assert parse_reader_spec(text) == ReaderSpec(kind, options)


@pytest.mark.parametrize("text", ["", "   ", "usb", "nfc:bluetooth:1", "serial", "virtual:x",
                                  "camera:front", "serial:/dev/ttyS0:0", "pcsc2"])
def test_malformed_specs_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_reader_spec(text)


@given(reader_specs)
def test_format_and_parse_are_inverse(spec: ReaderSpec) -> None:
    assert parse_reader_spec(format_reader_spec(spec)) == spec


def test_open_spec_opens_the_backend() -> None:
    reader = open_spec("virtual")
    try:
        assert isinstance(reader, VirtualReader)
    finally:
        reader.close()
