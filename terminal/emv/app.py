"""The EMV card application as the transaction core sees it: claims, read, decide.

``read`` runs the card (:mod:`terminal.emv.reader`), replaces the PAN by its keyed token
and display form at once, then runs terminal risk management (:mod:`terminal.emv.risk`).
A TVR that the decline mask catches becomes ``CardIdentity.verdict`` (``emv_declined``,
or ``deny_listed`` when the exception file alone declined), with the TVR and the reasons in
``extra`` for the receipt and the log; the core declines before anything is committed.
A card with no application the terminal accepts is declined as ``unsupported`` ("not
accepted here"), not as unreadable: tapping it again would not help.

Options read from ``ReadContext.options`` (all optional):

==========================  =================================================================
``ledger``                  the terminal's :class:`~offline_ledger.Ledger`: the exception
                            file (deny list) and the last logged amount for the same card
``last_amount``             ``callable(token) -> int | None``, instead of searching the ledger
``emv_trm``                 a :class:`~terminal.emv.risk.TrmParams`
``emv_floor_limit`` ...     or its fields one by one: ``emv_floor_limit``, ``emv_threshold``,
                            ``emv_target_percent``, ``emv_max_target_percent``
``emv_random``              ``callable() -> int`` in 1..99, for random selection
``emv_aids``                AIDs this terminal accepts, in order of preference:
                            :class:`~terminal.emv.reader.TerminalAid` (its ``partial`` flag
                            allows partial selection), a plain ``bytes`` counting as partial;
                            the core passes the config's ``[emv] aids``
``timezone``                IANA name for the terminal's local date (``Asia/Seoul``)
==========================  =================================================================
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from localpay.errors import APDUError
from localpay.types import Presentation
from terminal.cards import CardIdentity, Declined, ReadContext, card_token, display_pan
from terminal.emv.reader import DEFAULT_AIDS, EmvReader, NoApplicationError, terminal_data
from terminal.emv.risk import EXCEPTION_FILE, TrmInput, TrmParams, assess, random_1_99
from terminal.risk import Reason
from terminal.transmission import Transmission

log = logging.getLogger(__name__)

CARD_PROTOCOLS = frozenset({"ISO-DEP", "T=0", "T=1"})


def claims(p: Presentation) -> bool:
    """A card in the field with an APDU channel (contact T=0 / T=1 or ISO-DEP)."""
    return p.kind == "card" and p.channel is not None and p.protocol in CARD_PROTOCOLS


def is_contactless(p: Presentation) -> bool:
    """ISO-DEP, or a PC/SC contactless card (its pseudo-ATR is 3B 8n 80 01 ..., PC/SC part 3)."""
    if p.protocol == "ISO-DEP":
        return True
    atr = p.atr
    return (p.protocol != "T=0" and len(atr) >= 4 and atr[0] == 0x3B and atr[1] & 0xF0 == 0x80
            and atr[2] == 0x80 and atr[3] == 0x01)


def trm_params(options: dict[str, Any]) -> TrmParams:
    given = options.get("emv_trm")
    if isinstance(given, TrmParams):
        return given
    base = TrmParams()
    floor = int(options.get("emv_floor_limit", base.floor_limit))
    return TrmParams(
        floor_limit=floor,
        # a floor limit lowered on its own pulls the threshold down with it
        threshold=min(int(options.get("emv_threshold", base.threshold)), floor),
        target_percent=int(options.get("emv_target_percent", base.target_percent)),
        max_target_percent=int(options.get("emv_max_target_percent",
                                           base.max_target_percent)),
    )


def last_logged_amount(ledger: Any, token: str) -> int | None:
    """Amount of the most recent payment or tap by ``token``: the terminal's transaction
    log for the floor-limit check (Book 3 §10.6.1) is the ledger's per-card counter."""
    value = ledger.last_amount(token)
    return int(value) if value is not None else None


def _on_exception_file(options: dict[str, Any], token: str) -> bool:
    check = options.get("exception_file")
    if callable(check):
        return bool(check(token))
    ledger = options.get("ledger")
    if ledger is None:
        return False
    return ledger.card_state(token).denied is not None


def read(p: Presentation, ctx: ReadContext) -> CardIdentity:
    """Read the card, token the PAN, run terminal risk management."""
    if p.channel is None:
        raise APDUError("an EMV card needs an APDU channel")
    options = ctx.options
    tz = ZoneInfo(str(options.get("timezone", "Asia/Seoul")))
    now = dt.datetime.fromtimestamp(ctx.now_ms / 1000, tz)
    contactless = is_contactless(p)
    reader = EmvReader(Transmission(p.channel, p.protocol), contactless=contactless,
                       aids=options.get("emv_aids", DEFAULT_AIDS))
    try:
        data = reader.read(terminal_data(ctx.amount, now, contactless=contactless))
    except NoApplicationError as err:
        raise Declined(Reason.UNSUPPORTED, str(err)) from err
    token = card_token(ctx.token_key, "pan", data.pan)
    display = display_pan(data.pan)
    data.pan = ""  # the full PAN ends here (PCI DSS 3.5.1)

    last_amount: int | None = None
    lookup: Callable[[str], int | None] | None = options.get("last_amount")
    ledger = options.get("ledger")
    if lookup is not None:
        last_amount = lookup(token)
    elif ledger is not None:
        last_amount = last_logged_amount(ledger, token)
    rand: Callable[[], int] = options.get("emv_random", random_1_99)
    result = assess(trm_params(options), TrmInput(
        amount=ctx.amount, last_amount=last_amount, atc=data.atc, latc=data.latc,
        lcol=data.lcol, ucol=data.ucol, on_exception_file=_on_exception_file(options, token),
        expiry=data.expiry, effective=data.effective, today=now.date(),
        icc_data_missing=data.icc_data_missing, iac_denial=data.iac_denial,
        iac_default=data.iac_default,
    ), rand)
    verdict = None
    if result.declined:
        only_deny_list = result.reasons == [
            "card appears on terminal exception file"] and EXCEPTION_FILE in result.tvr
        verdict = "deny_listed" if only_deny_list else "emv_declined"
        log.info("EMV offline decline %s (TVR %s): %s", display, result.tvr.hex(),
                 "; ".join(result.reasons))
    return CardIdentity(
        token=token, display=display, scheme="emv", label=data.label,
        aid=data.aid.hex().upper(), atc=data.atc, verdict=verdict,
        extra={
            "tvr": result.tvr.hex(), "tsi": f"{result.tsi:02X}00",
            "why": "; ".join(result.reasons), "exchanges": data.exchanges,
            "contactless": contactless, "last_amount": last_amount,
        },
    )
