"""Real scheme cards (issue #17): several applications on one card, the terminal's ``[emv] aids``
with partial selection, and ``localpay read`` listing every application.

The selection tests assert the exact command APDUs the card received through the real
pyscard -> pcscd -> vpcd stack, each named after the EMV 4.3 Book 1 section it follows:
§12.3.1 (matching terminal and card AIDs, partial selection), §12.3.2 (the PPSE directory),
§12.3.3 (the list of AIDs with SELECT next occurrence), §12.4 (final selection by priority,
cardholder confirmation).
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers import wait
from drivers.emulators.emv_card import DirectoryEntry, EmvCard
from drivers.emulators.vpcd_card import VpcdCard
from drivers.pcsc import PcscReader
from drivers.virtual import VirtualCard, VirtualReader
from firmware_cfg.config import (
    DEFAULT,
    DEFAULT_EMV_AIDS,
    EmvSection,
    dumps,
    loads,
    parse_aid,
    signed_differences,
)
from firmware_cfg.keys import DEMO_TOKEN_KEY
from localpay.cli import cli
from localpay.errors import ConfigError
from localpay.types import Presentation
from offline_ledger import Ledger
from terminal.cards import ReadContext
from terminal.core import Decision, Terminal
from terminal.emv.reader import DEFAULT_AIDS, TerminalAid, terminal_aids
from terminal.emv.survey import survey
from terminal.risk import Reason
from tests.hw_fixtures import PcscStack, pcsc, pcsc_stack  # noqa: F401

NOW = 1_790_000_000.0  # 2026-09-21 in Seoul
LOCAL = bytes.fromhex("D4100000030001")
MASTERCARD = bytes.fromhex("A0000000041010")
MAESTRO = bytes.fromhex("A0000000043060")
DISCOVER = bytes.fromhex("A0000001523010")  # a real scheme, not in the defaults
LOCAL_PAN, MC_PAN, MAESTRO_PAN, DISCOVER_PAN = (
    "9410123456789012", "5413330089010012", "6759410000001234", "6011000990139424")
GET_UID = bytes.fromhex("ffca000000")  # the reader's own pseudo-APDU, not the card's business

SELECT_PPSE = bytes.fromhex("00a404000e325041592e5359532e444446303100")
SELECT_MC = bytes.fromhex("00a4040007a000000004101000")
SELECT_LOCAL = bytes.fromhex("00a4040007d410000003000100")
GPO_NO_PDOL = bytes.fromhex("80a8000002830000")
READ_SFI1_REC1 = bytes.fromhex("00b2010c00")
READ_SFI2_REC1 = bytes.fromhex("00b2011400")
READ_SFI2_REC2 = bytes.fromhex("00b2021400")
GET_DATA_LATC = bytes.fromhex("80ca9f1300")
READ_APP = [GPO_NO_PDOL, READ_SFI1_REC1, READ_SFI2_REC1, READ_SFI2_REC2, GET_DATA_LATC]


def check_card(mc_priority: int = 1, local_priority: int = 2) -> EmvCard:
    """A Goyang-style check card: the local-currency application and a Mastercard one, both
    listed in the PPSE with their priorities."""
    chip = EmvCard(pan=LOCAL_PAN, label="LOCALPAY", aid=LOCAL, expiry="2812")
    chip.priority = local_priority
    chip.directory = []
    chip.add_application(EmvCard(pan=MC_PAN, label="MASTERCARD", aid=MASTERCARD,
                                 expiry="2905"), mc_priority)
    chip.directory.append(DirectoryEntry(LOCAL, "LOCALPAY", local_priority))
    return chip


def foreign_card() -> EmvCard:
    return EmvCard(pan=DISCOVER_PAN, label="DISCOVER", aid=DISCOVER, expiry="2711")


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = Ledger(tmp_path / "ledger.sqlite", key=Ed25519PrivateKey.generate(),
                 terminal_id="T-TEST-01")
    yield led
    led.close()


@pytest.fixture()
def reader(pcsc: PcscStack) -> Iterator[PcscReader]:  # noqa: F811
    r = PcscReader(pcsc.readers[0][0], debounce_s=1.0)
    yield r
    r.close()


def till(ledger: Ledger, aids: tuple[str, ...] | None = None) -> Terminal:
    cfg = DEFAULT.replace("terminal", role="till", id="T-TEST-01", place="M0001")
    if aids is not None:
        cfg = cfg.replace("emv", aids=aids)
    return Terminal(cfg, ledger, DEMO_TOKEN_KEY, clock=lambda: NOW,
                    read_options={"ledger": ledger})


def on_pcsc(pcsc: PcscStack, reader: PcscReader, card: EmvCard  # noqa: F811
            ) -> tuple[Presentation, VpcdCard]:
    vc = pcsc.card(handler=card.handle)
    pcsc.insert(vc)
    p = reader.poll(10.0)
    assert p is not None and p.channel is not None
    return p, vc


def sent(vc: VpcdCard) -> list[bytes]:
    return [a for a in vc.apdus if a != GET_UID]


def on_virtual(card: EmvCard) -> Presentation:
    r = VirtualReader()
    r.present_card(VirtualCard(uid=bytes.fromhex("04a1b2c3"), handler=card.handle))
    return wait(r, 1)


def approved_aid(decision: Decision) -> str:
    assert decision.approved, decision.detail
    assert decision.card is not None
    return decision.card.aid


# -- selection, exact bytes through pcscd + vpcd ----------------------------------------------


def test_book1_12_3_2_ppse_candidates_12_4_priority_1_selected_exact_bytes(
        pcsc: PcscStack, reader: PcscReader, ledger: Ledger) -> None:  # noqa: F811
    card = check_card(mc_priority=1, local_priority=2)
    p, vc = on_pcsc(pcsc, reader, card)
    decision = till(ledger).pay(p, 5000)
    assert approved_aid(decision) == "A0000000041010"
    assert decision.card is not None and decision.card.display == "541333******0012"
    assert decision.card.label == "MASTERCARD"
    assert sent(vc) == [SELECT_PPSE, SELECT_MC, *READ_APP]


def test_book1_12_4_priority_follows_the_card_not_the_terminal_exact_bytes(
        pcsc: PcscStack, reader: PcscReader, ledger: Ledger) -> None:  # noqa: F811
    card = check_card(mc_priority=2, local_priority=1)
    p, vc = on_pcsc(pcsc, reader, card)
    assert approved_aid(till(ledger).pay(p, 5000)) == "D4100000030001"
    assert sent(vc) == [SELECT_PPSE, SELECT_LOCAL, *READ_APP]


def test_book1_12_3_1_terminal_list_leaves_the_mastercard_app_out_exact_bytes(
        pcsc: PcscStack, reader: PcscReader, ledger: Ledger) -> None:  # noqa: F811
    card = check_card(mc_priority=1, local_priority=2)
    p, vc = on_pcsc(pcsc, reader, card)
    decision = till(ledger, aids=("D4100000030001",)).pay(p, 5000)
    assert approved_aid(decision) == "D4100000030001"
    assert sent(vc) == [SELECT_PPSE, SELECT_LOCAL, *READ_APP]


def test_book1_12_3_3_list_of_aids_select_next_occurrence_exact_bytes(
        pcsc: PcscStack, reader: PcscReader, ledger: Ledger) -> None:  # noqa: F811
    """No directory entries: SELECT the RID with partial selection, then P2=02 for the next
    application under it until the card says 6A82; the card's priorities decide."""
    chip = EmvCard(pan=MC_PAN, label="MASTERCARD", aid=MASTERCARD)
    chip.priority = 2
    chip.add_application(EmvCard(pan=MAESTRO_PAN, label="MAESTRO", aid=MAESTRO), 1,
                         listed=False)
    chip.directory = []
    p, vc = on_pcsc(pcsc, reader, chip)
    decision = till(ledger, aids=("A000000004*",)).pay(p, 5000)
    assert approved_aid(decision) == "A0000000043060"
    assert sent(vc) == [
        SELECT_PPSE,
        bytes.fromhex("00a4040005a00000000400"),  # first occurrence: A0000000041010
        bytes.fromhex("00a4040205a00000000400"),  # next: A0000000043060
        bytes.fromhex("00a4040205a00000000400"),  # next: 6A82, no more
        bytes.fromhex("00a4040007a000000004306000"),  # final: priority 1
        *READ_APP,
    ]


# -- selection rules, through the virtual reader --------------------------------------------


@pytest.mark.parametrize(("aids", "expected"), [
    (("A0000000041010*",), "A00000000410101213"),
    (("A000000004*",), "A00000000410101213"),
    (("A00000000410101213",), "A00000000410101213"),
    (("A0000000041010",), None),  # exact only: the longer card AID does not match
])
def test_book1_12_3_1_partial_selection_flag(ledger: Ledger, aids: tuple[str, ...],
                                              expected: str | None) -> None:
    card = EmvCard(pan=MC_PAN, label="MASTERCARD", aid=bytes.fromhex("A00000000410101213"))
    decision = till(ledger, aids=aids).pay(on_virtual(card), 1000)
    if expected is None:
        assert decision.reason is Reason.UNSUPPORTED
    else:
        assert approved_aid(decision) == expected


def test_book1_12_4_application_asking_for_confirmation_is_left_out(ledger: Ledger) -> None:
    card = check_card(mc_priority=0x81, local_priority=2)  # Mastercard first, but b8 set
    assert approved_aid(till(ledger).pay(on_virtual(card), 1000)) == "D4100000030001"


def test_book1_12_4_a_card_with_only_a_foreign_application_is_not_accepted(
        ledger: Ledger) -> None:
    decision = till(ledger).pay(on_virtual(foreign_card()), 1000)
    # "not accepted here", not "unreadable": tapping it again would not help
    assert decision.reason is Reason.UNSUPPORTED and ledger.count() == 0
    assert "the card lists A0000001523010 DISCOVER" in decision.detail


def test_mastercard_contactless_card_is_accepted_by_default(ledger: Ledger) -> None:
    card = EmvCard(pan=MC_PAN, label="MASTERCARD", aid=MASTERCARD)
    assert approved_aid(till(ledger).pay(on_virtual(card), 1000)) == "A0000000041010"


def test_reconfigured_terminal_uses_the_new_list(ledger: Ledger) -> None:
    t = till(ledger)
    t.reconfigure(t.config.replace("emv", aids=("D4100000030001",)))
    card = EmvCard(pan=MC_PAN, label="MASTERCARD", aid=MASTERCARD)
    assert t.pay(on_virtual(card), 1000).reason is Reason.UNSUPPORTED


def test_survey_reads_every_application_and_masks_each_pan() -> None:
    card = check_card(mc_priority=0x81, local_priority=2)
    card.add_application(foreign_card(), 3)
    apps = survey(on_virtual(card), ReadContext(DEMO_TOKEN_KEY, 0, int(NOW * 1000),
                                                {"emv_aids": DEFAULT_AIDS}))
    got = [(a.aid.hex().upper(), a.label, a.priority, a.accepted, a.display,
            a.expiry.isoformat() if a.expiry else None) for a in apps]
    assert got == [
        ("A0000000041010", "MASTERCARD", 1, False, "541333******0012", "2029-05-31"),
        ("D4100000030001", "LOCALPAY", 2, True, "941012******9012", "2028-12-31"),
        ("A0000001523010", "DISCOVER", 3, False, "601100******9424", "2027-11-30"),
    ]
    assert "cardholder confirmation" in apps[0].reason and apps[0].confirmation
    assert apps[2].reason == "not in this terminal's [emv] aids"
    assert all(a.error is None for a in apps)


def test_survey_explains_an_exact_only_entry() -> None:
    card = EmvCard(pan=MC_PAN, label="MASTERCARD", aid=bytes.fromhex("A00000000410101213"))
    apps = survey(on_virtual(card), ReadContext(
        DEMO_TOKEN_KEY, 0, int(NOW * 1000), {"emv_aids": (TerminalAid(MASTERCARD, False),)}))
    assert [a.accepted for a in apps] == [False]
    assert "A0000000041010 for exact selection only" in apps[0].reason


def test_survey_lists_an_application_it_cannot_read_with_its_error() -> None:
    card = check_card()
    card.directory.append(DirectoryEntry(DISCOVER, "GHOST", 3))
    apps = survey(on_virtual(card), ReadContext(DEMO_TOKEN_KEY, 0, int(NOW * 1000), {}))
    ghost = next(a for a in apps if a.label == "GHOST")
    assert ghost.error == "SELECT: card answered 6A82 file or application not found"
    assert ghost.display is None and [a.error for a in apps].count(None) == 2


def test_emulator_selects_the_next_occurrence_only_after_the_current_one() -> None:
    chip = EmvCard(aid=MASTERCARD)
    chip.add_application(EmvCard(aid=MAESTRO), listed=False)
    first = chip.handle(bytes.fromhex("00a4040005a00000000400"))
    second = chip.handle(bytes.fromhex("00a4040205a00000000400"))
    third = chip.handle(bytes.fromhex("00a4040205a00000000400"))
    assert MASTERCARD in first and MAESTRO in second and third == bytes.fromhex("6a82")
    assert first[-2:] == second[-2:] == b"\x90\x00"


# -- [emv] aids in terminal.toml ----------------------------------------------------------------


def test_defaults_keep_the_local_aid_first_and_cover_the_schemes() -> None:
    assert DEFAULT.emv.aids == DEFAULT_EMV_AIDS and DEFAULT_EMV_AIDS[0] == "D4100000030001"
    rids = {parse_aid(a)[0][:5].hex().upper() for a in DEFAULT_EMV_AIDS}
    assert {"A000000003", "A000000004", "A000000025", "A000000065", "A000000333",
            "D410000001", "D410000003"} == rids
    assert DEFAULT_AIDS == terminal_aids(DEFAULT.emv) and DEFAULT_AIDS[0] == LOCAL
    assert DEFAULT_AIDS[0].partial is False and DEFAULT_AIDS[4].partial is True


def test_aids_syntax_and_round_trip() -> None:
    config = loads('[emv]\naids = ["A000000004*", "d4100000030001"]\n')
    assert config.emv.entries() == ((bytes.fromhex("A000000004"), True), (LOCAL, False))
    assert loads(dumps(config)) == config and loads(dumps(DEFAULT)) == DEFAULT
    assert loads("[emv]\naids = []\n").emv.entries() == ()  # accepts no EMV card at all


@pytest.mark.parametrize(("value", "message"), [
    ('["A0000000"]', "emv.aids[0]: expected an AID of 5 to 16 bytes in hex"),
    ('["D4100000030001", "A0"]', "emv.aids[1]: expected an AID of 5 to 16 bytes"),
    ('["A0000000041010A0000000041010A00000"]', "emv.aids[0]: expected an AID"),  # 17 bytes
    ('["A00000000410G0"]', "emv.aids[0]: expected an AID"),
    ('["A000000004101"]', "emv.aids[0]: expected an AID"),  # odd number of digits
    ('["A0000000041010**"]', "emv.aids[0]: expected an AID"),
    ('["*A0000000041010"]', "emv.aids[0]: expected an AID"),
    ('[" A0000000041010"]', "emv.aids[0]: expected an AID"),
    ('["A0000000041010", "a0000000041010*"]',
     "emv.aids[1]: A0000000041010 is already emv.aids[0]; list each AID once"),
    ('[1]', "emv.aids[0]: expected text, found 1"),
    ('"A0000000041010"', "emv.aids: expected an array"),
])
def test_bad_aids_are_one_line_config_errors(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        loads(f"[emv]\naids = {value}\n")
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_unknown_emv_key_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"\[emv\]: unknown key 'aid'"):
        loads('[emv]\naid = ["A0000000041010"]\n')


def test_accepted_aids_are_signed_not_local() -> None:
    changed = DEFAULT.replace("emv", aids=("D4100000030001",))
    assert signed_differences(DEFAULT, changed) == ["emv.aids"]
    with pytest.raises(ConfigError):
        dataclasses.replace(DEFAULT, emv=EmvSection(aids=("XYZ",)))


# -- localpay read ---------------------------------------------------------------------------------


def run(home: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--home", str(home), "read", *args])
    return result.exit_code, result.output


def insert_later(pcsc: PcscStack, card: EmvCard) -> VpcdCard:  # noqa: F811
    vc = pcsc.card(handler=card.handle)
    threading.Thread(target=pcsc.insert, args=(vc,), daemon=True).start()
    return vc


def test_read_json_lists_every_application_with_accepted(pcsc: PcscStack) -> None:  # noqa: F811
    card = check_card(mc_priority=1, local_priority=2)
    card.add_application(foreign_card(), 3)
    insert_later(pcsc, card)
    code, out = run(Path("/nonexistent-localpay-home"), "--reader",
                    f"pcsc:{pcsc.readers[0][0]}", "--json", "--timeout", "30")
    assert code == 0, out
    data = json.loads(out)
    assert data["aid"] == "A0000000041010" and data["display"] == "541333******0012"
    apps: list[dict[str, Any]] = data["applications"]
    assert [set(a) for a in apps] == [{
        "aid", "label", "priority", "confirmation", "accepted", "reason", "display",
        "expiry", "error", "selected"}] * 3
    assert [(a["aid"], a["label"], a["priority"], a["accepted"], a["selected"], a["display"],
             a["expiry"]) for a in apps] == [
        ("A0000000041010", "MASTERCARD", 1, True, True, "541333******0012", "2029-05-31"),
        ("D4100000030001", "LOCALPAY", 2, True, False, "941012******9012", "2028-12-31"),
        ("A0000001523010", "DISCOVER", 3, False, False, "601100******9424", "2027-11-30"),
    ]
    assert apps[2]["reason"] == "not in this terminal's [emv] aids" and apps[0]["reason"] is None
    for pan in (LOCAL_PAN, MC_PAN, DISCOVER_PAN):
        assert pan not in out


def test_read_foreign_only_card_says_so_and_exits_1(pcsc: PcscStack) -> None:  # noqa: F811
    insert_later(pcsc, foreign_card())
    code, out = run(Path("/nonexistent-localpay-home"), "--reader",
                    f"pcsc:{pcsc.readers[0][0]}", "--json", "--timeout", "30")
    assert code == 1, out
    data = json.loads(out)
    assert "display" not in data and data["application"] == "emv"
    assert data["declined"] == ("unsupported: no application on the card that this terminal "
                                "accepts (the card lists A0000001523010 DISCOVER)")
    assert [(a["aid"], a["accepted"], a["display"]) for a in data["applications"]] == [
        ("A0000001523010", False, "601100******9424")]
    assert DISCOVER_PAN not in out


def test_read_text_has_one_line_per_application(pcsc: PcscStack) -> None:  # noqa: F811
    insert_later(pcsc, foreign_card())
    code, out = run(Path("/nonexistent-localpay-home"), "--reader",
                    f"pcsc:{pcsc.readers[0][0]}", "--timeout", "30")
    assert code == 1
    assert ("  A0000001523010  DISCOVER  priority 1  601100******9424  expires 2027-11-30  "
            "NOT accepted here: not in this terminal's [emv] aids") in out.splitlines()
    assert DISCOVER_PAN not in out


def test_read_judges_by_the_homes_emv_aids(pcsc: PcscStack, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "terminal.toml").write_text(
        f'[readers]\ncard = "pcsc:{pcsc.readers[0][0]}"\n\n[emv]\naids = ["D4100000030001"]\n',
        encoding="utf-8")
    insert_later(pcsc, check_card(mc_priority=1, local_priority=2))
    code, out = run(tmp_path, "--json", "--timeout", "30")
    assert code == 0, out
    data = json.loads(out)
    assert data["aid"] == "D4100000030001"
    assert [(a["aid"], a["accepted"], a["selected"]) for a in data["applications"]] == [
        ("A0000000041010", False, False), ("D4100000030001", True, True)]


def test_read_with_a_bad_emv_aids_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "terminal.toml").write_text('[emv]\naids = ["A0"]\n', encoding="utf-8")
    code, out = run(tmp_path, "--reader", "virtual", "--timeout", "1")
    assert code == 2 and "emv.aids[0]" in out and "Traceback" not in out
