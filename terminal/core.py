"""The transaction core shared by both roles, independent of any UI or hardware.

One transaction walks ``idle → presented → read → decide → commit → show → idle``
(a decline skips ``commit``; a till's refund starts at ``decide``). An approval is returned
only after its ledger entry is durable; what the ledger could not record is declined with
:attr:`Reason.LEDGER_WRITE_FAILED`.

A campaign code (either role) is a claim in two steps, with no money moved whatever amount
a till had keyed::

  code ──> PENDING (decision "claim_pending": "tap your card", points shown, nothing recorded)
  PENDING ──card within risk.campaign_claim_window_s──> one ``incentive`` entry for that card
  PENDING ──no card in the window──> lapsed (declined CLAIM_LAPSED by :meth:`Terminal.lapse_claim`,
                                      or dropped silently at the next presentation)
  PENDING ──the same code again──> still the one pending claim; another code replaces it

The points shown are what the central service credits (``terminal.incentives.campaign_points``),
or, when the rules held here cannot confirm the campaign, ``points`` is ``None`` and the
signed figure is in ``points_unconfirmed``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

from firmware_cfg.config import Config
from localpay.errors import (
    CardRemovedError,
    LedgerCorruptError,
    LedgerError,
    LedgerWriteError,
    ParseError,
    QRFormatError,
    ReaderError,
    TransactionError,
)
from localpay.types import Presentation
from offline_ledger import Entry, Ledger
from offline_ledger.pockets import counting, refund_parts, seoul_day
from offline_ledger.unknown_clock import UnknownClockWon
from terminal import cards_all  # noqa: F401 - registers the EMV and QR card applications
from terminal.cards import CardIdentity, Declined, ReadContext, find_application
from terminal.clock import ClockState, ClockTrust
from terminal.emv.reader import terminal_aids
from terminal.incentives import PointsEstimator, campaign_points, claim_detail, claimed_by
from terminal.receipt import signed_facts
from terminal.risk import (
    PocketSplitter,
    Reason,
    RiskInput,
    evaluate,
    remaining_balance,
    terminal_limits,
)

log = logging.getLogger(__name__)

Outcome = Literal["approved", "declined", "already_paid", "claim_pending"]


class State(Enum):
    IDLE = "idle"
    PRESENTED = "presented"
    READ = "read"
    DECIDE = "decide"
    COMMIT = "commit"
    SHOW = "show"


_ALLOWED: dict[State, frozenset[State]] = {
    State.IDLE: frozenset({State.PRESENTED, State.DECIDE}),
    State.PRESENTED: frozenset({State.READ, State.SHOW}),
    State.READ: frozenset({State.DECIDE, State.SHOW}),
    State.DECIDE: frozenset({State.COMMIT, State.SHOW}),
    State.COMMIT: frozenset({State.SHOW}),
    State.SHOW: frozenset({State.IDLE}),
}


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome shown to the rider or clerk."""

    outcome: Outcome
    amount: int
    reason: Reason | None = None
    card: CardIdentity | None = None
    entry: Entry | None = None
    balance: int | None = None
    elapsed_ms: float = 0.0
    detail: str = ""
    #: incentive points this tap or purchase is estimated to earn, and this week's bus
    #: points, when the terminal knows them (``terminal.incentives``)
    points: int | None = None
    points_week: int | None = None
    #: the rider category whose fare a validator charged (``FaresSection.fare``)
    rider: str | None = None
    #: a campaign claim whose points the rules held here cannot confirm: the figure signed
    #: into the code (``points`` is then ``None``); the central service decides
    points_unconfirmed: int | None = None
    #: an approved payment's split by pocket, in drawing order (the entry's ``split``);
    #: empty when the terminal held no pockets for the card
    split: tuple[tuple[str, int], ...] = ()

    @property
    def approved(self) -> bool:
        return self.outcome == "approved"

    @property
    def message(self) -> str:
        if self.reason is not None:
            return self.reason.message
        if self.outcome == "already_paid":
            return "Already paid: this card tapped a moment ago."
        if self.outcome == "claim_pending":
            return "Nothing charged. Tap your card to collect the points."
        return "Approved."


@dataclass(frozen=True, slots=True)
class PendingClaim:
    """A campaign code read and waiting for the card that collects its points."""

    code: CardIdentity
    #: wall-clock ms after which the claim lapses
    deadline_ms: int


@dataclass(frozen=True, slots=True)
class Blocked:
    """Why the terminal cannot approve even its smallest charge now (:meth:`Terminal.blocked`),
    with the technician's detail."""

    reason: Reason
    detail: str


StateListener = Callable[[State, "Decision | None"], None]


class Terminal:
    """A till or a validator over one ledger. Not thread-safe: one transaction at a time."""

    def __init__(
        self,
        config: Config,
        ledger: Ledger | None,
        token_key: bytes,
        *,
        clock: Callable[[], float] = time.time,
        ledger_fault: LedgerError | None = None,
        read_options: dict[str, object] | None = None,
        clock_trust: ClockTrust | None = None,
    ) -> None:
        if ledger is None and ledger_fault is None:
            raise TransactionError("a terminal needs a ledger, or the fault that stopped it")
        self.config = config
        self.role = config.terminal.role
        self.ledger = ledger
        self.token_key = token_key
        self.clock = clock
        # How far the wall clock is trusted, recorded in each entry (terminal.clock). A
        # terminal given a wall clock of its own (tests, replay) records a state only with a
        # ClockTrust judging that clock: the kernel's NTP answer is about the system's.
        if clock_trust is None and ledger is not None and clock is time.time:
            clock_trust = ClockTrust(ledger)
        self.clock_trust = clock_trust
        # the won approved with an unknown clock since the last sync, for its allowance
        self.unknown_clock = UnknownClockWon(ledger) if ledger is not None else None
        self.fault = ledger_fault
        self.read_options = self._read_options(config)
        self.read_options.update(read_options or {})
        self.state = State.IDLE
        self.listeners: list[StateListener] = []
        self.points = PointsEstimator(ledger)
        self.pending_claim: PendingClaim | None = None
        #: the till's signed-in clerk (kiosk_ui.clerks), recorded as ``clerk`` in the
        #: detail of each payment and refund; "" when the till has no clerks configured
        self.clerk = ""
        self.pockets = PocketSplitter(config.merchant)

    def reconfigure(self, config: Config) -> None:
        """Run with a new config from the next transaction on (same ledger and keys)."""
        if self.state is not State.IDLE:
            raise TransactionError("cannot change the config in the middle of a transaction")
        extra = {k: v for k, v in self.read_options.items()
                 if k not in self._read_options(self.config)}
        self.config = config
        self.role = config.terminal.role
        self.read_options = {**self._read_options(config), **extra}
        self.pockets = PocketSplitter(config.merchant)

    def _read_options(self, config: Config) -> dict[str, object]:
        """What the card applications need from the config and the ledger."""
        from firmware_cfg.keys import public_from_hex

        r = config.risk
        options: dict[str, object] = {
            "ledger": self.ledger,
            "qr_clock_skew_s": r.qr_clock_skew_s,
            "cpm_nonce_ttl_s": r.cpm_nonce_ttl_s,
            "emv_floor_limit": r.emv_floor_limit,
            "emv_threshold": r.emv_threshold,
            "emv_target_percent": r.emv_target_percent,
            "emv_max_target_percent": r.emv_max_target_percent,
            "emv_aids": terminal_aids(config.emv),
        }
        if config.keys.issuer_public_key:
            options["wallet_issuer_keys"] = [
                public_from_hex(config.keys.issuer_public_key, "keys.issuer_public_key")]
        return options

    # -- whether it can approve at all -----------------------------------------------------

    def smallest_charge(self) -> int:
        """1 won at a till; at a validator the lowest fare above 0 (0 when every fare is free:
        only then may a limit that is reached still let a tap through)."""
        if self.role == "till":
            return 1
        return min((f for f in self.config.fares.categories().values() if f > 0), default=0)

    def blocked(self) -> Blocked | None:
        """Why the smallest charge (:meth:`smallest_charge`) would be declined now whatever
        card paid it, by the rules a payment meets (:func:`terminal.risk.terminal_limits`):
        the ledger broken, the offline exposure reached, or the clock ``unknown`` with its
        allowance used; None when it can approve. The kiosk asks this between presentations
        (out of service) instead of working it out again. Raises ``LedgerError``."""
        if self.fault is not None or self.ledger is None:
            # no ledger comes with the fault that stopped it (the constructor's rule)
            return Blocked(Reason.LEDGER_BROKEN, str(self.fault))
        reading = (self.clock_trust.judge(int(self.clock() * 1000))
                   if self.clock_trust is not None else None)
        unknown = self._unknown_won(reading.state if reading is not None else None)
        exposure = self.ledger.exposure
        r = self.config.risk
        reason = terminal_limits(r, self.smallest_charge(), exposure, unknown)
        if reason is Reason.TERMINAL_EXPOSURE:
            return Blocked(reason, f"{exposure:,} won taken offline, limit "
                                   f"{r.terminal_exposure:,}: sync to take more")
        if reason is Reason.CLOCK_UNKNOWN and reading is not None:
            return Blocked(reason, f"{unknown:,} won taken with the clock unknown since the "
                                   f"last sync, allowance {r.unknown_clock_amount:,}: "
                                   f"{reading.why}")
        return None

    # -- state machine ---------------------------------------------------------------------

    def _to(self, new: State, decision: Decision | None = None) -> None:
        if new not in _ALLOWED[self.state]:
            raise TransactionError(f"transaction cannot go from {self.state.value} to {new.value}")
        self.state = new
        for listener in self.listeners:
            listener(new, decision)

    def _show(self, decision: Decision) -> Decision:
        self._to(State.SHOW, decision)
        self._to(State.IDLE)
        return decision

    def _decline(self, reason: Reason, amount: int, started: float, *,
                 card: CardIdentity | None = None, detail: str = "") -> Decision:
        log.info("declined %s: %s %s", amount, reason.value, detail)
        return self._show(Decision("declined", amount, reason, card,
                                   elapsed_ms=(time.perf_counter() - started) * 1000,
                                   detail=detail))

    # -- the two roles ---------------------------------------------------------------------

    def tap(self, presentation: Presentation) -> Decision:
        """Validator: charge the fare for this card, once per duplicate-tap window."""
        if self.role != "validator":
            raise TransactionError("tap() is the validator's; a till uses pay()")
        return self._transaction(presentation, None)

    def pay(self, presentation: Presentation, amount: int) -> Decision:
        """Till: charge ``amount`` won to the card or code presented."""
        if self.role != "till":
            raise TransactionError("pay() is the till's; a validator uses tap()")
        return self._transaction(presentation, amount)

    def collect(self, presentation: Presentation) -> Decision:
        """Either role: a presentation with no amount, for the card that collects a pending
        campaign claim's points (a till has no sale keyed then). At a validator it is a tap;
        at a till with no claim waiting, a card is declined as an invalid amount."""
        return self._transaction(presentation, 0 if self.role == "till" else None)

    def lapse_claim(self) -> Decision | None:
        """Decline the pending campaign claim once its window has passed (nothing was
        recorded); ``None`` while it may still be collected or when none waits. The kiosk
        calls it between presentations, so that the screen says the claim lapsed."""
        claim = self.pending_claim
        if (claim is None or self.state is not State.IDLE
                or int(self.clock() * 1000) < claim.deadline_ms):
            return None
        self.pending_claim = None
        started = time.perf_counter()
        self._to(State.DECIDE)
        return self._decline(Reason.CLAIM_LAPSED, 0, started, card=claim.code,
                             detail=f"campaign {claim.code.extra['campaign']}: no card tapped")

    def cancel_claim(self) -> None:
        """Forget the pending campaign claim (the clerk cancelled); nothing was recorded."""
        self.pending_claim = None

    def _transaction(self, p: Presentation, amount: int | None) -> Decision:
        started = time.perf_counter()
        self._to(State.PRESENTED)
        now_ms = int(self.clock() * 1000)
        claim = self.pending_claim
        if claim is not None and now_ms >= claim.deadline_ms:
            log.info("campaign claim %s lapsed", claim.code.extra["campaign"])
            claim = self.pending_claim = None
        # A card presented while a claim waits collects its points: nothing is charged.
        claiming = claim is not None and p.is_card
        # Until the card is read its category is not known: show and read with the default's.
        shown_amount = 0 if claiming else (
            amount if amount is not None else self.config.fares.default_fare)
        if self.fault is not None or self.ledger is None:
            return self._decline(Reason.LEDGER_BROKEN, shown_amount, started,
                                 detail=str(self.fault))
        ledger = self.ledger
        found = find_application(p)
        if found is None:
            return self._decline(Reason.UNSUPPORTED, shown_amount, started,
                                 detail=f"{p.kind} via {p.reader}")
        app_name, read = found
        try:
            card = read(p, ReadContext(self.token_key, shown_amount, now_ms, self.read_options))
        except Declined as err:
            return self._decline(err.reason, shown_amount, started, detail=str(err))
        except CardRemovedError as err:
            return self._decline(Reason.CARD_REMOVED, shown_amount, started, detail=str(err))
        except QRFormatError as err:
            return self._decline(Reason.QR_INVALID, shown_amount, started, detail=str(err))
        except (ParseError, ReaderError) as err:
            return self._decline(Reason.UNREADABLE, shown_amount, started,
                                 detail=f"{app_name}: {err}")
        self._to(State.READ)
        if "campaign" in card.extra:
            return self._hold_claim(ledger, card, started, now_ms)
        if claim is not None and claiming:
            return self._claim(ledger, claim, card, started, now_ms)
        if amount is None:
            try:
                rider, amount = self._fare(ledger, card)
            except LedgerError as err:
                return self._ledger_failed(err, shown_amount, started, card)
            if card.allowance is not None and amount > card.allowance:
                # The code's application checked the default's fare; this category's is more.
                return self._decline(Reason.INSUFFICIENT_BALANCE, amount, started, card=card,
                                     detail=f"{amount} won is over the code's offline allowance")
        else:
            rider = self.config.fares.fare(card.rider)[0]
        self._to(State.DECIDE)
        if card.verdict is not None:
            return self._decline(Reason(card.verdict), amount, started, card=card,
                                 detail=str(card.extra.get("why", "")))
        clock_state = self._clock_state(now_ms)
        try:
            state = ledger.card_state(card.token)
            if card.nonce is not None and ledger.nonce_used(card.nonce[0]):
                return self._decline(Reason.QR_REPLAY, amount, started, card=card)
            unknown = self._unknown_won(clock_state)
        except LedgerError as err:
            return self._ledger_failed(err, amount, started, card)
        mono = ledger.next_mono(now_ms)
        window_ms = self.config.risk.duplicate_window_s * 1000
        if (self.role == "validator" and state.last_tap_seq
                and mono - state.last_tap_mono < window_ms):
            return self._show(Decision(
                "already_paid", 0, None, card, balance=remaining_balance(state, 0),
                elapsed_ms=(time.perf_counter() - started) * 1000,
                detail=f"paid at entry {state.last_tap_seq}",
            ))
        # Pockets pay a till's payments; a fare is not split (central posts no taps by pocket).
        try:
            split = (self.pockets.split(ledger, card.token, amount, now_ms)
                     if self.role == "till" and amount > 0 else None)
        except LedgerError as err:
            return self._ledger_failed(err, amount, started, card)
        reason = evaluate(self.config.risk, RiskInput(
            amount, state, ledger.exposure, card.weak, fare=self.role == "validator",
            split=split[0] if split is not None else None, unknown_clock=unknown))
        if reason is not None:
            return self._decline(reason, amount, started, card=card)
        detail = self._detail(card, rider, clock_state)
        parts = split[0].parts if split is not None else ()
        if parts:
            detail["split"] = [[p, w] for p, w in parts]
        t = self.config.terminal
        till = self.role == "till"
        if till:
            # A till's receipt facts are signed into its entry, so they are worked out before
            # it; a validator's tap has no receipt, its entry and its path stay as they were.
            points, week = self.points.estimate(self.role, t.bus_type, t.merchant_category,
                                                card, amount, state, now_ms, rider)
            detail.update(signed_facts(card.aid, card.label, points,
                                       remaining_balance(state, amount)))
        self._to(State.COMMIT)
        try:
            entry = ledger.append(
                "tap" if self.role == "validator" else "payment",
                card_token=card.token,
                amount=amount,
                place=self.config.terminal.place,
                detail=detail,
                wall_ms=now_ms,
                offline_delta=amount,
                tap=self.role == "validator",
                nonce=card.nonce,
                also=counting(card.token, parts, split[1]) if split is not None else None,
            )
        except LedgerError as err:
            return self._ledger_failed(err, amount, started, card)
        if not till:
            points, week = self.points.estimate(self.role, t.bus_type, t.merchant_category,
                                                card, amount, state, now_ms, rider)
        return self._show(Decision(
            "approved", amount, None, card, entry, remaining_balance(state, amount),
            (time.perf_counter() - started) * 1000, points=points, points_week=week,
            rider=rider if self.role == "validator" else None, split=parts,
        ))

    def _fare(self, ledger: Ledger, card: CardIdentity) -> tuple[str, int]:
        """The validator's ``(category, fare)``: the card's own category, else its central
        profile's (one primary-key lookup), else the config's default; a category without a
        fare here is charged as the default."""
        wanted = card.rider if card.rider is not None else ledger.rider_of(card.token)
        return self.config.fares.fare(wanted)

    # -- campaign claims (see the module docstring) -----------------------------------------

    def _hold_claim(self, ledger: Ledger, code: CardIdentity, started: float,
                    now_ms: int) -> Decision:
        """A campaign code: hold the claim for the card that collects it. Nothing is
        recorded yet, and nothing charged whatever amount a till had keyed."""
        self._to(State.DECIDE)
        try:
            if code.nonce is not None and ledger.nonce_used(code.nonce[0]):
                return self._decline(Reason.QR_REPLAY, 0, started, card=code,
                                     detail="this campaign code was already claimed here")
        except LedgerError as err:
            return self._ledger_failed(err, 0, started, code)
        held = self.pending_claim
        window_s = self.config.risk.campaign_claim_window_s
        if held is None or held.code.nonce != code.nonce:
            # The same code again keeps its claim (and window); another code replaces it.
            self.pending_claim = PendingClaim(code, now_ms + window_s * 1000)
        points, unconfirmed = self._campaign_points(code, now_ms)
        return self._show(Decision(
            "claim_pending", 0, None, code, elapsed_ms=(time.perf_counter() - started) * 1000,
            detail=f"nothing charged; tap a card within {window_s} s to collect the points",
            points=points, points_unconfirmed=unconfirmed))

    def _claim(self, ledger: Ledger, claim: PendingClaim, card: CardIdentity, started: float,
               now_ms: int) -> Decision:
        """The card presented while a claim waits: one ``incentive`` entry for that card, no
        money; the central service credits it once per card and campaign."""
        self.pending_claim = None
        code = claim.code
        campaign = str(code.extra["campaign"])
        self._to(State.DECIDE)
        try:
            if code.nonce is not None and ledger.nonce_used(code.nonce[0]):
                return self._decline(Reason.QR_REPLAY, 0, started, card=card,
                                     detail="this campaign code was already claimed here")
            if ledger.card_state(card.token).denied is not None:
                return self._decline(Reason.DENY_LISTED, 0, started, card=card)
            if claimed_by(ledger.card_details(card.token, "incentive"), campaign):
                return self._decline(Reason.ALREADY_CLAIMED, 0, started, card=card,
                                     detail=f"campaign {campaign}")
            self._to(State.COMMIT)
            entry = ledger.append("incentive", card_token=card.token, amount=0,
                                  place=self.config.terminal.place,
                                  detail=self._clocked(claim_detail(code, card),
                                                       self._clock_state(now_ms)),
                                  wall_ms=now_ms,
                                  nonce=code.nonce)
        except LedgerError as err:
            return self._ledger_failed(err, 0, started, card)
        points, unconfirmed = self._campaign_points(code, now_ms)
        return self._show(Decision(
            "approved", 0, None, card, entry, elapsed_ms=(time.perf_counter() - started) * 1000,
            detail=f"campaign {campaign}: points collected, nothing charged",
            points=points, points_unconfirmed=unconfirmed))

    def _campaign_points(self, code: CardIdentity, now_ms: int) -> tuple[int | None, int | None]:
        """``(points, points_unconfirmed)``: what the central service credits when the rules
        held here confirm the campaign, else the figure signed into the code, unconfirmed."""
        signed = int(code.extra["points"])
        try:
            rules = self.points.rules()
        except LedgerError as err:
            log.warning("campaign points not confirmed: %s", err)
            rules = None
        shown = campaign_points(rules, str(code.extra["campaign"]), signed, now_ms)
        return (shown, None) if shown is not None else (None, signed)

    def _clock_state(self, wall_ms: int) -> ClockState | None:
        """The clock's state at ``wall_ms`` (``terminal.clock``); None when not judged."""
        return self.clock_trust.judge(wall_ms).state if self.clock_trust is not None else None

    def _unknown_won(self, state: ClockState | None) -> int | None:
        """The won approved with an unknown clock since the last sync, read only while the
        clock is ``unknown`` (a trusted clock costs the tap nothing); None otherwise."""
        counter = self.unknown_clock
        return counter.won() if state == "unknown" and counter is not None else None

    @staticmethod
    def _clocked(detail: dict[str, Any], state: ClockState | None) -> dict[str, Any]:
        """``detail`` with the clock's ``state``, if judged."""
        if state is not None:
            detail["clock"] = state
        return detail

    def _detail(self, card: CardIdentity, rider: str,
                clock_state: ClockState | None) -> dict[str, Any]:
        t = self.config.terminal
        # The central service credits with the card's profile first, else with this rider.
        detail: dict[str, Any] = {"scheme": card.scheme, "card": card.display,
                                               "rider": rider}
        if self.role == "validator":
            detail["bus_type"] = t.bus_type
        else:
            detail["merchant_category"] = t.merchant_category
            if self.clerk:
                detail["clerk"] = self.clerk
        if card.atc is not None:
            detail["atc"] = card.atc
        return self._clocked(detail, clock_state)

    def _ledger_failed(self, err: LedgerError, amount: int, started: float,
                       card: CardIdentity | None) -> Decision:
        if isinstance(err, LedgerWriteError):
            log.error("ledger write failed, declining: %s", err)
            return self._decline(Reason.LEDGER_WRITE_FAILED, amount, started, card=card,
                                 detail=str(err))
        if isinstance(err, LedgerCorruptError):
            self.fault = err
        log.error("ledger failed, declining: %s", err)
        return self._decline(Reason.LEDGER_BROKEN, amount, started, card=card, detail=str(err))

    def paid_online(self, payment_id: str, reference: str, amount: int) -> Decision:
        """Till: record the sale ``reference`` that the citizen's app paid through central
        as its payment ``payment_id`` (terminal.mpm_online), and approve it. No card: the
        money moved at central, so nothing counts against a card's offline limits, and the
        detail names the central payment so that central posts it once."""
        started = time.perf_counter()
        if self.role != "till":
            raise TransactionError("an online QR payment is taken at a till")
        self._to(State.DECIDE)
        if self.fault is not None or self.ledger is None:
            return self._decline(Reason.LEDGER_BROKEN, amount, started, detail=str(self.fault))
        self._to(State.COMMIT)
        wall_ms = int(self.clock() * 1000)
        detail = self._clocked({"merchant_category": self.config.terminal.merchant_category,
                                "mpm_payment": payment_id, "reference": reference},
                               self._clock_state(wall_ms))
        if self.clerk:
            detail["clerk"] = self.clerk
        try:
            entry = self.ledger.append("payment", amount=amount, place=self.config.terminal.place,
                                       detail=detail, wall_ms=wall_ms)
        except LedgerError as err:
            return self._ledger_failed(err, amount, started, None)
        return self._show(Decision("approved", amount, None, None, entry,
                                   elapsed_ms=(time.perf_counter() - started) * 1000))

    # -- the till's corrections ------------------------------------------------------------

    def refund(self, seq: int, amount: int | None = None) -> Decision:
        """Give back ``amount`` (default: all that is left) of payment ``seq``."""
        return self._correction("refund", seq, amount)

    def void(self, seq: int) -> Decision:
        """Cancel payment ``seq`` whole; refused once anything of it was refunded."""
        return self._correction("void", seq, None)

    def _correction(self, kind: Literal["refund", "void"], seq: int,
                    amount: int | None) -> Decision:
        started = time.perf_counter()
        if self.role != "till":
            raise TransactionError(f"{kind} is done at a till, not at a validator")
        self._to(State.DECIDE)
        if self.fault is not None or self.ledger is None:
            return self._decline(Reason.LEDGER_BROKEN, amount or 0, started,
                                 detail=str(self.fault))
        ledger = self.ledger
        try:
            original = ledger.entry(seq)
            already = ledger.refunded_total(seq) if original else 0
        except LedgerError as err:
            return self._ledger_failed(err, amount or 0, started, None)
        if original is None or original.kind != "payment":
            return self._decline(Reason.NOT_REFUNDABLE, amount or 0, started,
                                 detail=f"entry {seq} is not a payment in this ledger")
        left = original.amount - already
        if kind == "void":
            if already:
                return self._decline(Reason.NOT_REFUNDABLE, original.amount, started,
                                     detail=f"entry {seq} was partly refunded; refund the rest")
            amount = original.amount
        elif amount is None:
            amount = left
        if type(amount) is not int or amount <= 0:
            return self._decline(Reason.INVALID_AMOUNT, 0, started, detail=f"{amount!r}")
        if amount > left:
            return self._decline(Reason.REFUND_EXCEEDS, amount, started,
                                 detail=f"{left} won left of entry {seq}")
        self._to(State.COMMIT)
        f = original.fields
        wall_ms = int(self.clock() * 1000)
        detail = self._clocked({"merchant_category": self.config.terminal.merchant_category},
                               self._clock_state(wall_ms))
        if self.clerk:
            detail["clerk"] = self.clerk
        try:
            # what each pocket gets back, as central reverses it: newest drawn first
            back = refund_parts(ledger, seq, f.detail, amount)
            if back:
                detail["split"] = [[p, w] for p, w in back]
            entry = ledger.append(
                kind, card_token=f.card_token, amount=amount, ref_seq=seq, place=f.place,
                detail=detail, wall_ms=wall_ms, offline_delta=-amount,
                also=counting(f.card_token, back, seoul_day(wall_ms), back=True)
                if back else None,
            )
        except LedgerError as err:
            return self._ledger_failed(err, amount, started, None)
        return self._show(Decision("approved", amount, None, None, entry,
                                   elapsed_ms=(time.perf_counter() - started) * 1000,
                                   split=tuple(back)))
