"""The Programme page: points credited, paid and held per month against the year's budget,
the payout runs with their settlement files, allowances issued, spent and expired, and the
merchants' settlements by day (with a day's page).

The figures are :mod:`central.console_data_programme`'s, what ``central budget``,
``central payout``, ``central allowance report`` and ``central settlement`` print. A
payout's settlement file names cards, so downloading it needs an operator (and is logged).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import Any

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from central.console.day import check_day
from central.console.web import AsOperator, AsViewer, Refusal, download, render
from central.console_data_programme import (
    allowance_months,
    payout_file,
    payout_runs,
    points_year,
    settlement_day,
    settlement_days,
)
from localpay.errors import TransactionError

log = logging.getLogger(__name__)

router = APIRouter()

_MONTH_RE = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")
#: a settlement's states, in the order the page lists them
STATUSES = ("pending", "sent", "confirmed", "returned", "held", "carried")


@router.get("/programme")
async def programme_page(ctx: AsViewer) -> Response:
    text = ctx.request.query_params.get("year", "")
    if text and not (text.isdigit() and len(text) == 4):
        raise Refusal(400, "error.invalid", detail="year: YYYY")
    year = int(text) if text else dt.datetime.now(ctx.service.tz).year
    m = ctx.municipality

    def read() -> dict[str, Any]:
        return {"points": points_year(ctx.store, year, m),
                "runs": [r for r in payout_runs(ctx.store, m)
                         if r.month.startswith(f"{year:04d}-")],
                "allowances": [r for r in allowance_months(ctx.store, m)
                               if r.month.startswith(f"{year:04d}-")],
                "settlements": [d for d in settlement_days(ctx.store, m)
                                if d.day.startswith(f"{year:04d}-")]}

    return render(ctx, "programme.html", year=year, statuses=STATUSES,
                  **await run_in_threadpool(read))


@router.get("/programme/payouts/{month}/file")
async def payout_download(month: str, ctx: AsOperator) -> Response:
    if not _MONTH_RE.fullmatch(month):
        raise Refusal(400, "error.invalid", detail="month: YYYY-MM")
    runs = await run_in_threadpool(payout_runs, ctx.store, ctx.municipality)
    if month not in {r.month for r in runs}:
        raise Refusal(404, "error.not_found")
    name, body = await run_in_threadpool(payout_file, ctx.store, month, ctx.municipality)
    log.info("console: %s downloaded the settlement file %s", ctx.operator.name, name)
    return download(ctx, name, body, "text/csv; charset=utf-8")


@router.get("/programme/settlements/{day}")
async def settlement_page(day: str, ctx: AsViewer) -> Response:
    day = check_day(day)
    try:
        rows = await run_in_threadpool(settlement_day, ctx.store, day, ctx.municipality)
    except TransactionError as err:  # the day was not run
        raise Refusal(404, "settlement.not_run", day=day) from err
    return render(ctx, "settlement.html", day=day, rows=rows)
