"""BER-TLV codec (EMV Book 3 Annex B) and DOL builder (Book 3 §5.4)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from localpay.errors import TLVError
from terminal import tlv
from terminal.emv import dol
from terminal.tlv import Tlv
from tests.strategies_cards import tlv_lists


@settings(max_examples=300, deadline=None)
@given(tlv_lists())
def test_round_trip_objects(objs: list[Tlv]) -> None:
    assert tlv.decode(tlv.encode(objs)) == objs


@settings(max_examples=300, deadline=None)
@given(tlv_lists())
def test_round_trip_bytes(objs: list[Tlv]) -> None:
    data = tlv.encode(objs)
    assert tlv.encode(tlv.decode(data)) == data


def test_multi_byte_tag_and_long_lengths() -> None:
    value = bytes(range(256)) * 2  # 512 bytes: long form 82 02 00
    data = bytes.fromhex("9F7F820200") + value + bytes.fromhex("DF810103") + b"abc"
    objs = tlv.decode(data)
    assert [o.tag for o in objs] == [0x9F7F, 0xDF8101]
    assert objs[0].value == value and objs[1].value == b"abc"
    assert objs[1].tag_hex == "DF8101"
    assert tlv.encode(objs) == data


def test_constructed_objects_nest() -> None:
    # an FCI as a contactless card returns it: 6F > A5 > BF0C > 61 > 4F
    data = bytes.fromhex("6F1A840E325041592E5359532E4444463031A508BF0C0561034F0101")
    fci = tlv.decode_single(data, 0x6F)
    assert fci.children is not None and fci.constructed
    entry = fci.find(0x61)
    assert entry is not None and entry.find(0x4F) == Tlv(0x4F, b"\x01")
    assert [o.tag for o in tlv.walk([fci])] == [0x6F, 0x84, 0xA5, 0xBF0C, 0x61, 0x4F]


def test_long_form_length_that_is_not_minimal_is_read() -> None:
    assert tlv.decode(bytes.fromhex("5A8103123456")) == [Tlv(0x5A, bytes.fromhex("123456"))]


def test_padding_between_records_objects() -> None:
    data = bytes.fromhex("00005A01120000")
    assert tlv.decode(data, padding=True) == [Tlv(0x5A, b"\x12")]
    # without padding allowed, 00 is a tag and "00 00" an empty object
    assert tlv.decode(bytes.fromhex("0000")) == [Tlv(0x00, b"")]


@pytest.mark.parametrize("hexdata, message", [
    ("5A", "length expected"),
    ("5A05123456", "says 5 bytes"),
    ("9F", "truncated"),
    ("9F8181818101", "longer than 4 bytes"),
    ("5A80", "indefinite"),
    ("5A85", "not supported"),
    ("5A8201", "truncated"),
    ("7003" + "5A05", "only"),
    ("70035A0200", "only 1 remain"),
])
def test_bad_input_raises_one_typed_error(hexdata: str, message: str) -> None:
    with pytest.raises(TLVError, match=message):
        tlv.decode(bytes.fromhex(hexdata))


def test_deep_nesting_is_a_typed_error_not_recursion() -> None:
    data = b""
    for _ in range(200):
        data = tlv.encode_one(0x70, data)
    with pytest.raises(TLVError, match="deeper"):
        tlv.decode(data)


def test_decode_single_wants_exactly_one() -> None:
    with pytest.raises(TLVError, match="expected one"):
        tlv.decode_single(bytes.fromhex("5A01005A0100"))
    with pytest.raises(TLVError, match="expected tag 6F"):
        tlv.decode_single(bytes.fromhex("5A0100"), 0x6F)


def test_non_bytes_input_is_a_typed_error() -> None:
    with pytest.raises(TLVError):
        tlv.decode("5A0100")  # type: ignore[arg-type]


# -- DOL ------------------------------------------------------------------------------------


def test_dol_parse() -> None:
    pdol = bytes.fromhex("9F66049F02069F37045F2A029A03")
    assert dol.parse(pdol) == [(0x9F66, 4), (0x9F02, 6), (0x9F37, 4), (0x5F2A, 2), (0x9A, 3)]
    assert dol.total_length(pdol) == 19


def test_dol_build_fits_each_format() -> None:
    values = {
        0x9F02: dol.bcd(12000, 6),        # n: right aligned
        0x5A: bytes.fromhex("9410123456789012"),  # cn: left aligned, F-padded
        0x50: b"LOCALPAY",                 # an: left aligned, 00-padded / cut right
    }
    entries = [(0x9F02, 8), (0x9F02, 4), (0x5A, 10), (0x50, 4), (0x50, 10), (0x9F37, 4),
               (0x70, 2)]
    out = dol.build(entries, values)
    assert out.hex().upper() == (
        "0000000000012000"            # 9F02 padded left with 00
        "00012000"                    # 9F02 cut on the left
        "9410123456789012FFFF"        # 5A padded right with FF
        "4C4F4341"                    # 50 cut on the right
        "4C4F43414C5041590000"        # 50 padded right with 00
        "00000000"                    # missing: zeros
        "0000"                        # constructed tag: zeros
    )


def test_dol_missing_length_is_typed_error() -> None:
    with pytest.raises(TLVError, match="no length"):
        dol.parse(bytes.fromhex("9F02069F37"))


def test_bcd() -> None:
    assert dol.bcd(12000, 6) == bytes.fromhex("000000012000")
    with pytest.raises(ValueError):
        dol.bcd(10**12, 6)
