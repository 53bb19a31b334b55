"""The till's closing of the day: the Z report (issue #17).

Computed from the ledger alone, for one local day (the programme's time zone, as the till's
list of today): the payments, refunds and voids of that day up to the report, their totals
by kind, by pocket (the entries' ``split``), by clerk (the entries' ``clerk``) and, from the
kiosk, the declines by reason.

Declines are not in the ledger: the transaction core records only what it approved (an
entry is money), so a decline leaves no trace there. The kiosk counts them as it shows them
(:attr:`kiosk_ui.model.KioskModel.declines`), since it started or since its last Z report:
a restart in the day loses the count, and the report says from when it counts
(``declines_since_ms``).

The report is recorded as a ledger entry of kind ``z_report`` (amount 0, no card: it moves
no money, and every money path filters on its own kinds) whose detail carries the totals
(:func:`detail`), so it reaches the central service with the day's entries, where
``central report`` sets it against its own totals (:mod:`central.reconcile`). A second Z report of
the same day counts the whole day again, up to itself; the last one stands.

:func:`text_lines` gives the report as lines of text in Korean or English, for the screen
and for the receipt printer.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from zoneinfo import ZoneInfo

from localpay.errors import EntryEncodingError
from offline_ledger import Entry, Ledger

KIND = "z_report"
MONEY_KINDS = ("payment", "refund", "void")
#: how far back from the head a closing looks for the day's first entry (a till's day is
#: hundreds of entries; a bound keeps a ledger whose clock jumped from being read whole)
SCAN_LIMIT = 200_000


@dataclass(frozen=True)
class ZReport:
    day: str
    terminal_id: str
    #: the day's first and last money entry counted (0, 0: none)
    first_seq: int = 0
    last_seq: int = 0
    #: kind -> (count, won), for each of MONEY_KINDS
    kinds: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: pocket -> won taken net of what refunds and voids gave back to it
    pockets: dict[str, int] = field(default_factory=dict)
    #: clerk id ("" for entries made with no clerk signed in) -> (count, won) of payments,
    #: and of refunds and voids
    clerk_paid: dict[str, tuple[int, int]] = field(default_factory=dict)
    clerk_back: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: reason -> declines shown by the kiosk since ``declines_since_ms`` (not in the ledger)
    declines: dict[str, int] = field(default_factory=dict)
    declines_since_ms: int = 0

    @property
    def paid(self) -> int:
        return self.kinds.get("payment", (0, 0))[1]

    @property
    def given_back(self) -> int:
        return self.kinds.get("refund", (0, 0))[1] + self.kinds.get("void", (0, 0))[1]

    @property
    def net(self) -> int:
        return self.paid - self.given_back


def day_bounds(day: str, zone: ZoneInfo) -> tuple[int, int]:
    """The wall-clock milliseconds ``[start, end)`` of local ``day``."""
    start = dt.datetime.fromisoformat(day).replace(tzinfo=zone)
    end = start + dt.timedelta(days=1)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def day_entries(ledger: Ledger, day: str, zone: ZoneInfo) -> list[Entry]:
    """The money entries of local ``day``, oldest first, read back from the head."""
    start_ms, end_ms = day_bounds(day, zone)
    head = ledger.head.seq
    first = max(ledger.first_seq(), head - SCAN_LIMIT + 1)
    found: list[Entry] = []
    chunk_end = head
    while chunk_end >= first:
        chunk_start = max(first, chunk_end - 499)
        entries = list(ledger.entries(chunk_start, chunk_end))
        found.extend(e for e in entries if e.kind in MONEY_KINDS
                     and start_ms <= e.fields.wall_ms < end_ms)
        if entries and entries[0].fields.wall_ms < start_ms:
            break
        chunk_end = chunk_start - 1
    return sorted(found, key=lambda e: e.seq)


def compute(entries: Iterable[Entry], day: str, terminal_id: str,
            declines: Mapping[str, int] | None = None, declines_since_ms: int = 0) -> ZReport:
    """The Z report of ``entries`` (the day's money entries, :func:`day_entries`)."""
    kinds = {k: [0, 0] for k in MONEY_KINDS}
    pockets: dict[str, int] = {}
    paid: dict[str, list[int]] = {}
    back: dict[str, list[int]] = {}
    seqs: list[int] = []
    for e in entries:
        if e.kind not in MONEY_KINDS:
            continue
        seqs.append(e.seq)
        kinds[e.kind][0] += 1
        kinds[e.kind][1] += e.amount
        info = _detail(e)
        sign = 1 if e.kind == "payment" else -1
        for pocket, won in info.get("split", ()):
            pockets[str(pocket)] = pockets.get(str(pocket), 0) + sign * int(won)
        slot = (paid if e.kind == "payment" else back).setdefault(str(info.get("clerk", "")),
                                                                  [0, 0])
        slot[0] += 1
        slot[1] += e.amount
    return ZReport(
        day=day, terminal_id=terminal_id,
        first_seq=min(seqs, default=0), last_seq=max(seqs, default=0),
        kinds={k: (c, a) for k, (c, a) in kinds.items()},
        pockets=dict(sorted(pockets.items())),
        clerk_paid={k: (c, a) for k, (c, a) in sorted(paid.items())},
        clerk_back={k: (c, a) for k, (c, a) in sorted(back.items())},
        declines=dict(sorted((declines or {}).items())),
        declines_since_ms=declines_since_ms,
    )


def _detail(e: Entry) -> dict[str, Any]:
    try:
        value = json.loads(e.fields.detail or "{}")
    except ValueError:
        return {}  # the chain's signature covers it; a detail we cannot read adds nothing
    return value if isinstance(value, dict) else {}


def detail(report: ZReport) -> dict[str, Any]:
    """The ``z_report`` entry's detail: the canonical encoding takes text, whole numbers
    and lists of [text, number] pairs, so each table is a list of pairs."""
    return {
        "day": report.day,
        "first_seq": report.first_seq,
        "last_seq": report.last_seq,
        "count": [[k, c] for k, (c, _) in report.kinds.items()],
        "amount": [[k, a] for k, (_, a) in report.kinds.items()],
        "pockets": [[p, w] for p, w in report.pockets.items()],
        "clerk_paid_count": [[k, c] for k, (c, _) in report.clerk_paid.items()],
        "clerk_paid": [[k, a] for k, (_, a) in report.clerk_paid.items()],
        "clerk_back_count": [[k, c] for k, (c, _) in report.clerk_back.items()],
        "clerk_back": [[k, a] for k, (_, a) in report.clerk_back.items()],
        "declines": [[r, n] for r, n in report.declines.items()],
        "declines_since_ms": report.declines_since_ms,
    }


def from_entry(entry: Entry) -> ZReport:
    """The report a ``z_report`` entry records (:func:`detail` read back), for a reprint;
    :class:`~localpay.errors.EntryEncodingError` for an entry of another kind."""
    if entry.kind != KIND:
        raise EntryEncodingError(f"entry {entry.seq} is a {entry.kind}, not a {KIND}")
    info = _detail(entry)

    def table(key: str) -> dict[str, int]:
        return {str(k): int(v) for k, v in info.get(key, ())}

    try:
        counts, amounts = table("count"), table("amount")
        paid_n, back_n = table("clerk_paid_count"), table("clerk_back_count")
        return ZReport(
            day=str(info.get("day", "")), terminal_id=entry.fields.terminal_id,
            first_seq=int(info.get("first_seq", 0)), last_seq=int(info.get("last_seq", 0)),
            kinds={k: (counts.get(k, 0), amounts.get(k, 0)) for k in MONEY_KINDS},
            pockets=table("pockets"),
            clerk_paid={k: (paid_n.get(k, 0), w) for k, w in table("clerk_paid").items()},
            clerk_back={k: (back_n.get(k, 0), w) for k, w in table("clerk_back").items()},
            declines=table("declines"),
            declines_since_ms=int(info.get("declines_since_ms", 0)))
    except (TypeError, ValueError) as err:  # a detail not written by detail()
        raise EntryEncodingError(f"entry {entry.seq}: not a Z report's detail: {err}") from err


def record(ledger: Ledger, report: ZReport, *, place: str, wall_ms: int) -> Entry:
    """Append the report to the ledger (durably, like any entry) and return its entry."""
    return ledger.append(KIND, place=place, detail=detail(report), wall_ms=wall_ms)


def close(ledger: Ledger, *, terminal_id: str, place: str, wall_ms: int, zone: ZoneInfo,
          declines: Mapping[str, int] | None = None,
          declines_since_ms: int = 0) -> tuple[ZReport, Entry]:
    """Close the local day of ``wall_ms``: its report computed from the ledger and recorded
    (the kiosk's *Close day*, and a scenario's ``close`` line in ``localpay replay``)."""
    day = dt.datetime.fromtimestamp(wall_ms / 1000, zone).date().isoformat()
    report = compute(day_entries(ledger, day, zone), day, terminal_id, declines,
                     declines_since_ms)
    return report, record(ledger, report, place=place, wall_ms=wall_ms)


Language = Literal["ko", "en"]

_WORDS: dict[str, tuple[str, str]] = {
    "title": ("Z report {day}", "마감 보고 {day}"),
    "terminal": ("Terminal {id}", "단말기 {id}"),
    "entries": ("Entries #{first}-#{last}", "거래번호 {first}-{last}"),
    "payment": ("Payments {count}  {won}", "결제 {count}건  {won}"),
    "refund": ("Refunds {count}  -{won}", "환불 {count}건  -{won}"),
    "void": ("Voids {count}  -{won}", "취소 {count}건  -{won}"),
    "net": ("Net {won}", "합계 {won}"),
    "pockets": ("By pocket", "지갑별"),
    "clerks": ("By clerk (paid / given back)", "직원별 (결제 / 환불)"),
    "no_clerk": ("(no sign-in)", "(로그인 없음)"),
    "declines": ("Declines by reason (this session)", "거절 사유별 (이번 실행)"),
    "none": ("none", "없음"),
}


def _w(language: Language, key: str, **fields: object) -> str:
    en, ko = _WORDS[key]
    return (ko if language == "ko" else en).format(**fields)


def _won(amount: int, language: Language) -> str:
    return f"{amount:,}원" if language == "ko" else f"{amount:,} won"


def text_lines(report: ZReport, language: Language,
               names: Mapping[str, str] | None = None) -> list[str]:
    """The report as text lines, for the screen and the receipt printer. ``names``: clerk
    id -> name (ids are shown where a name is not known); pockets and reasons by id."""
    lines = [_w(language, "title", day=report.day),
             _w(language, "terminal", id=report.terminal_id)]
    if report.last_seq:
        lines.append(_w(language, "entries", first=report.first_seq, last=report.last_seq))
    for kind in MONEY_KINDS:
        count, won = report.kinds.get(kind, (0, 0))
        lines.append(_w(language, kind, count=f"{count:,}", won=_won(won, language)))
    lines.append(_w(language, "net", won=_won(report.net, language)))
    lines.append(_w(language, "pockets"))
    lines += [f"  {p}  {_won(w, language)}" for p, w in report.pockets.items()] or [
        f"  {_w(language, 'none')}"]
    lines.append(_w(language, "clerks"))
    names = names or {}
    clerks = sorted(set(report.clerk_paid) | set(report.clerk_back))
    for c in clerks:
        who = names.get(c, c) if c else _w(language, "no_clerk")
        pc, pw = report.clerk_paid.get(c, (0, 0))
        bc, bw = report.clerk_back.get(c, (0, 0))
        lines.append(f"  {who}  {pc:,} · {_won(pw, language)} / {bc:,} · -{_won(bw, language)}")
    if not clerks:
        lines.append(f"  {_w(language, 'none')}")
    lines.append(_w(language, "declines"))
    lines += [f"  {r}  {n:,}" for r, n in report.declines.items()] or [
        f"  {_w(language, 'none')}"]
    return lines


def printed_lines(report: ZReport, names: Mapping[str, str] | None = None,
                  cols: int = 42) -> list[str]:
    """The report as the receipt printer prints it: the Korean lines, a rule, the English
    lines (one roll serves both, as a receipt's); the first line is the heading."""
    return [*text_lines(report, "ko", names), "-" * cols, *text_lines(report, "en", names)]
