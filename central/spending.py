"""Payments and refunds reach the books, split by pocket, by following the central log.

A till approves a payment offline against what it knows; the central log then holds it. Here
each payment and refund of the log becomes balanced transfers of :mod:`central.books`:

- **Pocket rules at central.** ``pocket_rules`` keeps each municipality's rules file as
  versions (:func:`load_rules`; checked whole by :func:`localpay.pockets.parse_rules`; a
  text equal to the newest version is not a new one). :func:`active_rules` is the newest,
  or :data:`localpay.pockets.DEFAULT_POCKET_RULES` while none was loaded.
- **Following the log.** :func:`post_log` takes the entries beyond a cursor
  (``spending_cursor``, one row per municipality), a chunk of log entries per transaction,
  and moves the cursor in that same transaction: a crash between chunks, or a second
  follower (it waits on the cursor's row lock, :func:`lock_spending`), never posts an entry
  twice. Every transfer's ref names its entry, and ``pocket_postings`` records each entry
  posted, so even a cursor set back by hand posts nothing again. :class:`SpendingPoster` runs
  it after every committed batch (a :class:`central.service.Follower`): its failure is
  logged and never refuses a batch; ``localpay central spend`` catches up by hand.
- **A payment** (kind ``payment``) of a card linked to an account (:mod:`central.accounts`)
  at a terminal that belongs to a merchant (:mod:`central.merchants`) is split by
  :func:`localpay.pockets.split`, the terminal's own contract, over the account's pocket
  balances in the books (an allowance pocket's expiry from its ``allowance_grants``), the
  active rules, the merchant's facts, the Seoul day of the entry's
  effective time and what each pocket already paid that day. Each part is a ``payment``
  transfer ``pocket:<a>:<pocket>`` -> ``merchant:<m>:payable``, ref
  ``pay:<terminal>:<seq>:<pocket>``. When the entry's detail carries the terminal's own
  split (``"split": [[pocket, won], ...]``) and central's covered the payment differently,
  the disagreement is flagged ``split_differs``.
- **An overdraft.** When the pockets cannot cover the payment (the terminal approved
  offline what the books no longer hold), they give all they can and the merchant is still
  owed the whole amount: the rest is a ``payment`` from ``receivable:<a>`` (ref
  ``pay-owed:<terminal>:<seq>``) and one ``pocket_overdrafts`` row per pocket that lacked:
  those where the terminal's split drew more than central's could, else the cash pocket.
- **A refund** (``refund``, or ``void``: the whole payment) names its payment by
  ``ref_seq`` on the same terminal. It reverses the payment's parts newest drawn first (the
  receivable first: a refund pays off the debt before it refills a pocket), never more
  than is left of the payment; refs ``refund:<terminal>:<seq>:<pocket>`` and
  ``refund-owed:<terminal>:<seq>``. A refund of the till's entry of an online QR payment
  reverses the posting made when the app paid (:mod:`central.mpm_payments`: found by the
  till's seq, which the till's payment entry marked on it).
- **One municipality's money stays in it.** A poster of municipality M posts the entries
  of M's terminals only. A payment at M's terminal by a card linked to accounts of other
  municipalities only is flagged ``other_municipality`` (in M, naming the card's
  municipalities) and posts nothing: no rule lets one municipality's currency be spent in
  another yet.
- **A refund the payable cannot hold yet.** A refund given after its payment's money was
  settled to the merchant, when the merchant's payable holds less than the refund, *waits*
  (:mod:`central.waiting_refunds`) rather than being refused, and is posted once the payable
  holds it. Until then the settlement check shows the merchant's terminals' refunds above
  the books'. The wait is bounded: :func:`retry_waiting` lets :mod:`central.refund_float`
  pay one that waited too long from the refund float.
- **Nothing is lost, nothing is guessed.** A card linked to no account, a terminal of no
  merchant, a refund of a payment the books do not hold, more refunded than was paid, or a
  movement the books refuse is a
  ``pocket_flags`` row with its reason, and posts nothing of that entry: the money is in
  the log, and ``central report`` shows the flag.

Taps (bus fares) are not posted here: a validator belongs to a route, not to a merchant, and
the chart has no transit operator's account yet.

Every row names its municipality (SCALING.md). The log is still one for all: a poster follows
it for one municipality, whose terminals' entries it posts and whose accounts, merchants and
rules it reads; the service's poster does so for each registered municipality in turn.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from central import accounts, books, municipalities, waiting_refunds
from central.merchants import Merchant, Registry
from central.service import DEFAULT_TZ, CentralLog
from central.store import NOT_CONFIG_REFUSED, Rows, Store, Tx
from localpay import pockets
from localpay.errors import BooksError, TransactionError

log = logging.getLogger(__name__)

DEFAULT_MUNICIPALITY = books.DEFAULT_MUNICIPALITY
#: the programme's days are Seoul's (the effective day of an entry, its daily limits)
TZ = ZoneInfo(DEFAULT_TZ)
PAY_KINDS = ("payment",)
BACK_KINDS = ("refund", "void")

#: the part of a payment no pocket covered, as ``pocket_postings`` lists it (no pocket id is
#: empty, so it cannot be taken for one)
OWED = ""

TABLES = """
CREATE TABLE IF NOT EXISTS pocket_rules (
    municipality_id TEXT NOT NULL DEFAULT 'default', version BIGINT NOT NULL,
    sha256 TEXT NOT NULL, body TEXT NOT NULL, loaded_ms BIGINT NOT NULL,
    PRIMARY KEY (municipality_id, version));
CREATE TABLE IF NOT EXISTS spending_cursor (
    municipality_id TEXT NOT NULL PRIMARY KEY, next_index BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS pocket_postings (
    municipality_id TEXT NOT NULL DEFAULT 'default', terminal_id TEXT NOT NULL,
    seq BIGINT NOT NULL, log_index BIGINT NOT NULL, kind TEXT NOT NULL,
    account_id TEXT NOT NULL, merchant_id TEXT NOT NULL, amount BIGINT NOT NULL,
    parts TEXT NOT NULL, refunded TEXT NOT NULL, ref_seq BIGINT NOT NULL, day TEXT NOT NULL,
    PRIMARY KEY (municipality_id, terminal_id, seq));
CREATE INDEX IF NOT EXISTS pocket_postings_log ON pocket_postings (municipality_id, log_index);
CREATE TABLE IF NOT EXISTS pocket_overdrafts (
    municipality_id TEXT NOT NULL DEFAULT 'default', log_index BIGINT NOT NULL,
    terminal_id TEXT NOT NULL, seq BIGINT NOT NULL, account_id TEXT NOT NULL,
    pocket TEXT NOT NULL, amount BIGINT NOT NULL, day TEXT NOT NULL,
    PRIMARY KEY (municipality_id, log_index, pocket));
CREATE INDEX IF NOT EXISTS pocket_overdrafts_day ON pocket_overdrafts (day, log_index);
CREATE TABLE IF NOT EXISTS pocket_flags (
    municipality_id TEXT NOT NULL DEFAULT 'default', log_index BIGINT NOT NULL,
    reason TEXT NOT NULL, terminal_id TEXT NOT NULL, seq BIGINT NOT NULL,
    card_token TEXT NOT NULL, day TEXT NOT NULL, detail TEXT NOT NULL,
    PRIMARY KEY (municipality_id, log_index, reason));
CREATE INDEX IF NOT EXISTS pocket_flags_day ON pocket_flags (day, log_index);
CREATE TABLE IF NOT EXISTS pocket_waiting_refunds (
    municipality_id TEXT NOT NULL DEFAULT 'default', terminal_id TEXT NOT NULL,
    seq BIGINT NOT NULL, log_index BIGINT NOT NULL, ref_seq BIGINT NOT NULL,
    merchant_id TEXT NOT NULL, PRIMARY KEY (municipality_id, terminal_id, seq))
"""

FLAG_COLUMNS = ("municipality_id", "log_index", "reason", "terminal_id", "seq", "card_token",
                "day", "detail")
OVERDRAFT_COLUMNS = ("municipality_id", "log_index", "terminal_id", "seq", "account_id",
                     "pocket", "amount", "day")
_KEEP_FIRST = "ON CONFLICT DO NOTHING"
#: why an entry was flagged (``pocket_flags.reason``)
REASONS = ("no_account", "no_merchant", "split_differs", "split_invalid", "unknown_payment",
           "refund_exceeds", "not_posted", "other_municipality")

# Several workers starting at once would race on CREATE TABLE (PostgreSQL's catalogue).
_SCHEMA_LOCK = 0x6C70706F636B74  # "lppockt"
#: stores (and municipalities) whose tables and cursor row are known to be committed
_READY: weakref.WeakKeyDictionary[Store, set[str]] = weakref.WeakKeyDictionary()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _json(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True)


def _statements(tx: Tx) -> None:
    if tx.store.kind == "postgresql":
        tx.one("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
    for statement in TABLES.split(";"):
        if statement.strip():
            tx.run(statement)


def ensure_schema(store: Store, municipality: str = DEFAULT_MUNICIPALITY) -> None:
    """Make the tables and ``municipality``'s cursor row where missing (safe to run again;
    once per store and municipality in a process). A new cursor starts at the log's
    beginning: the books follow every payment the log holds."""
    if municipality in _READY.get(store, ()):
        return
    with store.tx() as tx:
        _statements(tx)
        tx.run("INSERT INTO spending_cursor VALUES (?, 0) ON CONFLICT (municipality_id) "
               "DO NOTHING", (municipality,))
    _READY.setdefault(store, set()).add(municipality)


def lock_spending(tx: Tx, municipality: str = DEFAULT_MUNICIPALITY) -> tuple[int, int]:
    """Take the lock that orders posting and rules loads of ``municipality``; the log index
    from which posting goes on, and the size of the log as committed now."""
    row = tx.one_for_update(
        "SELECT c.next_index, s.size FROM spending_cursor c, log_state s "
        "WHERE c.municipality_id = ? AND s.id = 1", (municipality,), of="c")
    if row is None:
        raise TransactionError(f"the central store has no spending cursor for municipality "
                               f"{municipality}")
    return int(row[0]), int(row[1])


# -- pocket rules in the store ----------------------------------------------------------------


@dataclass(frozen=True)
class RulesVersion:
    version: int
    sha256: str
    loaded_ms: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


_PARSED: dict[str, pockets.PocketRules] = {}


def _parsed(sha256: str, body: str, version: int) -> pockets.PocketRules:
    cached = _PARSED.get(sha256)
    if cached is None:
        cached = pockets.parse_rules(body, f"pocket rules version {version}")
        if len(_PARSED) > 64:
            _PARSED.clear()
        _PARSED[sha256] = cached
    return cached


def load_rules(store: Store, text: str, source: str = "<pocket rules>", *,
               municipality: str = DEFAULT_MUNICIPALITY) -> tuple[RulesVersion, bool]:
    """Check ``text`` (:func:`localpay.pockets.parse_rules`: any fault is a ConfigError and
    nothing is kept) and keep it as ``municipality``'s next version. Returns that version
    and True, or the newest version and False when it holds this very text already."""
    rules = pockets.parse_rules(text, source)
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    ensure_schema(store, municipality)
    with store.tx() as tx:
        # posting reads the rules under this lock: a chunk sees one version throughout
        lock_spending(tx, municipality)
        row = tx.one("SELECT version, sha256, loaded_ms FROM pocket_rules WHERE "
                     "municipality_id = ? ORDER BY version DESC LIMIT 1", (municipality,))
        if row is not None and str(row[1]) == sha:
            return RulesVersion(int(row[0]), sha, int(row[2])), False
        held = RulesVersion((int(row[0]) if row else 0) + 1, sha, _now_ms())
        tx.run("INSERT INTO pocket_rules VALUES (?, ?, ?, ?, ?)",
               (municipality, held.version, sha, text, held.loaded_ms))
    _PARSED.setdefault(sha, rules)
    return held, True


def active_rules(where: Store | Tx, municipality: str = DEFAULT_MUNICIPALITY
                 ) -> pockets.PocketRules:
    """The newest version of ``municipality``'s pocket rules; the shipped defaults while
    none was loaded. ``where`` is a store, or a transaction (of a store whose schema holds
    the tables: :func:`ensure_schema`)."""
    if isinstance(where, Store):
        ensure_schema(where, municipality)
        with where.tx(write=False) as tx:
            return active_rules(tx, municipality)
    row = where.one("SELECT version, sha256, body FROM pocket_rules WHERE municipality_id = ? "
                    "ORDER BY version DESC LIMIT 1", (municipality,))
    if row is None:
        return pockets.DEFAULT_POCKET_RULES
    return _parsed(str(row[1]), str(row[2]), int(row[0]))


def rules_text(store: Store, municipality: str = DEFAULT_MUNICIPALITY) -> str:
    """The text of the rules in force (the shipped defaults' while none was loaded)."""
    ensure_schema(store, municipality)
    with store.tx(write=False) as tx:
        row = tx.one("SELECT body FROM pocket_rules WHERE municipality_id = ? "
                     "ORDER BY version DESC LIMIT 1", (municipality,))
    return pockets.DEFAULT_RULES if row is None else str(row[0])


def rules_versions(store: Store, municipality: str = DEFAULT_MUNICIPALITY
                   ) -> list[RulesVersion]:
    ensure_schema(store, municipality)
    with store.tx(write=False) as tx:
        rows = tx.all("SELECT version, sha256, loaded_ms FROM pocket_rules WHERE "
                      "municipality_id = ? ORDER BY version", (municipality,))
    return [RulesVersion(int(v), str(s), int(t)) for v, s, t in rows]


# -- following the log ------------------------------------------------------------------------


class SpendEntry(NamedTuple):
    """What posting reads of a log entry (the columns of ``entries`` of these names)."""

    log_index: int
    terminal_id: str
    seq: int
    kind: str
    card_token: str
    amount: int
    ref_seq: int
    detail: str
    #: when central holds that it happened; 0 in entries stored before effective times
    effective_ms: int
    wall_ms: int

    @property
    def when_ms(self) -> int:
        return self.effective_ms or self.wall_ms


@dataclass
class SpendResult:
    """What :func:`post_log` did: entries posted, won moved from pockets, won owed beyond
    them (overdrafts), won refunded, entries flagged."""

    payments: int = 0
    refunds: int = 0
    paid: int = 0
    owed: int = 0
    refunded: int = 0
    flagged: int = 0

    def add(self, other: SpendResult) -> None:
        for name in self.__dict__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


_FIELDS = ", ".join(SpendEntry._fields)
#: A chunk's payments and refunds of one municipality's terminals, in log order. The log's
#: range is read first, whatever the planner thinks of the terminals table: with its
#: statistics taken before a city's terminals were enrolled (2 rows, not 200), PostgreSQL
#: looped over the terminals and read each one's entries, 18 ms a 500-entry chunk against
#: 0.2 ms, until autovacuum analysed the table again.
CHUNK_READ = (
    f"WITH chunk AS MATERIALIZED (SELECT {_FIELDS} FROM entries WHERE log_index >= ? "
    f"AND log_index < ? AND kind IN "
    f"({', '.join(repr(k) for k in (*PAY_KINDS, *BACK_KINDS))}) {NOT_CONFIG_REFUSED}) "
    f"SELECT {_FIELDS} FROM chunk WHERE terminal_id IN (SELECT terminal_id FROM terminals "
    "WHERE municipality_id = ?) ORDER BY log_index")


def post_log(store: Store, *, chunk: int = 2000, municipality: str = DEFAULT_MUNICIPALITY,
             progress: Callable[[int, int], None] | None = None,
             on_entry: Callable[[SpendEntry], None] | None = None) -> SpendResult:
    """Post every payment and refund of the log beyond ``municipality``'s spending cursor,
    ``chunk`` log entries per transaction, moving the cursor in the same transaction.

    ``progress(done, size)`` runs after each chunk commits; ``on_entry(entry)`` inside the
    chunk's transaction after each entry is posted or flagged (what it raises rolls the
    whole chunk back, cursor included). It stops at the log's size as read when it started
    its last chunk: a batch committed after that runs posting itself.
    """
    if chunk < 1:
        raise ValueError("the posting chunk must be at least 1 entry")
    ensure_schema(store, municipality)
    total = SpendResult()
    end = size = 0
    while end == 0 or end < size:
        with store.tx() as tx:
            start, size = lock_spending(tx, municipality)
            if start >= size:
                break
            end = min(start + chunk, size)
            items = [SpendEntry(*row) for row in tx.all(CHUNK_READ, (start, end, municipality))]
            result = _Poster(tx, municipality, on_entry).run(items, start, end)
            tx.run("UPDATE spending_cursor SET next_index = ? WHERE municipality_id = ?",
                   (end, municipality))
        total.add(result)
        if progress is not None:
            progress(end, size)
    return total


class SpendingPoster:
    """Posts the log's payments and refunds to the books after every committed batch (a
    :class:`central.service.Follower`), for one municipality or (``None``) each registered
    one in turn. See the module docstring."""

    name = "pocket spending"

    def __init__(self, chunk: int = 2000, municipality: str | None = None) -> None:
        self.chunk = chunk
        self.municipality = municipality

    def follow(self, service: CentralLog) -> None:
        if self.municipality is not None:
            post_log(service.store, chunk=self.chunk, municipality=self.municipality)
            return
        with service.store.tx(write=False) as tx:
            every = municipalities.ids(tx)
        for municipality in every:
            post_log(service.store, chunk=self.chunk, municipality=municipality)


def seoul_day(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, TZ).date()


def _day_span(day: date) -> tuple[int, int]:
    """The day's first ms and the next day's, in Seoul (no DST there, yet say it once)."""
    start = datetime.combine(day, datetime.min.time(), TZ)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), TZ)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


@dataclass(frozen=True)
class PaymentPosting:
    """What :func:`post_payment` did with one payment: ``result`` counts it (``payments``
    1 when posted, ``owed`` what no pocket covered); ``refused`` is why nothing was posted
    (a ``pocket_flags`` reason and its detail), empty when posted."""

    result: SpendResult
    refused: str = ""


def post_payment(tx: Tx, entry: SpendEntry, *,
                 municipality: str = DEFAULT_MUNICIPALITY) -> PaymentPosting:
    """Post payment ``entry`` as the log's follower would (split by pocket, an overdraft
    from the receivable), inside ``tx``, for a caller that moves money outside the log (an
    online QR payment, :mod:`central.mpm_payments`). Its flags and overdraft rows are not
    recorded: the caller decides (a refused online payment rolls its transaction back)."""
    poster = _Poster(tx, municipality, None)
    poster.payment(entry)
    if poster.result.payments == 1:
        return PaymentPosting(poster.result)
    why = (f"{poster.flags[-1][2]}: {poster.flags[-1][7]}" if poster.flags
           else "not posted")
    return PaymentPosting(poster.result, why)


def _links(tx: Tx, holders: set[str]) -> dict[str, dict[str, str]]:
    """Each of ``holders`` linked anywhere -> {municipality: account}."""
    wanted = sorted(holders)
    out: dict[str, dict[str, str]] = {}
    for i in range(0, len(wanted), 5000):
        test, param = tx.any_of("holder", wanted[i:i + 5000])
        for holder, muni, account in tx.all(
                f"SELECT holder, municipality_id, account_id FROM account_links WHERE {test}",
                (param,)):
            out.setdefault(str(holder), {})[str(muni)] = str(account)
    return out


# named here too: a refund's payer is asked for by retry_waiting's callers (refund_float)
Payer = waiting_refunds.Payer
Fallback = waiting_refunds.Fallback


def retry_waiting(tx: Tx, fallback: Fallback, *,
                  municipality: str = DEFAULT_MUNICIPALITY) -> SpendResult:
    """Try the waiting refunds again inside ``tx`` (the caller holds :func:`lock_spending`),
    paying through ``fallback`` each one the payable still cannot pay."""
    poster = _Poster(tx, municipality, None)
    poster.fallback = fallback
    poster.retry_waiting()
    poster.write_problems()
    return poster.result


class _Poster:
    """One chunk's posting, inside the caller's transaction (it holds the cursor lock)."""

    def __init__(self, tx: Tx, municipality: str,
                 on_entry: Callable[[SpendEntry], None] | None) -> None:
        self.tx = tx
        self.municipality = municipality
        self.on_entry = on_entry
        self.rules = active_rules(tx, municipality)
        self.per_day = any(rule.per_day is not None for rule in self.rules)
        self.registry = Registry(tx.store, municipality)
        self.merchants: dict[str, Merchant | None] = {}
        self.opened: set[str] = set()
        self.result = SpendResult()
        self.flags: list[tuple[Any, ...]] = []
        self.overdrafts: list[tuple[Any, ...]] = []
        self.fallback: Fallback | None = None
        #: card or wallet -> {municipality: account}, read once for a chunk's payments
        #: (None: each payment reads its own, as a single posting does)
        self.links: dict[str, dict[str, str]] | None = None

    def run(self, items: Sequence[SpendEntry], start: int, end: int) -> SpendResult:
        tx, m = self.tx, self.municipality
        # entries posted before (a cursor set back by hand) are not posted again
        done = {(str(t), int(s)) for t, s in tx.all(
            "SELECT terminal_id, seq FROM pocket_postings WHERE municipality_id = ? "
            "AND log_index >= ? AND log_index < ? UNION ALL SELECT terminal_id, seq FROM "
            "pocket_waiting_refunds WHERE municipality_id = ? AND log_index >= ? "
            "AND log_index < ?", (m, start, end, m, start, end))}
        # one read of every paying card's links, not two per payment: a chunk of bus taps
        # is mostly cards with no account, each of which took both reads
        self.links = _links(tx, {e.card_token for e in items if e.kind in PAY_KINDS
                                 and e.card_token and (e.terminal_id, e.seq) not in done})
        for e in items:
            if (e.terminal_id, e.seq) not in done:
                if e.kind in PAY_KINDS:
                    self.payment(e)
                else:
                    self.refund(e)
            if self.on_entry is not None:
                self.on_entry(e)
        self.retry_waiting()
        self.write_problems()
        return self.result

    def write_problems(self) -> None:
        """The chunk's flags and overdrafts, in one statement on PostgreSQL: a chunk of
        payments by cards with no account is a flag an entry, and a round trip each was
        most of the poster's time."""
        self.tx.insert_all([Rows("pocket_flags", FLAG_COLUMNS, self.flags, _KEEP_FIRST),
                            Rows("pocket_overdrafts", OVERDRAFT_COLUMNS, self.overdrafts,
                                 _KEEP_FIRST)])

    # -- what is read ---------------------------------------------------------------------

    def flag(self, e: SpendEntry, reason: str, detail: dict[str, Any]) -> None:
        self.flags.append((self.municipality, e.log_index, reason, e.terminal_id, e.seq,
                           e.card_token, seoul_day(e.when_ms).isoformat(), _json(detail)))
        self.result.flagged += 1

    def merchant_of(self, terminal_id: str) -> Merchant | None:
        if terminal_id not in self.merchants:
            self.merchants[terminal_id] = self.registry.merchant_of(terminal_id, self.tx)
        return self.merchants[terminal_id]

    def open(self, account_id: str) -> None:
        if account_id not in self.opened:
            books.open_account(self.tx, account_id, municipality=self.municipality)
            self.opened.add(account_id)

    def balances(self, account: str, day: date) -> list[pockets.PocketBalance]:
        held = accounts.pockets(self.tx, account, municipality=self.municipality)
        expiries = self.expiries(account, day) if any(
            self.rules.get(p.name) is not None and self.rules[p.name].kind == "allowance"
            for p in held) else {}
        return [pockets.PocketBalance(p.name, p.balance, expiries.get(p.name)) for p in held]

    def expiries(self, account: str, day: date) -> dict[str, date]:
        """Each allowance pocket's expiry from its grants: the soonest of those still
        running on ``day`` (the order money is drawn in), else the last one (so the pocket
        reads as expired)."""
        live: dict[str, list[str]] = {}
        ended: dict[str, list[str]] = {}
        for programme, expires, expired_ms in self.tx.all(
                "SELECT programme, expires, expired_ms FROM allowance_grants WHERE "
                "municipality_id = ? AND account_id = ?", (self.municipality, account)):
            running = expired_ms is None and str(expires) >= day.isoformat()
            (live if running else ended).setdefault(str(programme), []).append(str(expires))
        out: dict[str, date] = {}
        for programme in {*live, *ended}:
            text = min(live[programme]) if programme in live else max(ended[programme])
            try:
                out[programme] = date.fromisoformat(text)
            except ValueError:
                log.warning("allowance grant of %s in %s expires on %r: not a date",
                            account, programme, text)
        return out

    def spent_on(self, pocket_ids: Sequence[str], day: date) -> dict[str, int]:
        """What each pocket paid on ``day`` (payments by effective time, as posted)."""
        if not self.per_day or not pocket_ids:
            return {}
        lo, hi = _day_span(day)
        test, param = self.tx.any_of("debit_account", pocket_ids)
        rows = self.tx.all(
            "SELECT debit_account, SUM(amount) FROM book_transfers WHERE municipality_id = ? "
            f"AND {test} AND code = 'payment' AND at_ms >= ? AND at_ms < ? "
            "GROUP BY debit_account", (self.municipality, param, lo, hi))
        return {str(a).rsplit(":", 1)[1]: int(s) for a, s in rows}

    # -- payments -------------------------------------------------------------------------

    def payment(self, e: SpendEntry) -> None:
        if e.amount == 0:
            return  # nothing moved
        if '"mpm_payment"' in e.detail and self.paid_centrally(e):
            return
        if e.amount < 0:
            self.flag(e, "not_posted", {"why": f"amount {e.amount} is below zero"})
            return
        account, elsewhere = self.account_of(e.card_token)
        if account is None:
            if elsewhere:
                # another municipality's currency: not spendable here, not posted there
                self.flag(e, "other_municipality", {"amount": e.amount,
                                                    "card_municipalities": elsewhere})
            else:
                self.flag(e, "no_account", {"amount": e.amount})
            return
        merchant = self.merchant_of(e.terminal_id)
        if merchant is None:
            self.flag(e, "no_merchant", {"amount": e.amount, "account": account})
            return
        try:
            facts = pockets.MerchantFacts(merchant.merchant_id, merchant.category,
                                          merchant.region, frozenset(merchant.memberships))
        except ValueError as err:
            self.flag(e, "not_posted", {"why": str(err), "merchant": merchant.merchant_id})
            return
        day = seoul_day(e.when_ms)
        held = self.balances(account, day)
        # An online payment of another worker may draw on the same pockets between this read
        # and the transfers: the books would refuse the stale split, and the till's approved
        # payment would be flagged, never posted. Held first, read again: the transfers find
        # what the split was made of.
        accounts.lock(self.tx, [books.merchant_payable(merchant.merchant_id),
                                books.receivable(account),
                                *(books.pocket(account, b.pocket) for b in held)],
                      municipality=self.municipality)
        held = self.balances(account, day)
        spent = self.spent_on([books.pocket(account, b.pocket) for b in held], day)
        split = pockets.split(e.amount, held, self.rules, facts, day, spent)
        parts = split.parts
        if not split.approved and split.available:
            # all the pockets can give here, in the contract's order
            parts = pockets.split(split.available, held, self.rules, facts, day, spent).parts
        owed = e.amount - sum(w for _, w in parts)
        theirs = pockets.terminal_split(e.detail)
        if isinstance(theirs, str):
            self.flag(e, "split_invalid", {"why": theirs})
            theirs = None
        elif theirs is not None and sum(w for _, w in theirs) != e.amount:
            self.flag(e, "split_invalid", {"why": f"split sums to {sum(w for _, w in theirs)}"
                                                  f", the payment is {e.amount}"})
            theirs = None
        elif theirs is not None and not owed and theirs != parts:
            self.flag(e, "split_differs", {"terminal": [list(p) for p in theirs],
                                           "central": [list(p) for p in parts]})
        payable = books.merchant_payable(merchant.merchant_id)
        note = _json({"entry": f"{e.terminal_id}/{e.seq}"})
        transfers = [books.Transfer(books.pocket(account, p), payable, w, "payment",
                                    f"pay:{e.terminal_id}:{e.seq}:{p}", note)
                     for p, w in parts]
        if owed:
            transfers.append(books.Transfer(books.receivable(account), payable, owed,
                                            "payment", f"pay-owed:{e.terminal_id}:{e.seq}",
                                            note))
        if not self.post(e, transfers, [payable, books.receivable(account)] if owed
                         else [payable]):
            return
        listed = [[p, w] for p, w in parts] + ([[OWED, owed]] if owed else [])
        self.tx.run("INSERT INTO pocket_postings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (self.municipality, e.terminal_id, e.seq, e.log_index, e.kind, account,
                     merchant.merchant_id, e.amount, _json(listed), "{}", 0, day.isoformat()))
        for pocket, won in self.lacking(parts, theirs, owed):
            self.overdrafts.append((self.municipality, e.log_index, e.terminal_id, e.seq,
                                    account, pocket, won, day.isoformat()))
        self.result.payments += 1
        self.result.paid += e.amount - owed
        self.result.owed += owed

    def account_of(self, holder: str) -> tuple[str | None, list[str]]:
        """``holder``'s account here, or None and the other municipalities it is linked
        in (as :func:`municipalities.linked_elsewhere`)."""
        if not holder:
            return None, []
        if self.links is None:
            account = accounts.account_of(self.tx, holder, municipality=self.municipality)
            return account, [] if account is not None else municipalities.linked_elsewhere(
                self.tx, holder, self.municipality)
        linked = self.links.get(holder, {})
        account = linked.get(self.municipality)
        return account, [] if account is not None else sorted(linked)

    def paid_centrally(self, e: SpendEntry) -> bool:
        """A till's entry of an online QR payment (central.mpm_payments) that central
        posted when the app paid: marked with the till's seq, never posted twice. One that
        names no such payment of this terminal and amount is flagged and posts nothing."""
        try:
            named = json.loads(e.detail).get("mpm_payment")
        except (ValueError, AttributeError):
            return False
        if not isinstance(named, str):
            return False
        marked = self.tx.store.columns(self.tx, "mpm_payments") and self.tx.run(
            "UPDATE mpm_payments SET till_seq = ? WHERE municipality_id = ? AND "
            "payment_id = ? AND terminal_id = ? AND amount = ? AND (till_seq IS NULL OR "
            "till_seq = ?)", (e.seq, self.municipality, named, e.terminal_id, e.amount, e.seq))
        if not marked:
            # unknown, or a second entry of one payment: the till recorded it twice
            self.flag(e, "not_posted", {"why": f"names online payment {named}, which "
                                               "central does not hold for this entry, or "
                                               "another entry of the terminal names it"})
        return True

    def lacking(self, parts: Sequence[tuple[str, int]],
                theirs: Sequence[tuple[str, int]] | None, owed: int) -> list[tuple[str, int]]:
        """``owed`` by the pockets that lacked it: where the terminal drew more than central
        could, in the terminal's order; the cash pocket for what no split of the terminal
        explains."""
        out: dict[str, int] = {}
        left = owed
        ours = dict(parts)
        for pocket, won in theirs or ():
            short = min(won - ours.get(pocket, 0), left)
            if short > 0:
                out[pocket] = short
                left -= short
        if left:
            cash = self.rules.cash.pocket
            out[cash] = out.get(cash, 0) + left
        return list(out.items())

    def post(self, e: SpendEntry, transfers: list[books.Transfer], accounts_: list[str]
             ) -> bool:
        """Post ``transfers`` at the entry's effective time; a refusal of the books is a
        flag, and nothing of the entry is posted."""
        try:
            for account_id in accounts_:
                self.open(account_id)
            books.transfer(self.tx, transfers, municipality=self.municipality,
                           at_ms=e.when_ms)
        except BooksError as err:
            self.flag(e, "not_posted", {"why": str(err)})
            return False
        return True

    # -- refunds --------------------------------------------------------------------------

    def retry_waiting(self) -> None:
        waiting_refunds.retry(self.tx, self.municipality, SpendEntry,
                              lambda e: self.refund(e, waiting=True))

    def wait(self, e: SpendEntry, merchant: str) -> bool:
        waiting_refunds.park(self.tx, self.municipality, e, merchant)
        return False

    def online_seq(self, e: SpendEntry) -> int:
        """The seq under which refund ``e``'s payment was posted: its own, or, when the
        till's entry recorded an online QR payment (central.mpm_payments, posted when the
        app paid, under a seq no ledger uses), that posting's."""
        if not self.tx.store.columns(self.tx, "mpm_payments"):
            return e.ref_seq
        row = self.tx.one("SELECT post_seq FROM mpm_payments WHERE municipality_id = ? AND "
                          "terminal_id = ? AND till_seq = ?",
                          (self.municipality, e.terminal_id, e.ref_seq))
        return e.ref_seq if row is None else int(row[0])

    def refund(self, e: SpendEntry, *, waiting: bool = False) -> bool:
        """Post refund ``e``; False when it waits for the merchant's payable (``waiting``:
        it is a waiting refund tried again), True when it is done with."""
        paid_seq = self.online_seq(e) if e.ref_seq else 0
        row = self.tx.one(
            "SELECT account_id, merchant_id, parts, refunded FROM pocket_postings WHERE "
            "municipality_id = ? AND terminal_id = ? AND seq = ? AND kind = 'payment'",
            (self.municipality, e.terminal_id, paid_seq)) if e.ref_seq else None
        if row is None:
            self.flag(e, "unknown_payment", {"payment": e.ref_seq, "amount": e.amount})
            return True
        if e.amount <= 0:
            self.flag(e, "not_posted", {"why": f"amount {e.amount} is not above zero"})
            return True
        account, merchant = str(row[0]), str(row[1])
        if not waiting and waiting_refunds.behind(self.tx, self.municipality, e):
            return self.wait(e, merchant)
        parts: list[list[Any]] = json.loads(str(row[2]))
        refunded: dict[str, int] = json.loads(str(row[3]))
        left = sum(int(w) for _, w in parts) - sum(refunded.values())
        if e.amount > left:
            self.flag(e, "refund_exceeds", {"payment": e.ref_seq, "asked": e.amount,
                                            "left": left})
        want = min(e.amount, left)
        if want == 0:
            return True
        paying = waiting_refunds.payer(self.tx, self.municipality, e, merchant, want,
                                       self.fallback)
        if paying is None:
            # its payment's money was settled and the payable holds less than the refund:
            # the citizen's money waits for the merchant's next payments, never refused
            return False if waiting else self.wait(e, merchant)
        payable, transfers = paying
        note = _json({"entry": f"{e.terminal_id}/{e.seq}",
                      "payment": f"{e.terminal_id}/{e.ref_seq}"})
        back: list[list[Any]] = []
        # newest drawn first: the uncovered part (drawn last) before the pockets
        for pocket, paid in reversed(parts):
            take = min(int(paid) - refunded.get(pocket, 0), want)
            if take <= 0:
                continue
            if pocket == OWED:
                transfers.append(books.Transfer(payable, books.receivable(account), take,
                                                "refund", f"refund-owed:{e.terminal_id}:"
                                                f"{e.seq}", note))
            else:
                transfers.append(books.Transfer(payable, books.pocket(account, pocket), take,
                                                "refund", f"refund:{e.terminal_id}:{e.seq}:"
                                                f"{pocket}", note))
            back.append([pocket, take])
            refunded[pocket] = refunded.get(pocket, 0) + take
            want -= take
            if want == 0:
                break
        if not self.post(e, transfers, []):
            return True
        self.tx.run("UPDATE pocket_postings SET refunded = ? WHERE municipality_id = ? AND "
                    "terminal_id = ? AND seq = ?",
                    (_json(refunded), self.municipality, e.terminal_id, paid_seq))
        self.tx.run("INSERT INTO pocket_postings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (self.municipality, e.terminal_id, e.seq, e.log_index, e.kind, account,
                     merchant, e.amount, _json(back), "{}", e.ref_seq,
                     seoul_day(e.when_ms).isoformat()))
        self.result.refunds += 1
        self.result.refunded += sum(int(w) for _, w in back)
        return True


__all__ = ["REASONS", "TABLES", "PaymentPosting", "RulesVersion", "SpendEntry", "SpendResult",
           "SpendingPoster", "active_rules", "ensure_schema", "load_rules",
           "lock_spending", "post_log", "post_payment", "retry_waiting", "rules_text",
           "rules_versions"]
