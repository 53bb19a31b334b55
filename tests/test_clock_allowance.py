"""The won a terminal may approve while its clock is ``unknown`` (issue #16):
``risk.unknown_clock_amount``, counted since the last sync, net of refunds of those payments.

At the boundary on both sides (exactly the allowance approved, one won more declined), the
clock trusted again, a restart, ``mark_synced``'s recount, refunds, ``Terminal.blocked`` and
the kiosk's out-of-service screen for the cause ``clock_unknown``.

Mocked: only the kernel's NTP answer (``ntp=``), as in ``tests/test_terminal_clock.py``: a
test cannot set the machine's NTP state. Real SQLite ledgers, the real core and clock trust,
the real kiosk under SDL's dummy driver. Every money figure is checked against a count made
here from the ledger's entries, independently of ``offline_ledger.unknown_clock``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.virtual import VirtualReader
from firmware_cfg.config import DEFAULT, Config, dumps, loads
from firmware_cfg.keys import DEMO_TOKEN_KEY
from kiosk_ui.app import KioskApp
from kiosk_ui.i18n import tr
from kiosk_ui.model import Screen
from kiosk_ui.service import CORRECTIONS_OK, Cause, ServiceCheck
from localpay.errors import ConfigError, LedgerCorruptError, LedgerError
from localpay.types import Presentation
from offline_ledger import ClockAnchor, Ledger, boot_now
from offline_ledger.unknown_clock import UnknownClockWon
from terminal.clock import RELEASED_MS, ClockTrust
from terminal.core import Blocked, Terminal
from terminal.risk import Reason
from tests.conftest import FakeClock
from tests.test_kiosk_flow import MINJI, Clock, pump
from tests.test_kiosk_truth import OUT_OF_SERVICE_EN, _asks_for_a_card, _drawn

#: three weeks after the release: a reading the clock rules can trust
LATER_S = RELEASED_MS / 1000 + 21 * 86_400
ADULT = DEFAULT.fares.adult
CHILD = DEFAULT.fares.child


class Ntp:
    """The kernel's NTP answer, mocked and switched by the test."""

    def __init__(self, synced: bool = False) -> None:
        self.synced = synced

    def __call__(self) -> bool:
        return self.synced


@pytest.fixture
def reader() -> Iterator[VirtualReader]:
    r = VirtualReader()
    yield r
    r.close()


def card(n: int) -> bytes:
    return bytes.fromhex(f"08c1{n:04x}")


def present(reader: VirtualReader, n: int) -> Presentation:
    reader.present_uid(card(n))
    p = reader.poll(1.0)
    assert p is not None
    return p


def make(ledger: Ledger, clock: FakeClock, ntp: Ntp, role: str = "till",
         **risk: int) -> Terminal:
    cfg = DEFAULT.replace("terminal", role=role, id="T-TEST-01",
                          place="85" if role == "validator" else "M0001")
    if risk:
        cfg = cfg.replace("risk", **risk)
    return Terminal(cfg, ledger, DEMO_TOKEN_KEY, clock=clock,
                    clock_trust=ClockTrust(ledger, wall=clock, ntp=ntp))


def counted(ledger: Ledger) -> int:
    """The won standing on unknown-clock payments and fares after the last sync, counted
    here from the entries one by one (the module under test counts with one SQL query)."""
    synced = ledger.synced_upto()
    entries = {e.seq: e for e in ledger.entries(max(ledger.first_seq(), 1))}

    def unknown(seq: int) -> bool:
        return json.loads(entries[seq].fields.detail).get("clock") == "unknown"

    won = 0
    for seq, e in entries.items():
        if seq <= synced:
            continue
        if e.kind in ("payment", "tap") and unknown(seq):
            won += e.amount
        elif e.kind in ("refund", "void") and e.fields.ref_seq > synced and unknown(
                e.fields.ref_seq):
            won -= e.amount
    return won


@pytest.fixture
def later() -> FakeClock:
    return FakeClock(LATER_S)


# -- the setting -----------------------------------------------------------------------


def test_the_default_lets_a_busy_shift_run_and_stays_inside_the_exposure() -> None:
    r = DEFAULT.risk
    assert r.unknown_clock_amount == 1_000_000
    # a busy city bus boards some 100 riders an hour: six hours of adult fares fit
    assert r.unknown_clock_amount // ADULT >= 6 * 100
    assert r.unknown_clock_amount <= r.terminal_exposure


@pytest.mark.parametrize("bad", [-1, True, "1000", 1.5])
def test_the_setting_is_a_whole_number_of_won(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"risk\.unknown_clock_amount"):
        DEFAULT.replace("risk", unknown_clock_amount=bad)


def test_the_setting_round_trips_through_toml() -> None:
    cfg = DEFAULT.replace("risk", unknown_clock_amount=0)
    assert loads(dumps(cfg)).risk.unknown_clock_amount == 0
    text = dumps(DEFAULT).replace("unknown_clock_amount = 1000000",
                                  "unknown_clock_amount = 25000")
    assert loads(text).risk.unknown_clock_amount == 25_000


# -- the boundary ----------------------------------------------------------------------


def test_exactly_the_allowance_is_approved_and_one_won_more_declined(
        ledger: Ledger, later: FakeClock, reader: VirtualReader) -> None:
    terminal = make(ledger, later, Ntp(False), unknown_clock_amount=7_000)
    first = terminal.pay(present(reader, 1), 3_000)
    second = terminal.pay(present(reader, 2), 4_000)  # 7,000: exactly the allowance
    assert first.approved and second.approved
    assert json.loads(second.entry.fields.detail)["clock"] == "unknown"  # type: ignore[union-attr]
    assert counted(ledger) == 3_000 + 4_000
    assert terminal.unknown_clock is not None and terminal.unknown_clock.won() == 7_000
    head = ledger.head.seq
    over = terminal.pay(present(reader, 3), 1)
    assert not over.approved and over.reason is Reason.CLOCK_UNKNOWN
    assert over.amount == 1 and over.entry is None and ledger.head.seq == head
    assert over.message == Reason.CLOCK_UNKNOWN.message and over.reason.message_ko
    assert Reason("clock_unknown") is Reason.CLOCK_UNKNOWN


def test_one_won_over_the_allowance_is_declined_on_its_own(
        ledger: Ledger, later: FakeClock, reader: VirtualReader) -> None:
    terminal = make(ledger, later, Ntp(False), unknown_clock_amount=6_999)
    assert terminal.pay(present(reader, 1), 3_000).approved
    declined = terminal.pay(present(reader, 2), 4_000)  # 7,000: one won over
    assert declined.reason is Reason.CLOCK_UNKNOWN
    assert terminal.pay(present(reader, 3), 3_999).approved  # 6,999: exactly
    assert counted(ledger) == 3_000 + 3_999


def test_a_validator_counts_its_fares_and_a_free_fare_passes(
        ledger: Ledger, later: FakeClock, reader: VirtualReader) -> None:
    cfg = DEFAULT.replace("terminal", role="validator", id="T-TEST-01", place="85")
    cfg = cfg.replace("risk", unknown_clock_amount=2 * ADULT).replace("fares", adult=ADULT)
    terminal = Terminal(cfg, ledger, DEMO_TOKEN_KEY, clock=later,
                        clock_trust=ClockTrust(ledger, wall=later, ntp=Ntp(False)))
    assert terminal.tap(present(reader, 1)).approved
    assert terminal.tap(present(reader, 2)).approved
    assert terminal.tap(present(reader, 3)).reason is Reason.CLOCK_UNKNOWN
    assert counted(ledger) == 2 * ADULT
    # a category whose fare is 0 rides on: nothing of the allowance is taken
    free = Terminal(cfg.replace("fares", default="senior", extra={"senior": 0}), ledger,
                    DEMO_TOKEN_KEY, clock=later,
                    clock_trust=ClockTrust(ledger, wall=later, ntp=Ntp(False)))
    ride = free.tap(present(reader, 4))
    assert ride.approved and ride.amount == 0


def test_card_reasons_come_first_and_the_exposure_before_the_clock(
        ledger: Ledger, later: FakeClock, reader: VirtualReader) -> None:
    terminal = make(ledger, later, Ntp(False), unknown_clock_amount=0, terminal_exposure=0)
    assert terminal.pay(present(reader, 1), 50_001).reason is Reason.OVER_LIMIT
    assert terminal.pay(present(reader, 1), 100).reason is Reason.TERMINAL_EXPOSURE
    terminal = make(ledger, later, Ntp(False), unknown_clock_amount=0)
    assert terminal.pay(present(reader, 1), 100).reason is Reason.CLOCK_UNKNOWN


# -- a trusted clock -------------------------------------------------------------------


def test_a_trusted_clock_is_not_held_to_the_allowance_and_payments_go_on_after_it(
        ledger: Ledger, later: FakeClock, reader: VirtualReader) -> None:
    ntp = Ntp(True)
    terminal = make(ledger, later, ntp, unknown_clock_amount=5_000)
    assert terminal.pay(present(reader, 1), 9_000).approved  # synchronised: not counted
    assert counted(ledger) == 0 and terminal.unknown_clock.won() == 0  # type: ignore[union-attr]
    ntp.synced = False
    later.advance(60)
    assert terminal.pay(present(reader, 2), 5_000).approved
    assert terminal.pay(present(reader, 3), 1).reason is Reason.CLOCK_UNKNOWN
    assert terminal.blocked() is not None
    ntp.synced = True  # NTP again: the clock is trusted, payments go on
    later.advance(60)
    assert terminal.blocked() is None
    paid = terminal.pay(present(reader, 3), 8_000)
    assert paid.approved and json.loads(paid.entry.fields.detail)["clock"] == "synchronised"  # type: ignore[union-attr]
    # the allowance counts since the last sync: the clock lost again finds it still used
    ntp.synced = False
    later.advance(60)
    assert terminal.pay(present(reader, 4), 1).reason is Reason.CLOCK_UNKNOWN
    assert counted(ledger) == 5_000


def test_an_anchored_clock_is_trusted_and_one_off_the_central_time_is_not(
        ledger: Ledger, later: FakeClock, reader: VirtualReader) -> None:
    boot_id, boot_ms = boot_now()
    central_ms = int(later() * 1000)
    ledger.set_clock_anchor(ClockAnchor(central_ms, central_ms, boot_id, boot_ms))
    terminal = make(ledger, later, Ntp(False), unknown_clock_amount=0)
    assert terminal.blocked() is None
    assert terminal.pay(present(reader, 1), 1_000).approved
    later.advance(600)  # ten minutes past the central's time carried on the boot clock
    blocked = terminal.blocked()
    assert blocked is not None and blocked.reason is Reason.CLOCK_UNKNOWN
    assert "from the central's time" in blocked.detail
    assert terminal.pay(present(reader, 2), 1).reason is Reason.CLOCK_UNKNOWN


def test_a_terminal_whose_clock_is_not_judged_has_no_allowance_to_use(
        ledger: Ledger, reader: VirtualReader) -> None:
    # a wall clock of its own and no ClockTrust (tests, replay): no state, no limit
    cfg = DEFAULT.replace("terminal", role="till", id="T-TEST-01", place="M0001")
    terminal = Terminal(cfg.replace("risk", unknown_clock_amount=0), ledger, DEMO_TOKEN_KEY,
                        clock=FakeClock(LATER_S))
    assert terminal.pay(present(reader, 1), 1_000).approved
    assert terminal.blocked() is None


# -- restart, sync, refunds ------------------------------------------------------------


def test_the_count_survives_a_restart(tmp_path: Path, later: FakeClock,
                                      reader: VirtualReader) -> None:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "ledger.sqlite"
    with Ledger(path, key=key, terminal_id="T-TEST-01") as led:
        terminal = make(led, later, Ntp(False), unknown_clock_amount=10_000)
        assert terminal.pay(present(reader, 1), 6_000).approved
    with Ledger(path, key=key, terminal_id="T-TEST-01") as led:
        terminal = make(led, later, Ntp(False), unknown_clock_amount=10_000)
        assert terminal.unknown_clock.won() == 6_000 == counted(led)  # type: ignore[union-attr]
        assert terminal.pay(present(reader, 2), 4_001).reason is Reason.CLOCK_UNKNOWN
        assert terminal.pay(present(reader, 2), 4_000).approved
        assert terminal.unknown_clock.won() == 10_000 == counted(led)  # type: ignore[union-attr]


def test_mark_synced_recounts_from_the_entries_after_it(
        ledger: Ledger, later: FakeClock, reader: VirtualReader) -> None:
    terminal = make(ledger, later, Ntp(False), unknown_clock_amount=9_000)
    amounts = [2_000, 3_000, 4_000]
    seqs = []
    for n, won in enumerate(amounts):
        decision = terminal.pay(present(reader, n), won)
        assert decision.approved and decision.entry is not None
        seqs.append(decision.entry.seq)
    assert terminal.pay(present(reader, 9), 1).reason is Reason.CLOCK_UNKNOWN
    counter = terminal.unknown_clock
    assert counter is not None
    ledger.mark_synced(seqs[0], "checkpoint-1")
    assert counter.won() == counted(ledger) == 3_000 + 4_000
    # a backlog in batches marks synced without recounting the card counters: this figure
    # is exact all the same
    ledger.mark_synced(seqs[1], "checkpoint-2", recount=False)
    assert counter.won() == counted(ledger) == 4_000
    assert terminal.pay(present(reader, 9), 5_001).reason is Reason.CLOCK_UNKNOWN
    assert terminal.pay(present(reader, 9), 5_000).approved
    ledger.mark_synced(ledger.head.seq, "checkpoint-3")
    assert counter.won() == counted(ledger) == 0
    # still unknown after the sync: the whole allowance again
    assert terminal.pay(present(reader, 10), 9_000).approved
    assert counter.won() == counted(ledger) == 9_000


def test_the_tap_path_reads_only_what_was_appended_since_and_nothing_with_a_trusted_clock(
        ledger: Ledger, later: FakeClock, reader: VirtualReader) -> None:
    ntp = Ntp(False)
    terminal = make(ledger, later, ntp, unknown_clock_amount=10**9,
                    card_offline_count=10**6, uid_card_offline_amount=10**9)
    for _ in range(40):
        later.advance(31)
        assert terminal.pay(present(reader, 1), 100).approved
    statements: list[str] = []
    ledger._conn.set_trace_callback(statements.append)
    try:
        later.advance(31)
        before = ledger.head.seq
        assert terminal.pay(present(reader, 1), 100).approved
        counts = [s for s in statements if "json_extract" in s]
        # one count, of the one entry appended since the last (the previous payment's)
        assert len(counts) == 1 and f"e.seq > {before - 1} AND" in counts[0]
        statements.clear()
        ntp.synced = True
        later.advance(31)
        assert terminal.pay(present(reader, 1), 100).approved
        assert not [s for s in statements if "json_extract" in s]
    finally:
        ledger._conn.set_trace_callback(None)
    assert terminal.unknown_clock.won() == 41 * 100 == counted(ledger)  # type: ignore[union-attr]


def test_a_sync_by_another_connection_is_seen(
        tmp_path: Path, later: FakeClock, reader: VirtualReader) -> None:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "ledger.sqlite"
    with Ledger(path, key=key, terminal_id="T-TEST-01") as led:
        terminal = make(led, later, Ntp(False), unknown_clock_amount=5_000)
        assert terminal.pay(present(reader, 1), 5_000).approved
        with Ledger(path, key=key, terminal_id="T-TEST-01") as sync_side:
            sync_side.mark_synced(sync_side.head.seq, "checkpoint")
        assert terminal.unknown_clock.won() == 0 == counted(led)  # type: ignore[union-attr]
        assert terminal.pay(present(reader, 2), 5_000).approved


def test_refunds_give_back_only_what_they_give_back_of_counted_payments(
        ledger: Ledger, later: FakeClock, reader: VirtualReader) -> None:
    ntp = Ntp(True)
    terminal = make(ledger, later, ntp, unknown_clock_amount=20_000)
    trusted = terminal.pay(present(reader, 1), 5_000)
    ntp.synced = False
    later.advance(60)
    unknown_a = terminal.pay(present(reader, 2), 8_000)
    unknown_b = terminal.pay(present(reader, 3), 6_000)
    assert trusted.entry and unknown_a.entry and unknown_b.entry
    counter = terminal.unknown_clock
    assert counter is not None and counter.won() == 14_000
    # a refund of a payment made with a trusted clock moves nothing counted here
    assert terminal.refund(trusted.entry.seq, 2_000).approved
    assert counter.won() == counted(ledger) == 14_000
    # part of a counted payment back, by a refund made with the clock unknown
    assert terminal.refund(unknown_a.entry.seq, 3_000).approved
    assert counter.won() == counted(ledger) == 11_000
    # the rest of it back with the clock trusted again: its clock is the payment's
    ntp.synced = True
    later.advance(60)
    assert terminal.refund(unknown_a.entry.seq).approved
    assert counter.won() == counted(ledger) == 6_000
    # once its payment is synced, a void gives nothing back: the count starts after it
    ledger.mark_synced(unknown_b.entry.seq, "checkpoint")
    assert counter.won() == counted(ledger) == 0
    ntp.synced = False
    later.advance(60)
    assert terminal.void(unknown_b.entry.seq).approved
    assert counter.won() == counted(ledger) == 0
    assert terminal.pay(present(reader, 4), 20_001 - 10_001).approved
    assert counter.won() == counted(ledger) == 10_000


def test_a_void_with_the_clock_unknown_gives_its_payment_back(
        ledger: Ledger, later: FakeClock, reader: VirtualReader) -> None:
    terminal = make(ledger, later, Ntp(False), unknown_clock_amount=4_000)
    paid = terminal.pay(present(reader, 1), 4_000)
    assert paid.entry is not None
    assert terminal.pay(present(reader, 2), 1).reason is Reason.CLOCK_UNKNOWN
    assert terminal.void(paid.entry.seq).approved
    assert counted(ledger) == 0
    assert terminal.pay(present(reader, 2), 4_000).approved


def test_a_ledger_written_by_something_else_is_floored_at_zero(
        ledger: Ledger, later: FakeClock, reader: VirtualReader) -> None:
    terminal = make(ledger, later, Ntp(False), unknown_clock_amount=3_000)
    paid = terminal.pay(present(reader, 1), 1_000)
    assert paid.entry is not None
    # more given back than paid: the core refuses it, a hand-made entry does not
    ledger.append("refund", card_token=paid.entry.fields.card_token, amount=5_000,
                  ref_seq=paid.entry.seq, detail={"clock": "unknown"}, offline_delta=-5_000)
    assert terminal.unknown_clock.won() == 0  # type: ignore[union-attr]
    assert counted(ledger) == 1_000 - 5_000
    # the figure is the floored count of the entries, the same read step by step or again
    # from the start (a restart), never a floor taken at each step
    assert terminal.pay(present(reader, 2), 3_000).approved
    assert terminal.unknown_clock.won() == 0 == UnknownClockWon(ledger).won()  # type: ignore[union-attr]
    assert terminal.pay(present(reader, 3), 3_000).approved
    assert terminal.unknown_clock.won() == 2_000 == UnknownClockWon(ledger).won()  # type: ignore[union-attr]
    assert terminal.pay(present(reader, 4), 1_001).reason is Reason.CLOCK_UNKNOWN
    assert terminal.pay(present(reader, 4), 1_000).approved


def test_an_unreadable_ledger_is_a_ledger_error_and_a_decline(
        ledger: Ledger, later: FakeClock, reader: VirtualReader) -> None:
    terminal = make(ledger, later, Ntp(False), unknown_clock_amount=3_000)
    assert terminal.pay(present(reader, 1), 1_000).approved
    assert terminal.blocked() is None  # the clock's judge has read the head entry now
    counter = UnknownClockWon(ledger)  # has read nothing yet
    # the entries out of reach (a real SQLite error, undone below)
    ledger._conn.execute("ALTER TABLE entries RENAME TO entries_gone")
    try:
        with pytest.raises(LedgerError, match="cannot count the won taken with an unknown"):
            counter.won()
        terminal.unknown_clock = counter
        declined = terminal.pay(present(reader, 2), 1)
        assert declined.reason is Reason.LEDGER_BROKEN and "no such table" in declined.detail
        with pytest.raises(LedgerError):
            terminal.blocked()
    finally:
        ledger._conn.execute("ALTER TABLE entries_gone RENAME TO entries")
    assert terminal.pay(present(reader, 2), 1).approved


# -- blocked: what the kiosk asks ------------------------------------------------------


def test_blocked_at_a_till_is_the_smallest_charge_of_one_won(
        ledger: Ledger, later: FakeClock, reader: VirtualReader) -> None:
    terminal = make(ledger, later, Ntp(False), unknown_clock_amount=5_000)
    assert terminal.smallest_charge() == 1
    assert terminal.pay(present(reader, 1), 4_999).approved
    assert terminal.blocked() is None  # one won of room
    assert terminal.pay(present(reader, 2), 1).approved
    blocked = terminal.blocked()
    assert blocked is not None and blocked.reason is Reason.CLOCK_UNKNOWN
    assert blocked.detail.startswith("5,000 won taken with the clock unknown since the last "
                                     "sync, allowance 5,000: ")
    assert blocked.detail.endswith("no NTP and no time from the central service yet")


def test_blocked_at_a_validator_is_its_lowest_fare_above_zero(
        ledger: Ledger, later: FakeClock, reader: VirtualReader) -> None:
    terminal = make(ledger, later, Ntp(False), role="validator",
                    unknown_clock_amount=ADULT + CHILD)
    assert terminal.smallest_charge() == CHILD
    assert terminal.tap(present(reader, 1)).approved
    assert terminal.blocked() is None  # a child's fare still fits exactly
    terminal = make(ledger, later, Ntp(False), role="validator",
                    unknown_clock_amount=ADULT + CHILD - 1)
    blocked = terminal.blocked()
    assert blocked is not None and blocked.reason is Reason.CLOCK_UNKNOWN
    assert blocked.detail.startswith(f"{ADULT:,} won taken with the clock unknown")
    assert f"allowance {ADULT + CHILD - 1:,}" in blocked.detail
    # every fare free: nothing to charge, nothing blocks (as a free fare is not declined)
    free = DEFAULT.replace("terminal", role="validator", id="T-TEST-01", place="85")
    free = free.replace("fares", adult=0, youth=0, child=0).replace(
        "risk", unknown_clock_amount=ADULT)
    terminal = Terminal(free, ledger, DEMO_TOKEN_KEY, clock=later,
                        clock_trust=ClockTrust(ledger, wall=later, ntp=Ntp(False)))
    assert terminal.smallest_charge() == 0 and terminal.blocked() is None
    # a free category beside paid ones: the lowest fare above 0 still counts
    some_free = DEFAULT.replace("terminal", role="validator", id="T-TEST-01", place="85")
    some_free = some_free.replace("fares", extra={"senior": 0, "staff": 1})
    terminal = Terminal(some_free, ledger, DEMO_TOKEN_KEY, clock=later,
                        clock_trust=ClockTrust(ledger, wall=later, ntp=Ntp(False)))
    assert terminal.smallest_charge() == 1
    terminal.reconfigure(some_free.replace("fares", extra={"senior": 0}))
    assert terminal.smallest_charge() == CHILD


def test_blocked_by_the_exposure_says_so_first(
        ledger: Ledger, later: FakeClock, reader: VirtualReader) -> None:
    terminal = make(ledger, later, Ntp(False), unknown_clock_amount=3_000,
                    terminal_exposure=3_000)
    assert terminal.pay(present(reader, 1), 3_000).approved
    assert terminal.blocked() == Blocked(
        Reason.TERMINAL_EXPOSURE, "3,000 won taken offline, limit 3,000: sync to take more")


def test_blocked_with_a_broken_ledger(ledger: Ledger, later: FakeClock) -> None:
    cfg = DEFAULT.replace("terminal", role="till", id="T-broken", place="M0001")
    fault = LedgerCorruptError("entry 7: bad signature", 7)
    terminal = Terminal(cfg, None, DEMO_TOKEN_KEY, ledger_fault=fault)
    assert terminal.blocked() == Blocked(Reason.LEDGER_BROKEN, "entry 7: bad signature")
    # a ledger that failed since it opened (the core keeps the fault, the ledger stays)
    terminal = make(ledger, later, Ntp(True))
    assert terminal.blocked() is None
    terminal.fault = fault
    assert terminal.blocked() == Blocked(Reason.LEDGER_BROKEN, "entry 7: bad signature")


def test_blocked_with_a_trusted_clock_is_none_whatever_was_taken_unknown(
        ledger: Ledger, later: FakeClock, reader: VirtualReader) -> None:
    ntp = Ntp(False)
    terminal = make(ledger, later, ntp, unknown_clock_amount=1_000)
    assert terminal.pay(present(reader, 1), 1_000).approved
    assert terminal.blocked() is not None
    ntp.synced = True
    assert terminal.blocked() is None


# -- the kiosk -------------------------------------------------------------------------


def test_the_service_check_asks_the_core(ledger: Ledger, later: FakeClock,
                                         reader: VirtualReader) -> None:
    terminal = make(ledger, later, Ntp(False), unknown_clock_amount=2_000)
    check = ServiceCheck(terminal)
    assert check.smallest_charge() == 1 and check.blockers() == ()
    assert terminal.pay(present(reader, 1), 2_000).approved
    (blocker,) = check.blockers()
    assert blocker.cause is Cause.CLOCK_UNKNOWN
    assert blocker.line().startswith("the clock is unknown and its offline allowance is "
                                     "used (2,000 won taken with the clock unknown")
    # a refund needs no card and gives the allowance back: the till keeps it
    assert Cause.CLOCK_UNKNOWN in CORRECTIONS_OK


def _kiosk_config(allowance: int) -> Config:
    cfg = DEFAULT.replace("terminal", role="validator", id="T-clock", language="en")
    return cfg.replace("risk", unknown_clock_amount=allowance)


def test_the_kiosk_is_out_of_service_when_the_clock_is_unknown_over_its_allowance(
        tmp_path: Path) -> None:
    # the real wall clock, judged with no NTP and no central time yet: unknown
    ntp = Ntp(False)
    with Ledger(tmp_path / "ledger.sqlite", key=Ed25519PrivateKey.generate(),
                terminal_id="T-clock") as ledger:
        terminal = Terminal(_kiosk_config(ADULT), ledger, DEMO_TOKEN_KEY,
                            clock_trust=ClockTrust(ledger, ntp=ntp))
        reader = VirtualReader("r")
        app = KioskApp(terminal, reader.poll, sound=False)
        app.model.clock = Clock()
        try:
            app.start()
            pump(app, lambda: app.model.sync.head_seq == 0 and app.model.sync.ledger_ok,
                 "status")
            assert app.model.screen == Screen.IDLE and "tap_card" in _drawn(app)
            reader.present_uid(MINJI)
            pump(app, lambda: app.model.screen == Screen.RESULT, "the fare")
            assert app.model.result is not None and app.model.result.outcome == "approved"
            app.model.clock.now += 60
            pump(app, lambda: app.model.screen == Screen.OUT_OF_SERVICE, "clock over allowance")
            assert [b.cause for b in app.model.sync.blocked] == [Cause.CLOCK_UNKNOWN]
            drawn = _drawn(app)
            assert not _asks_for_a_card(drawn)
            assert drawn["oos_en"] == OUT_OF_SERVICE_EN
            assert drawn["oos_cause"] == tr("en", "cause_clock_unknown")
            assert tr("ko", "cause_clock_unknown") != tr("en", "cause_clock_unknown")
            assert f"{ADULT:,} won taken with the clock unknown" in drawn["oos_detail"]
            assert f"allowance {ADULT:,}" in drawn["oos_detail"]
            # a card presented anyway gets the core's own answer
            reader.present_uid(MINJI[:-1] + b"\x02")
            pump(app, lambda: app.model.screen == Screen.RESULT, "the decline")
            assert app.model.result is not None
            assert app.model.result.reason is Reason.CLOCK_UNKNOWN
            app.model.clock.now += 60
            pump(app, lambda: app.model.screen == Screen.OUT_OF_SERVICE, "out again")
            ntp.synced = True  # NTP: the clock is trusted, the terminal takes payments
            pump(app, lambda: app.model.screen == Screen.IDLE, "in service with NTP", 15)
            ntp.synced = False
            pump(app, lambda: app.model.screen == Screen.OUT_OF_SERVICE, "unknown again", 15)
            ledger.mark_synced(ledger.head.seq, "checkpoint")  # what the sync client does
            pump(app, lambda: app.model.screen == Screen.IDLE, "in service after a sync", 15)
            assert "tap_card" in _drawn(app)
        finally:
            app.close()
            reader.close()
