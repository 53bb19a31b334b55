"""The Fraud page: the fraud rules' flags, newest first, with the entries behind each;
confirm (the card goes on the deny list) or dismiss, each once and with a reason.

The flags and decisions are :func:`central.console_data.fraud_flags`,
:func:`central.console_data.confirm_flag` (which denies through
:meth:`central.service.CentralLog.deny_add`, the path of ``central deny``) and
:func:`central.console_data.dismiss_flag`; each decision is recorded in the console's audit
log with the state before and after. Reading needs a viewer; deciding an operator.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from central.console.cards import deny_state
from central.console.web import (
    PREFIX,
    AsOperator,
    AsViewer,
    Ctx,
    Refusal,
    form_and_reason,
    record_change,
    render,
    see_other,
)
from central.console_data import (
    FlagDecidedError,
    UnknownFlagError,
    confirm_flag,
    dismiss_flag,
    fraud_flags,
)
from central.rules import FraudConfig, FraudHook
from localpay.errors import ConfigError

router = APIRouter()

PAGE = 25


def fraud_config(ctx: Ctx) -> FraudConfig | None:
    """The rules' settings the service runs with (they say which entries a rule counted)."""
    return next((h.config for h in ctx.service.hooks if isinstance(h, FraudHook)), None)


@router.get("/fraud")
async def fraud_page(ctx: AsViewer) -> Response:
    q = ctx.request.query_params
    undecided = q.get("undecided") == "1"
    before = q.get("before") or None
    try:
        flags = await run_in_threadpool(lambda: fraud_flags(
            ctx.store, PAGE, before=before, municipality=ctx.municipality,
            config=fraud_config(ctx), undecided_only=undecided))
    except UnknownFlagError as err:
        raise Refusal(400, "error.invalid", detail=str(err)) from err
    more = flags[-1].flag_id if len(flags) == PAGE else ""
    return render(ctx, "fraud.html", flags=flags, undecided=undecided, more=more,
                  paged=before is not None, done=q.get("done", "")[:80])


def _decided(ctx: Ctx, flag: str) -> dict[str, Any] | None:
    """How ``flag`` was decided (the refusal page of a second decision says it)."""
    index, _, rule = flag.partition("-")
    with ctx.store.tx(write=False) as tx:
        row = tx.one("SELECT decision, operator, decided_ms FROM fraud_decisions WHERE "
                     "log_index = ? AND rule = ?", (int(index), rule))
    return None if row is None else {"decision": str(row[0]), "operator": str(row[1]),
                                     "at_ms": int(row[2])}


def _card_of(ctx: Ctx, flag: str) -> str:
    index, _, rule = flag.partition("-")
    with ctx.store.tx(write=False) as tx:
        row = tx.one("SELECT card_token FROM flags WHERE log_index = ? AND rule = ?",
                     (int(index), rule))
    return "" if row is None else str(row[0])


async def _decide(ctx: Ctx, flag: str, confirm: bool) -> Response:
    _, reason = await form_and_reason(ctx)
    who = ctx.operator.name

    def change() -> None:
        if confirm:
            done = confirm_flag(ctx.service, flag, who, reason, municipality=ctx.municipality)
        else:
            done = dismiss_flag(ctx.store, flag, who, reason, municipality=ctx.municipality)
        card = _card_of(ctx, flag)
        after = {**done.as_dict(), "card": card, "denied": deny_state(ctx, card)["denied"]}
        record_change(ctx, "fraud.confirm" if confirm else "fraud.dismiss",
                      f"fraud_flag:{flag}", {"decision": None}, after, reason)

    try:
        await run_in_threadpool(change)
    except UnknownFlagError as err:
        raise Refusal(404, "fraud.unknown") from err
    except FlagDecidedError as err:
        held = await run_in_threadpool(_decided, ctx, flag)
        if held is None:  # decided by another worker, whose row this read did not see yet
            raise Refusal(409, "fraud.decided_meanwhile") from err
        raise Refusal(409, "fraud.decided", decision=ctx.t("fraud." + held["decision"]),
                      operator=held["operator"], when=ctx.when(held["at_ms"])) from err
    except ConfigError as err:
        raise Refusal(400, "error.invalid", detail=str(err)) from err
    return see_other(f"{PREFIX}/fraud?done={flag}")


@router.post("/fraud/{flag}/confirm")
async def confirm(flag: str, ctx: AsOperator) -> Response:
    return await _decide(ctx, flag, True)


@router.post("/fraud/{flag}/dismiss")
async def dismiss(flag: str, ctx: AsOperator) -> Response:
    return await _decide(ctx, flag, False)
