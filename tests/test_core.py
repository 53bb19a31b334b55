"""The transaction core: state machine, risk rules, duplicate taps, refunds and faults."""

from __future__ import annotations

import os
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.virtual import VirtualCard, VirtualReader
from firmware_cfg.config import DEFAULT
from firmware_cfg.keys import DEMO_TOKEN_KEY
from localpay.errors import TransactionError
from localpay.types import Presentation
from offline_ledger import Ledger
from terminal import cards
from terminal.cards import CardIdentity, ReadContext, card_token
from terminal.core import Decision, State, Terminal
from terminal.home import Home, open_terminal
from terminal.risk import Reason
from tests.conftest import FakeClock, MakeTerminal, present

CARD = bytes.fromhex("08000001")
OTHER = bytes.fromhex("08000002")


def test_validator_tap_walks_the_states(make_terminal: MakeTerminal, reader: VirtualReader,
                                        ledger: Ledger) -> None:
    terminal = make_terminal("validator")
    seen: list[tuple[State, Decision | None]] = []
    terminal.listeners.append(lambda s, d: seen.append((s, d)))
    decision = terminal.tap(present(reader, CARD))
    assert decision.approved and decision.amount == DEFAULT.fares.adult
    assert [s for s, _ in seen] == [State.PRESENTED, State.READ, State.DECIDE, State.COMMIT,
                                    State.SHOW, State.IDLE]
    assert seen[4][1] is decision
    assert decision.entry is not None and decision.entry.kind == "tap"
    stored = ledger.entry(decision.entry.seq)
    assert stored == decision.entry
    assert stored.fields.card_token == card_token(DEMO_TOKEN_KEY, "uid", CARD)
    assert CARD.hex() not in stored.fields.detail.lower()


def test_decline_skips_commit(make_terminal: MakeTerminal, reader: VirtualReader,
                              ledger: Ledger) -> None:
    ledger.apply_deny_delta(1, {card_token(DEMO_TOKEN_KEY, "uid", CARD): "stolen"})
    terminal = make_terminal("validator")
    seen: list[State] = []
    terminal.listeners.append(lambda s, d: seen.append(s))
    decision = terminal.tap(present(reader, CARD))
    assert decision.outcome == "declined" and decision.reason is Reason.DENY_LISTED
    assert State.COMMIT not in seen and seen[-2:] == [State.SHOW, State.IDLE]
    assert ledger.head.seq == 0


def test_duplicate_tap_window(make_terminal: MakeTerminal, reader: VirtualReader,
                              clock: FakeClock, ledger: Ledger) -> None:
    terminal = make_terminal("validator", duplicate_window_s=30)
    assert terminal.tap(present(reader, CARD)).approved
    clock.advance(10)
    again = terminal.tap(present(reader, CARD))
    assert again.outcome == "already_paid" and again.amount == 0
    assert terminal.tap(present(reader, OTHER)).approved
    clock.advance(25)
    assert terminal.tap(present(reader, CARD)).approved
    assert ledger.head.seq == 3


def test_duplicate_window_survives_clock_going_back(make_terminal: MakeTerminal,
                                                    reader: VirtualReader, clock: FakeClock,
                                                    ledger: Ledger) -> None:
    terminal = make_terminal("validator", duplicate_window_s=30)
    assert terminal.tap(present(reader, CARD)).approved
    clock.advance(-3600)  # an NTP step back by an hour
    assert terminal.tap(present(reader, CARD)).outcome == "already_paid"
    assert terminal.tap(present(reader, OTHER)).approved
    entries = list(ledger.entries())
    assert entries[1].fields.mono > entries[0].fields.mono
    assert entries[1].fields.wall_ms < entries[0].fields.wall_ms
    assert ledger.verify().entries == 2


@pytest.mark.parametrize(
    ("limits", "amounts", "reason"),
    [
        ({"max_amount": 5000, "uid_max_amount": 5000}, [5001], Reason.OVER_LIMIT),
        ({"uid_card_offline_amount": 10_000}, [6000, 4000, 1], Reason.CARD_OFFLINE_AMOUNT),
        ({"card_offline_count": 2}, [100, 100, 100], Reason.CARD_OFFLINE_COUNT),
        ({"terminal_exposure": 7000}, [5000, 2001], Reason.TERMINAL_EXPOSURE),
        ({}, [0], Reason.INVALID_AMOUNT),
        ({}, [-5], Reason.INVALID_AMOUNT),
    ],
)
def test_till_limits(make_terminal: MakeTerminal, reader: VirtualReader, limits: dict,
                     amounts: list[int], reason: Reason) -> None:
    terminal = make_terminal("till", **limits)
    decisions = [terminal.pay(present(reader, CARD), a) for a in amounts]
    assert all(d.approved for d in decisions[:-1])
    assert decisions[-1].reason is reason
    assert reason.message and reason.message_ko


def test_weak_uid_cards_have_lower_limits(make_terminal: MakeTerminal, reader: VirtualReader,
                                          ledger: Ledger) -> None:
    terminal = make_terminal("till", max_amount=50_000, uid_max_amount=10_000)
    assert terminal.pay(present(reader, CARD), 10_001).reason is Reason.OVER_LIMIT

    # The same amount from a card application that is not UID-only passes.
    def claims(p: Presentation) -> bool:
        return p.protocol == "TEST-STRONG"

    def read(p: Presentation, ctx: ReadContext) -> CardIdentity:
        return CardIdentity(card_token(ctx.token_key, "pan", p.uid), "strong", "test")

    cards.register("test-strong", claims, read, first=True)
    try:
        strong = Presentation("card", "t", uid=CARD, protocol="TEST-STRONG")
        assert terminal.pay(strong, 10_001).approved
    finally:
        cards.APPLICATIONS[:] = [a for a in cards.APPLICATIONS if a[0] != "test-strong"]


def test_balance_snapshot(make_terminal: MakeTerminal, reader: VirtualReader,
                          ledger: Ledger) -> None:
    ledger.set_balances({card_token(DEMO_TOKEN_KEY, "uid", CARD): 5000}, 0)
    terminal = make_terminal("till")
    first = terminal.pay(present(reader, CARD), 3000)
    assert first.approved and first.balance == 2000
    assert terminal.pay(present(reader, CARD), 2001).reason is Reason.INSUFFICIENT_BALANCE
    assert terminal.pay(present(reader, OTHER), 2001).balance is None


def test_refund_and_void(make_terminal: MakeTerminal, reader: VirtualReader,
                         ledger: Ledger) -> None:
    terminal = make_terminal("till")
    paid = terminal.pay(present(reader, CARD), 8000)
    assert paid.entry is not None
    seq = paid.entry.seq
    assert terminal.refund(seq, 3000).approved
    assert terminal.refund(seq, 5001).reason is Reason.REFUND_EXCEEDS
    assert terminal.void(seq).reason is Reason.NOT_REFUNDABLE  # partly refunded already
    rest = terminal.refund(seq)
    assert rest.approved and rest.amount == 5000
    assert terminal.refund(seq, 1).reason is Reason.REFUND_EXCEEDS
    refund_seq = rest.entry.seq if rest.entry else 0
    assert terminal.refund(refund_seq, 1).reason is Reason.NOT_REFUNDABLE
    assert terminal.refund(999).reason is Reason.NOT_REFUNDABLE
    other = terminal.pay(present(reader, OTHER), 2500)
    assert other.entry is not None
    voided = terminal.void(other.entry.seq)
    assert voided.approved and voided.entry is not None
    assert voided.entry.fields.ref_seq == other.entry.seq and voided.amount == 2500
    token = card_token(DEMO_TOKEN_KEY, "uid", CARD)
    assert ledger.card_state(token).offline_amount == 0
    assert ledger.exposure == 0
    assert ledger.verify().entries == 5


def test_roles_are_kept_apart(make_terminal: MakeTerminal, reader: VirtualReader) -> None:
    validator = make_terminal("validator")
    with pytest.raises(TransactionError):
        validator.pay(present(reader, CARD), 100)
    with pytest.raises(TransactionError):
        validator.refund(1)
    till = make_terminal("till")
    with pytest.raises(TransactionError):
        till.tap(present(reader, CARD))


def test_card_removed_mid_read_records_nothing(make_terminal: MakeTerminal,
                                               reader: VirtualReader, ledger: Ledger) -> None:
    """A card application that talks to the card; the card leaves after its first answer."""

    def claims(p: Presentation) -> bool:
        return p.protocol == "ISO-DEP" and p.uid == b"\x08\xee"

    def read(p: Presentation, ctx: ReadContext) -> CardIdentity:
        assert p.channel is not None
        for _ in range(3):
            p.channel.transmit(bytes.fromhex("00b2010c00"))
        return CardIdentity("t", "d", "test")

    cards.register("test-talker", claims, read, first=True)
    try:
        reader.present_card(VirtualCard(uid=b"\x08\xee", handler=lambda apdu: b"\x90\x00",
                                        remove_after=1))
        p = reader.poll(1.0)
        assert p is not None
        decision = make_terminal("validator").tap(p)
    finally:
        cards.APPLICATIONS[:] = [a for a in cards.APPLICATIONS if a[0] != "test-talker"]
    assert decision.reason is Reason.CARD_REMOVED
    assert ledger.head.seq == 0


def test_text_that_is_no_known_code_is_an_invalid_code(make_terminal: MakeTerminal) -> None:
    # the QR application is always registered by the core (terminal.cards_all): it claims
    # every scanned code, and "hello" is no format it knows
    assert "qr" in [name for name, _ in cards.APPLICATIONS]
    decision = make_terminal("till").pay(Presentation("qr", "scanner", payload="hello"), 1000)
    assert decision.reason is Reason.QR_INVALID
    assert "unknown QR format" in decision.detail


def test_a_presentation_no_application_claims_is_unsupported(
        make_terminal: MakeTerminal, monkeypatch: pytest.MonkeyPatch) -> None:
    # UID cards only: nothing claims a scanned code
    uid_only = [a for a in cards.APPLICATIONS if a[0] == "uid"]
    monkeypatch.setattr(cards, "APPLICATIONS", uid_only)
    decision = make_terminal("till").pay(Presentation("qr", "scanner", payload="hello"), 1000)
    assert decision.reason is Reason.UNSUPPORTED
    assert decision.detail == "qr via scanner"


def test_broken_ledger_at_start_refuses_everything(tmp_path: Path,
                                                   reader: VirtualReader) -> None:
    home = Home(tmp_path)
    config = DEFAULT
    terminal = open_terminal(home, config, create_keys=True)
    assert terminal.ledger is not None
    for i in range(5):
        assert terminal.tap(present(reader, bytes([8, i]))).approved
    terminal.ledger.close()
    conn = __import__("sqlite3").connect(home.ledger_path)
    conn.execute("DROP TRIGGER entries_no_update")
    conn.execute("UPDATE entries SET amount = 1 WHERE seq = 4")
    conn.commit()
    conn.close()
    broken = open_terminal(home, config)
    assert broken.fault is not None and broken.ledger is None
    decision = broken.tap(present(reader, bytes([8, 99])))
    assert decision.reason is Reason.LEDGER_BROKEN
    assert "entry 4" in decision.detail


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[tuple[Path, int | None]]:
    """A real 1 MiB file system to fill up for real (mounting needs root, as in CI). Without
    root the ledger's own page cap gives SQLite the same SQLITE_FULL a full disk gives."""
    if os.geteuid() != 0:
        warnings.warn("full-disk test ran against SQLite's max_page_count, not a real full "
                      "file system: not root (mounting a tmpfs needs root)", stacklevel=1)
        yield tmp_path, 300
        return
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    yield mount, None
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_full_disk_declines_with_reason(tiny_disk: tuple[Path, int | None], clock: FakeClock,
                                        reader: VirtualReader) -> None:
    folder, max_pages = tiny_disk
    key = Ed25519PrivateKey.generate()
    config = DEFAULT.replace("terminal", role="validator").replace(
        "risk", terminal_exposure=10**12, uid_card_offline_amount=10**9)
    ledger = Ledger(folder / "ledger.sqlite", key=key, terminal_id="T-FULL",
                    max_pages=max_pages)
    try:
        terminal = Terminal(config, ledger, DEMO_TOKEN_KEY, clock=clock)
        approved: list[Decision] = []
        last: Decision | None = None
        for i in range(20_000):
            last = terminal.tap(present(reader, i.to_bytes(4, "big")))
            if not last.approved:
                break
            approved.append(last)
        assert last is not None and last.reason is Reason.LEDGER_WRITE_FAILED
        assert approved, "the disk should hold some taps before it fills"
        # nothing approved is missing, nothing unapproved was recorded
        assert ledger.head.seq == len(approved) == ledger.count()
        assert [e.entry_hash for e in ledger.entries()] == [
            d.entry.entry_hash for d in approved if d.entry]
        assert terminal.fault is None  # a full disk is not a broken ledger
    finally:
        ledger.close()
    with Ledger(folder / "ledger.sqlite") as ro:
        assert ro.verify().entries == len(approved)
