"""EMVCo merchant-presented mode: the spec's examples, every rule, round trip, the till's code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from localpay.errors import QRFormatError
from terminal.qr import detect, mpm, parse_any
from terminal.qr.crc import crc16, crc16_hex
from tests.strategies_cards import mpm_objects

EXAMPLES = json.loads((Path(__file__).parent / "data" / "mpm_examples.json").read_text("utf-8"))
SPEC = EXAMPLES["valid"][0]["payload"]


def with_crc(body: str) -> str:
    """``body`` (ending before ID 63) with a correct CRC, to test the other rules."""
    return body + "6304" + crc16_hex(body + "6304")


def test_crc_check_value() -> None:
    assert crc16(b"123456789") == 0x29B1  # CRC-16/CCITT-FALSE check value


@pytest.mark.parametrize("case", EXAMPLES["valid"], ids=lambda c: c["name"][:40])
def test_published_examples_parse(case: dict[str, object]) -> None:
    parsed = mpm.parse(str(case["payload"]))
    assert parsed.objects == case["objects"]


def test_spec_example_properties() -> None:
    parsed = mpm.parse(SPEC)
    assert parsed.dynamic and parsed.amount == "23.72" and parsed.currency == "156"
    assert parsed.merchant_name == "BEST TRANSPORT" and parsed.merchant_city == "BEIJING"
    assert parsed.objects["64"] == {"00": "ZH", "01": "最佳运输", "02": "北京"}


def test_length_counts_characters_not_bytes() -> None:
    # "최佳运输" is 4 characters and 12 UTF-8 bytes: its length field must say 04
    assert "0104最佳运输" in SPEC
    broken = with_crc(SPEC[:-8].replace("0104最佳运输", "0112最佳运输"))
    with pytest.raises(QRFormatError, match="bad length"):
        mpm.parse(broken)


def test_crc_is_over_utf8_bytes() -> None:
    body = SPEC[:-4]
    assert crc16_hex(body) == "A13A"
    # over UTF-16 or code points it would differ
    assert f"{crc16(body.encode('utf-16-be')):04X}" != "A13A"


def test_wrong_crc() -> None:
    with pytest.raises(QRFormatError, match="CRC mismatch"):
        mpm.parse(SPEC[:-4] + "A13B")


def test_lower_case_crc_is_accepted() -> None:
    payload = with_crc("000201010211" + "0208ABCDEFGH52045999530341058" "02KR5903ABC6003XYZ")
    assert mpm.parse(payload[:-4] + payload[-4:].lower()).objects["02"] == "ABCDEFGH"


def base(**override: object) -> dict[str, object]:
    objs: dict[str, object] = {"00": "01", "01": "12", "26": {"00": "KR.LOCALPAY", "01": "M1"},
                               "52": "5499", "53": "410", "54": "1000", "58": "KR",
                               "59": "Shop", "60": "Goyang"}
    objs.update(override)
    return objs


def raw(objs: dict[str, object]) -> str:
    """Encode without the checks, so that rule violations can be built."""
    return with_crc(mpm._encode_objects(objs))


@pytest.mark.parametrize("objs, message", [
    ({k: v for k, v in base().items() if k != "52"}, "missing mandatory: Merchant Category"),
    ({k: v for k, v in base().items() if k != "59"}, "missing mandatory: Merchant Name"),
    ({k: v for k, v in base().items() if k != "26"}, "at least one Merchant Account"),
    (base(**{"26": {"01": "M1"}}), "missing mandatory: Globally Unique Identifier"),
    (base(**{"64": {"01": "가게"}}), "missing mandatory: Language Preference"),
    (base(**{"00": "02"}), "Payload Format Indicator is '02'"),
    (base(**{"01": "13"}), "Point of Initiation Method '13'"),
    (base(**{"52": "54A9"}), "bad format: Merchant Category Code"),
    (base(**{"53": "41"}), "bad length: Transaction Currency"),
    (base(**{"54": "1,000"}), "Transaction Amount '1,000'"),
    (base(**{"54": "12345678901234"}), "bad length: Transaction Amount"),
    (base(**{"58": "K1"}), "Country Code"),
    (base(**{"59": "가게"}), "common character set"),
    (base(**{"59": "X" * 26}), "bad length: Merchant Name"),
    (base(**{"60": "X" * 16}), "bad length: Merchant City"),
    (base(**{"55": "04"}), "Tip or Convenience Indicator '04'"),
    (base(**{"55": "02"}), "ID 56"),
    (base(**{"55": "03", "57": "100.50"}), "bad length: Value of Convenience Fee Percentage"),
    (base(**{"55": "03", "57": "0"}), "00.01-99.99"),
    (base(**{"56": "500"}), "ID 56"),
    (base(**{"62": {"09": "AAM"}}), "Additional Consumer Data Request"),
    (base(**{"62": {"11": "1234"}}), "bad length: Merchant Channel"),
    (base(**{"62": {"01": "X" * 26}}), "bad length: Bill Number"),
    (base(**{"26": {"00": "G" * 33}}), "bad length: Globally Unique Identifier"),
])
def test_rule_violations(objs: dict[str, object], message: str) -> None:
    with pytest.raises(QRFormatError, match=message):
        mpm.parse(raw(objs))


def test_pfi_must_be_first() -> None:
    objs = base()
    reordered = {"01": objs.pop("01"), **objs}
    with pytest.raises(QRFormatError, match="must come first"):
        mpm.parse(raw(reordered))


def test_crc_must_be_last() -> None:
    payload = raw(base())
    moved = payload[:-8] + "6104ABCD" + payload[-8:]
    # the CRC is no longer last once something follows it
    with pytest.raises(QRFormatError, match="CRC"):
        mpm.parse(payload + "6104ABCD")
    assert mpm.parse(with_crc(moved[:-8])).objects["61"] == "ABCD"


def test_duplicate_ids() -> None:
    body = mpm._encode_objects(base())
    with pytest.raises(QRFormatError, match="duplicate ID: 59"):
        mpm.parse(with_crc(body + "5904Shop"))
    inner = mpm._encode_objects(base(**{"62": {"05": "R1"}}))
    doubled = inner.replace("62060502R1", "62120502R10502R2")
    with pytest.raises(QRFormatError, match="duplicate ID: 05 appears twice in template 62"):
        mpm.parse(with_crc(doubled))


@pytest.mark.parametrize("payload, message", [
    (with_crc("000201") [:-2], "bad length|CRC"),
    ("0002016304", "bad length"),
    (with_crc("0002015204549953034105802KR5904Shop6006Goyang02"), "bad length"),
    (with_crc("000201XX02AB"), "bad ID"),
    (with_crc("0002010200"), "length 00"),
    (with_crc("0002010299"), "says 99 characters"),
    ("0" * 513, "at most 512"),
])
def test_structure_errors(payload: str, message: str) -> None:
    with pytest.raises(QRFormatError, match=message):
        mpm.parse(payload)


@settings(max_examples=200, deadline=None)
@given(mpm_objects())
def test_round_trip(objs: dict[str, object]) -> None:
    payload = mpm._encode_objects(objs) + "6304"
    if len(payload) + 4 > mpm.MAX_PAYLOAD:
        with pytest.raises(QRFormatError):
            mpm.encode(objs)  # type: ignore[arg-type]
        return
    payload = mpm.encode(objs)  # type: ignore[arg-type]
    parsed = mpm.parse(payload)
    assert {k: v for k, v in parsed.objects.items() if k != "63"} == objs
    assert mpm.encode({k: v for k, v in parsed.objects.items() if k != "63"}) == payload


@given(st.integers(1, 10**12), st.text("0123456789ABCDEF-", min_size=1, max_size=25))
def test_till_code(amount: int, reference: str) -> None:
    payload = mpm.build_dynamic(amount, merchant_name="Ilsan Farm Store", city="Goyang",
                                reference=reference, merchant_id="M0427",
                                name_local="일산농장", city_local="고양")
    parsed = mpm.parse(payload)
    assert parsed.dynamic and parsed.amount == str(amount) and parsed.reference == reference
    assert parsed.currency == "410" and parsed.objects["58"] == "KR"
    assert parsed.objects["64"] == {"00": "KO", "01": "일산농장", "02": "고양"}
    assert detect(payload) == "mpm" and parse_any(payload).mpm == parsed


def test_till_code_refuses_non_ascii_name_and_bad_amounts() -> None:
    with pytest.raises(QRFormatError, match="common character set"):
        mpm.build_dynamic(1000, merchant_name="일산농장", city="Goyang", reference="R",
                          merchant_id="M1")
    for bad in (0, -5, True):
        with pytest.raises(QRFormatError, match="positive integer won"):
            mpm.build_dynamic(bad, merchant_name="A", city="B", reference="R", merchant_id="M")


def test_qr_png_decodes_back(tmp_path: Path) -> None:
    """The drawn code is read back by zbar: what the till shows is what a phone scans."""
    import segno
    from pyzbar.pyzbar import ZBarSymbol
    from pyzbar.pyzbar import decode as zbar_decode

    payload = mpm.build_dynamic(12000, merchant_name="Shop", city="Goyang", reference="R1",
                                merchant_id="M1", name_local="가게")
    qr = segno.make_qr(payload, error="m")
    matrix = [list(row) for row in qr.matrix]
    scale, border = 4, 4
    size = (len(matrix) + 2 * border) * scale
    pixels = bytearray(b"\xff" * size * size)
    for y, row in enumerate(matrix):
        for x, dark in enumerate(row):
            if dark:
                for dy in range(scale):
                    start = ((y + border) * scale + dy) * size + (x + border) * scale
                    pixels[start:start + scale] = b"\x00" * scale
    found = zbar_decode((bytes(pixels), size, size), symbols=[ZBarSymbol.QRCODE])
    assert [f.data.decode("utf-8") for f in found] == [payload]
