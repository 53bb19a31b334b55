"""Issue #17, "Codes, per EMVCo": each rule as exact bytes, with its spec section in the name.

CPM (EMV QRCPS CPM): the template a payment uses, skipped templates, data objects in both 61
and 62, the payload's structure. MPM (EMV QRCPS MPM v1.1): zero amounts and fees, the
language and country codes, precomposed Hangul, white space, the Payload Format Indicator
error. The till's QR symbol (MPM §4.12.1): byte mode, ECI 000026 with template 64, read back
by zbar from the rendered image and read bit by bit from the generated matrix. The CLI's
``qr make`` refuses what it used to drop.

Every code is built by hand (bytes, Base64, ``ID LL VALUE`` text, a bitwise CRC), so that no
test leans on the code it checks.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import pygame
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyzbar.pyzbar import ZBarSymbol
from pyzbar.pyzbar import decode as zbar_decode
from segno import consts as qr_consts
from segno import encoder as qr_encoder

from firmware_cfg.keys import demo_issuer_key
from localpay.errors import QRFormatError
from terminal.qr import campaign, cpm, detect, mpm, parse_any, wallet

ROOT = Path(__file__).resolve().parent.parent


def refused(message: str) -> pytest.RaisesExc[QRFormatError]:
    return pytest.raises(QRFormatError, match=f"^{re.escape(message)}$")


# -- CPM, by hand -----------------------------------------------------------------------------


def t(tag: str, *parts: bytes) -> bytes:
    value = b"".join(parts)
    assert len(value) < 0x80
    return bytes.fromhex(tag) + bytes([len(value)]) + value


def b64(*objs: bytes) -> str:
    return base64.b64encode(b"".join(objs)).decode("ascii")


OURS = bytes.fromhex("D4100000030001")      # the local scheme's AID (accepted here)
FOREIGN = bytes.fromhex("A0000000031010")   # a scheme this terminal does not accept
PAN_1, PAN_2 = "4111111111111111", "9410123456789012"
PFI = t("85", b"CPV01")


def app(aid: bytes, *kids: bytes) -> bytes:
    return t("61", t("4F", aid), *kids)


def pan(digits: str) -> bytes:
    return t("5A", bytes.fromhex(digits + ("F" if len(digits) % 2 else "")))


def test_cpm_5_1_1_7_a_payment_uses_the_template_it_accepted() -> None:
    text = b64(PFI, app(FOREIGN, t("50", b"VISA"), pan(PAN_1)),
               app(OURS, t("50", b"LOCALPAY"), pan(PAN_2)))
    code = cpm.parse(text)
    chosen = code.accepting([OURS[:5]])
    assert chosen is not None
    assert chosen.aid == OURS and chosen.pan() == PAN_2 and chosen.value(0x50) == b"LOCALPAY"
    assert chosen.application == code.applications[1] and chosen.chosen == 1
    assert code.accepting([bytes.fromhex("A000000004")]) is None
    # both accepted: the first in the code's order, the wallet's preference
    assert code.accepting([OURS, FOREIGN]) == code  # chosen 0
    assert code.aid == FOREIGN and code.pan() == PAN_1  # unchosen: the first usable template


@pytest.mark.parametrize("first", [
    t("61", pan(PAN_1)),                               # no ADF Name
    t("61", t("4F", OURS[:4]), pan(PAN_1)),            # 4 bytes
    t("61", t("4F", OURS * 3), pan(PAN_1)),            # 21 bytes
    t("61", t("4F", OURS[:4]), pan(PAN_1), t("5F20", b"X")),  # and otherwise bad: not read
])
def test_cpm_5_1_1_4_a_template_without_a_usable_adf_name_is_skipped(first: bytes) -> None:
    code = cpm.parse(b64(PFI, first, app(OURS, pan(PAN_2))))
    assert [a.find(0x4F).value for a in code.applications] == [OURS]  # type: ignore[union-attr]
    assert code.aid == OURS and code.pan() == PAN_2
    chosen = code.accepting([OURS[:4]])
    assert chosen is not None and chosen.pan() == PAN_2


def test_cpm_5_1_1_4_no_usable_template_is_refused() -> None:
    with refused("missing mandatory: no Application Template (61) with an ADF Name (4F) of "
                 "5-16 bytes (CPM §5.1.1.4): template 1: no ADF Name (4F); template 2: bad "
                 "length: ADF Name (4F) is 17 bytes, must be 5-16"):
        cpm.parse(b64(PFI, t("61", pan(PAN_1)), t("61", t("4F", bytes(17)), pan(PAN_2))))


@pytest.mark.parametrize("objs, tag, where", [
    ((app(OURS, pan(PAN_1)), t("62", pan(PAN_1))), "5A", 1),
    ((app(OURS, pan(PAN_1), t("50", b"A")), t("62", t("50", b"B"))), "50", 1),
    ((app(FOREIGN, pan(PAN_1)), app(OURS, t("5F20", b"AB")), t("62", t("5F20", b"CD"))),
     "5F20", 2),
    # inside the transparent templates 63 and 64 too
    ((app(OURS, pan(PAN_1), t("63", t("9F36", b"\x00\x01"))),
      t("62", t("64", t("9F36", b"\x00\x02")))), "9F36", 1),
])
def test_cpm_5_1_1_10_a_data_object_in_61_and_in_62_is_refused(
        objs: tuple[bytes, ...], tag: str, where: int) -> None:
    with refused(f"duplicate tag: {tag} is in application template {where} and in the common "
                 "data template (CPM §5.1.1.10)"):
        cpm.parse(b64(PFI, *objs))


def test_cpm_5_1_1_10_a_skipped_template_is_not_compared() -> None:
    code = cpm.parse(b64(PFI, t("61", pan(PAN_1)), app(OURS), t("62", pan(PAN_2))))
    assert code.pan() == PAN_2


def test_cpm_table_3_1_at_most_two_application_templates() -> None:
    two = (app(OURS, pan(PAN_1)), app(FOREIGN, pan(PAN_2)))
    assert len(cpm.parse(b64(PFI, *two)).applications) == 2
    with refused("structure: 3 Application Templates (61), at most 2 (CPM Table 3.1)"):
        cpm.parse(b64(PFI, *two, app(OURS, pan(PAN_2))))


@pytest.mark.parametrize("objs", [
    (t("62", pan(PAN_1)), app(OURS)),
    (app(OURS, pan(PAN_1)), t("62", t("50", b"X")), app(FOREIGN, pan(PAN_2))),
])
def test_cpm_table_3_1_application_templates_come_before_the_common_data(
        objs: tuple[bytes, ...]) -> None:
    with refused("order: the Application Templates (61) come before the Common Data Template "
                 "(62) (CPM Table 3.1)"):
        cpm.parse(b64(PFI, *objs))


aids = st.binary(min_size=5, max_size=16)
pans = st.text("0123456789", min_size=12, max_size=19)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(aids, pans), min_size=1, max_size=2, unique_by=lambda a: a[0][:5]),
       st.sampled_from([b"", t("4F", b"1234"), t("4F", bytes(17))]), st.data())
def test_cpm_property_accepting_reads_only_the_accepted_template(
        templates: list[tuple[bytes, str]], skipped: bytes, data: st.DataObject) -> None:
    """Whichever template is accepted, its AID and PAN are the ones read; a template with
    no usable ADF Name in front changes nothing (CPM §5.1.1.4, §5.1.1.7)."""
    objs = [app(aid, pan(digits)) for aid, digits in templates]
    if skipped and len(objs) < 2:
        objs.insert(0, t("61", skipped, pan(PAN_1)))
    code = cpm.parse(b64(PFI, *objs))
    k = data.draw(st.integers(0, len(templates) - 1))
    chosen = code.accepting([templates[k][0][:5]])
    assert chosen is not None
    assert (chosen.aid, chosen.pan()) == (templates[k][0], templates[k][1])


# -- MPM, by hand -----------------------------------------------------------------------------


def ref_crc(data: bytes) -> int:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def o(id_: str, value: str) -> str:
    return f"{id_}{len(value):02d}{value}"


def seal(body: str) -> str:
    body += "6304"
    return body + f"{ref_crc(body.encode('utf-8')):04X}"


BASE = {"00": "01", "01": "12", "26": o("00", "KR.LOCALPAY"), "52": "5499", "53": "410",
        "58": "KR", "59": "Shop", "60": "Goyang"}


def payload(**change: str | None) -> str:
    objs: dict[str, str | None] = {**BASE, **{k.lstrip("_"): v for k, v in change.items()}}
    return seal("".join(o(k, v) for k, v in sorted(objs.items()) if v is not None))


@pytest.mark.parametrize("amount", ["0", "00", "0.00", ".0", "0.", "0000000000.00"])
def test_mpm_4_7_4_1_a_transaction_amount_of_zero_is_refused(amount: str) -> None:
    with refused(f"bad value: Transaction Amount {amount!r} is zero; when present it is more "
                 "than zero (MPM §4.7.4.1)"):
        mpm.parse(payload(_54=amount))
    assert mpm.parse(payload(_54="0.01")).amount == "0.01"


@pytest.mark.parametrize("fee", ["0", "0.0", ".00"])
def test_mpm_4_7_7_1_a_fixed_convenience_fee_of_zero_is_refused(fee: str) -> None:
    with refused(f"bad value: convenience fee {fee!r} is zero; a fixed fee is more than zero "
                 "(MPM §4.7.7.1)"):
        mpm.parse(payload(_55="02", _56=fee))
    assert mpm.parse(payload(_55="02", _56="0.5")).objects["56"] == "0.5"


@pytest.mark.parametrize("pref", ["K1", "1K", "-O"])
def test_mpm_64_00_language_preference_is_two_letters(pref: str) -> None:
    with refused(f"bad value: Language Preference {pref!r} (ID 00 in template 64) is not two "
                 "letters (ISO 639-1)"):
        mpm.parse(payload(_64=o("00", pref) + o("01", "가게")))
    assert mpm.parse(payload(_64=o("00", "ko") + o("01", "가게"))).objects["64"] == {
        "00": "ko", "01": "가게"}


@pytest.mark.parametrize("country", ["kr", "Kr", "kR"])
def test_mpm_58_country_code_is_upper_case(country: str) -> None:
    with refused(f"bad value: Country Code {country!r} is not ISO 3166-1 alpha-2 in upper "
                 "case"):
        mpm.parse(payload(_58=country))


@pytest.mark.parametrize("id_, text", [("01", "일산농장"), ("02", "고양"), ("03", "가")])
def test_mpm_4_5_3_1_hangul_in_template_64_is_precomposed(id_: str, text: str) -> None:
    lang = {"00": "KO", "01": "가게", id_: unicodedata.normalize("NFD", text)}
    assert len(lang[id_]) > len(text)  # conjoining jamo
    with refused(f"bad value: ID {id_} in template 64 has decomposed Hangul (conjoining "
                 "jamo); Hangul is precomposed (MPM §4.5.3.1)"):
        mpm.parse(payload(_64="".join(o(k, v) for k, v in sorted(lang.items()))))
    lang[id_] = text
    assert mpm.parse(payload(_64="".join(o(k, v) for k, v in sorted(lang.items())))
                     ).objects["64"][id_] == text  # type: ignore[index]


@settings(max_examples=100, deadline=None)
@given(st.text(st.characters(min_codepoint=0xAC00, max_codepoint=0xD7A3), min_size=1,
               max_size=12))
def test_mpm_property_precomposed_hangul_is_read_decomposed_refused(name: str) -> None:
    """MPM §4.5.3.1: any Hangul syllables are read as they are; their NFD never is."""
    assert mpm.parse(payload(_64=o("00", "KO") + o("01", name))).objects["64"] == {
        "00": "KO", "01": name}
    decomposed = unicodedata.normalize("NFD", name)[:25]
    with pytest.raises(QRFormatError, match=r"MPM §4\.5\.3\.1"):
        mpm.parse(payload(_64=o("00", "KO") + o("01", decomposed)))


@settings(max_examples=100, deadline=None)
@given(st.from_regex(r"\A[0-9]{1,6}(\.[0-9]{0,2})?\Z"))
def test_mpm_property_an_amount_is_read_exactly_when_it_is_not_zero(amount: str) -> None:
    """MPM §4.7.4.1: the amount, when present, is more than zero."""
    if float(amount) == 0:
        with pytest.raises(QRFormatError, match=r"is zero; when present"):
            mpm.parse(payload(_54=amount))
    else:
        assert mpm.parse(payload(_54=amount)).amount == amount


SPACE = st.text(" \t\r\n\x0b\x0c", max_size=4)


@settings(max_examples=60, deadline=None)
@given(SPACE, SPACE)
def test_whitespace_around_a_scanned_payload_is_stripped_for_every_format(
        before: str, after: str) -> None:
    codes = {
        "mpm": payload(_54="1200"),
        "cpm": b64(PFI, app(OURS, pan(PAN_2))),
        "wallet": wallet.make(demo_issuer_key(), "wallet-01", now=1_790_000_000),
        "campaign": campaign.make(demo_issuer_key(), "spring", "wallet-01", 5,
                                  valid_from=1_790_000_000),
    }
    for kind, text in codes.items():
        scanned = before + text + after
        assert detect(scanned) == kind
        parsed = parse_any(scanned)
        assert parsed.kind == kind
    assert mpm.parse(before + codes["mpm"] + after).payload == codes["mpm"]
    assert parse_any(before + codes["mpm"] + after).mpm == mpm.parse(codes["mpm"])


@pytest.mark.parametrize("text, message", [
    (payload(_00="02"), "bad value: Payload Format Indicator is '02', not '01'"),
    (payload(_00="1"), "bad length: Payload Format Indicator (ID 00 in payload) is 1 "
                       "characters, must be 2"),
    ("0002" + "01" + "6304ZZZZ", "CRC mismatch: payload says 'ZZZZ', computed "
                                 + f"{ref_crc(b'0002016304'):04X}"),
    (seal(o("01", "12") + o("00", "01") + "".join(
        o(k, v) for k, v in BASE.items() if k not in ("00", "01"))),
     "order: the Payload Format Indicator (ID 00) must come first"),
    (seal(o("26", o("00", "G")) + o("00", "01")),
     "missing mandatory: Merchant Category Code (ID 52)"),
])
def test_mpm_a_bad_payload_format_indicator_is_named_not_unknown_format(
        text: str, message: str) -> None:
    assert detect(text) == "mpm"
    with refused(message):
        parse_any(text)


def test_text_that_is_no_run_of_data_objects_is_still_unknown() -> None:
    for text in ("12345678", "0102AB", "HELLO", "", "5802KR"):
        with refused("unknown QR format: not an EMVCo MPM/CPM code nor a wallet code"):
            detect(text)
    assert mpm.split_ids("0002010102AB") == ["00", "01"]
    assert mpm.split_ids("0002010102A") == [] and mpm.split_ids("") == []


# -- the till's QR symbol: byte mode, ECI 000026 with template 64 (MPM §4.12.1) ---------------

_MASKS = [
    lambda i, j: (i + j) % 2 == 0, lambda i, j: i % 2 == 0, lambda i, j: j % 3 == 0,
    lambda i, j: (i + j) % 3 == 0, lambda i, j: (i // 2 + j // 3) % 2 == 0,
    lambda i, j: (i * j) % 2 + (i * j) % 3 == 0,
    lambda i, j: ((i * j) % 2 + (i * j) % 3) % 2 == 0,
    lambda i, j: ((i + j) % 2 + (i * j) % 3) % 2 == 0,
]  # ISO/IEC 18004:2015 Table 10, i the row, j the column


def read_bit_stream(matrix: Sequence[Sequence[int]]) -> str:
    """The data bit stream of a QR symbol, read from its modules (ISO/IEC 18004 §7.7-7.9):
    format information, unmasking, the two-module column walk, de-interleaving the blocks.
    segno supplies only the layout of the function patterns and the block table."""
    n = len(matrix)
    version = (n - 17) // 4
    found = []
    for error in (qr_consts.ERROR_LEVEL_L, qr_consts.ERROR_LEVEL_M, qr_consts.ERROR_LEVEL_Q,
                  qr_consts.ERROR_LEVEL_H):
        for mask in range(8):
            blank = qr_encoder.make_matrix(n, n, reserve_regions=False, add_timing=False)
            qr_encoder.add_format_info(blank, version, error, mask)
            if all(blank[i][j] == 0x2 or blank[i][j] == matrix[i][j]
                   for i in range(n) for j in range(n)):
                found.append((error, mask))
    assert len(found) == 1, found
    error, mask = found[0]
    layout = qr_encoder.make_matrix(n, n)
    qr_encoder.add_finder_patterns(layout, n, n)
    qr_encoder.add_alignment_patterns(layout, n, n)
    bits = []
    col, upwards = n - 1, True
    while col > 0:
        if col == 6:  # the vertical timing pattern
            col -= 1
        for i in (range(n - 1, -1, -1) if upwards else range(n)):
            for j in (col, col - 1):
                if layout[i][j] == 0x2:
                    bits.append(matrix[i][j] ^ int(_MASKS[mask](i, j)))
        upwards = not upwards
        col -= 2
    words = [int("".join(map(str, bits[k:k + 8])), 2) for k in range(0, len(bits) - 7, 8)]
    sizes = [ec.num_data for ec in qr_consts.ECC[version][error] for _ in range(ec.num_blocks)]
    blocks: list[list[int]] = [[] for _ in sizes]
    it = iter(words)
    for k in range(max(sizes)):
        for b, size in enumerate(sizes):
            if k < size:
                blocks[b].append(next(it))
    return "".join(f"{w:08b}" for block in blocks for w in block)


def segments(matrix: Sequence[Sequence[int]]) -> tuple[int | None, int, bytes]:
    """(ECI designator or None, mode indicator, data) of a one-segment symbol."""
    bits = read_bit_stream(matrix)
    eci = None
    if bits[:4] == "0111":
        assert bits[4] == "0", "a one-byte ECI designator (000000-000127)"
        eci, bits = int(bits[4:12], 2), bits[12:]
    mode = int(bits[:4], 2)
    count_bits = 8 if (len(matrix) - 17) // 4 < 10 else 16
    count = int(bits[4:4 + count_bits], 2)
    start = 4 + count_bits
    data = bytes(int(bits[start + 8 * k:start + 8 * k + 8], 2) for k in range(count))
    assert bits[start + 8 * count:start + 8 * count + 4] in ("0000", ""), "one segment only"
    return eci, mode, data


def zbar_read(surface: pygame.Surface) -> list[tuple[str, bytes]]:
    width, height = surface.get_size()
    grey = pygame.image.tobytes(surface, "RGB")[::3]
    return [(f.type, f.data) for f in zbar_decode((grey, width, height),
                                                  symbols=[ZBarSymbol.QRCODE])]


def till_code(**local: str) -> str:
    # upper case, digits and "." only: what segno on its own writes in alphanumeric mode
    return mpm.build_dynamic(12000, merchant_name="ILSAN FARM", city="GOYANG",
                             reference="R-0001", merchant_id="M0427", **local)


@pytest.mark.parametrize("local, eci", [({}, None),
                                        ({"name_local": "일산농장", "city_local": "고양"}, 26),
                                        ({"name_local": "ILSAN"}, 26)])
def test_till_qr_4_12_1_1_byte_mode_4_12_1_2_eci_000026_with_template_64(
        local: dict[str, str], eci: int | None) -> None:
    from kiosk_ui.qr import qr_matrix, qr_surface

    text = till_code(**local)
    assert ("64" in mpm.parse(text).objects) is (eci is not None)
    assert segments(qr_matrix(text)) == (eci, 0b0100, text.encode("utf-8"))
    # and a real scanner reads the rendered image back to the same text
    assert zbar_read(qr_surface(text, 400)) == [("QRCODE", text.encode("utf-8"))]


def test_the_bit_stream_reader_sees_other_modes_and_no_eci() -> None:
    import segno

    text = till_code()
    alnum = segno.make_qr(text, error="m")  # what the till drew before #17
    assert read_bit_stream(alnum.matrix)[:4] == "0010"  # alphanumeric, no ECI in front
    latin = segno.make_qr("café", error="q", mode="byte", encoding="iso-8859-1", eci=True)
    assert segments(latin.matrix) == (None, 0b0100, "café".encode("iso-8859-1"))


# -- localpay qr make --------------------------------------------------------------------------


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "localpay", "--home", str(home), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)


@pytest.mark.parametrize("args, line", [
    (["--city-local", "고양"], "Error: --city-local needs --name-local: template 64 holds the "
                               "city in the local language only beside the name (ID 01)"),
    (["--merchant", ""], "Error: --merchant is empty: the merchant name (ID 59) is mandatory"),
    (["--merchant", "  "], "Error: --merchant is empty: the merchant name (ID 59) is "
                           "mandatory"),
])
def test_cli_qr_make_refuses_what_it_used_to_drop(tmp_path: Path, args: list[str],
                                                  line: str) -> None:
    result = cli(tmp_path, "qr", "make", "--amount", "1000", *args)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", line + "\n")


def test_cli_qr_make_png_is_the_tills_symbol(tmp_path: Path) -> None:
    png = tmp_path / "till.png"
    result = cli(tmp_path, "qr", "make", "--amount", "1000", "--merchant", "ILSAN FARM",
                 "--city", "GOYANG", "--merchant-id", "M0427", "--reference", "R-1",
                 "--name-local", "일산농장", "--city-local", "고양", "--png", str(png),
                 "--scale", "4")
    assert result.returncode == 0, result.stderr
    text = result.stdout.strip()
    image = pygame.image.load(str(png))
    assert zbar_read(image) == [("QRCODE", text.encode("utf-8"))]
    # back to modules: 4 pixels each behind a 4-module border
    side = image.get_width() // 4 - 8
    matrix = [[int(image.get_at((4 * (x + 4), 4 * (y + 4)))[0] < 128) for x in range(side)]
              for y in range(side)]
    assert segments(matrix) == (26, 0b0100, text.encode("utf-8"))
