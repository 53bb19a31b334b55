"""The Day page (any day's totals by kind, merchant and pocket, and what ``central report``
finds wrong with it) and the entries page its lines link to.

The figures are :func:`central.console_data.day_overview`: ``central report``'s central
totals and its differences and overdrafts, each with the :class:`EntriesLink` that
:func:`central.console_data.entries_of` lists on ``/console/entries``.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from central.console.web import PREFIX, AsViewer, Ctx, Refusal, render
from central.console_data import EntriesLink, day_overview, entries_of
from central.store import Store

router = APIRouter()

def today(ctx: Ctx) -> str:
    """Today in the service's time zone (Asia/Seoul unless configured otherwise)."""
    return dt.datetime.now(ctx.service.tz).strftime("%Y-%m-%d")


def check_day(text: str) -> str:
    """A ``YYYY-MM-DD`` day, or a refusal page."""
    try:
        if len(text) == 10:
            return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        pass
    raise Refusal(400, "error.invalid", detail=f"day: YYYY-MM-DD, not {text[:20]!r}")


def entries_url(link: EntriesLink) -> str:
    """The entries page listing ``link``'s entries."""
    query = {k: v for k, v in link.as_dict().items() if v is not None}
    return f"{PREFIX}/entries?{urlencode(query)}"


def _facts(facts: dict[str, Any]) -> str:
    shown = {k: v for k, v in facts.items() if k not in ("terminal_id", "seq")}
    return json.dumps(shown, ensure_ascii=False, sort_keys=True)


@router.get("/day")
async def day_page(ctx: AsViewer) -> Response:
    day = check_day(ctx.request.query_params.get("day") or today(ctx))
    ov = await run_in_threadpool(day_overview, ctx.service, day, ctx.municipality)
    date = dt.date.fromisoformat(day)
    problems = [{"what": p.what, "terminal": p.terminal_id, "seq": p.seq,
                 "facts": _facts(p.facts), "url": entries_url(p.entries)}
                for p in ov.problems]
    differences = [{"line": d, "url": entries_url(d.entries)} for d in ov.differences]
    return render(ctx, "day.html", day=day, ov=ov, problems=problems,
                  differences=differences,
                  prev=(date - dt.timedelta(days=1)).isoformat(),
                  next=(date + dt.timedelta(days=1)).isoformat(),
                  rejections=[_facts(r) for r in ov.config_rejections],
                  waiting=[_facts(r) for r in ov.waiting_refunds])


def _int(ctx: Ctx, name: str) -> int | None:
    text = ctx.request.query_params.get(name, "")
    if not text:
        return None
    if not text.isdigit() or len(text) > 18:
        raise Refusal(400, "error.invalid", detail=f"{name}: a whole number")
    return int(text)


def terminal_is_mine(store: Store, terminal_id: str, municipality: str) -> bool:
    with store.tx(write=False) as tx:
        row = tx.one("SELECT municipality_id FROM terminals WHERE terminal_id = ?",
                     (terminal_id,))
    return row is not None and str(row[0]) == municipality


@router.get("/entries")
async def entries_page(ctx: AsViewer) -> Response:
    q = ctx.request.query_params
    tid = q.get("terminal_id", "")[:100]
    # only a terminal of the operator's own municipality: entries_of does not ask
    if not tid or not await run_in_threadpool(terminal_is_mine, ctx.store, tid,
                                              ctx.municipality):
        raise Refusal(404, "error.not_found")
    day = check_day(q["day"]) if q.get("day") else None
    kind = q.get("kind", "")[:40] or None
    first, last = _int(ctx, "first_seq"), _int(ctx, "last_seq")
    rows = await run_in_threadpool(lambda: entries_of(
        ctx.store, tid, day=day, kind=kind, first_seq=first, last_seq=last, limit=500))
    return render(ctx, "entries.html", tid=tid, day=day, kind=kind, first=first, last=last,
                  rows=rows)
