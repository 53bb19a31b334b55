"""The till's online QR payment (issue #17): the dynamic code's reference, and the wait for
the citizen's app to pay it through central.

:func:`new_reference` draws the code's MPM 62/05 value: 24 characters of RFC 4648 base32
(``A-Z2-7``, inside ``ans`` and its 25-character limit), 120 random bits. The till tells
central which sale it names with a signed request (see :mod:`central.mpm_payments` for
why a readable ``<terminal>:<counter>`` is not used: it could be guessed).

:func:`take_online` runs one sale: open it at central, long-poll until it is paid, then
record the ledger entry through :meth:`terminal.core.Terminal.paid_online`. The kiosk runs
its two halves on two threads: :func:`wait_online` on a thread of its own (network only),
:func:`record_online` on the worker that owns the terminal (``kiosk_ui.engine``). The wire is
a :class:`Link` (``sync.mpm.MpmLink`` in the product: ``terminal`` does not import
``sync``). When central cannot be reached to open the sale the outcome is ``no_network``: the kiosk
says so and offers the wallet QR or a card, which the till approves offline. When it is lost
after the code was shown, the answer is unknown (the app may have paid): the till asks
again until central answers (:func:`wait_online`). A sale cancelled or timed out is closed
at central (``POST /v1/mpm-close``), so no app pays it afterwards (central refuses it
anyway once it expired, ``central.mpm_payments.SALE_EXPIRY_S``); a payment that came
first is still recorded.
"""

from __future__ import annotations

import base64
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from localpay.errors import SyncError, SyncUnavailableError
from terminal.core import Decision, Terminal

log = logging.getLogger(__name__)

Status = Literal["approved", "no_network", "refused", "timeout", "cancelled", "declined",
                 "paid"]


def new_reference() -> str:
    """A fresh reference for one sale's code: 120 random bits as 24 base32 characters."""
    return base64.b32encode(secrets.token_bytes(15)).decode("ascii").rstrip("=")


class Link(Protocol):
    def open(self, reference: str, amount: int) -> None: ...

    def wait(self, reference: str, wait_s: float) -> str | None: ...

    def close(self, reference: str) -> str | None: ...


@dataclass(frozen=True)
class OnlineResult:
    """What became of one online QR sale; ``decision`` when the ledger was asked. ``paid``:
    the app paid, not yet recorded (:func:`wait_online`)."""

    status: Status
    reference: str
    decision: Decision | None = None
    message: str = ""
    #: the central payment's id (``paid``, ``approved``, ``declined``)
    payment: str = ""


def take_online(terminal: Terminal, link: Link, amount: int, reference: str, *,
                timeout_s: float = 120.0, wait_s: float = 10.0,
                cancelled: Callable[[], bool] = lambda: False,
                clock: Callable[[], float] = time.monotonic) -> OnlineResult:
    """Open ``reference`` for ``amount`` won at central and wait, up to ``timeout_s``, for the
    app's payment; record and approve it when it comes. ``cancelled`` is asked between waits
    (a clerk's Cancel: the sale is closed at central, so no app pays it afterwards)."""
    result = wait_online(link, amount, reference, timeout_s=timeout_s, wait_s=wait_s,
                         cancelled=cancelled, clock=clock)
    return record_online(terminal, result, amount)


def wait_online(link: Link, amount: int, reference: str, *, timeout_s: float = 120.0,
                wait_s: float = 10.0, cancelled: Callable[[], bool] = lambda: False,
                clock: Callable[[], float] = time.monotonic,
                unknown: Callable[[bool], None] = lambda lost: None,
                retry_s: float = 2.0, sleep: Callable[[float], object] = time.sleep,
                stopping: Callable[[], bool] = lambda: False) -> OnlineResult:
    """:func:`take_online` without the ledger: status ``paid`` with the central payment's id
    in ``payment`` when the app paid (also just before a close), for the thread that owns the
    terminal to record with :func:`record_online` (the kiosk's worker). Talks only to
    ``link``, so it may run on a thread of its own.

    Central unreachable once the sale is open: the app may have paid it meanwhile, and
    nobody knows. ``unknown(True)`` is called, and central is asked again every
    ``retry_s`` seconds (``sleep``) until it answers: the long-poll goes on while the wait
    has time left, the close after (a Cancel, or the end of the wait) until central says
    paid or closed; then ``unknown(False)``. So a payment is recorded once, and the kiosk
    keeps the clerk from taking another while the answer is unknown. ``stopping()`` ends
    the asking (the kiosk quits: its own close at stop asks once more)."""
    try:
        link.open(reference, amount)
    except SyncUnavailableError as err:
        return OnlineResult("no_network", reference, message=str(err))
    except SyncError as err:
        return OnlineResult("refused", reference, message=str(err))
    deadline = clock() + timeout_s
    why: Literal["timeout", "cancelled"] | None = None
    lost = False
    while True:
        if why is None and (cancelled() or clock() >= deadline):
            why = "cancelled" if cancelled() else "timeout"
        try:
            if why is None:
                payment = link.wait(reference, min(wait_s, max(0.0, deadline - clock())))
            else:
                # no app may pay the sale from now on; one that paid just before is
                # ``paid``, to be recorded, as the money moved
                payment = link.close(reference)
        except SyncUnavailableError as err:
            if not lost:
                lost = True
                log.warning("online QR sale %s: central not heard, asking again: %s",
                            reference, err)
                unknown(True)
            if stopping():
                return OnlineResult(why or "cancelled", reference,
                                    message=f"not heard from central: {err}")
            sleep(retry_s)
            continue
        except SyncError as err:
            if why is None:
                return OnlineResult("refused", reference, message=str(err))
            return OnlineResult(why, reference, message=f"not closed at central: {err}")
        if lost:
            lost = False
            unknown(False)
        if payment is not None:
            return OnlineResult("paid", reference, payment=payment)
        if why is not None:
            return OnlineResult(why, reference)


def record_online(terminal: Terminal, result: OnlineResult, amount: int) -> OnlineResult:
    """Record a ``paid`` result of :func:`wait_online` (``approved`` or ``declined``, with
    the decision); any other result is returned as it is."""
    if result.status != "paid":
        return result
    decision = terminal.paid_online(result.payment, result.reference, amount)
    return OnlineResult("approved" if decision.approved else "declined", result.reference,
                        decision, payment=result.payment)
