"""What the operator's console shows and the few things it does, as plain functions.

Each function reads (or changes) the store through the functions the ``localpay central``
commands use, and answers small frozen dataclasses with ``as_dict()`` for JSON; the
console's pages only render them. Nothing here moves money: a fraud flag confirmed denies
its card through :meth:`central.service.CentralLog.deny_add`, the path of ``central deny``.

- **a day** (:func:`day_overview`): totals by kind (:func:`central.reconcile.report`'s
  central figures), by merchant and by pocket, and the report's differences and overdrafts,
  each with what :func:`entries_of` needs to list the entries behind it;
- **fraud** (:func:`fraud_flags`, :func:`confirm_flag`, :func:`dismiss_flag`): the flags
  the fraud rules (:class:`central.rules.FraudHook`) wrote to ``flags``, newest first; each
  is decided once, the decision kept in ``fraud_decisions`` (``flags`` is not altered);
- **enrolment and config** (:func:`issue_enrolment_code`, :func:`publish_config`,
  :func:`config_versions`): :func:`central.enroll.issue_codes` and what ``central config``
  does;
- **the fleet** (:func:`fleet`): :func:`central.terminal_status.terminals`, filtered,
  sorted and cut into pages.

The programme's figures (points, payouts, allowances, settlements) are in
:mod:`central.console_data_programme`.
"""

from __future__ import annotations

import json
import logging
import time
import weakref
from dataclasses import asdict, dataclass, fields
from typing import Any

from central import config_audit, municipalities, reconcile, spending
from central.enroll import DEFAULT_TTL_S, issue_codes, load_operator_key
from central.merchants import Registry
from central.rules import FraudConfig
from central.service import CentralLog
from central.store import Store, Tx
from central.terminal_status import TerminalRow, page_of, terminals
from firmware_cfg import bundle as bundles
from firmware_cfg import provision
from localpay.errors import ConfigError, TransactionError

log = logging.getLogger(__name__)

DEFAULT = municipalities.DEFAULT
#: the rules of :class:`central.rules.FraudHook` (``flags`` also holds ``clock`` and
#: ``config`` rows, which are the report's, not the fraud page's)
FRAUD_RULES = tuple(f.name for f in fields(FraudConfig))
#: the most entries one call of :func:`entries_of` answers
ENTRIES_LIMIT = 1000


class UnknownFlagError(ConfigError):
    """No fraud flag has that id (in that municipality)."""


class FlagDecidedError(TransactionError):
    """The fraud flag was confirmed or dismissed before: a flag is decided once."""


class _Data:
    def as_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]


# -- a day ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KindTotal(_Data):
    kind: str
    count: int
    amount: int


@dataclass(frozen=True)
class MerchantTotal(_Data):
    """One merchant's entries of one kind that day, at the terminals assigned to it."""

    merchant_id: str
    name: str
    kind: str
    count: int
    amount: int


@dataclass(frozen=True)
class PocketTotal(_Data):
    """What the books posted from one pocket that day (:mod:`central.spending`): paid out
    by payments, given back by refunds and voids. Pocket ``''`` is the part of payments no
    pocket covered (owed by the account, ``receivable:<a>``)."""

    pocket: str
    payments: int
    paid: int
    refunded: int

    @property
    def net(self) -> int:
        return self.paid - self.refunded

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "net": self.net}


@dataclass(frozen=True)
class EntriesLink(_Data):
    """The arguments of :func:`entries_of` that list the entries behind a line."""

    day: str
    terminal_id: str
    kind: str | None = None
    first_seq: int | None = None
    last_seq: int | None = None


@dataclass(frozen=True)
class Difference(_Data):
    """A line of ``central report`` whose central and terminal figures differ, with the
    span of central's entries (``first_seq``..``last_seq``, none when central holds
    none)."""

    terminal_id: str
    kind: str
    central_count: int
    central_amount: int
    terminal_count: int | None
    terminal_amount: int | None
    first_seq: int | None
    last_seq: int | None
    entries: EntriesLink


@dataclass(frozen=True)
class Problem(_Data):
    """An overdraft, a flag, an overdraft by pocket, a pocket flag or a Z report figure of
    the report (``what``), as ``central report --json`` has it (``facts``), and the entry
    it is about."""

    what: str
    terminal_id: str
    seq: int
    facts: dict[str, Any]
    entries: EntriesLink


@dataclass(frozen=True)
class DayOverview(_Data):
    day: str
    municipality: str
    #: what ``central report`` exits 0 on
    clean: bool
    kinds: tuple[KindTotal, ...]
    merchants: tuple[MerchantTotal, ...]
    pockets: tuple[PocketTotal, ...]
    differences: tuple[Difference, ...]
    #: overdrafts, flags, pocket overdrafts, pocket flags, Z report differences, in that order
    problems: tuple[Problem, ...]
    config_rejections: tuple[dict[str, Any], ...]
    never_synced: tuple[dict[str, Any], ...]
    waiting_refunds: tuple[dict[str, Any], ...]

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["pockets"] = [p.as_dict() for p in self.pockets]
        return out


_MINE = "terminal_id IN (SELECT terminal_id FROM terminals WHERE municipality_id = ?)"


def day_overview(service: CentralLog, day: str, municipality: str = DEFAULT) -> DayOverview:
    """``day`` (``YYYY-MM-DD``, the service's time zone) in ``municipality``: what
    ``central report`` says, with totals by kind, merchant and pocket."""
    rep = reconcile.report(service, day, municipality)
    kinds: dict[str, list[int]] = {}
    for line in rep.lines:
        got = kinds.setdefault(line.kind, [0, 0])
        got[0] += line.central_count
        got[1] += line.central_amount
    with service.store.tx(write=False) as tx:
        spans = {(str(t), str(k)): (int(a), int(b)) for t, k, a, b in tx.all(
            "SELECT terminal_id, kind, MIN(seq), MAX(seq) FROM entries WHERE day = ? AND "
            f"{_MINE} GROUP BY terminal_id, kind", (day, municipality))}
        merchants = _by_merchant(tx, day, municipality)
        pockets = _by_pocket(tx, day, municipality)
    differences = []
    for line in rep.differences:
        first, last = spans.get((line.terminal_id, line.kind), (None, None))
        differences.append(Difference(
            line.terminal_id, line.kind, line.central_count, line.central_amount,
            line.terminal_count, line.terminal_amount, first, last,
            EntriesLink(day, line.terminal_id, line.kind, first, last)))
    problems = []
    for what, rows in (("overdraft", rep.overdrafts), ("flag", rep.flags),
                       ("pocket_overdraft", rep.pocket_overdrafts),
                       ("pocket_flag", rep.pocket_flags),
                       ("z_report_difference", rep.z_report_differences)):
        for row in rows:
            tid, seq = str(row["terminal_id"]), int(row["seq"])
            problems.append(Problem(what, tid, seq, dict(row),
                                    EntriesLink(day, tid, None, seq, seq)))
    return DayOverview(
        day, municipality, rep.clean,
        tuple(KindTotal(k, c, a) for k, (c, a) in sorted(kinds.items())),
        merchants, pockets, tuple(differences), tuple(problems),
        tuple(rep.config_rejections), tuple(rep.never_synced), tuple(rep.waiting_refunds))


def _by_merchant(tx: Tx, day: str, municipality: str) -> tuple[MerchantTotal, ...]:
    rows = tx.all(
        "SELECT a.merchant_id, m.name, e.kind, COUNT(*), COALESCE(SUM(e.amount), 0) "
        "FROM entries e JOIN merchant_terminals a ON a.terminal_id = e.terminal_id "
        "JOIN merchants m ON m.municipality_id = a.municipality_id "
        "AND m.merchant_id = a.merchant_id "
        "JOIN terminals t ON t.terminal_id = e.terminal_id AND t.municipality_id = "
        "a.municipality_id WHERE e.day = ? AND a.municipality_id = ? "
        "GROUP BY a.merchant_id, m.name, e.kind ORDER BY a.merchant_id, e.kind",
        (day, municipality))
    return tuple(MerchantTotal(str(m), str(n), str(k), int(c), int(a)) for m, n, k, c, a in rows)


def _by_pocket(tx: Tx, day: str, municipality: str) -> tuple[PocketTotal, ...]:
    if not tx.store.columns(tx, "pocket_postings"):
        return ()  # a store that never posted to the books
    out: dict[str, list[int]] = {}
    for kind, parts in tx.all("SELECT kind, parts FROM pocket_postings WHERE "
                              "municipality_id = ? AND day = ?", (municipality, day)):
        paying = str(kind) in spending.PAY_KINDS
        for pocket, won in json.loads(str(parts)):
            got = out.setdefault(str(pocket), [0, 0, 0])
            if paying:
                got[0] += 1
                got[1] += int(won)
            else:
                got[2] += int(won)
    return tuple(PocketTotal(p, n, paid, back) for p, (n, paid, back) in sorted(out.items()))


@dataclass(frozen=True)
class EntryRow(_Data):
    """An entry of the central log, as the console lists it (no signature or raw bytes)."""

    log_index: int
    terminal_id: str
    seq: int
    kind: str
    card_token: str
    amount: int
    place: str
    wall_ms: int
    effective_ms: int
    day: str
    ref_seq: int
    detail: str


_ENTRY = ("SELECT log_index, terminal_id, seq, kind, card_token, amount, place, wall_ms, "
          "effective_ms, day, ref_seq, detail FROM entries ")


def _entry(row: tuple[Any, ...]) -> EntryRow:
    return EntryRow(int(row[0]), str(row[1]), int(row[2]), str(row[3]), str(row[4]),
                    int(row[5]), str(row[6]), int(row[7]), int(row[8]), str(row[9]),
                    int(row[10]), str(row[11]))


def entries_of(store: Store, terminal_id: str, *, day: str | None = None,
               kind: str | None = None, first_seq: int | None = None,
               last_seq: int | None = None, limit: int = 200) -> list[EntryRow]:
    """The entries of ``terminal_id`` held in the central log, by seq: of ``day``, of
    ``kind``, from ``first_seq`` to ``last_seq`` (each when given), at most ``limit``
    (up to :data:`ENTRIES_LIMIT`). ``entries_of(store, **link.as_dict())`` lists an
    :class:`EntriesLink`'s."""
    if not 1 <= limit <= ENTRIES_LIMIT:
        raise ConfigError(f"limit: expected 1 to {ENTRIES_LIMIT}, found {limit}")
    where, params = ["terminal_id = ?"], [terminal_id]
    for test, value in (("day = ?", day), ("kind = ?", kind), ("seq >= ?", first_seq),
                        ("seq <= ?", last_seq)):
        if value is not None:
            where.append(test)
            params.append(value)  # type: ignore[arg-type]
    with store.tx(write=False) as tx:
        rows = tx.all(_ENTRY + "WHERE " + " AND ".join(where) + " ORDER BY seq LIMIT ?",
                      [*params, limit])
    return [_entry(r) for r in rows]


# -- fraud -------------------------------------------------------------------------------------

DECISIONS = """
CREATE TABLE IF NOT EXISTS fraud_decisions (
    municipality_id TEXT NOT NULL DEFAULT 'default', log_index BIGINT NOT NULL,
    rule TEXT NOT NULL, decision TEXT NOT NULL, operator TEXT NOT NULL, reason TEXT NOT NULL,
    decided_ms BIGINT NOT NULL, deny_version BIGINT,
    PRIMARY KEY (log_index, rule));
CREATE INDEX IF NOT EXISTS fraud_decisions_municipality ON fraud_decisions
    (municipality_id, decided_ms)
"""
CONFIRMED, DISMISSED = "confirmed", "dismissed"
_READY: weakref.WeakSet[Store] = weakref.WeakSet()


def ensure_schema(store: Store) -> None:
    """Make ``fraud_decisions`` where missing (once per store in a process)."""
    if store in _READY:
        return
    with store.tx() as tx:
        tx.schema_lock("fraud_decisions")
        for statement in DECISIONS.split(";"):
            if statement.strip():
                tx.run(statement)
    _READY.add(store)


def flag_id(log_index: int, rule: str) -> str:
    """A flag's id in the console (``flags`` is keyed by the entry's log index and rule)."""
    return f"{log_index}-{rule}"


def _parse_flag_id(text: str) -> tuple[int, str]:
    index, _, rule = text.partition("-")
    if not index.isdigit() or rule not in FRAUD_RULES:
        raise UnknownFlagError(f"{text[:60]!r} is not a fraud flag's id")
    return int(index), rule


@dataclass(frozen=True)
class Decision(_Data):
    decision: str
    operator: str
    reason: str
    decided_ms: int
    #: the deny list's version that put the card on it (a confirmation only)
    deny_version: int | None


@dataclass(frozen=True)
class FraudFlag(_Data):
    flag_id: str
    rule: str
    municipality: str
    card_token: str
    terminal_id: str
    seq: int
    log_index: int
    day: str
    detail: dict[str, Any]
    #: the flagged entry first, then the entries the rule counted with it
    entries: tuple[EntryRow, ...]
    decision: Decision | None


def fraud_flags(store: Store, limit: int = 50, *, before: str | None = None,
                municipality: str = DEFAULT, config: FraudConfig | None = None,
                undecided_only: bool = False) -> list[FraudFlag]:
    """The fraud rules' flags at ``municipality``'s terminals, newest first (by log index),
    at most ``limit``; ``before``: only those older than that flag id (the next page).
    ``config``: the rules' settings the service runs with (default: the defaults), which
    say which earlier entries each rule counted."""
    if not 1 <= limit <= 500:
        raise ConfigError(f"limit: expected 1 to 500, found {limit}")
    ensure_schema(store)
    cfg = config or FraudConfig()
    after = ""
    params: list[Any] = [municipality]
    if before is not None:
        index, rule = _parse_flag_id(before)
        after = "AND (f.log_index < ? OR (f.log_index = ? AND f.rule < ?)) "
        params += [index, index, rule]
    with store.tx(write=False) as tx:
        rules, rule_param = tx.any_of("f.rule", FRAUD_RULES)
        undecided = "AND d.decision IS NULL " if undecided_only else ""
        rows = tx.all(
            "SELECT f.log_index, f.rule, f.card_token, f.terminal_id, f.seq, f.day, f.detail, "
            "d.decision, d.operator, d.reason, d.decided_ms, d.deny_version FROM flags f "
            "JOIN terminals t ON t.terminal_id = f.terminal_id "
            "LEFT JOIN fraud_decisions d ON d.log_index = f.log_index AND d.rule = f.rule "
            f"WHERE t.municipality_id = ? {after}AND {rules} {undecided}"
            "ORDER BY f.log_index DESC, f.rule DESC LIMIT ?", [*params, rule_param, limit])
        out = []
        for r in rows:
            index, rule = int(r[0]), str(r[1])
            detail = _json(r[6])
            decision = None if r[7] is None else Decision(
                str(r[7]), str(r[8]), str(r[9]), int(r[10]),
                None if r[11] is None else int(r[11]))
            out.append(FraudFlag(flag_id(index, rule), rule, municipality, str(r[2]),
                                 str(r[3]), int(r[4]), index, str(r[5]), detail,
                                 _behind(tx, index, rule, detail, cfg), decision))
    return out


def _json(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(str(text or "{}"))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _behind(tx: Tx, index: int, rule: str, detail: dict[str, Any],
            cfg: FraudConfig) -> tuple[EntryRow, ...]:
    """The flagged entry, then the earlier entries its rule counted with it (the same tests
    as :class:`central.rules.FraudHook`, over the entries before it in the log)."""
    row = tx.one(_ENTRY + "WHERE log_index = ?", (index,))
    if row is None:
        return ()
    flagged = _entry(row)
    w = flagged.wall_ms
    if rule == "travel":
        other = str(detail.get("other_terminal", ""))
        rows = tx.all(_ENTRY + "WHERE card_token = ? AND terminal_id = ? AND wall_ms >= ? "
                      "AND wall_ms <= ? AND log_index < ? ORDER BY log_index",
                      (flagged.card_token, other, w - 24 * 3_600_000, w + 24 * 3_600_000,
                       index))
    elif rule == "round_burst":
        r = cfg.round_burst
        rows = tx.all(_ENTRY + "WHERE place = ? AND wall_ms >= ? AND wall_ms <= ? AND "
                      "log_index < ? AND kind = 'payment' AND amount > 0 AND amount % ? = 0 "
                      "ORDER BY log_index", (flagged.place, w - r.window_s * 1000, w, index,
                                              r.unit))
    else:
        b = cfg.below_limit
        floor = b.limit * (100 - b.margin_pct) // 100
        rows = tx.all(_ENTRY + "WHERE card_token = ? AND wall_ms >= ? AND wall_ms <= ? AND "
                      "log_index < ? AND kind IN ('payment', 'tap') AND amount >= ? AND "
                      "amount < ? ORDER BY log_index",
                      (flagged.card_token, w - b.window_s * 1000, w, index, floor, b.limit))
    return (flagged, *(_entry(x) for x in rows[-100:]))


def _decide(store: Store, flag: str, operator: str, reason: str,
            service: CentralLog | None, within: str | None) -> Decision:
    index, rule = _parse_flag_id(flag)
    operator, reason = " ".join(operator.split()), " ".join(reason.split())
    if not operator:
        raise ConfigError("a decision names its operator")
    if not reason or len(reason) > 500:
        raise ConfigError("a decision's reason: 1 to 500 characters")
    ensure_schema(store)
    what = DISMISSED if service is None else CONFIRMED
    now = int(time.time() * 1000)
    with store.tx() as tx:
        row = tx.one("SELECT f.card_token, t.municipality_id FROM flags f JOIN terminals t "
                     "ON t.terminal_id = f.terminal_id WHERE f.log_index = ? AND f.rule = ?",
                     (index, rule))
        if row is None or (within is not None and str(row[1]) != within):
            raise UnknownFlagError(f"no fraud flag {flag}"
                                   + (f" in municipality {within}" if within else ""))
        card, municipality = str(row[0]), str(row[1])
        held = tx.one("SELECT decision, operator, decided_ms FROM fraud_decisions "
                      "WHERE log_index = ? AND rule = ?", (index, rule))
        if held is not None:
            raise FlagDecidedError(f"fraud flag {flag} was {held[0]} by {held[1]} at "
                                   f"{_iso(int(held[2]))}; a flag is decided once")
        version = None
        if service is not None:
            # the deny path of ``central deny``, in the decision's own transaction
            municipalities.require(tx, municipality)
            version = service.deny_add(tx, card, f"fraud:{rule}:confirmed",
                                       municipality=municipality)
        added = tx.run("INSERT INTO fraud_decisions (municipality_id, log_index, rule, "
                       "decision, operator, reason, decided_ms, deny_version) VALUES "
                       "(?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                       (municipality, index, rule, what,
                        operator, reason, now, version))
        if added != 1:  # decided by another worker since the read above
            raise FlagDecidedError(f"fraud flag {flag} was decided meanwhile")
    log.info("fraud flag %s %s by %s", flag, what, operator)
    return Decision(what, operator, reason, now, version)


def confirm_flag(service: CentralLog, flag: str, operator: str, reason: str, *,
                 municipality: str | None = None) -> Decision:
    """Confirm fraud flag ``flag``: its card goes on its municipality's deny list (as
    ``central deny`` puts it; reason ``fraud:<rule>:confirmed``) and the decision is kept
    with ``operator``, ``reason`` and the time. :class:`FlagDecidedError` when the flag was
    decided before, :class:`UnknownFlagError` when there is no such flag (at a terminal of
    ``municipality``, when given: an operator decides only their own municipality's)."""
    return _decide(service.store, flag, operator, reason, service, municipality)


def dismiss_flag(store: Store, flag: str, operator: str, reason: str, *,
                 municipality: str | None = None) -> Decision:
    """Dismiss fraud flag ``flag``: the decision is kept; the deny list is not touched (a
    card the rule itself denied stays denied until ``central deny --remove``)."""
    return _decide(store, flag, operator, reason, None, municipality)


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


# -- enrolment and config ----------------------------------------------------------------------


@dataclass(frozen=True)
class EnrolmentCode(_Data):
    """A code as issued: shown once; the store keeps only its id and a key derived from it."""

    code: str
    municipality: str
    terminal_id: str
    role: str
    place: str
    expires_ms: int


def issue_enrolment_code(service: CentralLog, *, terminal_id: str = "", role: str = "",
                         place: str = "", template: str = "", ttl_s: int = DEFAULT_TTL_S,
                         municipality: str = DEFAULT) -> EnrolmentCode:
    """One single-use code for ``localpay provision``, through
    :func:`central.enroll.issue_codes` (what ``central enroll`` runs)."""
    code, = issue_codes(service, count=1, terminal_id=terminal_id, role=role, place=place,
                        template=template, ttl_s=ttl_s, municipality=municipality)
    with service.store.tx(write=False) as tx:
        row = tx.one("SELECT expires_ms FROM enroll_codes WHERE code_id = ?",
                     (provision.code_id(code),))
    expires = int(row[0]) if row else int(time.time() * 1000) + ttl_s * 1000
    return EnrolmentCode(code, municipality, terminal_id, role, place, expires)


def publish_config(service: CentralLog, text: str, *, sign_for: str | None = None) -> int:
    """What ``central config SOURCE [--sign-for TERMINAL_ID]`` does: ``text`` is a signed
    bundle, or with ``sign_for`` a terminal.toml the service signs with its operator key as
    that terminal's next version (with its municipality's merchant facts); the bundle is
    checked (:func:`central.config_audit.check_publish`) and published. Its version."""
    if sign_for is not None:
        if service.data_dir is None:
            raise ConfigError("this service has no data folder holding an operator key")
        current = int(service.latest_config(sign_for)["version"])
        text = Registry(service.store, service.terminal_municipality(sign_for)
                        ).config_for(sign_for, text)
        text = bundles.make(load_operator_key(service.data_dir), sign_for, current + 1,
                            text).decode("utf-8")
    config_audit.check_publish(service.store, text)
    return service.publish_config(text)


@dataclass(frozen=True)
class ConfigVersion(_Data):
    """The terminals whose newest published config is ``version`` (0: none published)."""

    version: int
    terminals: tuple[str, ...]


def config_versions(store: Store, municipality: str | None = None) -> list[ConfigVersion]:
    """Which terminals run which config version (``central terminals``' column), by
    version."""
    by: dict[int, list[str]] = {}
    for row in terminals(store, municipality):
        by.setdefault(row.config_version, []).append(row.terminal_id)
    return [ConfigVersion(v, tuple(ids)) for v, ids in sorted(by.items())]


# -- the fleet ---------------------------------------------------------------------------------

#: sort keys of :func:`fleet`: a column of :class:`central.terminal_status.TerminalRow`
#: (faults by their number)
FLEET_SORTS = ("terminal_id", "municipality", "role", "place", "merchant_id",
               "merchant_name", "enrolled_ms", "last_seen_ms", "last_seq", "last_entry_ms",
               "sync_lag_ms", "clock", "config_version", "software", "faults", "reported_ms",
               "revoked_ms")


@dataclass(frozen=True)
class FleetPage(_Data):
    rows: tuple[TerminalRow, ...]
    #: terminals that pass the filter, on every page
    total: int
    offset: int
    limit: int


def fleet(store: Store, filter_text: str | None = None, role: str | None = None,
          sort: str = "terminal_id", desc: bool = False, offset: int = 0, limit: int = 100,
          *, municipality: str | None = None, software: str | None = None,
          faulty: bool = False) -> FleetPage:
    """One page of ``central terminals``: those whose id, place, municipality, merchant or
    software holds ``filter_text`` (any case), of ``role``, running ``software`` and
    showing a fault (``faulty``) when given, sorted by ``sort`` (one of
    :data:`FLEET_SORTS`; ties by id), ``limit`` rows from ``offset``
    (:func:`central.terminal_status.page_of` of a fresh listing)."""
    if sort not in FLEET_SORTS:
        raise ConfigError(f"sort: one of {', '.join(FLEET_SORTS)}, not {sort!r}")
    if offset < 0 or not 1 <= limit <= 5000:
        raise ConfigError("offset from 0, limit 1 to 5000")
    rows, total = page_of(terminals(store, municipality), filter_text, role, sort, desc,
                          offset, limit, software=software, faulty=faulty)
    return FleetPage(tuple(rows), total, offset, limit)


__all__ = ["CONFIRMED", "DISMISSED", "FLEET_SORTS", "FRAUD_RULES", "ConfigVersion",
           "DayOverview", "Decision", "Difference", "EnrolmentCode", "EntriesLink", "EntryRow",
           "FlagDecidedError", "FleetPage", "FraudFlag", "KindTotal", "MerchantTotal",
           "PocketTotal", "Problem", "UnknownFlagError", "config_versions", "confirm_flag",
           "day_overview", "dismiss_flag", "ensure_schema", "entries_of", "flag_id", "fleet",
           "fraud_flags", "issue_enrolment_code", "publish_config"]
