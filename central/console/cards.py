"""The Cards pages: find a card by its token or by its PAN, a card's page, deny and undeny.

A PAN is typed once, sent in a POST body (never a URL, so never an access line) and turned
here into the card's token with the scheme's token key (``token.key`` of the data folder,
:func:`central.enroll.load_scheme_token_key`) by the same function the terminals use
(:func:`firmware_cfg.card_tokens.card_token`, namespace ``pan``). It is not stored, logged
or shown again: the answer is a redirect to the token's page. Looking up by PAN needs the
call centre's role; a viewer may open a card by its token.

Deny and undeny go through :meth:`central.service.CentralLog.deny`, as ``central deny``
does, and are recorded in the console's audit log with the state before and after.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from central.console.web import (
    PREFIX,
    AsCallCentre,
    AsViewer,
    Ctx,
    Refusal,
    form_and_reason,
    record_change,
    render,
    see_other,
)
from central.rules import check_card_token
from firmware_cfg.card_tokens import PAN, card_token
from localpay.errors import ConfigError

router = APIRouter()

#: what a typed card number may look like: digits, with spaces or hyphens between groups
_PAN_RE = re.compile(r"[0-9][0-9 -]{10,30}[0-9]")


def pan_token(ctx: Ctx, typed: str) -> str:
    """The token of the PAN ``typed`` (digits, spaces and hyphens), or a refusal page that
    does not repeat it."""
    digits = re.sub(r"[ -]", "", typed)
    if not _PAN_RE.fullmatch(typed.strip()) or not 12 <= len(digits) <= 19:
        raise Refusal(400, "error.invalid", detail="PAN: 12 to 19 digits")
    key = token_key(ctx)
    if key is None:
        raise Refusal(503, "cards.no_token_key")
    return card_token(key, PAN, digits)


def token_key(ctx: Ctx) -> bytes | None:
    """The scheme's token key, read once per process (None: this service has none)."""
    from central.enroll import load_scheme_token_key

    if ctx.console.token_key is None and ctx.service.data_dir is not None:
        try:
            ctx.console.token_key = load_scheme_token_key(ctx.service.data_dir, create=False)
        except ConfigError:
            return None
    return ctx.console.token_key


def deny_state(ctx: Ctx, token: str) -> dict[str, Any]:
    """The card's last deny-list change in the operator's municipality."""
    with ctx.store.tx(write=False) as tx:
        row = tx.one("SELECT action, reason, at_ms, version FROM deny_changes WHERE "
                     "municipality_id = ? AND card_token = ? ORDER BY version DESC LIMIT 1",
                     (ctx.municipality, token))
    if row is None:
        return {"denied": False}
    return {"denied": row[0] == "add", "reason": str(row[1]), "at_ms": int(row[2]),
            "version": int(row[3])}


def card_detail(ctx: Ctx, token: str) -> dict[str, Any]:
    """Balance, account and pockets, points statement, recent entries and deny state: what
    ``central points``, ``central account show`` and ``central deny --list`` tell."""
    from central import accounts
    from central.payouts import statement

    m = ctx.municipality
    with ctx.store.tx(write=False) as tx:
        balance = tx.one("SELECT balance FROM balances WHERE card_token = ? AND "
                         "municipality_id = ?", (token, m))
        account = accounts.account_of(tx, token, municipality=m)
        pockets = accounts.pockets(tx, account, municipality=m) if account else []
        entries = tx.all("SELECT e.terminal_id, e.seq, e.kind, e.amount, e.place, "
                         "e.effective_ms FROM entries e JOIN terminals t ON t.terminal_id = "
                         "e.terminal_id WHERE e.card_token = ? AND t.municipality_id = ? "
                         "ORDER BY e.wall_ms DESC LIMIT 30", (token, m))
    return {
        "balance": None if balance is None else int(balance[0]),
        "account": account,
        "pockets": [{"name": p.name, "balance": p.balance} for p in pockets],
        "points": statement(ctx.store, token, municipality=m),
        "entries": [{"terminal": str(t), "seq": int(s), "kind": str(k), "amount": int(a),
                     "place": str(p), "when": ctx.when(int(e))}
                    for t, s, k, a, p, e in entries],
        "deny": deny_state(ctx, token),
    }


def _token(text: str) -> str:
    try:
        return check_card_token(text)
    except ConfigError as err:
        raise Refusal(400, "error.invalid", detail=str(err)) from err


@router.get("/cards")
async def cards(ctx: AsViewer) -> Response:
    typed = ctx.request.query_params.get("token", "")
    if typed:
        return see_other(f"{PREFIX}/cards/{_token(typed)}")
    return render(ctx, "cards.html")


@router.post("/cards/find")
async def find_by_pan(ctx: AsCallCentre) -> Response:
    form = await ctx.request.form()
    token = await run_in_threadpool(pan_token, ctx, str(form.get("pan", "")))
    return see_other(f"{PREFIX}/cards/{token}")


@router.get("/cards/{token}")
async def card_page(token: str, ctx: AsViewer) -> Response:
    token = _token(token)
    detail = await run_in_threadpool(card_detail, ctx, token)
    return render(ctx, "card.html", token=token, done=ctx.request.query_params.get("v", ""),
                  **detail)


@router.post("/cards/{token}/deny")
async def deny(token: str, ctx: AsCallCentre) -> Response:
    token = _token(token)
    form, reason = await form_and_reason(ctx)
    remove = form.get("action") == "undeny"

    def change() -> int:
        before = deny_state(ctx, token)
        version = ctx.service.deny(token, reason, remove=remove, municipality=ctx.municipality)
        after = deny_state(ctx, token)
        record_change(ctx, "card.undeny" if remove else "card.deny", f"card:{token}",
                      before, after, reason)
        return version

    version = await run_in_threadpool(change)
    return see_other(f"{PREFIX}/cards/{token}?v={version}")
