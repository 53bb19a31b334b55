"""Incentive points, credited exactly once by following the central log.

What earns points is in :mod:`central.incentive_rules` (a versioned TOML file loaded into
the store with ``localpay central rules load``; the shipped defaults are version 1). Here:

- **Following the log.** :func:`credit_log` credits the entries of the central log beyond
  a cursor (``incentive_cursor``), a chunk of log entries per transaction, and moves the
  cursor in that same transaction. :class:`IncentiveCrediter` runs it after every committed
  batch (a :class:`central.service.Follower`), outside the ingest transaction: ingest
  never waits for crediting, a crediting failure never refuses a batch, and when batches
  arrive faster than they are credited the next run takes them all in one chunk, reading
  the cards' state once. ``localpay central credit`` runs it by hand. Credits are keyed by
  the ledger entry they come from, ``(terminal_id, seq)``, the primary key of
  ``incentive_credits``; entries already credited are skipped even if :func:`credit` were
  run twice on them.
- **Order and time.** Entries are credited in log order, each on its *effective* day (the
  time central gives it, :mod:`central.clock`), by the rules version in force that day
  (:mod:`central.versions`). The first ride of a weekday is the earliest by effective time,
  whatever order rides arrive in: when an earlier ride arrives after a later one was
  credited, the credit moves to it as an adjustment (``incentive_adjustments``, keyed by the
  credit it takes back and why, so it is made once), until that credit is paid.
- **Weeks and days** (Monday to Sunday) are those of the entry's effective time in the
  rules' time zone; ``incentive_weeks`` keeps per card and week the bus points so far, which
  weekdays already had their first ride (a bit mask), and each such ride (``firsts``).
- **Months.** A credit is payable in the month of its entry; one that arrives after that
  month was paid out is payable in the first month not yet paid (``payable_month``), so a
  late entry is paid late, never lost and never paid twice.
- **Payout** and statements are in :mod:`central.payouts`.
- **Rider category**: ``incentive_profiles`` (set by the operator) first, else the ``rider``
  the terminal wrote into the tap.
- **Municipalities.** Each has its own programme (:mod:`central.incentive_schema`): an entry
  is credited under the rules, weeks, profiles and claims of its terminal's municipality.
  ``default`` holds the shipped defaults from its first use; any other municipality has no
  programme, and its entries earn nothing, until its rules are loaded
  (:mod:`central.versions`), and no day before its first version's ``effective_from`` earns.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, NamedTuple

from central.incentive_rules import (
    Rules,
    in_force,
    month_of,
    next_month,
    verify_campaign_code,
    week_start,
)
from central.service import PAGE, CentralLog, Ingested, whole_versions
from central.store import NOT_CONFIG_REFUSED, Rows, Store, Tx
from localpay.errors import ConfigError, TransactionError

log = logging.getLogger(__name__)

CREDIT_COLUMNS = ("terminal_id", "seq", "log_index", "card_token", "rule", "points", "base",
                  "ref_seq", "rule_version", "day", "payable_month", "credited_ms", "note")
CLAIM_COLUMNS = ("campaign_id", "card_token", "holder", "terminal_id", "seq")
WEEK_COLUMNS = ("card_token", "week_start", "points", "days_mask", "version", "firsts")
ADJUST_COLUMNS = ("terminal_id", "seq", "cause", "log_index", "card_token", "rule", "points",
                  "rule_version", "day", "payable_month", "credited_ms", "note")


def epoch_ms() -> int:
    return int(time.time() * 1000)


def detail_of(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


# -- rules in the store -------------------------------------------------------------------

#: the municipality of a single-municipality install, whose programme ships with defaults
DEFAULT = "default"


class NoProgrammeError(ConfigError):
    """A municipality other than ``default`` before its operator loaded its rules."""


def _no_programme(municipality: str) -> NoProgrammeError:
    return NoProgrammeError(
        f"municipality {municipality!r} has no incentive programme yet: load its rules with "
        f"`localpay central rules load --municipality {municipality} FILE`")


def store_rules(tx: Tx, rules: Rules, municipality: str = DEFAULT) -> bool:
    """Keep ``rules`` as a new version of ``municipality``'s programme (the caller holds the
    crediting lock); False when that version is already held with the same text."""
    held = tx.one("SELECT sha256 FROM incentive_rules WHERE municipality_id = ? AND "
                  "version = ?", (municipality, rules.version))
    if held is not None:
        if str(held[0]) != rules.sha256:
            raise ConfigError(f"incentive rules version {rules.version} is already held with "
                              "other content: raise the version for a change")
        return False
    top = tx.one("SELECT COALESCE(MAX(version), 0) FROM incentive_rules "
                 "WHERE municipality_id = ?", (municipality,))
    newest = int(top[0]) if top else 0
    if rules.version < newest:
        raise ConfigError(f"incentive rules version {rules.version} is older than the "
                          f"version {newest} in force")
    tx.run("INSERT INTO incentive_rules (version, sha256, body, loaded_ms, municipality_id) "
           "VALUES (?, ?, ?, ?, ?)",
           (rules.version, rules.sha256, rules.text, epoch_ms(), municipality))
    return True


_PARSED: dict[str, Rules] = {}


def held_rules(tx: Tx, *, store_default: bool = True,
               municipality: str = DEFAULT) -> list[Rules]:
    """Every version ``municipality`` holds, oldest first. None held: for ``default``, the
    shipped defaults (stored on first use in a write transaction holding the crediting lock,
    unless ``store_default=False``); for any other, ``[]`` (no programme yet)."""
    rows = tx.all("SELECT sha256, body FROM incentive_rules WHERE municipality_id = ? "
                  "ORDER BY version", (municipality,))
    if not rows:
        if municipality != DEFAULT:
            return []
        rules = Rules.default()
        if store_default:
            store_rules(tx, rules)
            return [rules]
        return []
    return [_parsed(str(sha), str(body)) for sha, body in rows]


def held_programmes(tx: Tx) -> dict[str, list[Rules]]:
    """Every municipality's versions, oldest first, in one read (``default``'s shipped
    defaults stored first when it holds none: the caller holds the crediting lock). A
    municipality that holds none has no programme and is not in the answer."""
    out: dict[str, list[Rules]] = {}
    for municipality, sha, body in tx.all(
            "SELECT municipality_id, sha256, body FROM incentive_rules "
            "ORDER BY municipality_id, version"):
        out.setdefault(str(municipality), []).append(_parsed(str(sha), str(body)))
    if DEFAULT not in out:
        out[DEFAULT] = held_rules(tx)
    return out


def _parsed(sha256: str, body: str) -> Rules:
    cached = _PARSED.get(sha256)
    if cached is None:
        cached = Rules.from_toml(body, "stored incentive rules", stored=True)
        if len(_PARSED) > 64:
            _PARSED.clear()
        _PARSED[sha256] = cached
    return cached


def active_rules(tx: Tx, *, store_default: bool = True, municipality: str = DEFAULT) -> Rules:
    """``municipality``'s newest stored version. ``default`` without one: the shipped
    defaults, stored on first use (in a write transaction holding the crediting lock) or
    just returned (``store_default=False``); any other: :class:`NoProgrammeError`."""
    row = tx.one("SELECT sha256, body FROM incentive_rules WHERE municipality_id = ? "
                 "ORDER BY version DESC LIMIT 1", (municipality,))
    if row is None:
        if municipality != DEFAULT:
            raise _no_programme(municipality)
        rules = Rules.default()
        if store_default:
            store_rules(tx, rules)
        return rules
    return _parsed(str(row[0]), str(row[1]))


def programme_start_ms(tx: Tx) -> int:
    """The start of the programme the newest rules version of ``default`` describes, as Unix
    ms at 00:00 in its time zone (the shipped defaults' while no version is stored: crediting
    stores them first): the earliest plausible time of an entry
    (:class:`central.service.CentralLog`, ``programme_start``)."""
    row = tx.one("SELECT version, sha256 FROM incentive_rules WHERE municipality_id = ? "
                 "ORDER BY version DESC LIMIT 1", (DEFAULT,))
    rules = None
    if row is not None:
        rules = _PARSED.get(str(row[1]))
        if rules is None:
            body = tx.one("SELECT body FROM incentive_rules WHERE municipality_id = ? AND "
                          "version = ?", (DEFAULT, int(row[0])))
            if body is not None:
                rules = _parsed(str(row[1]), str(body[0]))
    if rules is None:
        # parsed only when no version is held: every batch asks, and parsing is most of it
        rules = Rules.default()
    start = datetime.combine(rules.programme.start, datetime.min.time(), rules.calendar().tz)
    return int(start.timestamp() * 1000)


def rules_versions(store: Store, municipality: str = DEFAULT) -> list[dict[str, Any]]:
    with store.tx(write=False) as tx:
        rows = tx.all("SELECT version, sha256, loaded_ms FROM incentive_rules WHERE "
                      "municipality_id = ? ORDER BY version", (municipality,))
    return [{"version": int(v), "sha256": str(s), "loaded_ms": int(t)} for v, s, t in rows]


def current_rules(store: Store, municipality: str = DEFAULT) -> Rules:
    with store.tx() as tx:
        lock_crediting(tx)
        return active_rules(tx, municipality=municipality)


# -- crediting ------------------------------------------------------------------------------


@dataclass
class CreditResult:
    credits: int = 0
    points: int = 0


class IncentiveCrediter:
    """Credits the central log in log order, following ingest (a
    :class:`central.service.Follower`): after every committed batch it credits whatever
    the log holds beyond its cursor, in chunks. See the module docstring."""

    name = "incentive crediting"

    def __init__(self, chunk: int = 5000) -> None:
        self.chunk = chunk

    def follow(self, service: CentralLog) -> None:
        credit_log(service.store, chunk=self.chunk)


def lock_crediting(tx: Tx) -> tuple[int, int]:
    """Take the lock that orders crediting, rules changes and payouts; the log index from
    which crediting goes on, and the size of the log as committed now."""
    row = tx.one_for_update("SELECT c.next_index, s.size FROM incentive_cursor c, log_state s "
                            "WHERE c.id = 1 AND s.id = 1", of="c")
    if row is None:
        raise TransactionError("the central store has no incentive cursor")
    return int(row[0]), int(row[1])


_KNOWN_MAX = 500_000
_EARNING_KINDS = ("tap", "payment", "refund", "void", "incentive")
#: a card's week in one municipality's programme: (municipality, card token, Monday)
WeekKey = tuple[str, str, date]


def credit_log(store: Store, *, chunk: int = 5000, now_ms: int | None = None,
               progress: Callable[[int, int], None] | None = None) -> CreditResult:
    """Credit every entry of the log beyond the crediting cursor, ``chunk`` log entries per
    transaction; the cursor moves in the same transaction as the credits, so a crash or a
    second crediter never credits an entry twice. ``progress(done, size)`` after each chunk.
    Each entry is credited under the programme of its terminal's municipality (read with
    the chunk's entries, one join); one whose municipality has no programme earns nothing.

    It stops at the log's size as read when it started its last chunk: a batch committed
    after that read runs crediting itself once this run lets go of the lock.
    """
    if chunk < 1:
        raise ConfigError("the crediting chunk must be at least 1 entry")
    total = CreditResult()
    kinds = ", ".join(f"'{k}'" for k in _EARNING_KINDS)
    picks = ", ".join([*(f"entries.{f}" for f in CreditEntry._fields[:-1]),
                       f"COALESCE(t.municipality_id, '{DEFAULT}')"])
    # Cards' weeks as this run left them. Under the crediting lock only crediting and a
    # rules load's recredit write incentive_weeks, so they hold for the next chunk unless
    # another crediter ran in between (the cursor moved) or rules were loaded (a version
    # more: a recredit rewrites weeks in the transaction that stores its version).
    known: dict[WeekKey, list[Any]] = {}
    versions_seen: dict[str, int] = {}
    end = size = 0
    while end == 0 or end < size:
        with store.tx() as tx:
            start, size = lock_crediting(tx)
            if start >= size:
                break
            if tx.store.kind == "postgresql":
                # The chunk's one read (_read_state) joins arrays of its terminals and cards.
                # The generic plan PostgreSQL picks for it once the prepared statement has run
                # five times scans the credits and weeks whole: a 500-entry batch's crediting
                # grew from about 15 ms to 300-500 ms as the log grew.
                tx.run("SET LOCAL plan_cache_mode = force_custom_plan")
            programmes = held_programmes(tx)
            versions = {m: len(v) for m, v in programmes.items()}
            if start != end or len(known) > _KNOWN_MAX or versions != versions_seen:
                known.clear()
            versions_seen = versions
            end = min(start + chunk, size)
            items = [CreditEntry._make(row) for row in tx.all(
                f"SELECT {picks} FROM entries LEFT JOIN terminals t ON t.terminal_id = "
                "entries.terminal_id WHERE entries.log_index >= ? AND entries.log_index < ? "
                f"AND entries.kind IN ({kinds}) {NOT_CONFIG_REFUSED}"
                "ORDER BY entries.log_index", (start, end))]
            r = credit(tx, items, programmes, epoch_ms() if now_ms is None else now_ms,
                       known)
            tx.run("UPDATE incentive_cursor SET next_index = ? WHERE id = 1", (end,))
        total.credits += r.credits
        total.points += r.points
        if progress is not None:
            progress(end, size)
    return total


class CreditEntry(NamedTuple):
    """What crediting reads of a log entry (the columns of ``entries`` of these names, and
    the municipality of its terminal)."""

    log_index: int
    terminal_id: str
    seq: int
    kind: str
    card_token: str
    amount: int
    ref_seq: int
    place: str
    #: when central holds that it happened (days, weeks and months follow it)
    effective_ms: int
    detail: str
    #: whose programme credits it: its terminal's municipality
    municipality: str = DEFAULT

    @classmethod
    def of(cls, item: Ingested, municipality: str = DEFAULT) -> CreditEntry:
        e = item.entry
        return cls(item.log_index, e.terminal_id, e.seq, e.kind, e.card_token, e.amount,
                   e.ref_seq, e.place, item.when_ms, e.detail, municipality)


class _Versions:
    """The rules version in force on a day, among those held (``in_force``), remembered per
    day: a chunk of entries spans a few days."""

    def __init__(self, versions: Sequence[Rules], *, open_start: bool = True) -> None:
        self.versions = list(versions)
        #: no entry of an earlier day earns: a programme that did not run then (``None``:
        #: the days before the first version follow it, as ``default``'s always have)
        self.start = None if open_start else min(r.effective_from for r in self.versions)
        # Days are counted in the newest version's time zone (a programme keeps its zone).
        self.calendar = max(self.versions, key=lambda r: r.version).calendar()
        self._by_day: dict[date, Rules] = {}

    def __call__(self, day: date) -> Rules:
        found = self._by_day.get(day)
        if found is None:
            found = self._by_day[day] = in_force(self.versions, day)
        return found


Programmes = Rules | Sequence[Rules] | Mapping[str, Sequence[Rules]]


def _programmes(rules: Programmes) -> Callable[[str], _Versions | None]:
    """Each municipality's versions (a mapping), or one set of versions for every entry."""
    if isinstance(rules, Mapping):
        table = {m: _Versions(v, open_start=m == DEFAULT) for m, v in rules.items() if v}
        return table.get
    one = _Versions([rules] if isinstance(rules, Rules) else rules)
    return lambda _m: one


def credit(tx: Tx, batch: Sequence[CreditEntry], rules: Programmes, now_ms: int,
           known: dict[WeekKey, list[Any]] | None = None) -> CreditResult:
    """Credit entries of any terminals in log order, as one step: the caller holds the
    crediting lock (:func:`lock_crediting`) and moves the cursor (:func:`credit_log`).

    ``rules``: every version held of each municipality (municipality -> versions), or the
    versions that credit every entry; each entry is credited by the version of its
    municipality's programme in force on its effective day, with that programme's caps,
    first rides, profiles and claims. ``known``: cards' weeks (``[points, days mask, first
    rides]`` by municipality, card and Monday) as they stand in the store, from the caller's
    earlier steps; read for the others, and kept up to date here."""
    result = CreditResult()
    if not batch:
        return result
    programme_of = _programmes(rules)
    work: list[tuple[str, CreditEntry, date, dict[str, Any], Rules]] = []
    refs: dict[str, set[int]] = {}
    for e in batch:
        if not e.card_token:
            continue
        pick = programme_of(e.municipality)
        if pick is None:
            continue  # the municipality has no programme (yet): nothing to earn
        kind = e.kind
        day = pick.calendar.day(e.effective_ms)
        if pick.start is not None and day < pick.start:
            continue
        r = pick(day)
        if kind == "tap":
            bus = r.bus
            if not bus.enabled or e.amount <= 0 or not bus.earns_on(day):
                continue
            detail = detail_of(e.detail)
            if detail.get("bus_type") in bus.bus_types:
                work.append(("bus", e, day, detail, r))
        elif kind == "payment":
            food = r.food
            if food.enabled and e.amount > 0 and "merchant_category" in e.detail:
                detail = detail_of(e.detail)
                if detail.get("merchant_category") in food.merchant_categories:
                    work.append(("food", e, day, detail, r))
        elif kind in ("refund", "void"):
            if e.ref_seq:
                work.append(("back", e, day, {}, r))
                refs.setdefault(e.terminal_id, set()).add(e.ref_seq)
        elif kind == "incentive":
            work.append(("campaign", e, day, detail_of(e.detail), r))
    if not work:
        return result
    bus_items = [w for w in work if w[0] == "bus"]
    days = {w[2] for w in bus_items}
    monday = {d: week_start(d) for d in days}
    cards = sorted({(w[1].municipality, w[1].card_token) for w in bus_items})
    weeks = {} if known is None else known
    wanted = sorted(key for key in {(w[1].municipality, w[1].card_token, monday[w[2]])
                                    for w in bus_items} if key not in weeks)
    done, closed, profiles, found = _read_state(tx, work, cards, wanted)
    for key in wanted:
        weeks[key] = found.get(key) or [0, 0, ""]
    payable: dict[tuple[str, str], str] = {}
    paid = _load_payments(tx, refs)
    claimed: set[tuple[str, str, str]] = set()
    rows: list[tuple[Any, ...]] = []
    changed: set[WeekKey] = set()
    claims: list[tuple[Any, ...]] = []
    adjustments: list[tuple[Any, ...]] = []

    def payable_in(municipality: str, day: date) -> str:
        month = month_of(day)
        pay = payable.get((municipality, month))
        if pay is None:
            pay = month
            while (municipality, pay) in closed:
                pay = next_month(pay)
            payable[(municipality, month)] = pay
        return pay

    # bus credits' notes repeat (bus type, rider, route): each is written once
    notes: dict[tuple[Any, str, str], str] = {}

    def add(e: CreditEntry, day: date, r: Rules, rule: str, points: int, base: int,
            note: dict[str, Any] | str, ref_seq: int = 0) -> None:
        rows.append((e.terminal_id, e.seq, e.log_index, e.card_token, rule, points, base,
                     ref_seq, r.version, day.isoformat(), payable_in(e.municipality, day),
                     now_ms, note if isinstance(note, str) else _json(note), e.municipality))
        result.credits += 1
        result.points += points

    def take_back(holder: list[Any], e: CreditEntry, day: date, r: Rules,
                  points: int) -> None:
        """The credit of ``holder`` (terminal, seq) moves to ``e``: an adjustment, keyed by
        the credit it reverses and why, so that it is made once."""
        moved_to = f"{e.terminal_id}/{e.seq}"
        adjustments.append((holder[1], holder[2], "first ride moved to " + moved_to,
                            e.log_index, e.card_token, "bus", -points, r.version,
                            day.isoformat(), payable_in(e.municipality, day), now_ms,
                            _json({"moved_to": moved_to}), e.municipality))
        result.points -= points

    for what, e, day, detail, r in work:
        if (e.terminal_id, e.seq) in done:
            continue
        if what == "bus":
            rider = profiles.get((e.municipality, e.card_token)) or str(
                detail.get("rider", "adult"))
            cap = r.bus.weekly_cap.get(rider)
            if cap is None:
                continue
            key = (e.municipality, e.card_token, monday[day])
            state = weeks.setdefault(key, [0, 0, ""])
            bit = 1 << day.weekday()
            weekday = str(day.weekday())
            note: dict[str, Any] | str
            if state[1] & bit:
                # Not the first ride to arrive for this day; the first that happened?
                firsts = _firsts(state)
                holder = firsts.get(weekday)
                if holder is None or e.effective_ms >= holder[0]:
                    continue
                # a credit is paid only by a payout run: with none, no query
                if holder[3] and closed and _paid(tx, str(holder[1]), int(holder[2])):
                    continue  # the month of the credit is paid: it stays where it is
                base = state[0] - int(holder[3])
                points = min(e.amount, cap - base) if cap > base else 0
                if holder[3]:
                    take_back(holder, e, day, r, int(holder[3]))
                note = {"bus_type": detail.get("bus_type"), "rider": rider, "route": e.place,
                        "moved_from": f"{holder[1]}/{holder[2]}"}
                firsts[weekday] = [e.effective_ms, e.terminal_id, e.seq, points]
            else:
                state[1] |= bit
                base = state[0]
                points = min(e.amount, cap - base) if cap > base else 0
                _first_ride(state, weekday, [e.effective_ms, e.terminal_id, e.seq, points])
                bus_type = detail.get("bus_type")
                note = notes.get((bus_type, rider, e.place)) or notes.setdefault(
                    (bus_type, rider, e.place),
                    _json({"bus_type": bus_type, "rider": rider, "route": e.place}))
            state[0] = base + points
            changed.add(key)
            if points > 0:
                add(e, day, r, "bus", points, e.amount, note)
        elif what == "food":
            points = r.food.points(e.amount)
            if points > 0:
                paid[(e.terminal_id, e.seq)] = [e.amount, points, r.food.rate_bp]
                add(e, day, r, "local_food", points, e.amount,
                    {"rate_bp": r.food.rate_bp, "merchant": e.place})
        elif what == "back":
            pay = paid.get((e.terminal_id, e.ref_seq))
            if pay is None:
                continue  # the payment earned nothing, or is not ours to take back from
            left = max(pay[0] - e.amount, 0)
            keep = left * pay[2] // 10_000
            back = keep - pay[1]
            pay[0], pay[1] = left, keep
            add(e, day, r, "refund", back, -e.amount, {"payment": e.ref_seq, "kind": e.kind},
                e.ref_seq)
        else:
            granted = _campaign(tx, r, e, day, detail, claimed)
            if granted is not None:
                cid, wallet, points = granted
                claims.append((cid, e.card_token, wallet, e.terminal_id, e.seq,
                               e.municipality))
                add(e, day, r, "campaign", points, 0, {"campaign": cid})
    writes = [Rows("incentive_credits", (*CREDIT_COLUMNS, "municipality_id"), rows,
                   "ON CONFLICT (terminal_id, seq) DO NOTHING"),
              Rows("incentive_claims", (*CLAIM_COLUMNS, "municipality_id"), claims),
              Rows("incentive_adjustments", (*ADJUST_COLUMNS, "municipality_id"), adjustments,
                   "ON CONFLICT (terminal_id, seq, cause) DO NOTHING")]
    if changed:
        # The batch's last log index orders snapshot versions: appends are serialized by
        # the log lock, so versions grow in commit order without a counter to update.
        version = max(e.log_index for e in batch) + 1
        writes.append(Rows(
            "incentive_weeks", (*WEEK_COLUMNS, "municipality_id"),
            [(t, w.isoformat(), weeks[(m, t, w)][0], weeks[(m, t, w)][1], version,
              _firsts_text(weeks[(m, t, w)][2]), m) for m, t, w in sorted(changed)],
            "ON CONFLICT (municipality_id, card_token, week_start) DO UPDATE SET "
            "points = excluded.points, days_mask = excluded.days_mask, "
            "version = excluded.version, firsts = excluded.firsts"))
    tx.insert_all(writes)
    return result


def _read_state(tx: Tx, work: list[tuple[str, CreditEntry, date, dict[str, Any], Rules]],
                cards: Sequence[tuple[str, str]], weeks: Sequence[WeekKey]) -> tuple[
        set[tuple[str, int]], set[tuple[str, str]], dict[tuple[str, str], str],
        dict[WeekKey, list[Any]]]:
    """Everything crediting reads, in one round trip: entries already credited, months
    already paid out (by municipality), rider profiles of ``cards`` (municipality, token)
    and the ``weeks`` (municipality, card, Monday) so far."""
    spans: dict[str, list[int]] = {}
    for _, e, _, _, _ in work:
        lo_hi = spans.setdefault(e.terminal_id, [e.seq, e.seq])
        lo_hi[0], lo_hi[1] = min(lo_hi[0], e.seq), max(lo_hi[1], e.seq)
    # One statement whose text does not depend on the number of terminals, cards or weeks,
    # so that PostgreSQL prepares it once: each list goes as one parameter.
    source, params = tx.values_table("s", ("t", "lo", "hi"),
                                     [(t, lo, hi) for t, (lo, hi) in spans.items()])
    parts = [f"SELECT 'c', c.terminal_id, CAST(NULL AS TEXT), c.seq, CAST(NULL AS BIGINT), "
             f"CAST(NULL AS TEXT), CAST(NULL AS TEXT) FROM incentive_credits c JOIN {source} "
             "ON c.terminal_id = s.t AND c.seq BETWEEN s.lo AND s.hi",
             "SELECT 'r', month, NULL, NULL, NULL, NULL, municipality_id FROM incentive_runs"]
    if cards:
        tokens, card_list = tx.any_of("card_token", sorted({t for _, t in cards}))
        parts.append(f"SELECT 'p', card_token, rider, NULL, NULL, NULL, municipality_id "
                     f"FROM incentive_profiles WHERE {tokens}")
        params.append(card_list)
    if weeks:
        keys, key_params = tx.values_table("k", ("m", "t", "w"),
                                           [(m, t, w.isoformat()) for m, t, w in weeks])
        parts.append("SELECT 'w', i.card_token, i.week_start, i.points, i.days_mask, "
                     f"i.firsts, i.municipality_id FROM incentive_weeks i JOIN {keys} ON "
                     "i.municipality_id = k.m AND i.card_token = k.t AND i.week_start = k.w")
        params += key_params
    done: set[tuple[str, int]] = set()
    closed: set[tuple[str, str]] = set()
    profiles: dict[tuple[str, str], str] = {}
    state: dict[WeekKey, list[Any]] = {}
    mondays: dict[Any, date] = {}
    for tag, k1, k2, n1, n2, text, municipality in tx.all(" UNION ALL ".join(parts), params):
        if tag == "c":
            done.add((str(k1), int(n1)))
        elif tag == "r":
            closed.add((str(municipality), str(k1)))
        elif tag == "p":
            profiles[(str(municipality), str(k1))] = str(k2)
        else:
            monday = mondays.get(k2)
            if monday is None:
                monday = mondays[k2] = date.fromisoformat(str(k2))
            state[(str(municipality), str(k1), monday)] = [int(n1), int(n2), str(text or "")]
    return done, closed, profiles, state


def _json(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True)


# A week's first rides as stored: one record per weekday, fields apart by US, records by RS
# (ASCII unit and record separators): appending a day's first ride needs no parsing.
_US, _RS = "\x1f", "\x1e"


def _first_ride(state: list[Any], weekday: str, ride: list[Any]) -> None:
    """Record the first ride of a weekday that had none (``[effective ms, terminal, seq,
    points]``)."""
    if isinstance(state[2], dict):
        state[2][weekday] = ride
    else:
        eff, tid, seq, points = ride
        state[2] = f"{state[2]}{_RS if state[2] else ''}{weekday}{_US}{eff}{_US}{seq}{_US}" \
                   f"{points}{_US}{tid}"


def _firsts(state: list[Any]) -> dict[str, list[Any]]:
    """A week's first rides by weekday, parsed from the stored text only when needed: when a
    ride arrives for a day that already has one (most rides of a day are not its first)."""
    if not isinstance(state[2], dict):
        parsed: dict[str, list[Any]] = {}
        for record in state[2].split(_RS) if state[2] else ():
            parts = record.split(_US, 4)
            if len(parts) == 5:
                weekday, eff, seq, points, tid = parts
                parsed[weekday] = [int(eff), tid, int(seq), int(points)]
        state[2] = parsed
    firsts: dict[str, list[Any]] = state[2]
    return firsts


def _firsts_text(firsts: dict[str, list[Any]] | str) -> str:
    if isinstance(firsts, str):
        return firsts
    return _RS.join(f"{wd}{_US}{eff}{_US}{seq}{_US}{points}{_US}{tid}"
                    for wd, (eff, tid, seq, points) in sorted(firsts.items()))


def _paid(tx: Tx, terminal_id: str, seq: int) -> bool:
    row = tx.one("SELECT settled_month FROM incentive_credits WHERE terminal_id = ? AND "
                 "seq = ?", (terminal_id, seq))
    return row is not None and row[0] is not None


def _load_payments(tx: Tx, refs: dict[str, set[int]]) -> dict[tuple[str, int], list[int]]:
    """Credited payments that refunds of this batch refer to: [base left, points kept, rate]."""
    out: dict[tuple[str, int], list[int]] = {}
    pairs = [(tid, seq) for tid, seqs in refs.items() for seq in sorted(seqs)]
    if not pairs:
        return out
    source, params = tx.values_table("s", ("t", "q"), pairs)
    rows = tx.all(
        "SELECT c.terminal_id, c.seq, c.ref_seq, c.base, c.points, c.note FROM "
        f"incentive_credits c JOIN {source} ON c.terminal_id = s.t AND c.seq = s.q "
        "WHERE c.rule = 'local_food' UNION ALL "
        "SELECT c.terminal_id, c.seq, c.ref_seq, c.base, c.points, c.note FROM "
        f"incentive_credits c JOIN {source} ON c.terminal_id = s.t AND c.ref_seq = s.q "
        "WHERE c.rule = 'refund' AND c.ref_seq <> 0", params + params)
    # payments first, then the refunds already credited against them in their order
    rows.sort(key=lambda r: (int(r[2]) != 0, str(r[0]), int(r[1])))
    for tid, seq, ref_seq, base, points, note in rows:
        if int(ref_seq) == 0:
            rate = int(detail_of(str(note)).get("rate_bp", 0))
            out[(str(tid), int(seq))] = [int(base), int(points), rate]
        elif (str(tid), int(ref_seq)) in out:
            state = out[(str(tid), int(ref_seq))]
            state[0] += int(base)
            state[1] += int(points)
    return out


def _campaign(tx: Tx, rules: Rules, e: CreditEntry, day: date, detail: dict[str, Any],
              claimed: set[tuple[str, str, str]]) -> tuple[str, str, int] | None:
    """A campaign claim, once per card and wallet in the programme of ``e``'s municipality."""
    cid = str(detail.get("campaign", ""))
    campaign = rules.campaigns.get(cid)
    if campaign is None or not campaign.start <= day <= campaign.end:
        log.warning("incentive entry %s/%d: campaign %r unknown or not running on %s",
                    e.terminal_id, e.seq, cid, day)
        return None
    claim = verify_campaign_code(str(detail.get("code", "")), rules.campaign_keys)
    if claim is None or claim.campaign_id != cid:
        log.warning("incentive entry %s/%d: campaign code does not verify", e.terminal_id, e.seq)
        return None
    keys = {(e.municipality, cid, e.card_token), (e.municipality, cid, "w:" + claim.wallet_id)}
    if keys & claimed:
        return None
    row = tx.one("SELECT 1 FROM incentive_claims WHERE municipality_id = ? AND campaign_id = ? "
                 "AND (card_token = ? OR holder = ?)",
                 (e.municipality, cid, e.card_token, claim.wallet_id))
    if row is not None:
        return None
    claimed.update(keys)
    return cid, claim.wallet_id, campaign.grant(claim.points)


# -- what terminals fetch ---------------------------------------------------------------------


def points_delta(store: Store, since: int, now_ms: int | None = None,
                 limit: int = PAGE, *, municipality: str = DEFAULT) -> dict[str, Any]:
    """This week's bus points of cards changed after version ``since`` in
    ``municipality``'s programme, and its rules' summary, for its terminals to show points
    offline (``GET /v1/points``). A municipality with no programme yet sends the shipped
    summary with nothing earning (version 0): its terminals promise no points."""
    with store.tx(write=False) as tx:
        return points_delta_in(tx, since, now_ms, limit, municipality=municipality)


def points_delta_in(tx: Tx, since: int, now_ms: int | None = None, limit: int = PAGE, *,
                    municipality: str = DEFAULT) -> dict[str, Any]:
    """:func:`points_delta`, read in ``tx`` (a round reads its parts together)."""
    now = epoch_ms() if now_ms is None else now_ms
    held = held_rules(tx, store_default=False, municipality=municipality)
    rules = held[-1] if held else Rules.default()
    week = week_start(rules.calendar().today(now))
    rows = tx.all(
        "SELECT w.card_token, w.points, w.days_mask, w.version, p.rider FROM incentive_weeks "
        "w LEFT JOIN incentive_profiles p ON p.card_token = w.card_token AND "
        "p.municipality_id = w.municipality_id WHERE w.municipality_id = ? AND "
        "w.week_start = ? AND w.version > ? ORDER BY w.version LIMIT ?",
        (municipality, week.isoformat(), since, limit))
    top = tx.one("SELECT COALESCE(MAX(version), 0) FROM incentive_weeks "
                 "WHERE municipality_id = ? AND week_start = ?",
                 (municipality, week.isoformat()))
    rows, cut = whole_versions(rows, limit, 3, lambda v: tx.all(
        "SELECT w.card_token, w.points, w.days_mask, w.version, p.rider FROM "
        "incentive_weeks w LEFT JOIN incentive_profiles p ON p.card_token = w.card_token "
        "AND p.municipality_id = w.municipality_id WHERE w.municipality_id = ? AND "
        "w.week_start = ? AND w.version = ?", (municipality, week.isoformat(), v)))
    version = max(int(top[0]) if top else 0, since) if cut is None else cut
    # the holidays sent are those of the request's year and the next
    summary = rules.summary(rules.calendar().today(now))
    if not held and municipality != DEFAULT:
        summary.update(version=0, bus=False, local_food=False, campaigns={})
    return {"version": version, "week_start": week.isoformat(), "rules": summary,
            "points": {str(t): [int(p), int(m), str(r or "")] for t, p, m, _, r in rows}}


# -- payout and statements --------------------------------------------------------------------
