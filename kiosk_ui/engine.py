"""The terminal behind the screens, on threads of its own.

The screen thread never waits on a reader or a disk: a *poller* thread calls the injected
source of presentations (a callable with a timeout, e.g. a reader's ``poll``) and a *worker*
thread owns the :class:`~terminal.core.Terminal` and its ledger, taking presentations and
the screens' commands from one queue, one at a time (the terminal is not thread-safe).
Decisions, state changes and status snapshots go back on an outbox the screen thread drains
each frame, so a decision is on screen in the frame after the ledger commit.

Campaign codes are taken by either role, a till's even with no sale keyed: the terminal holds
the claim for the next card (``Terminal.pending_claim``), which a till then hands to
``Terminal.collect``; the worker asks ``Terminal.lapse_claim`` between presentations, so the
screen says so when no card came in the window.

Online QR payments (issue #17, :mod:`terminal.mpm_online`), with an ``mpm`` link: when the
till shows its sale's QR code the app calls :meth:`Engine.sell_online` with the code's
reference; the worker starts a thread of its own for the sale that opens it at central and
long-polls (network only, never the worker's nor the screen's thread). A payment comes back
through the worker's queue, which records it (``Terminal.paid_online``) and reports it as
any payment's decision; no network is reported as :class:`~kiosk_ui.model.OnlineQrDown`
(the wallet QR and cards still pay). The wait's end, unpaid, is reported with notice
``qr_expired`` (the code is no longer shown); central lost after the code was shown with
``qr_checking``: the sale's thread asks again until central answers, and meanwhile the
worker takes no card or code for that sale (``notice=""`` when central answers and the
wait goes on). A Cancel, a card or wallet code that paid the sale, a
new sale or the engine's stop closes the reference at central; a payment central says came
just before is still recorded.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from kiosk_ui.cash_receipt import CashReceiptCmd, CashReceiptDone, carry_out
from kiosk_ui.model import (
    Action,
    Busy,
    CancelCmd,
    Closed,
    CloseDayCmd,
    Command,
    DayView,
    Event,
    Fault,
    Ignored,
    OnlineQrDown,
    Pay,
    PaymentRow,
    ReceiptFault,
    RefreshCmd,
    RefundCmd,
    Result,
    ResultView,
    SyncView,
)
from kiosk_ui.service import Blocker, Device, DeviceState, ServiceCheck
from localpay.errors import LedgerError, LocalpayError, ReaderError
from localpay.types import Presentation
from terminal import zreport
from terminal.core import Decision, State, Terminal
from terminal.mpm_online import Link as MpmLink
from terminal.mpm_online import OnlineResult, record_online, wait_online
from terminal.qr import detect
from terminal.receipt import ReceiptDesk, Shown

if TYPE_CHECKING:  # the ledger is reached only through the terminal's own objects
    from offline_ledger import Entry

log = logging.getLogger(__name__)

#: a callable that waits at most ``timeout`` seconds for a card or code
PresentationSource = Callable[[float], Presentation | None]
#: tells whether the central service is reachable now (None: not known, shown as offline)
LinkState = Callable[[], bool | None]

STATUS_EVERY_S = 2.0
POLL_TIMEOUT_S = 0.2
#: entries read back when listing today's payments (a till takes hundreds a day, not more)
DAY_SCAN_LIMIT = 5000
#: the programme's zone, as the EMV application's default (``read_options["timezone"]``):
#: a Raspberry Pi image often runs in UTC, and a clerk reads the shop's own time
DEFAULT_ZONE = "Asia/Seoul"


class _Stop:
    pass


@dataclass(frozen=True)
class _OnlineSale:
    """Open ``reference`` at central for ``amount`` won and wait for an app to pay it."""

    amount: int
    reference: str


@dataclass(frozen=True)
class _OnlineDone:
    """What a sale's own thread heard from central, for the worker to record."""

    result: OnlineResult
    amount: int


class _Session:
    """One online QR sale's thread; ``cancelled`` closes the reference at central."""

    def __init__(self, sale: _OnlineSale) -> None:
        self.sale = sale
        self.cancelled = threading.Event()
        #: central was lost after the code was shown: whether the app paid is not known
        self.unknown = threading.Event()
        self.thread: threading.Thread | None = None


class _Polled:
    """A presentation from the poller, which waits for ``done`` before polling again: the
    worker may still be talking to the card through the same reader."""

    def __init__(self, presentation: Presentation) -> None:
        self.presentation = presentation
        self.done = threading.Event()


class Engine:
    """Runs ``terminal`` for the screens. Call :meth:`start`, drain :meth:`events`, :meth:`stop`."""

    def __init__(self, terminal: Terminal,
                 source: PresentationSource | Sequence[PresentationSource] | None, *,
                 link: LinkState | None = None,
                 idle_task: Callable[[], None] | None = None,
                 home: Path | None = None, blockers: Sequence[Blocker] = (),
                 receipts: ReceiptDesk | None = None,
                 mpm: MpmLink | None = None, mpm_timeout_s: float = 120.0,
                 mpm_wait_s: float = 10.0, mpm_retry_s: float = 2.0) -> None:
        self.terminal = terminal
        #: central's online QR payments (``sync.mpm.MpmLink``); None: online QR off
        self.mpm = mpm
        self.mpm_timeout_s = mpm_timeout_s
        self.mpm_wait_s = mpm_wait_s
        #: how often central is asked again when its answer was lost (terminal.mpm_online)
        self.mpm_retry_s = mpm_retry_s
        #: the online sale the till shows now (worker thread only), and every sale's thread
        self._online: _Session | None = None
        self._sessions: list[_Session] = []
        #: prints each approved till payment's receipt (None: no printer configured)
        self.receipts = receipts
        #: what stops the terminal approving (read-only home, broken ledger, ...)
        self.service = ServiceCheck(terminal, home=home, startup=blockers)
        self.zone = ZoneInfo(str(terminal.read_options.get("timezone", DEFAULT_ZONE)))
        #: run by the worker between transactions (e.g. a config bundle the sync fetched)
        self.idle_task = idle_task
        if source is None:
            self.sources: list[PresentationSource] = []
        elif callable(source):
            self.sources = [source]
        else:
            self.sources = list(source)
        self.link = link
        self.inbox: queue.Queue[Presentation | _Polled | Command | _OnlineSale | _OnlineDone
                                | _Stop] = queue.Queue()
        self.outbox: queue.Queue[Event] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pending: int | None = None
        self._reader_ok = True
        self._blocked: tuple[Blocker, ...] = ()
        self._day_key: tuple[int, str] | None = None
        self._day_cache: tuple[str, int, list[_Row]] | None = None
        #: since when the screens count declines for the next Z report (wall ms)
        self._declines_since_ms = int(terminal.clock() * 1000)
        terminal.listeners.append(self._on_state)

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        # The first status before any thread runs (nothing else touches the terminal yet):
        # the first frame is already the out-of-service screen when it must be, never a
        # "Tap card" for the frames until the worker reports.
        self._status(force_day=True)
        worker = threading.Thread(target=self._work, name="kiosk-terminal", daemon=True)
        self._threads.append(worker)
        for n, source in enumerate(self.sources):
            poller = threading.Thread(target=self._poll, args=(source,),
                                      name=f"kiosk-reader-{n}", daemon=True)
            self._threads.append(poller)
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self.inbox.put(_Stop())
        for t in self._threads:
            t.join(timeout)
        worker_alive = any(t.name == "kiosk-terminal" and t.is_alive() for t in self._threads)
        self._threads.clear()
        # the worker is gone (this thread may use the terminal now): a sale still shown is
        # closed at central, and a payment that came first is recorded, as the money moved
        for session in list(self._sessions):
            session.cancelled.set()
        for session in list(self._sessions):
            if session.thread is not None:
                session.thread.join(timeout)
        self._settle_at_stop(record=not worker_alive)
        if self._on_state in self.terminal.listeners:
            self.terminal.listeners.remove(self._on_state)

    def send(self, command: Command) -> None:
        self.inbox.put(command)

    def sell_online(self, amount: int, reference: str) -> None:
        """The till shows ``reference`` in its sale's QR code: take it online (with an
        ``mpm`` link; nothing without). Sent after the sale's :class:`Pay`."""
        if self.mpm is not None:
            self.inbox.put(_OnlineSale(amount, reference))

    def online_settled(self, timeout: float) -> bool:
        """Whether every online sale's thread has finished (closed at central, or paid)
        within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        for session in list(self._sessions):
            if session.thread is not None:
                session.thread.join(max(0.0, deadline - time.monotonic()))
                if session.thread.is_alive():
                    return False
        return True

    def present(self, presentation: Presentation) -> None:
        """Hand a presentation in directly (what the poller does with the source's)."""
        self.inbox.put(presentation)

    def events(self) -> list[Event]:
        """Everything the worker reported since the last call (never blocks)."""
        out: list[Event] = []
        while True:
            try:
                out.append(self.outbox.get_nowait())
            except queue.Empty:
                return out

    # -- threads ---------------------------------------------------------------------------

    def _poll(self, source: PresentationSource) -> None:
        while not self._stop.is_set():
            try:
                found = source(POLL_TIMEOUT_S)
            except ReaderError as err:
                log.error("reader failed: %s", err)
                self._reader_ok = False
                self._stop.wait(1.0)
                continue
            self._reader_ok = True
            if found is not None:
                polled = _Polled(found)
                self.inbox.put(polled)
                while not polled.done.wait(0.2) and not self._stop.is_set():
                    pass

    def _work(self) -> None:
        next_status = time.monotonic() + STATUS_EVERY_S
        while True:
            try:
                item = self.inbox.get(timeout=max(0.0, next_status - time.monotonic()))
            except queue.Empty:
                item = None
            if isinstance(item, _Stop):
                return
            if item is not None:
                try:
                    self._handle(item.presentation if isinstance(item, _Polled) else item)
                except LocalpayError as err:
                    log.error("kiosk command failed: %s", err)
                    self.outbox.put(Fault(str(err)))
                except Exception as err:  # the screen must say so rather than freeze
                    log.exception("kiosk worker error")
                    self.outbox.put(Fault(f"{type(err).__name__}: {err}"))
                finally:
                    if isinstance(item, _Polled):
                        item.done.set()
            if item is None or time.monotonic() >= next_status:
                try:
                    lapsed = self.terminal.lapse_claim()
                    if lapsed is not None:
                        self._decided(lapsed, "claim")
                except LocalpayError as err:
                    log.error("kiosk claim check failed: %s", err)
                    self.outbox.put(Fault(str(err)))
                if self.idle_task is not None:
                    try:
                        self.idle_task()
                    except LocalpayError as err:
                        log.error("kiosk idle task failed: %s", err)
                        self.outbox.put(Fault(str(err)))
                self._status()
                next_status = time.monotonic() + STATUS_EVERY_S

    def _on_state(self, state: State, decision: Decision | None) -> None:
        if state == State.PRESENTED:
            self.outbox.put(Busy())

    def _handle(self, item: Presentation | Command | _OnlineSale | _OnlineDone) -> None:
        t = self.terminal
        if isinstance(item, _OnlineSale):
            self._open_online(item)
        elif isinstance(item, _OnlineDone):
            self._online_done(item)
        elif isinstance(item, Presentation):
            if t.role == "validator":
                self._decided(t.tap(item), "tap")
            elif self._pending is not None and self._online is not None \
                    and self._online.unknown.is_set():
                # the app may have paid this sale: its answer first, never a second payment
                self.outbox.put(OnlineQrDown(notice="qr_checking"))
            elif self._pending is not None:
                amount, self._pending = self._pending, None
                decision = t.pay(item, amount)
                if decision.approved:
                    self._end_online()  # paid by card or wallet: no app may pay it now
                self._decided(decision, "payment")
                self._receipt(decision)
            elif t.pending_claim is not None or _is_campaign_code(item):
                self._decided(t.collect(item), "claim")
            else:
                self.outbox.put(Ignored())
        elif isinstance(item, Pay):
            self._end_online()  # a new sale: the last one's code is no longer shown
            self._pending = item.amount
            t.clerk = item.clerk
        elif isinstance(item, CancelCmd):
            self._end_online()
            self._pending = None
            t.cancel_claim()
        elif isinstance(item, RefundCmd):
            t.clerk = item.clerk
            refund = t.refund(item.seq, item.amount)
            self._decided(refund, "refund")
            self._receipt(refund)  # the customer's proof that the money went back
        elif isinstance(item, RefreshCmd):
            self._status(force_day=True)
        elif isinstance(item, CloseDayCmd):
            self._close_day(item)
        elif isinstance(item, CashReceiptCmd):  # a cash-receipt request (kiosk_ui.cash_receipt)
            answer, fault = carry_out(t, item, self.receipts)
            self.outbox.put(answer)
            if fault is not None and isinstance(answer, CashReceiptDone):
                self.outbox.put(ReceiptFault(answer.payment_seq, fault))
            self._status(force_day=True)

    # -- online QR payments (worker thread) -------------------------------------------------

    def _open_online(self, sale: _OnlineSale) -> None:
        if self.mpm is None or self._stop.is_set():
            return
        self._end_online()
        self._sessions = [s for s in self._sessions
                          if s.thread is not None and s.thread.is_alive()]
        session = _Session(sale)
        session.thread = threading.Thread(target=self._take_online, args=(session, self.mpm),
                                          name="kiosk-mpm", daemon=True)
        self._online = session
        self._sessions.append(session)
        session.thread.start()

    def _end_online(self) -> None:
        """The sale shown is over: its thread closes the reference at central."""
        if self._online is not None:
            self._online.cancelled.set()
            self._online = None

    def _take_online(self, session: _Session, link: MpmLink) -> None:
        """A sale's own thread: talks to central only, never to the terminal."""
        sale = session.sale

        def unknown(lost: bool) -> None:
            (session.unknown.set if lost else session.unknown.clear)()
            if not session.cancelled.is_set():  # the screen shows this sale's code
                self.outbox.put(OnlineQrDown(notice="qr_checking" if lost else ""))

        try:
            result = wait_online(link, sale.amount, sale.reference,
                                 timeout_s=self.mpm_timeout_s, wait_s=self.mpm_wait_s,
                                 cancelled=session.cancelled.is_set, unknown=unknown,
                                 retry_s=self.mpm_retry_s, sleep=self._stop.wait,
                                 stopping=self._stop.is_set)
        except Exception:  # the sale's code still pays nothing online; cards still work
            log.exception("online QR sale %s failed", sale.reference)
            return
        if result.status == "paid":
            self.inbox.put(_OnlineDone(result, sale.amount))
        elif result.status == "timeout" and not session.cancelled.is_set():
            # closed at central, unpaid: the code shown would pay nothing now
            self.outbox.put(OnlineQrDown(notice="qr_expired"))
        elif result.status == "no_network":
            log.warning("online QR sale %s: no network: %s", sale.reference, result.message)
            if not session.cancelled.is_set():
                self.outbox.put(OnlineQrDown())
        elif result.message:
            log.warning("online QR sale %s %s: %s", sale.reference, result.status,
                        result.message)

    def _settle_at_stop(self, *, record: bool) -> None:
        """After the worker stopped: record the payments its queue still held, and close
        each sale whose thread is still in a long-poll here, once (recording a payment the
        close names). ``record`` False: the worker is stuck, the terminal is still its own:
        the payments are only logged (central holds them)."""
        done: dict[str, _OnlineDone] = {}
        while True:
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _OnlineDone):
                done.setdefault(item.result.reference, item)
        if self.mpm is not None:
            for session in self._sessions:
                ref = session.sale.reference
                if ref in done or session.thread is None or not session.thread.is_alive():
                    continue
                try:
                    payment = self.mpm.close(ref)
                except LocalpayError as err:
                    log.error("online QR sale %s not closed at stop: %s", ref, err)
                    continue
                if payment is not None:
                    done[ref] = _OnlineDone(OnlineResult("paid", ref, payment=payment),
                                            session.sale.amount)
        self._sessions.clear()
        for item in done.values():
            if not record:
                log.error("online QR payment %s of %s not recorded: the terminal is busy",
                          item.result.payment, item.result.reference)
                continue
            try:
                self._online_done(item)
            except LocalpayError as err:
                log.error("online QR payment %s not recorded: %s", item.result.payment, err)

    def _online_done(self, done: _OnlineDone) -> None:
        """Record the app's payment: the money moved at central, whatever the screen shows
        now (a decision always shows)."""
        if self._online is not None and self._online.sale.reference == done.result.reference:
            self._online = None
        else:
            self._end_online()  # an earlier sale's: its result replaces the screen's sale
        self._pending = None  # the screen leaves any sale waiting for the result
        decision = record_online(self.terminal, done.result, done.amount).decision
        if decision is None:
            return
        self._decided(decision, "payment")
        self._receipt(decision)

    def _close_day(self, item: CloseDayCmd) -> None:
        """Compute today's Z report from the ledger, record it, show it and print it on the
        receipt printer, if any (:mod:`terminal.zreport`); the declines come from the
        screens' count."""
        t = self.terminal
        if t.ledger is None or t.fault is not None:
            self.outbox.put(Fault("cannot close the day: the ledger is not usable"))
            return
        now_ms = int(t.clock() * 1000)
        try:
            report, entry = zreport.close(
                t.ledger, terminal_id=t.config.terminal.id, place=t.config.terminal.place,
                wall_ms=now_ms, zone=self.zone, declines=dict(item.declines),
                declines_since_ms=self._declines_since_ms)
        except LocalpayError as err:
            log.error("closing the day failed: %s", err)
            self.outbox.put(Fault(f"closing the day failed: {err}"))
            return
        self._declines_since_ms = now_ms
        self.outbox.put(Closed(report, entry.seq))
        if self.receipts is not None:
            # after Closed: the report is recorded and on screen whatever the printer does;
            # a fault is the clerk's line, and `localpay receipt print SEQ` prints it later
            names = {c.id: c.name for c in t.config.clerk}
            fault = self.receipts.issue_z(entry, names)
            if fault is not None:
                self.outbox.put(ReceiptFault(entry.seq, fault))
        self._status(force_day=True)

    def _receipt(self, decision: Decision) -> None:
        """Print an approved payment's or refund's receipt once its decision is on the way to
        the screen: a printer can neither delay nor undo a payment, and its fault is the
        clerk's line ("Receipt not printed: out of paper. Reprint: entry 12"), never a
        decline."""
        if self.receipts is None or not decision.approved or decision.entry is None:
            return
        card = decision.card
        shown = Shown(aid=card.aid if card else "", label=card.label if card else "",
                      points=decision.points, balance=decision.balance)
        fault = self.receipts.issue(decision.entry, shown)
        if fault is not None:
            self.outbox.put(ReceiptFault(decision.entry.seq, fault))

    def _decided(self, decision: Decision, action: Action) -> None:
        self.outbox.put(Result(ResultView.from_decision(decision, action), time.perf_counter()))
        self._status()

    # -- status ----------------------------------------------------------------------------

    def _service(self) -> tuple[tuple[Blocker, ...], tuple[DeviceState, ...]]:
        devices = tuple(s.state() for s in self.sources if isinstance(s, Device))
        plain = any(not isinstance(s, Device) for s in self.sources)
        blocked = self.service.blockers(devices, other_sources=plain)
        if blocked != self._blocked:
            if blocked:
                log.error("out of service: %s", "; ".join(b.line() for b in blocked))
            else:
                log.warning("in service again")
            self._blocked = blocked
        return blocked, devices

    def _status(self, force_day: bool = False) -> None:
        t = self.terminal
        online = bool(self.link()) if self.link is not None else False
        blocked, devices = self._service()
        ledger = t.ledger
        if ledger is None or t.fault is not None:
            self.outbox.put(SyncView(online, 0, 0, False, self._reader_ok, "", blocked,
                                     devices))
            return
        try:
            head = ledger.head.seq
            waiting = head - ledger.synced_upto()
        except LedgerError as err:
            log.error("cannot read sync state: %s", err)
            self.outbox.put(SyncView(online, 0, 0, False, self._reader_ok, "", blocked,
                                     devices))
            return
        clock = ""
        if t.clock_trust is not None:
            try:
                clock = t.clock_trust.reading().state
            except LocalpayError as err:
                log.warning("clock not judged: %s", err)
                clock = "unknown"
        self.outbox.put(SyncView(online, waiting, head, True, self._reader_ok, clock, blocked,
                                 devices))
        if t.role == "till":
            today = dt.datetime.fromtimestamp(t.clock(), self.zone).date().isoformat()
            if force_day or self._day_key != (head, today):
                self._day_key = (head, today)
                self.outbox.put(self._today(today))

    def _today(self, today: str) -> DayView:
        """Today's payments, refunds and voids, newest first, with totals (local time).

        Read once by walking back from the head, then only the entries appended since.
        """
        ledger = self.terminal.ledger
        assert ledger is not None
        head = ledger.head.seq
        start_ms = int(dt.datetime.fromisoformat(today).replace(tzinfo=self.zone).timestamp()
                       * 1000)
        cached = self._day_cache
        if cached is not None and cached[0] == today and cached[1] <= head:
            entries = [e for e in ledger.entries(cached[1] + 1, head)
                       if e.fields.wall_ms >= start_ms]
            found = cached[2] + [_Row.of(e) for e in entries if e.kind in _DAY_KINDS]
        else:
            found = self._walk_back(start_ms, head)
        self._day_cache = (today, head, found)
        given_back: dict[int, int] = {}
        for r in found:
            if r.kind != "payment" and r.ref_seq:
                given_back[r.ref_seq] = given_back.get(r.ref_seq, 0) + r.amount
        rows = [
            PaymentRow(r.seq, r.kind, r.amount, r.wall_ms,
                       dt.datetime.fromtimestamp(r.wall_ms / 1000, self.zone).strftime("%H:%M"),
                       r.card, r.ref_seq or None,
                       given_back.get(r.seq, 0) if r.kind == "payment" else 0)
            for r in sorted(found, key=lambda r: r.seq, reverse=True)
        ]
        paid = sum(r.amount for r in rows if r.kind == "payment")
        back = sum(r.amount for r in rows if r.kind != "payment")
        count = sum(1 for r in rows if r.kind == "payment")
        return DayView(tuple(rows), count, paid, back)

    def _walk_back(self, start_ms: int, head: int) -> list[_Row]:
        """Entries from ``start_ms`` on, reading back from the head in chunks."""
        ledger = self.terminal.ledger
        assert ledger is not None
        first = max(ledger.first_seq(), head - DAY_SCAN_LIMIT + 1)
        found: list[_Row] = []
        chunk_end = head
        while chunk_end >= first:
            chunk_start = max(first, chunk_end - 199)
            entries = list(ledger.entries(chunk_start, chunk_end))
            found.extend(_Row.of(e) for e in entries
                         if e.fields.wall_ms >= start_ms and e.kind in _DAY_KINDS)
            if entries and entries[0].fields.wall_ms < start_ms:
                break
            chunk_end = chunk_start - 1
        return found


_DAY_KINDS = frozenset({"payment", "refund", "void"})


def _is_campaign_code(p: Presentation) -> bool:
    try:
        return p.kind == "qr" and detect(p.payload) == "campaign"
    except LocalpayError:
        return False


@dataclass(frozen=True, slots=True)
class _Row:
    seq: int
    kind: str
    amount: int
    wall_ms: int
    ref_seq: int
    card: str

    @classmethod
    def of(cls, e: Entry) -> _Row:
        f = e.fields
        return cls(f.seq, f.kind, f.amount, f.wall_ms, f.ref_seq, _card_of(f.detail))


def _card_of(detail: str) -> str:
    """The card's display form (first 6 / last 4, or a masked UID) from an entry's detail."""
    try:
        parsed = json.loads(detail)
    except ValueError:
        return ""
    card = parsed.get("card", "") if isinstance(parsed, dict) else ""
    return card if isinstance(card, str) else ""
