"""Edge cases of the money paths that the mutation run (make mutation) showed no test stating.

The parsers: BER-TLV (EMV 4.3 Book 3 Annex B), EMVCo QR consumer-presented mode (CPM v1.1)
and merchant-presented mode (MPM v1.1) with its CRC-16/CCITT-FALSE. Every input here is
built by hand (bytes, Base64, ``ID LL VALUE`` text) and every CRC is computed by the bitwise
reference below, so that no test leans on the code it checks. Refusals are stated with the
exact message: it is what a clerk sees on the till and what a log reader searches for.
"""

from __future__ import annotations

import base64
import re

import pytest

from localpay.errors import QRFormatError, TLVError
from terminal import tlv
from terminal.qr import cpm, mpm
from terminal.qr.crc import crc16, crc16_hex
from terminal.tlv import Tlv


def refused(exc: type[Exception], message: str) -> pytest.RaisesExc[Exception]:
    """``pytest.raises`` for exactly this message (not a part of it)."""
    return pytest.raises(exc, match=f"^{re.escape(message)}$")


# -- CRC-16/CCITT-FALSE ----------------------------------------------------------------------


def ref_crc(data: bytes) -> int:
    """Bit by bit: poly 0x1021, init 0xFFFF, no reflection, no final XOR."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def test_crc_of_every_single_byte_and_the_empty_input() -> None:
    assert crc16(b"") == 0xFFFF
    assert [crc16(bytes([b])) for b in range(256)] == [ref_crc(bytes([b])) for b in range(256)]
    assert crc16(b"123456789") == ref_crc(b"123456789") == 0x29B1


def test_crc_table_is_the_polynomial_shifted_through_each_byte() -> None:
    from terminal.qr import crc

    def entry(byte: int) -> int:
        reg = byte << 8
        for _ in range(8):
            reg = ((reg << 1) ^ 0x1021) & 0xFFFF if reg & 0x8000 else (reg << 1) & 0xFFFF
        return reg

    table = crc._table()
    assert table == tuple(entry(b) for b in range(256)) and len(table) == 256
    assert table[1] == 0x1021 and table[0x80] == 0x9188 and table[0xFF] == 0x1EF0


def test_crc_continues_from_a_given_value() -> None:
    assert crc16(b"56789", crc16(b"1234")) == 0x29B1
    assert crc16(b"\x00\xff" * 40) == ref_crc(b"\x00\xff" * 40)


def test_crc_hex_is_four_upper_case_digits_over_utf8() -> None:
    small = next(f"A{i}6304" for i in range(100_000) if ref_crc(f"A{i}6304".encode()) < 0x1000)
    assert crc16_hex(small) == f"{ref_crc(small.encode()):04X}" and len(crc16_hex(small)) == 4
    text = "0104가게6304"
    assert crc16_hex(text) == f"{ref_crc(text.encode('utf-8')):04X}"
    assert crc16_hex(text) == crc16_hex(text).upper()
    letters = next(f"B{i}6304" for i in range(100_000)
                   if any(c in "ABCDEF" for c in f"{ref_crc(f'B{i}6304'.encode()):04X}"))
    assert crc16_hex(letters) == f"{ref_crc(letters.encode()):04X}"


# -- BER-TLV ----------------------------------------------------------------------------------


@pytest.mark.parametrize("tag, encoded", [
    (0x00, "00"), (0x5A, "5A"), (0x80, "80"), (0xFF, "FF"), (0x100, "0100"), (0x9F36, "9F36"),
    (0xBF0C, "BF0C"), (0xDF8101, "DF8101"), (0xFFFFFFFF, "FFFFFFFF"),
])
def test_tag_bytes_are_minimal_big_endian(tag: int, encoded: str) -> None:
    assert tlv.tag_bytes(tag) == bytes.fromhex(encoded)
    assert Tlv(tag, b"").tag_hex == encoded


@pytest.mark.parametrize("tag, message", [
    (-1, "tag -0x1 is out of range"), (0x100000000, "tag 0x100000000 is out of range"),
])
def test_tag_out_of_range(tag: int, message: str) -> None:
    with refused(TLVError, message):
        tlv.tag_bytes(tag)


@pytest.mark.parametrize("tag, constructed", [
    (0x00, False), (0x01, False), (0x1F, False), (0x20, True), (0x21, True), (0x41, False),
    (0x70, True), (0x9F70, False), (0xBF0C, True), (0xDF8101, False), (0xFF01, True),
])
def test_constructed_is_b6_of_the_first_tag_byte(tag: int, constructed: bool) -> None:
    assert tlv.is_constructed(tag) is constructed
    assert Tlv(tag, b"").constructed is constructed


@pytest.mark.parametrize("n, encoded", [
    (0, "00"), (0x7F, "7F"), (0x80, "8180"), (0xFF, "81FF"), (0x100, "820100"),
    (0xFFFF, "82FFFF"), (0x10000, "83010000"), (0xFFFFFF, "83FFFFFF"),
    (0x1000000, "8401000000"), (0xFFFFFFFF, "84FFFFFFFF"),
])
def test_length_encoding_is_minimal(n: int, encoded: str) -> None:
    assert tlv.encode_length(n) == bytes.fromhex(encoded)


def test_length_beyond_four_bytes_is_refused() -> None:
    with refused(TLVError, "a value of 4294967296 bytes is too long for BER-TLV"):
        tlv.encode_length(0x100000000)


def test_encode_one_and_children_win_over_a_stale_value() -> None:
    assert tlv.encode_one(0x9F36, b"\x00\x07") == bytes.fromhex("9F36020007")
    stale = Tlv(0x70, b"stale", (Tlv(0x5A, b"\x12"),))
    assert tlv.encode([stale, Tlv(0x9F36, b"\x01\x02")]) == bytes.fromhex("70035A01129F36020102")
    assert tlv.encode([Tlv(0x70, b"x", ())]) == bytes.fromhex("7000")
    assert tlv.encode([Tlv(0x5A, b"\x12\x34")]) == bytes.fromhex("5A021234")


@pytest.mark.parametrize("hexdata, i, end, expect", [
    ("5A01", 0, None, (0x5A, 1)),
    ("5E9F", 0, None, (0x5E, 1)),          # low five bits 11110: one byte
    ("1F01", 0, None, (0x1F01, 2)),        # low five bits 11111: more follow
    ("9F3602", 0, None, (0x9F36, 2)),
    ("DF0100", 0, None, (0xDF01, 2)),      # b8 clear on the second byte: the last one
    ("DF810100", 0, None, (0xDF8101, 3)),
    ("DF818101", 0, None, (0xDF818101, 4)),  # four bytes: the most allowed
    ("005A", 1, None, (0x5A, 2)),
    ("9F365A", 0, 3, (0x9F36, 2)),
])
def test_read_tag(hexdata: str, i: int, end: int | None, expect: tuple[int, int]) -> None:
    assert tlv.read_tag(bytes.fromhex(hexdata), i, end) == expect


@pytest.mark.parametrize("hexdata, i, end, message", [
    ("5A", 1, None, "tag expected at offset 1, data ends"),
    ("5A01", 0, 0, "tag expected at offset 0, data ends"),
    ("009F", 1, None, "tag at offset 1 is truncated"),
    ("9F36", 0, 1, "tag at offset 0 is truncated"),
    ("00DF818181", 1, None, "tag at offset 1 is truncated"),
    ("00DF81818101", 1, None, "tag at offset 1 is longer than 4 bytes"),
])
def test_read_tag_refusals(hexdata: str, i: int, end: int | None, message: str) -> None:
    with refused(TLVError, message):
        tlv.read_tag(bytes.fromhex(hexdata), i, end)


@pytest.mark.parametrize("hexdata, i, end, expect", [
    ("00", 0, None, (0, 1)),
    ("7F", 0, None, (127, 1)),
    ("8180", 0, None, (128, 2)),
    ("8105", 0, None, (5, 2)),
    ("820100", 0, None, (256, 3)),
    ("8300FFFF", 0, None, (0xFFFF, 4)),
    ("8400000100", 0, None, (256, 5)),
    ("00008102", 2, None, (2, 4)),
    ("0581", 0, 1, (5, 1)),
])
def test_read_length(hexdata: str, i: int, end: int | None, expect: tuple[int, int]) -> None:
    assert tlv.read_length(bytes.fromhex(hexdata), i, end) == expect


@pytest.mark.parametrize("hexdata, i, end, message", [
    ("05", 1, None, "length expected at offset 1, data ends"),
    ("0505", 1, 1, "length expected at offset 1, data ends"),
    ("000080", 2, None, "indefinite length at offset 2 is not allowed in EMV"),
    ("0085", 1, None, "length of 5 bytes at offset 1 is not supported"),
    ("FF", 0, None, "length of 127 bytes at offset 0 is not supported"),
    ("00820100", 1, 3, "length at offset 1 is truncated"),
    ("0082", 1, None, "length at offset 1 is truncated"),
    ("84010203", 0, None, "length at offset 0 is truncated"),
])
def test_read_length_refusals(hexdata: str, i: int, end: int | None, message: str) -> None:
    with refused(TLVError, message):
        tlv.read_length(bytes.fromhex(hexdata), i, end)


@pytest.mark.parametrize("hexdata, message", [
    ("9F36005A051234", "tag 5A at offset 3 says 5 bytes, only 2 remain"),
    ("70045A051234", "tag 5A at offset 2 says 5 bytes, only 2 remain"),
    ("7003" "9F3601", "tag 9F36 at offset 2 says 1 bytes, only 0 remain"),
    ("5A", "length expected at offset 1, data ends"),
    ("700201", "tag 70 at offset 0 says 2 bytes, only 1 remain"),
])
def test_decode_refusals_name_the_offset(hexdata: str, message: str) -> None:
    with refused(TLVError, message):
        tlv.decode(bytes.fromhex(hexdata))


@pytest.mark.parametrize("hexdata, message", [
    ("70019F3600", "tag at offset 2 is truncated"),        # 9F36 runs past the template's end
    ("70025A810500", "length at offset 3 is truncated"),  # 81 05 runs past the template's end
])
def test_a_template_ends_where_its_length_says(hexdata: str, message: str) -> None:
    # the bytes after the template would complete the tag or length: they must not be read
    with refused(TLVError, message):
        tlv.decode(bytes.fromhex(hexdata))


def test_decode_reads_objects_that_fill_the_data_exactly() -> None:
    assert tlv.decode(bytes.fromhex("5A021234")) == [Tlv(0x5A, b"\x12\x34")]
    assert tlv.decode(bytes.fromhex("5A00")) == [Tlv(0x5A, b"")]
    assert tlv.decode(b"") == []
    nested = tlv.decode(bytes.fromhex("70075A0212349F0000"))
    assert nested == [Tlv(0x70, bytes.fromhex("5A0212349F0000"),
                          (Tlv(0x5A, b"\x12\x34"), Tlv(0x9F00, b"")))]


def test_only_b6_makes_an_object_constructed() -> None:
    # 41 and 5E are primitive: their values are never read as TLV (FF FF would not parse)
    assert tlv.decode(bytes.fromhex("4102FFFF5E01FF")) == [Tlv(0x41, b"\xff\xff"),
                                                           Tlv(0x5E, b"\xff")]
    assert tlv.decode(bytes.fromhex("2100")) == [Tlv(0x21, b"", ())]


def test_decode_takes_any_bytes_like_and_refuses_text() -> None:
    data = bytes.fromhex("5A0112")
    as_bytearray, as_view = bytearray(data), memoryview(data)
    assert tlv.decode(as_bytearray) == [Tlv(0x5A, b"\x12")]  # type: ignore[arg-type]
    assert tlv.decode(as_view) == [Tlv(0x5A, b"\x12")]  # type: ignore[arg-type]
    with refused(TLVError, "BER-TLV input must be bytes, not str"):
        tlv.decode("5A0112")  # type: ignore[arg-type]


def _nested(levels: int) -> bytes:
    data = b""
    for _ in range(levels):
        data = bytes([0x70, len(data)]) + data
    return data


def test_nesting_depth_sixteen_is_read_seventeen_is_refused() -> None:
    objs = tlv.decode(_nested(16))
    assert len(list(tlv.walk(objs))) == 16
    with refused(TLVError, "constructed objects nested deeper than 16"):
        tlv.decode(_nested(17))


def test_padding_is_skipped_inside_templates_too() -> None:
    data = bytes.fromhex("00700500005A0112" "00")
    assert tlv.decode(data, padding=True) == [
        Tlv(0x70, bytes.fromhex("00005A0112"), (Tlv(0x5A, b"\x12"),))]
    # without padding, 00 is a tag, and 00 5A claims 90 bytes
    with refused(TLVError, "tag 0 at offset 0 says 112 bytes, only 7 remain"):
        tlv.decode(data)


def test_find_searches_depth_first_and_goes_on_to_later_siblings() -> None:
    inner = Tlv(0x9F36, b"\x00\x01")
    later = Tlv(0x9F36, b"\x00\x02")
    objs = [Tlv(0x70, b"", (Tlv(0x5A, b"\x12"),)), Tlv(0x71, b"", (inner,)), later]
    assert tlv.find(objs, 0x9F36) is inner
    assert tlv.find(objs, 0x5A) == Tlv(0x5A, b"\x12")
    assert tlv.find(objs, 0x71) is objs[1]
    assert tlv.find(objs, 0x9F27) is None
    assert objs[1].find(0x9F36) is inner and objs[0].find(0x9F36) is None
    assert Tlv(0x5A, b"\x12").find(0x5A) is None  # a primitive has no children to search
    assert [o.tag for o in tlv.walk(objs)] == [0x70, 0x5A, 0x71, 0x9F36, 0x9F36]


def test_decode_single() -> None:
    assert tlv.decode_single(bytes.fromhex("5A0112")) == Tlv(0x5A, b"\x12")
    assert tlv.decode_single(bytes.fromhex("5A0112"), 0x5A) == Tlv(0x5A, b"\x12")
    with refused(TLVError, "expected one data object, found 0"):
        tlv.decode_single(b"")
    with refused(TLVError, "expected one data object, found 2"):
        tlv.decode_single(bytes.fromhex("5A01125A0112"))
    with refused(TLVError, "expected tag 6F, found 5A"):
        tlv.decode_single(bytes.fromhex("5A0112"), 0x6F)


def test_build() -> None:
    assert Tlv.build(0x5A, b"\x12") == Tlv(0x5A, b"\x12", None)
    mutable = bytearray(b"\x12")
    assert Tlv.build(0x5A, mutable) == Tlv(0x5A, b"\x12", None)  # type: ignore[arg-type]
    assert type(Tlv.build(0x5A, mutable).value) is bytes  # type: ignore[arg-type]
    assert Tlv.build(0x70, bytes.fromhex("5A0112")) == Tlv(0x70, bytes.fromhex("5A0112"),
                                                           (Tlv(0x5A, b"\x12"),))
    template = bytearray.fromhex("5A0112")
    assert Tlv.build(0x70, template).children == (Tlv(0x5A, b"\x12"),)  # type: ignore[arg-type]
    assert Tlv.build(0x70, [Tlv(0x5A, b"\x12")]) == Tlv(0x70, bytes.fromhex("5A0112"),
                                                        (Tlv(0x5A, b"\x12"),))
    assert Tlv.build(0x70, []) == Tlv(0x70, b"", ())


# -- CPM ------------------------------------------------------------------------------------


def t(tag: str, *parts: bytes) -> bytes:
    """One BER-TLV object by hand: tag in hex, definite minimal length."""
    value = b"".join(parts)
    n = len(value)
    if n < 0x80:
        length = bytes([n])
    elif n < 0x100:
        length = bytes([0x81, n])
    else:
        length = bytes([0x82, n >> 8, n & 0xFF])
    return bytes.fromhex(tag) + length + value


def b64(*objs: bytes) -> str:
    return base64.b64encode(b"".join(objs)).decode("ascii")


AID = bytes.fromhex("A0000000041010")
AID2 = bytes.fromhex("A0000000031010")
PAN = "5413330089600010"
PFI = t("85", b"CPV01")
PAN_5A = t("5A", bytes.fromhex(PAN))


def app(*kids: bytes, aid: bytes = AID) -> bytes:
    return t("61", t("4F", aid), *kids)


def test_cpm_payload_must_be_text() -> None:
    with refused(QRFormatError, "a CPM payload is text, not bytes"):
        cpm.parse(b64(PFI, app(PAN_5A)).encode())  # type: ignore[arg-type]


def test_cpm_surrounding_white_space_is_dropped() -> None:
    text = b64(PFI, app(PAN_5A))
    assert cpm.parse(f" \t{text}\r\n").payload == text


def _cpm_of_size(raw_bytes: int) -> str:
    head = PFI + app(PAN_5A)
    filler = raw_bytes - len(head) - 5  # tag 9F7F, length 82 xx xx
    return b64(head, t("9F7F", b"x" * filler))


def test_cpm_payload_of_1024_characters_is_read_longer_is_refused() -> None:
    text = _cpm_of_size(768)
    assert len(text) == 1024 and cpm.parse(text).payload == text
    with refused(QRFormatError, "bad length: payload of 1025 characters"):
        cpm.parse(text + "A")
    longer = _cpm_of_size(771)
    with refused(QRFormatError, "bad length: payload of 1028 characters"):
        cpm.parse(longer)


@pytest.mark.parametrize("text", ["hQVDUFYwMQ", "hQVDUFYw!!!!", "hQVD=FYw", "", "===="])
def test_cpm_must_be_padded_base64(text: str) -> None:
    with refused(QRFormatError, "encoding: a CPM payload is Base64 text (RFC 4648) with padding"):
        cpm.parse(text)


def test_cpm_bad_tlv_says_where() -> None:
    with refused(QRFormatError, "BER-TLV: length expected at offset 8, data ends"):
        cpm.parse(b64(PFI, b"\x61"))


@pytest.mark.parametrize("objs, message", [
    ((app(PAN_5A), PFI), "order: the Payload Format Indicator (85) must come first"),
    ((t("85", b"CPV02"), app(PAN_5A)),
     "bad value: Payload Format Indicator is b'CPV02', not 'CPV01'"),
    ((PFI, t("62", PAN_5A)), "missing mandatory: at least one Application Template (61)"),
    ((PFI, app(PAN_5A), t("62"), t("62")),
     "duplicate tag: more than one Common Data Template (62)"),
    ((PFI, app(PAN_5A), PFI), "duplicate tag: more than one Payload Format Indicator (85)"),
    ((PFI, t("61", PAN_5A)), "missing mandatory: no Application Template (61) with an ADF "
     "Name (4F) of 5-16 bytes (CPM §5.1.1.4): template 1: no ADF Name (4F)"),
    ((PFI, t("61", PAN_5A), t("61", t("4F", b"1234"), PAN_5A)),
     "missing mandatory: no Application Template (61) with an ADF Name (4F) of 5-16 bytes "
     "(CPM §5.1.1.4): template 1: no ADF Name (4F); template 2: bad length: ADF Name (4F) "
     "is 4 bytes, must be 5-16"),
    ((PFI, app(PAN_5A), app(aid=AID2)),
     "conditional: no PAN (5A) or track 2 (57) for application template 2 nor in the "
     "common data"),
    ((PFI, app()), "conditional: no PAN (5A) or track 2 (57) for application template 1 nor "
     "in the common data"),
    ((PFI, app(PAN_5A, PAN_5A)), "duplicate tag: 5A appears twice in application template 1"),
    ((PFI, app(), t("62", PAN_5A, PAN_5A)),
     "duplicate tag: 5A appears twice in common data template"),
    ((PFI, app(PAN_5A, t("64"))),
     "structure: template 64 does not belong in application template 1"),
    ((PFI, app(PAN_5A), t("62", t("63"))),
     "structure: template 63 does not belong in common data template"),
    ((PFI, app(PAN_5A), app(PAN_5A, t("5F20", b"A"), aid=AID2)),
     "bad length: Cardholder Name (5F20) in application template 2 is 1 bytes, must be 2-26"),
])
def test_cpm_rules(objs: tuple[bytes, ...], message: str) -> None:
    with refused(QRFormatError, message):
        cpm.parse(b64(*objs))


# CPM v1.1 Table 4 (data objects of templates 61 and 62): tag, name, bytes min-max
CPM_LENGTHS = [
    ("4F", "ADF Name", 5, 16), ("50", "Application Label", 1, 16),
    ("57", "Track 2 Equivalent Data", 1, 19), ("5A", "Application PAN", 1, 10),
    ("5F20", "Cardholder Name", 2, 26), ("5F2D", "Language Preference", 2, 8),
    ("5F50", "Issuer URL", 1, 255), ("9F08", "Application Version Number", 2, 2),
    ("9F12", "Application Preferred Name", 1, 16), ("9F19", "Token Requestor ID", 6, 6),
    ("9F24", "Payment Account Reference", 29, 29), ("9F25", "Last 4 Digits of PAN", 2, 2),
]


def _with(tag: str, value: bytes, where: str) -> str:
    if where == "common":
        if tag in ("5A", "57"):  # not in the application template too (CPM §5.1.1.10)
            return b64(PFI, app(), t("62", t(tag, value)))
        return b64(PFI, app(PAN_5A), t("62", t(tag, value)))
    if tag == "4F":
        return b64(PFI, t("61", t("4F", value), PAN_5A))
    if tag in ("5A", "57"):
        return b64(PFI, app(t(tag, value)))
    return b64(PFI, app(PAN_5A, t(tag, value)))


@pytest.mark.parametrize("tag, name, lo, hi", CPM_LENGTHS)
@pytest.mark.parametrize("where", ["application", "common"])
def test_cpm_data_object_lengths(tag: str, name: str, lo: int, hi: int, where: str) -> None:
    template = "application template 1" if where == "application" else "common data template"
    for n in (lo, hi):
        if (tag, where) == ("4F", "common"):  # every used template has one (CPM §5.1.1.10)
            with refused(QRFormatError, "duplicate tag: 4F is in application template 1 and in "
                                        "the common data template (CPM §5.1.1.10)"):
                cpm.parse(_with(tag, b"1" * n, where))
            continue
        cpm.parse(_with(tag, b"1" * n, where))
    for n in (lo - 1, hi + 1):
        message = f"bad length: {name} ({tag}) in {template} is {n} bytes, must be {lo}-{hi}"
        if (tag, where) == ("4F", "application"):  # skipped, and no other one (§5.1.1.4)
            message = ("missing mandatory: no Application Template (61) with an ADF Name (4F) "
                       f"of 5-16 bytes (CPM §5.1.1.4): template 1: bad length: ADF Name (4F) "
                       f"is {n} bytes, must be 5-16")
        with refused(QRFormatError, message):
            cpm.parse(_with(tag, b"1" * n, where))


def test_cpm_transparent_templates_in_their_place() -> None:
    code = cpm.parse(b64(PFI, app(PAN_5A, t("63", t("9F36", b"\x00\x09"))),
                         t("62", t("64", t("9F26", bytes(8))))))
    assert code.atc == 9 and code.value(0x9F26) == bytes(8)


def test_cpm_track2_in_common_data_serves() -> None:
    code = cpm.parse(b64(PFI, app(), t("62", t("57", bytes.fromhex(PAN + "D2812201")))))
    assert code.pan() == PAN


def test_cpm_encode_refuses_primitive_templates() -> None:
    pfi = Tlv(0x85, b"CPV01")
    good_app = Tlv(0x61, b"", (Tlv(0x4F, AID), Tlv(0x5A, bytes.fromhex(PAN))))
    with refused(QRFormatError, "order: the Payload Format Indicator (85) must come first"):
        cpm.encode([])
    with refused(QRFormatError, "missing mandatory: no Application Template (61) with an ADF "
                                "Name (4F) of 5-16 bytes (CPM §5.1.1.4): template 1: no ADF "
                                "Name (4F)"):
        cpm.encode([pfi, Tlv(0x61, bytes.fromhex("4F07") + AID)])  # primitive: no 4F read
    with refused(QRFormatError, "structure: common data template is not a constructed template"):
        cpm.encode([pfi, good_app, Tlv(0x62, PAN_5A)])
    with refused(QRFormatError, "structure: 63 in application template 1 must be constructed"):
        cpm.encode([pfi, Tlv(0x61, b"", (*(good_app.children or ()), Tlv(0x63, b"\x01")))])
    with refused(QRFormatError, "structure: 64 in common data template must be constructed"):
        cpm.encode([pfi, good_app, Tlv(0x62, b"", (Tlv(0x64, b"\x01"),))])
    assert cpm.encode([pfi, good_app]) == b64(PFI, app(PAN_5A))


def test_cpm_value_reads_the_first_application_then_the_common_data() -> None:
    code = cpm.parse(b64(
        PFI,
        app(PAN_5A, t("50", b"ONE")),
        app(PAN_5A, t("50", b"TWO"), t("9F12", b"SECOND"), aid=AID2),
        t("62", t("5F20", b"AB"), t("64", t("9F36", b"\x01\x02"))),
    ))
    assert code.value(0x50) == b"ONE"
    assert code.value(0x5F20) == b"AB"
    assert code.value(0x9F12) is None  # only the chosen (here the first) template is read
    assert code.atc == 0x0102
    assert code.aid == AID
    assert [a.find(0x4F).value for a in code.applications] == [AID, AID2]  # type: ignore[union-attr]
    assert code.common is not None and code.common.tag == 0x62


@pytest.mark.parametrize("atc, expect", [(b"\x01\x02", 258), (b"\x00\x00", 0), (b"\x01", None),
                                         (b"\x00\x01\x02", None)])
def test_cpm_atc_is_two_bytes_big_endian(atc: bytes, expect: int | None) -> None:
    code = cpm.parse(b64(PFI, app(PAN_5A), t("62", t("64", t("9F36", atc)))))
    assert code.atc == expect


def test_cpm_without_atc_or_common_data() -> None:
    code = cpm.parse(b64(PFI, app(PAN_5A)))
    assert code.atc is None and code.common is None and code.value(0x50) is None


def test_cpm_accessors_of_a_code_built_by_hand() -> None:
    bare = cpm.Cpm((Tlv(0x85, b"CPV01"), Tlv(0x61, b"", ())), "")
    assert bare.aid == b"" and bare.value(0x5A) is None
    with refused(QRFormatError, "conditional: the code carries no PAN (5A) or track 2 (57)"):
        bare.pan()


@pytest.mark.parametrize("pan_hex, pan", [
    ("541333008960001F", "541333008960001"),  # odd length: padded with F (cn)
    ("541333008960", "541333008960"),
    ("5413330089600010123F", "5413330089600010123"),
])
def test_cpm_pan_from_5a(pan_hex: str, pan: str) -> None:
    assert cpm.parse(b64(PFI, app(t("5A", bytes.fromhex(pan_hex))))).pan() == pan


@pytest.mark.parametrize("track2, pan", [
    (PAN + "D2812201", PAN),
    ("541333008960001D2812201F", "541333008960001"),
    (PAN + "D28122011D2345", PAN),  # a D nibble in the discretionary data does not count
])
def test_cpm_pan_from_track2(track2: str, pan: str) -> None:
    assert cpm.parse(b64(PFI, app(t("57", bytes.fromhex(track2))))).pan() == pan


@pytest.mark.parametrize("tag, value", [
    ("5A", "54133300896F"),            # 11 digits
    ("5A", "54133300896000101234"),    # 20 digits
    ("5A", "5413A30089600010"),        # not digits
    ("57", "54133300896D2812201F"),    # 11 digits before the separator
    ("57", "5413330089600010D2812201".replace("D", "E")),  # no separator: not digits
])
def test_cpm_pan_must_be_12_to_19_digits(tag: str, value: str) -> None:
    code = cpm.parse(b64(PFI, app(t(tag, bytes.fromhex(value)))))
    with refused(QRFormatError, "bad value: the code's PAN is not 12-19 digits"):
        code.pan()


def test_cpm_build_writes_every_object_exactly() -> None:
    pan = bytes.fromhex(PAN)
    assert cpm.build(AID, PAN) == b64(PFI, app(t("5A", pan)))
    assert cpm.build(AID, PAN, label="LOCALPAY", atc=0x0102, cryptogram=bytes(range(8))) == b64(
        PFI, t("61", t("4F", AID), t("50", b"LOCALPAY"), t("5A", pan)),
        t("62", t("64", t("9F36", b"\x01\x02"), t("9F26", bytes(range(8))))))
    assert cpm.build(AID, PAN, atc=0) == b64(PFI, app(t("5A", pan)),
                                             t("62", t("64", t("9F36", b"\x00\x00"))))
    assert cpm.build(AID, PAN, cryptogram=b"\x01") == b64(PFI, app(t("5A", pan)),
                                                          t("62", t("64", t("9F26", b"\x01"))))
    assert cpm.build(AID, "541333008960001") == b64(
        PFI, app(t("5A", bytes.fromhex("541333008960001F"))))


@pytest.mark.parametrize("pan, track2", [
    ("5413330089600010", "5413330089600010D2812201"),
    ("541333008960001", "541333008960001D2812201F"),
    ("541333008960", "541333008960D2812201"),
    ("5413330089600", "5413330089600D2812201F"),
    ("5413330089600010123", "5413330089600010123D2812201F"),
])
def test_cpm_build_track2(pan: str, track2: str) -> None:
    code = cpm.build(AID, pan, expiry="2812")
    assert code == b64(PFI, app(t("57", bytes.fromhex(track2))))
    assert cpm.parse(code).pan() == pan


@pytest.mark.parametrize("pan", ["54133300896", "54133300896000101234", "541333008960001A", ""])
def test_cpm_build_refuses_a_bad_pan(pan: str) -> None:
    with refused(QRFormatError, "bad value: the PAN must be 12-19 digits"):
        cpm.build(AID, pan)


# -- MPM ------------------------------------------------------------------------------------


def o(id_: str, value: str) -> str:
    """One ``ID LL VALUE`` object; the length counts characters."""
    return f"{id_}{len(value):02d}{value}"


def seal(body: str) -> str:
    """``body`` with the CRC object ID 63 appended, computed by the reference above."""
    body += "6304"
    return body + f"{ref_crc(body.encode('utf-8')):04X}"


BASE = {"00": "01", "01": "12", "26": o("00", "KR.LOCALPAY"), "52": "5499", "53": "410",
        "58": "KR", "59": "Shop", "60": "Goyang"}


def payload(**change: str | None) -> str:
    """The base code with IDs changed (``None`` drops one), in ID order, sealed."""
    objs: dict[str, str | None] = {**BASE, **{k.lstrip("_"): v for k, v in change.items()}}
    return seal("".join(o(k, v) for k, v in sorted(objs.items()) if v is not None))


def test_mpm_base_payload_parses() -> None:
    code = mpm.parse(payload())
    assert code.objects["26"] == {"00": "KR.LOCALPAY"}
    assert list(code.objects) == ["00", "01", "26", "52", "53", "58", "59", "60", "63"]


def test_mpm_payload_must_be_text() -> None:
    with refused(QRFormatError, "an MPM payload is text, not bytes"):
        mpm.parse(payload().encode())  # type: ignore[arg-type]


def test_mpm_512_characters_are_read_513_refused() -> None:
    room = 512 - len(payload())
    fill: dict[str, str | None] = {}
    for id_ in range(65, 80):
        n = min(99, room - 4)
        if n <= 0:
            break
        fill[f"_{id_}"] = "y" * n
        room -= 4 + n
    full = payload(**fill)
    assert room == 0, "the filler must come out even"
    assert len(full) == 512 and mpm.parse(full).objects["65"] == "y" * 99
    with refused(QRFormatError, "bad length: payload of 513 characters; at most 512"):
        mpm.parse(full + "0")


def test_mpm_shortest_payloads() -> None:
    with refused(QRFormatError, "bad length: payload too short to hold any data object"):
        mpm.parse("0002010")
    with refused(QRFormatError, "missing mandatory: Payload Format Indicator (ID 00)"):
        mpm.parse(seal(""))  # eight characters: the CRC alone


@pytest.mark.parametrize("text, message", [
    ("000201" "6104ABCD", "order: the CRC (ID 63, length 04) must be the last data object"),
    ("000201" "6303ABC", "order: the CRC (ID 63, length 04) must be the last data object"),
    ("000201" "6305ABCDE", "order: the CRC (ID 63, length 04) must be the last data object"),
    ("0002016304ABCD" "520", "bad length: payload ends inside an ID/length at 14"),
    ("000201" "XX02AB" "6304ABCD", "bad ID: payload has ID 'XX' at 6; IDs are two digits"),
    ("000201" "0²02AB" "6304ABCD", "bad ID: payload has ID '0²' at 6; IDs are two digits"),
    ("000201" "02AB" "6304ABCD", "bad length: ID 02 in payload has length 'AB'"),
    ("000201" "020²" "6304ABCD", "bad length: ID 02 in payload has length '0²'"),
    ("000201" "0200" "6304ABCD", "bad length: ID 02 in payload has length 00"),
    ("000201" "029912345", "bad length: ID 02 in payload says 99 characters, 5 remain"),
])
def test_mpm_structure_messages(text: str, message: str) -> None:
    with refused(QRFormatError, message):
        mpm.parse(text)


def test_mpm_crc_mismatch_message() -> None:
    good = payload()
    wrong = "0000" if good[-4:] != "0000" else "0001"
    with refused(QRFormatError, f"CRC mismatch: payload says '{wrong}', computed {good[-4:]}"):
        mpm.parse(good[:-4] + wrong)


def test_mpm_an_earlier_crc_object_is_checked_like_any_other() -> None:
    with refused(QRFormatError, "bad length: CRC (ID 63 in payload) is 3 characters, must be 4"):
        mpm.parse(seal(o("00", "01") + o("63", "ABC") + o("26", o("00", "G"))))
    with refused(QRFormatError, "bad format: CRC (ID 63 in payload) has characters outside the "
                                "common character set"):
        mpm.parse(seal(o("00", "01") + o("63", "AB\tC") + o("26", o("00", "G"))))
    with refused(QRFormatError, "duplicate ID: 63 appears twice in payload"):
        mpm.parse(seal(o("00", "01") + o("63", "ABCD") + o("26", o("00", "G"))))


@pytest.mark.parametrize("drop, name", [
    ("00", "Payload Format Indicator"), ("52", "Merchant Category Code"),
    ("53", "Transaction Currency"), ("58", "Country Code"), ("59", "Merchant Name"),
    ("60", "Merchant City"),
])
def test_mpm_missing_mandatory(drop: str, name: str) -> None:
    with refused(QRFormatError, f"missing mandatory: {name} (ID {drop})"):
        mpm.parse(payload(**{f"_{drop}": None}))


def test_mpm_order_of_the_first_object() -> None:
    text = seal(o("01", "12") + o("00", "01") + "".join(
        o(k, v) for k, v in BASE.items() if k not in ("00", "01")))
    with refused(QRFormatError, "order: the Payload Format Indicator (ID 00) must come first"):
        mpm.parse(text)


# MPM v1.1 Tables 4.1-4.4 (root): ID, name, format, characters min-max
MPM_ROOT = [
    ("00", "Payload Format Indicator", "N", 2, 2),
    ("01", "Point of Initiation Method", "N", 2, 2),
    ("52", "Merchant Category Code", "N", 4, 4),
    ("53", "Transaction Currency", "N", 3, 3),
    ("54", "Transaction Amount", "ans", 1, 13),
    ("55", "Tip or Convenience Indicator", "N", 2, 2),
    ("56", "Value of Convenience Fee Fixed", "ans", 1, 13),
    ("57", "Value of Convenience Fee Percentage", "ans", 1, 5),
    ("58", "Country Code", "ans", 2, 2),
    ("59", "Merchant Name", "ans", 1, 25),
    ("60", "Merchant City", "ans", 1, 15),
    ("61", "Postal Code", "ans", 1, 10),
    ("02", "Merchant Account Information", "ans", 1, 99),
    ("25", "Merchant Account Information", "ans", 1, 99),
]
_COMPANION = {"56": {"_55": "02"}, "57": {"_55": "03"}}


def _root_value(id_: str, n: int) -> str:
    if id_ in ("00",):
        return "01"[:n] if n <= 2 else "010"
    if id_ == "01":
        return "12"[:n] if n <= 2 else "121"
    if id_ == "55":
        return "01"[:n] if n <= 2 else "010"
    if id_ == "57":
        return {1: "5", 5: "12.50"}.get(n, "1" * n)
    if id_ == "58":
        return "KRX"[:n]
    return "1" * n


def _want(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}-{hi}"


@pytest.mark.parametrize("id_, name, fmt, lo, hi", MPM_ROOT)
def test_mpm_root_lengths(id_: str, name: str, fmt: str, lo: int, hi: int) -> None:
    extra = _COMPANION.get(id_, {})
    for n in {lo, hi}:
        assert mpm.parse(payload(**extra, **{f"_{id_}": _root_value(id_, n)})).objects[id_] == \
            _root_value(id_, n)
    for n in (lo - 1, hi + 1):
        if n == 0 or n > 99:
            continue  # no two-digit length says so
        with refused(QRFormatError, f"bad length: {name} (ID {id_} in payload) is {n} "
                                    f"characters, must be {_want(lo, hi)}"):
            mpm.parse(payload(**extra, **{f"_{id_}": _root_value(id_, n)}))


@pytest.mark.parametrize("id_, name, fmt, lo, hi", MPM_ROOT)
def test_mpm_root_formats(id_: str, name: str, fmt: str, lo: int, hi: int) -> None:
    extra = _COMPANION.get(id_, {})
    value = _root_value(id_, hi)
    if fmt == "N":
        bad = value[:-1] + "A"
        message = f"bad format: {name} (ID {id_} in payload) must be digits"
    else:
        bad = value[:-1] + "é"
        message = (f"bad format: {name} (ID {id_} in payload) has characters outside the "
                   "common character set")
    with refused(QRFormatError, message):
        mpm.parse(payload(**extra, **{f"_{id_}": bad}))


@pytest.mark.parametrize("value", [" ", "~", "a !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"])
def test_mpm_common_character_set_is_printable_ascii(value: str) -> None:
    assert mpm.parse(payload(_02=value)).objects["02"] == value


@pytest.mark.parametrize("ids", [["02"], ["25"], ["51"], ["26"]])
def test_mpm_merchant_account_information_anywhere_in_02_to_51(ids: list[str]) -> None:
    change: dict[str, str | None] = {"_26": None}
    for id_ in ids:
        change[f"_{id_}"] = o("00", "G") if int(id_) >= 26 else "ACCT"
    code = mpm.parse(payload(**change))
    assert code.objects[ids[0]] == ({"00": "G"} if int(ids[0]) >= 26 else "ACCT")


def test_mpm_no_merchant_account_information() -> None:
    with refused(QRFormatError, "missing mandatory: at least one Merchant Account Information "
                                "(IDs 02-51)"):
        mpm.parse(payload(_26=None, _62=o("05", "R"), _64=o("00", "KO") + o("01", "가")))


@pytest.mark.parametrize("id_, value, parsed", [
    ("25", "0012AB", "0012AB"),                  # 02-25: text, even when it looks like TLV
    ("26", o("00", "G") + o("01", "é"), {"00": "G", "01": "é"}),  # context data: any string
    ("51", o("00", "G"), {"00": "G"}),
    ("65", "é1", "é1"),                          # 65-79 RFU: any string, never a template
    ("79", "ABCD", "ABCD"),
    ("80", o("00", "G"), {"00": "G"}),           # 80-99 unreserved templates
    ("99", o("00", "G") + o("05", "X"), {"00": "G", "05": "X"}),
])
def test_mpm_ranges_of_ids(id_: str, value: str, parsed: object) -> None:
    assert mpm.parse(payload(**{f"_{id_}": value})).objects[id_] == parsed


@pytest.mark.parametrize("id_", ["26", "51", "80", "99"])
def test_mpm_templates_need_their_globally_unique_identifier(id_: str) -> None:
    with refused(QRFormatError, f"missing mandatory: Globally Unique Identifier (ID 00) in "
                                f"template {id_}"):
        mpm.parse(payload(**{f"_{id_}": o("01", "M1")}))


def test_mpm_template_contents_are_split_and_checked() -> None:
    with refused(QRFormatError, "bad ID: template 26 has ID 'AB' at 0; IDs are two digits"):
        mpm.parse(payload(_26="ABCD"))
    with refused(QRFormatError, "duplicate ID: 00 appears twice in template 26"):
        mpm.parse(payload(_26=o("00", "G") + o("00", "H")))
    with refused(QRFormatError, "bad length: Globally Unique Identifier (ID 00 in template 26) "
                                "is 33 characters, must be 1-32"):
        mpm.parse(payload(_26=o("00", "G" * 33)))
    assert mpm.parse(payload(_26=o("00", "G" * 32))).objects["26"] == {"00": "G" * 32}
    with refused(QRFormatError, "bad format: Globally Unique Identifier (ID 00 in template 26) "
                                "has characters outside the common character set"):
        mpm.parse(payload(_26=o("00", "Gé")))


def test_mpm_point_of_initiation() -> None:
    assert mpm.parse(payload(_01="12")).dynamic is True
    assert mpm.parse(payload(_01="11")).dynamic is False
    assert mpm.parse(payload(_01=None)).dynamic is False
    with refused(QRFormatError, "bad value: Point of Initiation Method '13' is not 11 or 12"):
        mpm.parse(payload(_01="13"))


def test_mpm_values() -> None:
    with refused(QRFormatError, "bad value: Payload Format Indicator is '02', not '01'"):
        mpm.parse(payload(_00="02"))
    with refused(QRFormatError, "bad value: Transaction Amount '1,000' is not a number"):
        mpm.parse(payload(_54="1,000"))
    with refused(QRFormatError, "bad value: Country Code 'K1' is not ISO 3166-1 alpha-2 in "
                                "upper case"):
        mpm.parse(payload(_58="K1"))
    for amount in ("5", "0.50", ".5", "12."):
        assert mpm.parse(payload(_54=amount)).amount == amount


@pytest.mark.parametrize("change, message", [
    ({"_55": "04"}, "bad value: Tip or Convenience Indicator '04'"),
    ({"_55": "00"}, "bad value: Tip or Convenience Indicator '00'"),
    ({"_55": "02"}, "conditional: Value of Convenience Fee Fixed (ID 56) is present exactly "
                    "when the indicator (ID 55) is 02"),
    ({"_56": "500"}, "conditional: Value of Convenience Fee Fixed (ID 56) is present exactly "
                     "when the indicator (ID 55) is 02"),
    ({"_55": "03", "_56": "500", "_57": "5"}, "conditional: Value of Convenience Fee Fixed "
     "(ID 56) is present exactly when the indicator (ID 55) is 02"),
    ({"_55": "03"}, "conditional: Value of Convenience Fee Percentage (ID 57) is present "
                    "exactly when the indicator (ID 55) is 03"),
    ({"_57": "5"}, "conditional: Value of Convenience Fee Percentage (ID 57) is present "
                   "exactly when the indicator (ID 55) is 03"),
    ({"_55": "02", "_56": "500", "_57": "5"}, "conditional: Value of Convenience Fee "
     "Percentage (ID 57) is present exactly when the indicator (ID 55) is 03"),
    ({"_55": "01", "_57": "5"}, "conditional: Value of Convenience Fee Percentage (ID 57) is "
                                "present exactly when the indicator (ID 55) is 03"),
    ({"_55": "02", "_56": "1,5"}, "bad value: convenience fee '1,5' is not a number"),
    ({"_55": "03", "_57": "1.234"},
     "bad value: convenience fee percentage '1.234' is not 00.01-99.99"),
    ({"_55": "03", "_57": "0.00"},
     "bad value: convenience fee percentage '0.00' is not 00.01-99.99"),
    ({"_55": "03", "_57": ".5"},
     "bad value: convenience fee percentage '.5' is not 00.01-99.99"),
])
def test_mpm_tip_rules(change: dict[str, str], message: str) -> None:
    with refused(QRFormatError, message):
        mpm.parse(payload(**change))


@pytest.mark.parametrize("change", [
    {"_55": "01"}, {"_55": "02", "_56": "500"}, {"_55": "02", "_56": "0.5"},
    {"_55": "03", "_57": "0.01"}, {"_55": "03", "_57": "99.99"}, {"_55": "03", "_57": "0.5"},
    {"_55": "03", "_57": "7"},
])
def test_mpm_tips_that_are_read(change: dict[str, str]) -> None:
    code = mpm.parse(payload(**change))
    assert {k.lstrip("_"): v for k, v in change.items()}.items() <= code.objects.items()


# MPM v1.1 Table 4.5 (inside ID 62): ID, name, characters min-max
MPM_ADDITIONAL = [
    ("01", "Bill Number", 1, 25), ("02", "Mobile Number", 1, 25), ("03", "Store Label", 1, 25),
    ("04", "Loyalty Number", 1, 25), ("05", "Reference Label", 1, 25),
    ("06", "Customer Label", 1, 25), ("07", "Terminal Label", 1, 25),
    ("08", "Purpose of Transaction", 1, 25),
    ("09", "Additional Consumer Data Request", 1, 3), ("10", "Merchant Tax ID", 1, 20),
    ("11", "Merchant Channel", 3, 3),
]


def _additional_value(id_: str, n: int) -> str:
    return "AMEA"[:n] if id_ == "09" else "7" * n


@pytest.mark.parametrize("id_, name, lo, hi", MPM_ADDITIONAL)
def test_mpm_additional_data_lengths(id_: str, name: str, lo: int, hi: int) -> None:
    for n in {lo, hi}:
        value = _additional_value(id_, n)
        assert mpm.parse(payload(_62=o(id_, value))).objects["62"] == {id_: value}
    for n in (lo - 1, hi + 1):
        if n == 0:
            continue
        with refused(QRFormatError, f"bad length: {name} (ID {id_} in template 62) is {n} "
                                    f"characters, must be {_want(lo, hi)}"):
            mpm.parse(payload(_62=o(id_, _additional_value(id_, n))))
    with refused(QRFormatError, f"bad format: {name} (ID {id_} in template 62) has characters "
                                "outside the common character set"):
        mpm.parse(payload(_62=o(id_, "é" * lo)))


@pytest.mark.parametrize("request_, ok", [
    ("A", True), ("AME", True), ("EMA", True), ("AX", False), ("AAM", False), ("MM", False),
])
def test_mpm_consumer_data_request(request_: str, ok: bool) -> None:
    text = payload(_62=o("09", request_))
    if ok:
        assert mpm.parse(text).objects["62"] == {"09": request_}
        return
    with refused(QRFormatError, f"bad value: Additional Consumer Data Request {request_!r} must "
                                "use A, M, E once each at most"):
        mpm.parse(text)


def test_mpm_additional_data_rfu_and_payment_system_templates() -> None:
    inner = o("00", "é?") + o("12", "x\ty") + o("49", "漢") + o("50", o("00", "G")) + \
        o("99", o("00", "H") + o("01", "é"))
    assert mpm.parse(payload(_62=inner)).objects["62"] == {
        "00": "é?", "12": "x\ty", "49": "漢", "50": {"00": "G"}, "99": {"00": "H", "01": "é"}}
    for id_ in ("50", "62", "99"):  # templates inside 62 carry their own GUI
        with refused(QRFormatError, f"missing mandatory: Globally Unique Identifier (ID 00) in "
                                    f"template {id_}"):
            mpm.parse(payload(_62=o(id_, o("05", "R1"))))


def test_mpm_language_template() -> None:
    lang = o("00", "ZH") + o("01", "最" * 25) + o("02", "京" * 15) + o("03", "x")
    assert mpm.parse(payload(_64=lang)).objects["64"] == {
        "00": "ZH", "01": "最" * 25, "02": "京" * 15, "03": "x"}
    assert mpm.parse(payload(_64=o("00", "ZH") + o("01", "最")))
    cases = [
        (o("00", "Z") + o("01", "N"),
         "bad length: Language Preference (ID 00 in template 64) is 1 characters, must be 2"),
        (o("00", "ZHO") + o("01", "N"),
         "bad length: Language Preference (ID 00 in template 64) is 3 characters, must be 2"),
        (o("00", "Zé") + o("01", "N"), "bad format: Language Preference (ID 00 in template 64) "
                                       "has characters outside the common character set"),
        (o("01", "N"), "missing mandatory: Language Preference (ID 00) in template 64"),
        (o("00", "ZH"),
         "missing mandatory: Merchant Name - Alternate Language (ID 01) in template 64"),
        (o("00", "ZH") + o("01", "最" * 26), "bad length: Merchant Name - Alternate "
         "Language (ID 01 in template 64) is 26 characters, must be 1-25"),
        (o("00", "ZH") + o("01", "N") + o("02", "京" * 16), "bad length: Merchant City - "
         "Alternate Language (ID 02 in template 64) is 16 characters, must be 1-15"),
    ]
    for lang, message in cases:
        with refused(QRFormatError, message):
            mpm.parse(payload(_64=lang))


def test_mpm_properties() -> None:
    code = mpm.parse(payload(_54="23.72", _62=o("01", "B1") + o("05", "REF-9")))
    assert (code.amount, code.reference, code.currency) == ("23.72", "REF-9", "410")
    assert (code.merchant_name, code.merchant_city) == ("Shop", "Goyang")
    plain = mpm.parse(payload())
    assert plain.amount is None and plain.reference is None
    assert mpm.parse(payload(_62=o("01", "B1"))).reference is None
    empty = mpm.Mpm({}, "")
    assert (empty.merchant_name, empty.merchant_city, empty.currency) == ("", "", "")
    assert empty.amount is None and empty.reference is None and empty.dynamic is False
    assert mpm.Mpm({"62": "05R1"}, "").reference is None
    assert mpm.Mpm({"54": {"00": "1"}}, "").amount is None


def test_mpm_encode_drops_a_given_crc_and_checks_ids_and_lengths() -> None:
    objs: dict[str, mpm.Value] = {"00": "01", "26": {"00": "G"}, "52": "5499", "53": "410",
                                  "58": "KR", "59": "Shop", "60": "Goyang", "63": "0000"}
    expect = seal(o("00", "01") + o("26", o("00", "G")) + o("52", "5499") + o("53", "410") +
                  o("58", "KR") + o("59", "Shop") + o("60", "Goyang"))
    assert mpm.encode(objs) == expect
    assert mpm.encode({**objs, "65": "x" * 99}) == seal(expect[:-8] + o("65", "x" * 99))
    for id_ in ("1", "123", "AB", "A1"):
        with refused(QRFormatError, f"bad ID: {id_!r} is not two digits"):
            mpm.encode({**objs, id_: "x"})
    with refused(QRFormatError, "bad length: ID 65 would be 0 characters"):
        mpm.encode({**objs, "65": ""})
    with refused(QRFormatError, "bad length: ID 65 would be 100 characters"):
        mpm.encode({**objs, "65": "x" * 100})
    with refused(QRFormatError, "bad length: ID 26 would be 0 characters"):
        mpm.encode({**objs, "26": {}})
    with refused(QRFormatError, "bad value: Payload Format Indicator is '02', not '01'"):
        mpm.encode({**objs, "00": "02"})


def test_mpm_till_code_exactly() -> None:
    got = mpm.build_dynamic(1, merchant_name="Shop", city="Goyang", reference="R1",
                            merchant_id="M1")
    assert got == seal(o("00", "01") + o("01", "12") +
                       o("26", o("00", "KR.LOCALPAY") + o("01", "M1")) + o("52", "5499") +
                       o("53", "410") + o("54", "1") + o("58", "KR") + o("59", "Shop") +
                       o("60", "Goyang") + o("62", o("05", "R1")))
    got = mpm.build_dynamic(12000, merchant_name="Farm", city="Ilsan", reference="R2",
                            merchant_id="M2", gui="KR.OTHER", mcc="5411", currency="840",
                            country="US", terminal_label="T7", name_local="가게",
                            city_local="고양", language="KO")
    assert got == seal(o("00", "01") + o("01", "12") +
                       o("26", o("00", "KR.OTHER") + o("01", "M2")) + o("52", "5411") +
                       o("53", "840") + o("54", "12000") + o("58", "US") + o("59", "Farm") +
                       o("60", "Ilsan") + o("62", o("05", "R2") + o("07", "T7")) +
                       o("64", o("00", "KO") + o("01", "가게") + o("02", "고양")))
    got = mpm.build_dynamic(5, merchant_name="A", city="B", reference="R", merchant_id="M",
                            name_local="가", language="ZH")
    assert got.endswith(o("64", o("00", "ZH") + o("01", "가")) + "6304" + got[-4:])
    with refused(QRFormatError, "missing mandatory: a city in the local language (ID 02 in "
                                "template 64) needs the merchant name in it (ID 01)"):
        mpm.build_dynamic(5, merchant_name="A", city="B", reference="R", merchant_id="M",
                          city_local="고양")


@pytest.mark.parametrize("amount", [0, -1, True, False, 1.5, "5"])
def test_mpm_till_code_refuses_amounts_that_are_not_positive_won(amount: object) -> None:
    with refused(QRFormatError, f"bad value: amount {amount!r} must be positive integer won"):
        mpm.build_dynamic(amount, merchant_name="A", city="B", reference="R",  # type: ignore[arg-type]
                          merchant_id="M")


# -- issue #17: codes per EMVCo (the rules, stated here for the mutation run) ----------------

NOT_OURS = bytes.fromhex("D410000003")  # a prefix that neither AID nor AID2 starts with


def test_cpm_accepting_binds_the_code_to_the_template_whose_aid_is_accepted() -> None:
    code = cpm.parse(b64(PFI, app(PAN_5A, t("50", b"ONE")),
                         app(t("5A", bytes.fromhex("4111111111111111")), t("50", b"TWO"),
                             aid=AID2)))
    assert code.chosen == 0 and code.application == code.applications[0]
    second = code.accepting([NOT_OURS, AID2[:5]])
    assert second is not None and second.chosen == 1
    assert (second.aid, second.pan(), second.value(0x50)) == (AID2, "4111111111111111", b"TWO")
    assert second.objects == code.objects and second.payload == code.payload
    first = code.accepting(iter([AID2[:5], AID[:6]]))  # any iterable; the code's order wins
    assert first is not None and first.chosen == 0 and first.pan() == PAN
    assert code.accepting([NOT_OURS]) is None and code.accepting([]) is None
    assert code.accepting([AID + b"\x00"]) is None  # a prefix longer than the AID


def test_cpm_a_template_without_a_usable_adf_name_is_skipped_not_fatal() -> None:
    for bad in (b"", t("4F", b"1234"), t("4F", b"1" * 17), t("50", b"X") + t("4F", b"1234")):
        code = cpm.parse(b64(PFI, t("61", bad, PAN_5A), app(PAN_5A, aid=AID2)))
        assert [a.find(0x4F).value for a in code.applications] == [AID2]  # type: ignore[union-attr]
        assert code.aid == AID2 and code.application is not None
    for edge in (b"1" * 5, b"1" * 16):
        code = cpm.parse(b64(PFI, t("61", t("4F", edge), PAN_5A)))
        assert code.aid == edge and len(code.applications) == 1
    # 4F read among the template's own objects, not inside its transparent template
    inner = t("61", PAN_5A, t("63", t("4F", AID)))
    with refused(QRFormatError, "missing mandatory: no Application Template (61) with an ADF "
                                "Name (4F) of 5-16 bytes (CPM §5.1.1.4): template 1: no ADF "
                                "Name (4F)"):
        cpm.parse(b64(PFI, inner))
    with refused(QRFormatError, "missing mandatory: no Application Template (61) with an ADF "
                                "Name (4F) of 5-16 bytes (CPM §5.1.1.4): template 1: bad "
                                "length: ADF Name (4F) is 17 bytes, must be 5-16; template 2: "
                                "no ADF Name (4F)"):
        cpm.parse(b64(PFI, t("61", t("4F", b"1" * 17), PAN_5A), t("61", PAN_5A)))


def test_cpm_a_skipped_template_is_numbered_but_not_checked() -> None:
    # the skipped one would break the PAN and length rules: it is not read at all
    code = cpm.parse(b64(PFI, t("61", t("5F20", b"X")), app(PAN_5A, aid=AID2)))
    assert code.aid == AID2
    with refused(QRFormatError, "bad length: Cardholder Name (5F20) in application template 2 "
                                "is 1 bytes, must be 2-26"):
        cpm.parse(b64(PFI, t("61", PAN_5A), app(PAN_5A, t("5F20", b"X"), aid=AID2)))
    with refused(QRFormatError, "conditional: no PAN (5A) or track 2 (57) for application "
                                "template 2 nor in the common data"):
        cpm.parse(b64(PFI, t("61", PAN_5A), app(aid=AID2)))


@pytest.mark.parametrize("objs, message", [
    ((PFI, app(PAN_5A), t("62", PAN_5A)), "duplicate tag: 5A is in application template 1 and "
     "in the common data template (CPM §5.1.1.10)"),
    ((PFI, app(PAN_5A), app(PAN_5A, t("9F12", b"N"), aid=AID2), t("62", t("9F12", b"M"))),
     "duplicate tag: 9F12 is in application template 2 and in the common data template "
     "(CPM §5.1.1.10)"),
    ((PFI, app(t("50", b"A"), t("57", bytes.fromhex(PAN + "D2812201"))),
      t("62", t("57", bytes.fromhex(PAN + "D2812201")), t("50", b"B"))),
     "duplicate tag: 50 is in application template 1 and in the common data template "
     "(CPM §5.1.1.10)"),  # the lowest tag of several is named
    ((PFI, app(PAN_5A, t("63", t("9F36", b"\x00\x01"))), t("62", t("64", t("9F36", b"\x00\x01")))),
     "duplicate tag: 9F36 is in application template 1 and in the common data template "
     "(CPM §5.1.1.10)"),
    ((PFI, app(PAN_5A), app(PAN_5A, aid=AID2), app(PAN_5A)),
     "structure: 3 Application Templates (61), at most 2 (CPM Table 3.1)"),
    ((PFI, t("62", t("50", b"X")), app(PAN_5A)),
     "order: the Application Templates (61) come before the Common Data Template (62) "
     "(CPM Table 3.1)"),
    ((PFI, app(PAN_5A), t("62", t("50", b"X")), app(PAN_5A, aid=AID2)),
     "order: the Application Templates (61) come before the Common Data Template (62) "
     "(CPM Table 3.1)"),
])
def test_cpm_issue_17_rules(objs: tuple[bytes, ...], message: str) -> None:
    with refused(QRFormatError, message):
        cpm.parse(b64(*objs))


def test_cpm_what_issue_17_still_reads() -> None:
    # transparent templates 63 and 64 in themselves are no duplicate; unknown tags anywhere
    code = cpm.parse(b64(PFI, app(PAN_5A, t("63", t("9F26", bytes(8)))), t("9F7F", b"x"),
                         t("62", t("64", t("9F36", b"\x00\x05")))))
    assert code.atc == 5 and code.value(0x9F26) == bytes(8)
    two = cpm.parse(b64(PFI, app(PAN_5A), app(PAN_5A, aid=AID2), t("62", t("5F20", b"AB"))))
    assert len(two.applications) == 2 and two.value(0x5F20) == b"AB"
    assert cpm.MAX_APPLICATIONS == 2
    # the PAN in the common data serves both templates; a PAN in a template's own 63 is its own
    code = cpm.parse(b64(PFI, t("61", t("4F", AID), t("63", PAN_5A))))
    assert code.pan() == PAN


def test_cpm_a_code_built_by_hand_with_a_bad_choice() -> None:
    code = cpm.Cpm(cpm.parse(b64(PFI, app(PAN_5A))).objects, "", chosen=1)
    assert code.application is None and code.aid == b"" and code.value(0x5A) is None


@pytest.mark.parametrize("amount", ["0", "00", "0.0", ".0", "0.", "000.00"])
def test_mpm_a_zero_amount_is_refused(amount: str) -> None:
    with refused(QRFormatError, f"bad value: Transaction Amount {amount!r} is zero; when present "
                                "it is more than zero (MPM §4.7.4.1)"):
        mpm.parse(payload(_54=amount))


@pytest.mark.parametrize("fee", ["0", "0.00", ".0"])
def test_mpm_a_zero_fixed_fee_is_refused(fee: str) -> None:
    with refused(QRFormatError, f"bad value: convenience fee {fee!r} is zero; a fixed fee is "
                                "more than zero (MPM §4.7.7.1)"):
        mpm.parse(payload(_55="02", _56=fee))


@pytest.mark.parametrize("amount", ["0.01", "1", "10", ".1", "0.10", "100."])
def test_mpm_amounts_and_fees_above_zero_are_read(amount: str) -> None:
    assert mpm.parse(payload(_54=amount)).amount == amount
    assert mpm.parse(payload(_55="02", _56=amount)).objects["56"] == amount


def test_mpm_country_code_is_two_upper_case_letters() -> None:
    for good in ("KR", "AZ", "ZA"):
        assert mpm.parse(payload(_58=good)).objects["58"] == good
    for bad in ("kr", "Kr", "kR", "K1", "@K", "K[", "a1"):
        with refused(QRFormatError, f"bad value: Country Code {bad!r} is not ISO 3166-1 alpha-2 "
                                    "in upper case"):
            mpm.parse(payload(_58=bad))


def test_mpm_language_preference_is_two_letters() -> None:
    for good in ("KO", "ko", "zH", "Az"):
        lang = mpm.parse(payload(_64=o("00", good) + o("01", "가"))).objects["64"]
        assert lang == {"00": good, "01": "가"}
    for bad in ("K1", "1K", "-O", "O-", "@A", "Z["):
        with refused(QRFormatError, f"bad value: Language Preference {bad!r} (ID 00 in template "
                                    "64) is not two letters (ISO 639-1)"):
            mpm.parse(payload(_64=o("00", bad) + o("01", "가")))


@pytest.mark.parametrize("char", ["\u1100", "\u1161", "\u11a8", "\u11ff", "\ua960", "\ua97f",
                                  "\ud7b0", "\ud7ff"])
@pytest.mark.parametrize("id_", ["01", "02", "03"])
def test_mpm_conjoining_jamo_in_template_64_are_refused(char: str, id_: str) -> None:
    lang = {"00": "KO", "01": "가", id_: "가" + char}
    with refused(QRFormatError, f"bad value: ID {id_} in template 64 has decomposed Hangul "
                                "(conjoining jamo); Hangul is precomposed (MPM §4.5.3.1)"):
        mpm.parse(payload(_64="".join(o(k, v) for k, v in sorted(lang.items()))))


def test_mpm_precomposed_hangul_and_its_neighbours_are_read() -> None:
    # just outside each jamo block, the compatibility jamo and the syllables are read
    for text in ("\u10ff", "\u1200", "\ua95f", "\ua980", "\ud7af", "\u3131", "가힣", "\uac00"):
        lang = mpm.parse(payload(_64=o("00", "KO") + o("01", text) + o("02", text)))
        assert lang.objects["64"] == {"00": "KO", "01": text, "02": text}
    # outside template 64 the language rules do not apply
    assert mpm.parse(payload(_62=o("49", "\u1100"), _80=o("00", "G") + o("01", "\u1100")))


def test_mpm_white_space_around_the_payload_is_dropped() -> None:
    text = payload(_54="1200")
    for around in (" ", "\r\n", "\t ", "\n"):
        code = mpm.parse(around + text + around)
        assert code.payload == text and code.amount == "1200"
    # the limits count the code, not the white space around it
    room = 512 - len(payload())
    fill: dict[str, str | None] = {}
    for id_ in range(65, 80):
        n = min(99, room - 4)
        if n <= 0:
            break
        fill[f"_{id_}"] = "y" * n
        room -= 4 + n
    full = payload(**fill)
    assert len(full) == 512 and mpm.parse(" " + full + "\r\n").payload == full
    with refused(QRFormatError, "bad length: payload too short to hold any data object"):
        mpm.parse("  0002010  ")


def test_mpm_split_ids_for_detection() -> None:
    assert mpm.split_ids(payload()) == ["00", "01", "26", "52", "53", "58", "59", "60", "63"]
    assert mpm.split_ids("010212000201") == ["01", "00"]
    assert mpm.split_ids("01021200020") == [] and mpm.split_ids("HELLO") == []
    assert mpm.split_ids("") == []


def test_mpm_uses_eci_exactly_with_a_language_template() -> None:
    assert mpm.uses_eci(payload(_64=o("00", "KO") + o("01", "가"))) is True
    assert mpm.uses_eci(payload(_64=o("00", "EN") + o("01", "A"))) is True
    assert mpm.uses_eci(payload(_62=o("05", "R"))) is False
    assert mpm.uses_eci(" " + payload() + "\n") is False
    with refused(QRFormatError, "bad length: payload too short to hold any data object"):
        mpm.uses_eci("0002")


def test_mpm_till_code_with_a_local_city_needs_the_local_name() -> None:
    with refused(QRFormatError, "missing mandatory: a city in the local language (ID 02 in "
                                "template 64) needs the merchant name in it (ID 01)"):
        mpm.build_dynamic(5, merchant_name="A", city="B", reference="R", merchant_id="M",
                          city_local="고양")
    got = mpm.build_dynamic(5, merchant_name="A", city="B", reference="R", merchant_id="M",
                            name_local="가게", city_local="고양")
    assert mpm.parse(got).objects["64"] == {"00": "KO", "01": "가게", "02": "고양"}
