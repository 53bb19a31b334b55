"""The Operators page (admin only): every operator of the console, and disabling one.

Operators are created with ``localpay central operator add`` (a password is typed at the
machine, never into a web form); here an admin sees them and can disable one at once (its
sessions end, its logins are refused), recorded in the audit log as the command's is.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from central.console import operators
from central.console.operators import ConsoleError
from central.console.web import PREFIX, AsAdmin, Refusal, form_and_reason, render, see_other

router = APIRouter()


@router.get("/operators")
async def operators_page(ctx: AsAdmin) -> Response:
    rows = await run_in_threadpool(operators.operators, ctx.store)
    return render(ctx, "operators.html", rows=[
        {"name": o.name, "role": o.role, "municipality": o.municipality,
         "created": ctx.when(o.created_ms),
         "disabled": ctx.when(o.disabled_ms) if o.disabled_ms else ""} for o in rows])


@router.post("/operators/{name}/disable")
async def disable(name: str, ctx: AsAdmin) -> Response:
    _, reason = await form_and_reason(ctx)
    try:
        if name == ctx.operator.name:
            raise ConsoleError("an admin does not disable itself here (use the command)")
        await run_in_threadpool(lambda: operators.disable_operator(
            ctx.store, name, by=ctx.operator.name, reason=reason))
    except ConsoleError as err:
        raise Refusal(400, "error.invalid", detail=str(err)) from err
    return see_other(f"{PREFIX}/operators")
