"""The Fleet page (every terminal of the operator's municipality, filtered and sorted), its
JSON for the live table, and one terminal's page.

The rows are :func:`central.terminal_status.terminals`, what ``central terminals`` prints.
Filtering and sorting happen on the server, so the page works without its script; the
script (``static/fleet.js``) asks ``fleet.json`` with the same query every few seconds and
redraws the table's body.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from central.console.web import AsViewer, Ctx, Refusal, json_answer, render
from central.terminal_status import TerminalRow, terminals

router = APIRouter()

#: sortable columns: name in the query -> the row's value
SORTS: dict[str, Any] = {
    "terminal": lambda r: r.terminal_id,
    "place": lambda r: r.place,
    "role": lambda r: r.role,
    "municipality": lambda r: r.municipality,
    "enrolled": lambda r: r.enrolled_ms,
    "last_seen": lambda r: r.last_seen_ms,
    "sync_lag": lambda r: -1 if r.sync_lag_ms is None else r.sync_lag_ms,
    "clock": lambda r: r.clock,
    "config": lambda r: r.config_version,
    "state": lambda r: r.revoked_ms or 0,
}
COLUMNS = tuple(SORTS)
ROLES = ("validator", "till")


def span(ms: int | None) -> str:
    """A sync lag as ``central terminals`` prints it."""
    if ms is None:
        return "-"
    seconds = ms // 1000
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def pick_rows(rows: list[TerminalRow], q: str, role: str, sort: str,
              desc: bool) -> list[TerminalRow]:
    """``rows`` whose id, place or municipality holds ``q`` (any case), of ``role`` when
    given, sorted by column ``sort``."""
    needle = q.strip().lower()
    out = [r for r in rows
           if (not needle or needle in f"{r.terminal_id} {r.place} {r.municipality}".lower())
           and (not role or r.role == role)]
    key = SORTS.get(sort, SORTS["terminal"])
    return sorted(out, key=lambda r: (key(r), r.terminal_id), reverse=desc)


def cells(ctx: Ctx, r: TerminalRow) -> dict[str, str]:
    """One row as the page shows it (the same text in the HTML and in the JSON)."""
    state = (ctx.t("state.revoked", when=ctx.when(r.revoked_ms))
             + (f" ({r.revoked_reason})" if r.revoked_reason else "")
             if r.revoked_ms is not None else ctx.t("state.active"))
    return {"terminal": r.terminal_id, "place": r.place or "-", "role": r.role or "-",
            "municipality": r.municipality, "enrolled": ctx.when(r.enrolled_ms),
            "last_seen": ctx.when(r.last_seen_ms), "sync_lag": span(r.sync_lag_ms),
            "clock": r.clock or "-", "config": f"v{r.config_version}", "state": state,
            "revoked": "1" if r.revoked_ms is not None else ""}


def _query(ctx: Ctx) -> tuple[str, str, str, bool]:
    q = ctx.request.query_params
    sort = q.get("sort", "terminal")
    return (q.get("q", "")[:100], q.get("role", "") if q.get("role") in ROLES else "",
            sort if sort in SORTS else "terminal", q.get("dir") == "desc")


async def _rows(ctx: Ctx) -> list[dict[str, str]]:
    q, role, sort, desc = _query(ctx)
    rows = await run_in_threadpool(terminals, ctx.store, ctx.municipality)
    return [cells(ctx, r) for r in pick_rows(rows, q, role, sort, desc)]


@router.get("/fleet")
async def fleet(ctx: AsViewer) -> Response:
    q, role, sort, desc = _query(ctx)
    return render(ctx, "fleet.html", rows=await _rows(ctx), q=q, role=role, sort=sort,
                  desc=desc, columns=COLUMNS, roles=ROLES)


@router.get("/fleet.json")
async def fleet_json(ctx: AsViewer) -> Response:
    rows = await _rows(ctx)
    return json_answer(ctx, {"count": len(rows), "count_text": ctx.t("fleet.count",
                                                                    n=len(rows)),
                             "columns": list(COLUMNS), "rows": rows})


def terminal_detail(ctx: Ctx, terminal_id: str) -> dict[str, Any] | None:
    """What the terminal page shows: its row, recent batches and entries, and its day
    totals against central's (``central report``'s lines of this terminal) for the last
    days it reported."""
    from central.reconcile import report

    row = next((r for r in terminals(ctx.store, ctx.municipality)
                if r.terminal_id == terminal_id), None)
    if row is None:
        return None
    with ctx.store.tx(write=False) as tx:
        batches = tx.all("SELECT first_seq, last_seq, tree_size, received_ms FROM batches "
                         "WHERE terminal_id = ? ORDER BY last_seq DESC LIMIT 20",
                         (terminal_id,))
        entries = tx.all("SELECT seq, kind, card_token, amount, place, effective_ms FROM "
                         "entries WHERE terminal_id = ? ORDER BY seq DESC LIMIT 30",
                         (terminal_id,))
        days = [str(d) for (d,) in tx.all(
            "SELECT DISTINCT day FROM terminal_totals WHERE terminal_id = ? ORDER BY day DESC "
            "LIMIT 3", (terminal_id,))]
    totals = [{"day": day, "kind": line.kind, "central": (line.central_count,
                                                           line.central_amount),
               "terminal": (line.terminal_count, line.terminal_amount),
               "matches": line.matches}
              for day in days for line in report(ctx.service, day, ctx.municipality).lines
              if line.terminal_id == terminal_id]
    return {"row": cells(ctx, row),
            "batches": [{"first": int(f), "last": int(la), "size": int(s),
                         "received": ctx.when(int(r))} for f, la, s, r in batches],
            "entries": [{"seq": int(s), "kind": str(k), "card": str(c), "amount": int(a),
                         "place": str(p), "when": ctx.when(int(e))}
                        for s, k, c, a, p, e in entries],
            "totals": totals}


@router.get("/terminals/{terminal_id}")
async def terminal_page(terminal_id: str, ctx: AsViewer) -> Response:
    detail = await run_in_threadpool(terminal_detail, ctx, terminal_id)
    if detail is None:
        raise Refusal(404, "error.not_found")
    return render(ctx, "terminal.html", tid=terminal_id, **detail)
