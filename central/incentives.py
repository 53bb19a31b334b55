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
- **Order.** Entries are credited in the order the central chain receives them (log order),
  and the weekly cap is applied at the moment of crediting. A card that taps two validators
  which sync at different times gets its first-ride credit from whichever ride *arrives*
  first for that day; the later-arriving ride of the same day earns nothing, even when it
  happened earlier. Credits are never revised afterwards, so a statement never changes
  under a rider's eyes, and the result is a pure function of the log order, which is itself
  recorded (``log_index``).
- **Weeks and days** (Monday to Sunday) are those of the entry's wall clock in the rules'
  time zone; ``incentive_weeks`` keeps per card and week the bus points so far and which
  weekdays already had their first ride (a bit mask), whatever order they arrive in.
- **Months.** A credit is payable in the month of its entry; one that arrives after that
  month was paid out is payable in the first month not yet paid (``payable_month``), so a
  late entry is paid late, never lost and never paid twice.
- **Payout** (:func:`payout`) pays each card's unpaid points as spendable balance (the
  ``balances`` table terminals fetch), months in any order: a run of a month takes the
  credits payable in it and every credit a run before it held or carried, pays a card's
  positive net when it has a balance account, and marks exactly the credits it paid
  (``settled_month``). A card with no account keeps its points *held*, a negative net
  (refunds taking back points already paid) is *carried*; both stay unpaid until the first
  run that can pay them. A second run of a month changes nothing and answers what the first
  did.
- **Rider category**: ``incentive_profiles`` (set by the operator) first, else the ``rider``
  the terminal wrote into the tap.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, NamedTuple

from central.incentive_rules import (
    RIDERS,
    Rules,
    month_of,
    next_month,
    parse_month,
    verify_campaign_code,
    week_start,
)
from central.service import CentralLog, Ingested
from central.store import Rows, Store, Tx
from localpay.errors import ConfigError, TransactionError

log = logging.getLogger(__name__)

CREDIT_COLUMNS = ("terminal_id", "seq", "log_index", "card_token", "rule", "points", "base",
                  "ref_seq", "rule_version", "day", "payable_month", "credited_ms", "note")
CLAIM_COLUMNS = ("campaign_id", "card_token", "holder", "terminal_id", "seq")
WEEK_COLUMNS = ("card_token", "week_start", "points", "days_mask", "version")
_CHUNK = 500


def _now() -> int:
    return int(time.time() * 1000)


def _chunks(items: Sequence[Any], n: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _detail(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


# -- rules in the store -------------------------------------------------------------------


def load_rules(store: Store, text: str, source: str = "incentive rules") -> tuple[Rules, bool]:
    """Validate ``text`` and store it as a new version; ``(rules, stored_now)``.

    The same version with the same text again is a no-op; a different text under a version
    already held, or a version below the newest, is refused.
    """
    rules = Rules.from_toml(text, source)
    with store.tx() as tx:
        lock_crediting(tx)
        return rules, _store_rules(tx, rules)


def _store_rules(tx: Tx, rules: Rules) -> bool:
    held = tx.one("SELECT sha256 FROM incentive_rules WHERE version = ?", (rules.version,))
    if held is not None:
        if str(held[0]) != rules.sha256:
            raise ConfigError(f"incentive rules version {rules.version} is already held with "
                              "other content: raise the version for a change")
        return False
    top = tx.one("SELECT COALESCE(MAX(version), 0) FROM incentive_rules")
    newest = int(top[0]) if top else 0
    if rules.version < newest:
        raise ConfigError(f"incentive rules version {rules.version} is older than the "
                          f"version {newest} in force")
    tx.run("INSERT INTO incentive_rules VALUES (?, ?, ?, ?)",
           (rules.version, rules.sha256, rules.text, _now()))
    return True


_PARSED: dict[str, Rules] = {}


def active_rules(tx: Tx, *, store_default: bool = True) -> Rules:
    """The newest stored version; the shipped defaults are stored on first use (in a write
    transaction holding the crediting lock) or just returned (``store_default=False``)."""
    row = tx.one("SELECT sha256, body FROM incentive_rules ORDER BY version DESC LIMIT 1")
    if row is None:
        rules = Rules.default()
        if store_default:
            _store_rules(tx, rules)
        return rules
    cached = _PARSED.get(str(row[0]))
    if cached is None:
        cached = Rules.from_toml(str(row[1]), "stored incentive rules")
        if len(_PARSED) > 64:
            _PARSED.clear()
        _PARSED[str(row[0])] = cached
    return cached


def rules_versions(store: Store) -> list[dict[str, Any]]:
    with store.tx(write=False) as tx:
        rows = tx.all("SELECT version, sha256, loaded_ms FROM incentive_rules ORDER BY version")
    return [{"version": int(v), "sha256": str(s), "loaded_ms": int(t)} for v, s, t in rows]


def current_rules(store: Store) -> Rules:
    with store.tx() as tx:
        lock_crediting(tx)
        return active_rules(tx)


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


def credit_log(store: Store, *, chunk: int = 5000, now_ms: int | None = None,
               progress: Callable[[int, int], None] | None = None) -> CreditResult:
    """Credit every entry of the log beyond the crediting cursor, ``chunk`` log entries per
    transaction; the cursor moves in the same transaction as the credits, so a crash or a
    second crediter never credits an entry twice. ``progress(done, size)`` after each chunk.

    It stops at the log's size as read when it started its last chunk: a batch committed
    after that read runs crediting itself once this run lets go of the lock.
    """
    if chunk < 1:
        raise ConfigError("the crediting chunk must be at least 1 entry")
    total = CreditResult()
    kinds = ", ".join(f"'{k}'" for k in _EARNING_KINDS)
    # Cards' weeks as this run left them: only crediting writes incentive_weeks, under the
    # lock, so they hold for the next chunk unless another crediter ran in between.
    known: dict[tuple[str, date], list[int]] = {}
    end = size = 0
    while end == 0 or end < size:
        with store.tx() as tx:
            start, size = lock_crediting(tx)
            if start >= size:
                break
            if start != end or len(known) > _KNOWN_MAX:
                known.clear()
            end = min(start + chunk, size)
            items = [CreditEntry._make(row) for row in tx.all(
                f"SELECT {', '.join(CreditEntry._fields)} FROM entries WHERE log_index >= ? "
                f"AND log_index < ? AND kind IN ({kinds}) ORDER BY log_index", (start, end))]
            r = credit(tx, items, active_rules(tx), _now() if now_ms is None else now_ms,
                       known)
            tx.run("UPDATE incentive_cursor SET next_index = ? WHERE id = 1", (end,))
        total.credits += r.credits
        total.points += r.points
        if progress is not None:
            progress(end, size)
    return total


class CreditEntry(NamedTuple):
    """What crediting reads of a log entry (the columns of ``entries`` of these names)."""

    log_index: int
    terminal_id: str
    seq: int
    kind: str
    card_token: str
    amount: int
    ref_seq: int
    place: str
    wall_ms: int
    detail: str

    @classmethod
    def of(cls, item: Ingested) -> CreditEntry:
        e = item.entry
        return cls(item.log_index, e.terminal_id, e.seq, e.kind, e.card_token, e.amount,
                   e.ref_seq, e.place, e.wall_ms, e.detail)


def credit(tx: Tx, batch: Sequence[CreditEntry], rules: Rules, now_ms: int,
           known: dict[tuple[str, date], list[int]] | None = None) -> CreditResult:
    """Credit entries of any terminals in log order, as one step: the caller holds the
    crediting lock (:func:`lock_crediting`) and moves the cursor (:func:`credit_log`).

    ``known``: cards' weeks (``[points, days mask]`` by card and Monday) as they stand in the
    store, from the caller's earlier steps; read for the others, and kept up to date here."""
    result = CreditResult()
    if not batch:
        return result
    cal = rules.calendar()
    bus, food = rules.bus, rules.food
    work: list[tuple[str, CreditEntry, date, dict[str, Any]]] = []
    refs: dict[str, set[int]] = {}
    for e in batch:
        if not e.card_token:
            continue
        kind = e.kind
        if kind == "tap":
            if not bus.enabled or e.amount <= 0:
                continue
            day = cal.day(e.wall_ms)
            if not bus.earns_on(day):
                continue
            detail = _detail(e.detail)
            if detail.get("bus_type") in bus.bus_types:
                work.append(("bus", e, day, detail))
        elif kind == "payment":
            if food.enabled and e.amount > 0 and "merchant_category" in e.detail:
                detail = _detail(e.detail)
                if detail.get("merchant_category") in food.merchant_categories:
                    work.append(("food", e, cal.day(e.wall_ms), detail))
        elif kind in ("refund", "void"):
            if e.ref_seq:
                work.append(("back", e, cal.day(e.wall_ms), {}))
                refs.setdefault(e.terminal_id, set()).add(e.ref_seq)
        elif kind == "incentive":
            work.append(("campaign", e, cal.day(e.wall_ms), _detail(e.detail)))
    if not work:
        return result
    bus_items = [w for w in work if w[0] == "bus"]
    days = {w[2] for w in bus_items}
    monday = {d: week_start(d) for d in days}
    tokens = sorted({w[1].card_token for w in bus_items})
    weeks = {} if known is None else known
    wanted = sorted(key for key in {(w[1].card_token, monday[w[2]]) for w in bus_items}
                    if key not in weeks)
    done, closed, profiles, found = _read_state(tx, work, tokens, wanted)
    for key in wanted:
        weeks[key] = found.get(key) or [0, 0]
    payable: dict[str, str] = {}
    paid = _load_payments(tx, refs)
    claimed: set[tuple[str, str]] = set()
    rows: list[tuple[Any, ...]] = []
    changed: set[tuple[str, date]] = set()
    claims: list[tuple[Any, ...]] = []

    def add(e: CreditEntry, day: date, rule: str, points: int, base: int,
            note: dict[str, Any], ref_seq: int = 0) -> None:
        month = month_of(day)
        pay = payable.get(month)
        if pay is None:
            pay = month
            while pay in closed:
                pay = next_month(pay)
            payable[month] = pay
        rows.append((e.terminal_id, e.seq, e.log_index, e.card_token, rule, points, base,
                     ref_seq, rules.version, day.isoformat(), pay, now_ms,
                     json.dumps(note, separators=(",", ":"), sort_keys=True)))
        result.credits += 1
        result.points += points

    for what, e, day, detail in work:
        if (e.terminal_id, e.seq) in done:
            continue
        if what == "bus":
            rider = profiles.get(e.card_token) or str(detail.get("rider", "adult"))
            cap = bus.weekly_cap.get(rider)
            if cap is None:
                continue
            key = (e.card_token, monday[day])
            state = weeks.setdefault(key, [0, 0])
            bit = 1 << day.weekday()
            if state[1] & bit:
                continue
            state[1] |= bit
            changed.add(key)
            points = min(e.amount, cap - state[0]) if cap > state[0] else 0
            if points > 0:
                state[0] += points
                add(e, day, "bus", points, e.amount,
                    {"bus_type": detail.get("bus_type"), "rider": rider, "route": e.place})
        elif what == "food":
            points = food.points(e.amount)
            if points > 0:
                paid[(e.terminal_id, e.seq)] = [e.amount, points, food.rate_bp]
                add(e, day, "local_food", points, e.amount,
                    {"rate_bp": food.rate_bp, "merchant": e.place})
        elif what == "back":
            pay = paid.get((e.terminal_id, e.ref_seq))
            if pay is None:
                continue  # the payment earned nothing, or is not ours to take back from
            left = max(pay[0] - e.amount, 0)
            keep = left * pay[2] // 10_000
            back = keep - pay[1]
            pay[0], pay[1] = left, keep
            add(e, day, "refund", back, -e.amount, {"payment": e.ref_seq, "kind": e.kind},
                e.ref_seq)
        else:
            granted = _campaign(tx, rules, e, day, detail, claimed)
            if granted is not None:
                cid, holder, points = granted
                claims.append((cid, e.card_token, holder, e.terminal_id, e.seq))
                add(e, day, "campaign", points, 0, {"campaign": cid})
    writes = [Rows("incentive_credits", CREDIT_COLUMNS, rows,
                   "ON CONFLICT (terminal_id, seq) DO NOTHING"),
              Rows("incentive_claims", CLAIM_COLUMNS, claims)]
    if changed:
        # The batch's last log index orders snapshot versions: appends are serialized by
        # the log lock, so versions grow in commit order without a counter to update.
        version = max(e.log_index for e in batch) + 1
        writes.append(Rows(
            "incentive_weeks", WEEK_COLUMNS,
            [(t, w.isoformat(), weeks[(t, w)][0], weeks[(t, w)][1], version)
             for t, w in sorted(changed)],
            "ON CONFLICT (card_token, week_start) DO UPDATE SET points = excluded.points, "
            "days_mask = excluded.days_mask, version = excluded.version"))
    tx.insert_all(writes)
    return result


def _read_state(tx: Tx, work: list[tuple[str, CreditEntry, date, dict[str, Any]]],
                tokens: Sequence[str], weeks: Sequence[tuple[str, date]]) -> tuple[
        set[tuple[str, int]], set[str], dict[str, str], dict[tuple[str, date], list[int]]]:
    """Everything crediting reads, in one round trip: entries already credited, months
    already paid out, rider profiles of ``tokens`` and the ``weeks`` (card, Monday) so far."""
    spans: dict[str, list[int]] = {}
    for _, e, _, _ in work:
        lo_hi = spans.setdefault(e.terminal_id, [e.seq, e.seq])
        lo_hi[0], lo_hi[1] = min(lo_hi[0], e.seq), max(lo_hi[1], e.seq)
    # One statement whose text does not depend on the number of terminals, cards or weeks,
    # so that PostgreSQL prepares it once: each list goes as one parameter.
    source, params = tx.values_table("s", ("t", "lo", "hi"),
                                     [(t, lo, hi) for t, (lo, hi) in spans.items()])
    parts = [f"SELECT 'c', c.terminal_id, CAST(NULL AS TEXT), c.seq, CAST(NULL AS BIGINT) "
             f"FROM incentive_credits c JOIN {source} ON c.terminal_id = s.t AND "
             "c.seq BETWEEN s.lo AND s.hi",
             "SELECT 'r', month, NULL, NULL, NULL FROM incentive_runs"]
    if tokens:
        cards, card_list = tx.any_of("card_token", tokens)
        parts.append(f"SELECT 'p', card_token, rider, NULL, NULL FROM incentive_profiles "
                     f"WHERE {cards}")
        params.append(card_list)
    if weeks:
        pairs, pair_params = tx.values_table("k", ("t", "w"),
                                             [(t, w.isoformat()) for t, w in weeks])
        parts.append("SELECT 'w', i.card_token, i.week_start, i.points, i.days_mask FROM "
                     f"incentive_weeks i JOIN {pairs} ON i.card_token = k.t AND "
                     "i.week_start = k.w")
        params += pair_params
    done: set[tuple[str, int]] = set()
    closed: set[str] = set()
    profiles: dict[str, str] = {}
    state: dict[tuple[str, date], list[int]] = {}
    mondays: dict[Any, date] = {}
    for tag, k1, k2, n1, n2 in tx.all(" UNION ALL ".join(parts), params):
        if tag == "c":
            done.add((str(k1), int(n1)))
        elif tag == "r":
            closed.add(str(k1))
        elif tag == "p":
            profiles[str(k1)] = str(k2)
        else:
            monday = mondays.get(k2)
            if monday is None:
                monday = mondays[k2] = date.fromisoformat(str(k2))
            state[(str(k1), monday)] = [int(n1), int(n2)]
    return done, closed, profiles, state


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
            rate = int(_detail(str(note)).get("rate_bp", 0))
            out[(str(tid), int(seq))] = [int(base), int(points), rate]
        elif (str(tid), int(ref_seq)) in out:
            state = out[(str(tid), int(ref_seq))]
            state[0] += int(base)
            state[1] += int(points)
    return out


def _campaign(tx: Tx, rules: Rules, e: Any, day: date, detail: dict[str, Any],
              claimed: set[tuple[str, str]]) -> tuple[str, str, int] | None:
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
    keys = {(cid, e.card_token), (cid, "w:" + claim.wallet_id)}
    if keys & claimed:
        return None
    row = tx.one("SELECT 1 FROM incentive_claims WHERE campaign_id = ? AND (card_token = ? OR "
                 "holder = ?)", (cid, e.card_token, claim.wallet_id))
    if row is not None:
        return None
    claimed.update(keys)
    return cid, claim.wallet_id, campaign.points


# -- profiles -------------------------------------------------------------------------------


def set_profiles(store: Store, riders: dict[str, str]) -> int:
    """Set the rider category of cards (token -> adult/youth/child)."""
    for token, rider in riders.items():
        if not token or rider not in RIDERS:
            raise ConfigError(f"profile {token[:12]!r}: rider must be one of {RIDERS}")
    now = _now()
    with store.tx() as tx:
        tx.many("INSERT INTO incentive_profiles (card_token, rider, updated_ms) VALUES (?, ?, ?) "
                "ON CONFLICT (card_token) "
                "DO UPDATE SET rider = excluded.rider, updated_ms = excluded.updated_ms",
                [(t, r, now) for t, r in riders.items()])
    return len(riders)


def remove_profile(store: Store, token: str) -> bool:
    with store.tx() as tx:
        return tx.run("DELETE FROM incentive_profiles WHERE card_token = ?", (token,)) > 0


# -- what terminals fetch ---------------------------------------------------------------------


def points_delta(store: Store, since: int, now_ms: int | None = None,
                 limit: int = 50_000) -> dict[str, Any]:
    """This week's bus points of cards changed after version ``since``, and the rules'
    summary, for terminals to show points offline (``GET /v1/points``)."""
    with store.tx(write=False) as tx:
        rules = active_rules(tx, store_default=False)
        week = week_start(rules.calendar().today(_now() if now_ms is None else now_ms))
        rows = tx.all(
            "SELECT w.card_token, w.points, w.days_mask, w.version, p.rider FROM incentive_weeks "
            "w LEFT JOIN incentive_profiles p ON p.card_token = w.card_token "
            "WHERE w.week_start = ? AND w.version > ? ORDER BY w.version LIMIT ?",
            (week.isoformat(), since, limit))
        top = tx.one("SELECT COALESCE(MAX(version), 0) FROM incentive_weeks "
                     "WHERE week_start = ?", (week.isoformat(),))
    version = max(int(top[0]) if top else 0, since)
    if len(rows) == limit:
        # Stop before the last version so that none of it is split across two answers.
        cut = int(rows[-1][3])
        rows = [r for r in rows if int(r[3]) < cut] or rows
        version = int(rows[-1][3])
    return {"version": version, "week_start": week.isoformat(), "rules": rules.summary(),
            "points": {str(t): [int(p), int(m), str(r or "")] for t, p, m, _, r in rows}}


# -- payout and statements --------------------------------------------------------------------


@dataclass
class PayoutResult:
    month: str
    cards: int
    points: int
    held_cards: int
    held_points: int
    balance_version: int | None
    already: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def payout(store: Store, month: str, now_ms: int | None = None) -> PayoutResult:
    """Pay the points payable in ``month`` (``YYYY-MM``) as spendable balance; idempotent.

    Refused until the month has ended in the rules' time zone. Months may be paid in any
    order: each credit is paid once, by the run that pays it (``settled_month``). A run of
    ``month`` takes, per card, every unpaid credit payable in ``month`` and every unpaid
    credit of a month already run (points held for want of a balance account, or a negative
    net carried forward): a positive net is paid when the card has an account and held when
    it has none; a negative net is carried. Held and carried credits stay unpaid, so the
    first run after the card has an account (or a positive net) pays them, once.
    """
    month = parse_month(month)
    now_ms = _now() if now_ms is None else now_ms
    with store.tx() as tx:
        lock_crediting(tx)
        run = tx.one("SELECT cards, points, held_cards, held_points, balance_version "
                     "FROM incentive_runs WHERE month = ?", (month,))
        if run is not None:
            return PayoutResult(month, int(run[0]), int(run[1]), int(run[2]), int(run[3]),
                                None if run[4] is None else int(run[4]), already=True)
        rules = active_rules(tx)
        if month_of(rules.calendar().today(now_ms)) <= month:
            raise TransactionError(f"month {month} has not ended yet ({rules.timezone})")
        # Credits of months already run that are still unpaid were held or carried there.
        net: dict[str, int] = {str(t): int(p) for t, p in tx.all(
            "SELECT card_token, SUM(points) FROM incentive_credits WHERE settled_month IS NULL "
            "AND (payable_month = ? OR payable_month IN (SELECT month FROM incentive_runs)) "
            "GROUP BY card_token", (month,))}
        tokens = sorted(net)
        accounts: set[str] = set()
        for chunk in _chunks(tokens):
            marks, params = tx.in_list(chunk)
            accounts.update(str(r[0]) for r in tx.all(
                f"SELECT card_token FROM balances WHERE card_token IN {marks}", params))
        version: int | None = None
        rows: list[tuple[Any, ...]] = []
        updates: list[tuple[int, int, str]] = []
        settled: list[str] = []
        result = PayoutResult(month, 0, 0, 0, 0, None)
        for token in tokens:
            points = net[token]
            if points > 0 and token in accounts:
                if version is None:
                    row = tx.one("SELECT COALESCE(MAX(version), 0) FROM balances")
                    version = int(row[0] if row else 0) + 1
                updates.append((points, version, token))
                rows.append((token, month, points, points, 0, "paid", version, now_ms))
                settled.append(token)
                result.cards += 1
                result.points += points
            elif points > 0:
                rows.append((token, month, points, 0, points, "held", None, now_ms))
                result.held_cards += 1
                result.held_points += points
            elif points < 0:
                rows.append((token, month, points, 0, points, "carried", None, now_ms))
            else:
                settled.append(token)  # earned and taken back: nothing left to pay
        tx.many("UPDATE balances SET balance = balance + ?, version = ? WHERE card_token = ?",
                updates)
        # Exactly the credits summed above: the crediting lock keeps new ones out meanwhile.
        tx.many("UPDATE incentive_credits SET settled_month = ? WHERE card_token = ? AND "
                "settled_month IS NULL AND (payable_month = ? OR payable_month IN "
                "(SELECT month FROM incentive_runs))",
                [(month, token, month) for token in settled])
        tx.many("INSERT INTO incentive_payouts VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        result.balance_version = version
        tx.run("INSERT INTO incentive_runs VALUES (?, ?, ?, ?, ?, ?, ?)",
               (month, result.cards, result.points, result.held_cards, result.held_points,
                version, now_ms))
    log.info("payout %s: %d cards, %d points; %d held", month, result.cards, result.points,
             result.held_cards)
    return result


def statement(store: Store, card_token: str) -> dict[str, Any]:
    """A card's points: every credit (entry, rule, rule version, points), weeks, payouts."""
    with store.tx(write=False) as tx:
        credits = tx.all(
            "SELECT day, terminal_id, seq, rule, points, rule_version, payable_month, note, "
            "settled_month FROM incentive_credits WHERE card_token = ? ORDER BY day, "
            "credited_ms, terminal_id, seq", (card_token,))
        weeks = tx.all("SELECT week_start, points, days_mask FROM incentive_weeks "
                       "WHERE card_token = ? ORDER BY week_start", (card_token,))
        payouts = tx.all("SELECT month, points, paid, carry, status FROM incentive_payouts "
                         "WHERE card_token = ? ORDER BY month", (card_token,))
        profile = tx.one("SELECT rider FROM incentive_profiles WHERE card_token = ?",
                         (card_token,))
    entries: list[dict[str, Any]] = [
        {"day": str(d), "terminal_id": str(t), "seq": int(s), "rule": str(r), "points": int(p),
         "rule_version": int(v), "payable_month": str(m), "note": _detail(str(n)),
         "paid_in": None if pm is None else str(pm)}
        for d, t, s, r, p, v, m, n, pm in credits]
    earned = sum(e["points"] for e in entries)
    pending = sum(e["points"] for e in entries if e["paid_in"] is None)
    return {
        "card_token": card_token,
        "rider": str(profile[0]) if profile else None,
        "earned": earned,
        "paid": sum(int(p[2]) for p in payouts),
        "pending": pending,
        "entries": entries,
        "weeks": [{"week_start": str(w), "points": int(p),
                   "days": [n for n in range(7) if int(m) >> n & 1]} for w, p, m in weeks],
        "payouts": [{"month": str(m), "points": int(p), "paid": int(pd), "carry": int(c),
                     "status": str(s)} for m, p, pd, c, s in payouts],
    }

