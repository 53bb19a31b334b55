"""The Fleet page (the terminals of the operator's municipality, filtered, sorted and shown a
page at a time), its JSON for the live table, and one terminal's page.

The rows are :func:`central.terminal_status.terminals`, what ``central terminals`` prints
(merchant, software version and faults reported included: one query, no query per row),
as :func:`~central.terminal_status.recent_terminals` keeps them (never more than 10 s old:
a city's 5,000 terminals take tens of milliseconds to list), filtered, sorted and paged as
:func:`central.console_data.fleet` does. A city has thousands of terminals: the page shows
:data:`PER_PAGE` of them, with the total and links to the other pages. Filter text, role,
software version, "has faults", sort and page are all in the query string, so any page is
a link to share, and the page works without its script; the script (``static/fleet.js``)
asks ``fleet.json`` with the same query every few seconds and redraws the table's body, the
count and the page links.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from central.console.web import AsViewer, Ctx, Refusal, json_answer, render
from central.console_data import FleetPage
from central.terminal_status import (
    TerminalRow,
    page_of,
    recent_terminals,
    row_text,
    terminals,
)

router = APIRouter()

#: sortable columns: name in the query -> the field of
#: :class:`~central.terminal_status.TerminalRow` sorted by
SORTS: dict[str, str] = {
    "terminal": "terminal_id",
    "place": "place",
    "role": "role",
    "merchant": "merchant_id",
    "municipality": "municipality",
    "enrolled": "enrolled_ms",
    "last_seen": "last_seen_ms",
    "sync_lag": "sync_lag_ms",
    "clock": "clock",
    "config": "config_version",
    "software": "software",
    "faults": "faults",
    "state": "revoked_ms",
}
COLUMNS = tuple(SORTS)
ROLES = ("validator", "till")
#: rows a page (a city's 5,000 terminals are 50 pages)
PER_PAGE = 100
#: page links shown either side of the current page (first and last are always shown)
AROUND = 2


@dataclass(frozen=True)
class Query:
    """What a Fleet request asks: anything unknown falls back to the default rather than
    refusing a shared link."""

    q: str = ""
    role: str = ""
    #: a software version exactly as reported ('' any)
    software: str = ""
    #: only terminals showing a fault
    faulty: bool = False
    sort: str = "terminal"
    desc: bool = False
    page: int = 1

    def href(self, **changed: Any) -> str:
        """This query, ``changed``, as a link's query string (the software and faults
        filters only when set)."""
        q = replace(self, **changed)
        return "?" + urlencode({"q": q.q, "role": q.role,
                                **({"software": q.software} if q.software else {}),
                                **({"faults": "1"} if q.faulty else {}), "sort": q.sort,
                                "dir": "desc" if q.desc else "asc", "page": q.page})


def cells(ctx: Ctx, r: TerminalRow) -> dict[str, str]:
    """One row as the page shows it (the same text in the HTML and in the JSON)."""
    state = (ctx.t("state.revoked", when=ctx.when(r.revoked_ms))
             + (f" ({r.revoked_reason})" if r.revoked_reason else "")
             if r.revoked_ms is not None else ctx.t("state.active"))
    return {**row_text(r, ctx.when), "state": state,
            "revoked": "1" if r.revoked_ms is not None else "",
            "faulty": "1" if r.faults else ""}


def _query(ctx: Ctx) -> Query:
    q = ctx.request.query_params
    sort = q.get("sort", "terminal")
    try:
        page = max(1, min(int(q.get("page", "1")), 10**6))
    except ValueError:
        page = 1
    return Query(q.get("q", "")[:100], q.get("role", "") if q.get("role") in ROLES else "",
                 q.get("software", "")[:64], q.get("faults") == "1",
                 sort if sort in SORTS else "terminal", q.get("dir") == "desc", page)


def _read(ctx: Ctx, query: Query) -> tuple[FleetPage, list[str]]:
    """The page asked for, and every software version the fleet reports (the filter's
    choices), from the one kept listing."""
    listing, _ = recent_terminals(ctx.store, ctx.municipality)

    def one(number: int) -> FleetPage:
        offset = (number - 1) * PER_PAGE
        rows, total = page_of(listing, query.q or None, query.role or None,
                              SORTS[query.sort], query.desc, offset, PER_PAGE,
                              software=query.software or None, faulty=query.faulty)
        return FleetPage(tuple(rows), total, offset, PER_PAGE)

    got = one(query.page)
    last = max(1, -(-got.total // PER_PAGE))
    # a link to page 7 of a fleet that shrank to 5 pages shows page 5
    return (one(last) if query.page > last else got,
            sorted({r.software for r in listing if r.software}))


def pager(ctx: Ctx, got: FleetPage, query: Query) -> dict[str, Any]:
    """The page's place in the whole: its number, the number of pages, the rows shown
    ("101-200 of 5,000") and the links (first, last, and :data:`AROUND` either side of
    this one; ``gap`` where numbers are left out)."""
    pages = max(1, -(-got.total // PER_PAGE))
    page = got.offset // PER_PAGE + 1
    numbers = sorted({1, pages, *range(max(1, page - AROUND), min(pages, page + AROUND) + 1)})
    links: list[dict[str, Any]] = []
    if page > 1:
        links.append({"label": ctx.t("fleet.prev"), "href": query.href(page=page - 1),
                      "rel": "prev"})
    for k, n in enumerate(numbers):
        if k and n - numbers[k - 1] > 1:
            links.append({"label": "…", "href": "", "rel": "gap"})
        links.append({"label": str(n), "href": "" if n == page else query.href(page=n),
                      "rel": "current" if n == page else ""})
    if page < pages:
        links.append({"label": ctx.t("fleet.next"), "href": query.href(page=page + 1),
                      "rel": "next"})
    first = got.offset + 1 if got.rows else 0
    return {"page": page, "pages": pages, "links": links,
            "count_text": ctx.t("fleet.count", n=f"{got.total:,}"),
            "range_text": ctx.t("fleet.showing", first=f"{first:,}",
                                last=f"{got.offset + len(got.rows):,}",
                                total=f"{got.total:,}", page=page, pages=pages)}


async def _page(ctx: Ctx) -> tuple[Query, FleetPage, list[dict[str, str]], dict[str, Any],
                                   list[str]]:
    query = _query(ctx)
    got, versions = await run_in_threadpool(_read, ctx, query)
    return query, got, [cells(ctx, r) for r in got.rows], pager(ctx, got, query), versions


@router.get("/fleet")
async def fleet(ctx: AsViewer) -> Response:
    query, got, rows, place, versions = await _page(ctx)
    heads = [{"column": c, "sort": query.sort == c, "href": query.href(
        sort=c, desc=query.sort == c and not query.desc, page=1)} for c in COLUMNS]
    return render(ctx, "fleet.html", rows=rows, total=got.total, pager=place, query=query,
                  heads=heads, roles=ROLES, versions=versions)


@router.get("/fleet.json")
async def fleet_json(ctx: AsViewer) -> Response:
    _, got, rows, place, _ = await _page(ctx)
    return json_answer(ctx, {"count": got.total, "total": got.total, "offset": got.offset,
                             "limit": got.limit, "columns": list(COLUMNS), "rows": rows,
                             **place})


def terminal_detail(ctx: Ctx, terminal_id: str) -> dict[str, Any] | None:
    """What the terminal page shows: its row, recent batches and entries, and its day
    totals against central's (``central report``'s lines of this terminal) for the last
    days it reported."""
    from central.reconcile import report

    found = terminals(ctx.store, ctx.municipality, terminal_id=terminal_id)
    if not found:
        return None
    row = found[0]
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
            "faults": [{"cause": c, "detail": d} for c, d in row.faults],
            "reported": row.reported_ms,
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
