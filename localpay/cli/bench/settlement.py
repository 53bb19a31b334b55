"""Benchmark: a city's daily merchant settlement (:func:`central.settlement.settle`).

Each run fills a fresh store (a new schema on the PostgreSQL server, a new file on SQLite)
with the same synthetic business day, so every run settles the same day over tables of the
same size; filling is not timed:

- the registry: ``merchants`` merchants in four categories, one in 30 without a bank
  account (their settlement is held);
- citizens' accounts, one for every ten payments, each with a ``cash`` pocket topped up from
  ``bank:outside`` and a ``points`` pocket paid from a points programme, each funded with
  what its payments will spend and a little more;
- the day before (:data:`BEFORE`): one payment more for every 50, to merchants with a bank
  account, settled by its own run before the day is filled;
- the day (:data:`DAY`): ``payments`` payments (pocket -> merchant payable, ``detail``
  ``{"day": ...}``), every merchant at least one; refunds of one payment in 70 (half of it),
  and of every payment of one merchant in 97 (whole: those settlements are carried); and
  late payments of the day before, one for every 200, posted after that day's run.

**How filling keeps the books' guarantees.** Rows go in with ``Tx.bulk`` (COPY on
PostgreSQL, ``executemany`` on SQLite) with every trigger, CHECK, foreign key and unique key
of the books in place: each transfer row posts itself to its two accounts' totals as it goes
in (the ``book_transfers_post`` trigger), and a pocket or payable that would go below zero
refuses its whole transaction. What :func:`central.books.transfer` does besides (reading each
account ``FOR UPDATE``, answering a repeated ref) serves concurrent callers and retries; the
filler is alone in a fresh store and its refs are new. Accounts are opened at zero totals,
as :func:`central.books.open_account` opens them, with the chart's kind and flags; merchants
are checked by :class:`central.merchants.Merchant`. :func:`central.books.check` proves the
totals after the run.

**Timed:** ``settle(store, DAY, fee_rules=...)``. **Floors**, measured in each run on the
same server: one ``SELECT count(*), sum(amount)`` over the payable transfers (a plain pass
over what the run must read), and the raw ``write``+``fsync`` rate of this machine's temporary
folder. **Memory:** the process's peak RSS while settling (Linux: the peak is reset just
before), and over the whole benchmark, filling included. The PostgreSQL server's own memory
is not counted.

**Checked** after each run (a failure is reported, and the command exits 1): the books
balance, :func:`central.settlement_check.check` finds the day clean, the payable transfers
counted are those filled, and each merchant's settlement (status, gross, late gross,
refunds, fees, net) is what an independent sum of the filled transfers gives.
"""

from __future__ import annotations

import datetime as dt
import gc
import itertools
import json
import os
import random
import resource
import secrets
import sqlite3
import statistics
import tempfile
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from central import books, settlement_check
from central.merchants import Merchant
from central.settlement import POSTED, FeeRules, Settlement, settle
from central.store import Store, open_store
from firmware_cfg.config import brn_check_digit
from localpay.cli.bench.validator import raw_fsync_rate

DAY = "2025-03-14"
BEFORE = "2025-03-13"
_SEOUL = dt.timezone(dt.timedelta(hours=9))
#: merchants' categories, in turn; the default fees charge them differently
CATEGORIES = ("ksic:47121", "ksic:56111", "ksic:96112", "mcc:5411")
DEFAULT_FEES = FeeRules(30, (("ksic:47", 25), ("ksic:56", 15)))
PROGRAMME = "bench"
MUNICIPALITY = books.DEFAULT_MUNICIPALITY
#: transfers a transaction posts when they all move one account (``bank:outside``, the
#: points budget): PostgreSQL walks every version a transaction made of a row to update it
#: again, so a hundred thousand top-ups in one would take minutes
HOT_CHUNK = 2000
#: other transfers a transaction posts (each payable and pocket moves a few times at most)
CHUNK = 50_000
NO_BANK_EVERY = 30
REFUND_EVERY = 70
CARRIED_EVERY = 97
#: which merchant of each 30 is held and of each 97 carried: low, so that a small run has both
HELD_AT, CARRIED_AT = 7, 3
BEFORE_EVERY = 50
LATE_EVERY = 200
CASH, POINTS = 0, 1
_POCKETS = ("cash", "points")
_TRANSFER_COLUMNS = ("municipality_id", "transfer_id", "debit_account", "credit_account",
                     "amount", "code", "ref", "at_ms", "detail")
_MERCHANT_COLUMNS = ("municipality_id", "merchant_id", "name", "brn", "category", "region",
                     "memberships", "bank_code", "account_no", "account_holder", "active",
                     "version", "updated_ms")


def _ms(day: str, hour: float) -> int:
    start = dt.datetime.fromisoformat(day).replace(tzinfo=_SEOUL)
    return int(start.timestamp() * 1000 + hour * 3_600_000)


# -- the synthetic day ---------------------------------------------------------------------

@dataclass
class _Payments:
    """Payments as columns (a million tuples would take ten times the memory)."""

    merchant: array[int] = field(default_factory=lambda: array("q"))
    account: array[int] = field(default_factory=lambda: array("q"))
    pocket: array[int] = field(default_factory=lambda: array("q"))
    amount: array[int] = field(default_factory=lambda: array("q"))

    def add(self, merchant: int, account: int, pocket: int, amount: int) -> None:
        self.merchant.append(merchant)
        self.account.append(account)
        self.pocket.append(pocket)
        self.amount.append(amount)

    def __len__(self) -> int:
        return len(self.amount)


@dataclass
class Plan:
    """What a run fills: the same in every run (one seed)."""

    merchants: list[Merchant]
    accounts: int
    before: _Payments
    day: _Payments
    late: _Payments
    #: (index of a payment of the day, amount refunded)
    refunds: list[tuple[int, int]]


def _brn(n: int) -> str:
    first9 = f"{100_000_000 + n * 7919 % 899_999_999:09d}"
    return first9 + str(brn_check_digit(first9))


def _amount(rng: random.Random) -> int:
    # most purchases a few thousand won to a few tens of thousands, a long tail above
    return min(1_000_000, max(500, int(rng.lognormvariate(9.7, 0.9)) // 10 * 10))


def plan(merchants: int, payments: int, seed: int = 7) -> Plan:
    """The day to fill: ``payments`` (at least ``merchants``) payments of :data:`DAY`, every
    merchant paid at least once, with the day before, late payments and refunds."""
    if payments < merchants:
        raise ValueError("every merchant is paid at least once: payments >= merchants")
    rng = random.Random(seed)
    registry = []
    for i in range(merchants):
        banked = i % NO_BANK_EVERY != HELD_AT
        registry.append(Merchant(
            merchant_id=f"m{i:06d}", name=f"Shop {i}", brn=_brn(i),
            category=CATEGORIES[i % len(CATEGORIES)], region="goyang",
            bank_code="011" if banked else "", account_no=f"301-{i:08d}" if banked else "",
            account_holder=f"Owner {i}" if banked else "", version=1,
            municipality_id=MUNICIPALITY))
    accounts = max(10, payments // 10)

    def pay(into: _Payments, merchant: int) -> None:
        pocket = POINTS if rng.random() < 0.15 else CASH
        into.add(merchant, rng.randrange(accounts), pocket, _amount(rng))

    banked_ids = [i for i, m in enumerate(registry) if m.bank_code]
    before = _Payments()
    for _ in range(max(1, payments // BEFORE_EVERY) if banked_ids else 0):
        pay(before, rng.choice(banked_ids))
    day = _Payments()
    for n in range(payments):
        pay(day, n if n < merchants else rng.randrange(merchants))
    refunds: list[tuple[int, int]] = []
    for n in range(payments):
        if day.merchant[n] % CARRIED_EVERY == CARRIED_AT:
            refunds.append((n, day.amount[n]))
        elif rng.randrange(REFUND_EVERY) == 0:
            refunds.append((n, day.amount[n] // 2))
    late = _Payments()
    for _ in range(max(1, payments // LATE_EVERY)):
        m = rng.randrange(merchants)
        if m % CARRIED_EVERY != CARRIED_AT:  # a carried merchant stays carried
            pay(late, m)
    return Plan(registry, accounts, before, day, late, refunds)


@dataclass
class Expected:
    """Each merchant's settlement of :data:`DAY`, summed from the plan alone."""

    by_merchant: dict[str, tuple[str, int, int, int, int, int]]
    payable_transfers: int

    def totals(self) -> dict[str, int]:
        rows = self.by_merchant.values()
        paid = [r for r in rows if r[0] == "paid"]
        return {"merchants": len(self.by_merchant), "paid": len(paid),
                "held": sum(r[0] == "held" for r in rows),
                "carried": sum(r[0] == "carried" for r in rows),
                "gross_all": sum(r[1] for r in rows), "gross": sum(r[1] for r in paid),
                "fees": sum(r[4] for r in paid), "net": sum(r[5] for r in paid)}


def expected(p: Plan, rules: FeeRules) -> Expected:
    """(status, gross, late gross, refunds, fees, net) per merchant paid on :data:`DAY`."""
    gross = [0] * len(p.merchants)
    late = [0] * len(p.merchants)
    refunded = [0] * len(p.merchants)
    for m, amount in zip(p.day.merchant, p.day.amount, strict=True):
        gross[m] += amount
    for m, amount in zip(p.late.merchant, p.late.amount, strict=True):
        gross[m] += amount
        late[m] += amount
    for n, amount in p.refunds:
        refunded[p.day.merchant[n]] += amount
    out: dict[str, tuple[str, int, int, int, int, int]] = {}
    for i, merchant in enumerate(p.merchants):
        if not gross[i] and not refunded[i]:
            continue
        fee = gross[i] * rules.bp_for(merchant.category) // 10_000
        net = gross[i] - refunded[i] - fee
        status = "carried" if net <= 0 else "held" if not merchant.bank_code else "paid"
        out[merchant.merchant_id] = (status, gross[i], late[i], refunded[i], fee, net)
    payable = len(p.before) + len(p.day) + len(p.late) + len(p.refunds)
    return Expected(out, payable)


# -- filling -------------------------------------------------------------------------------

class _Ids:
    """Transfer ids as the books make them: the time in ms, then a number counting up."""

    def __init__(self) -> None:
        self.base = secrets.randbits(60)

    def __call__(self, at_ms: int) -> str:
        self.base += 1
        return f"{at_ms & 0xFFFF_FFFF_FFFF:012x}{self.base:020x}"


def _post(store: Store, rows: Iterable[tuple[Any, ...]], size: int) -> None:
    """Post ``rows`` ``size`` a transaction, made as they go (a million rows at once would
    take gigabytes)."""
    it = iter(rows)
    while chunk := list(itertools.islice(it, size)):
        with store.tx() as tx:
            tx.bulk("book_transfers", _TRANSFER_COLUMNS, chunk)


def _payment_rows(pays: _Payments, ids: _Ids, day: str, start_ms: int, ref: str,
                  *, refunds: Sequence[tuple[int, int]] = ()) -> Iterator[tuple[Any, ...]]:
    """The payments, spread over 14 hours from ``start_ms``, then the refunds."""
    detail = json.dumps({"day": day})
    span = 14 * 3_600_000 // max(1, len(pays))
    for n in range(len(pays)):
        at = start_ms + n * span
        yield (MUNICIPALITY, ids(at), books.pocket(f"c{pays.account[n]:07d}",
                                                   _POCKETS[pays.pocket[n]]),
               books.merchant_payable(f"m{pays.merchant[n]:06d}"), pays.amount[n], "payment",
               f"{ref}:{n}", at, detail)
    end = start_ms + len(pays) * span
    for k, (n, amount) in enumerate(refunds):
        at = end + k
        yield (MUNICIPALITY, ids(at), books.merchant_payable(f"m{pays.merchant[n]:06d}"),
               books.pocket(f"c{pays.account[n]:07d}", _POCKETS[pays.pocket[n]]), amount,
               "refund", f"{ref}:refund:{n}", at, detail)


def _open_accounts(store: Store, p: Plan, at_ms: int) -> None:
    ids = [books.BANK_OUTSIDE, books.programme_funding(PROGRAMME),
           books.programme_points(PROGRAMME)]
    ids += [books.merchant_payable(m.merchant_id) for m in p.merchants]
    ids += [books.pocket(f"c{a:07d}", pocket) for a in range(p.accounts) for pocket in _POCKETS]
    rows = []
    for account in ids:
        kind = books.kind_of(account)
        if kind is None:  # pragma: no cover - every id above comes from the chart's builders
            raise ValueError(f"{account} is not in the chart of accounts")
        rows.append((MUNICIPALITY, account, kind, books.KINDS[kind], at_ms))
    merchants = [(m.municipality_id, m.merchant_id, m.name, m.brn, m.category, m.region,
                  ",".join(m.memberships), m.bank_code, m.account_no, m.account_holder,
                  int(m.active), m.version, at_ms) for m in p.merchants]
    with store.tx() as tx:
        tx.bulk("merchants", _MERCHANT_COLUMNS, merchants)
        tx.bulk("book_accounts", ("municipality_id", "account_id", "kind", "flags",
                                  "opened_ms"), rows)


def _fund(store: Store, p: Plan, ids: _Ids) -> None:
    """Each cash pocket gets what its payments spend and 10 to 20,000 won more, each points
    pocket what its payments spend."""
    need = [[0, 0] for _ in range(p.accounts)]
    for pays in (p.before, p.day, p.late):
        for a, pocket, amount in zip(pays.account, pays.pocket, pays.amount, strict=True):
            need[a][pocket] += amount
    at = _ms(BEFORE, 6)
    rng = random.Random(11)
    budget = sum(points for _, points in need)
    if budget:
        funding = books.programme_funding(PROGRAMME)
        _post(store, [
            (MUNICIPALITY, ids(at), books.BANK_OUTSIDE, funding, budget, "funding",
             "funding:bench", at, ""),
            (MUNICIPALITY, ids(at), funding, books.programme_points(PROGRAMME), budget,
             "budget", "budget:bench", at, "")], HOT_CHUNK)
    _post(store, ((MUNICIPALITY, ids(at), books.BANK_OUTSIDE, books.pocket(f"c{a:07d}", "cash"),
                   cash + rng.randrange(1, 2001) * 10, "topup", f"topup:c{a:07d}", at, "")
                  for a, (cash, _) in enumerate(need)), HOT_CHUNK)
    _post(store, ((MUNICIPALITY, ids(at), books.programme_points(PROGRAMME),
                   books.pocket(f"c{a:07d}", "points"), points, "points_payout",
                   f"points:c{a:07d}", at, "")
                  for a, (_, points) in enumerate(need) if points), HOT_CHUNK)


def fill(store: Store, p: Plan, rules: FeeRules, progress: Callable[[str], None]) -> None:
    """Fill an empty store with the plan; the day before is settled on the way."""
    ids = _Ids()
    _open_accounts(store, p, _ms(BEFORE, 0))
    _fund(store, p, ids)
    _post(store, _payment_rows(p.before, ids, BEFORE, _ms(BEFORE, 7), f"pay:{BEFORE}"), CHUNK)
    progress(f"  settling the day before ({len(p.before):,} payments)")
    settle(store, BEFORE, fee_rules=rules, municipality=MUNICIPALITY, now_ms=_ms(DAY, 1))
    # late ones reach central in the morning, after the day before was run
    _post(store, _payment_rows(p.late, ids, BEFORE, _ms(DAY, 6), f"late:{BEFORE}"), CHUNK)
    _post(store, _payment_rows(p.day, ids, DAY, _ms(DAY, 8), f"pay:{DAY}",
                               refunds=p.refunds), CHUNK)


def _settle_down(store: Store) -> Store:
    """Leave the store as a night's settlement finds it: on PostgreSQL the day's rows
    vacuumed and analysed, as autovacuum does while they arrive over the day, and the bulk
    load's WAL checkpointed; on SQLite the WAL checkpointed. Returns the store to use."""
    if store.kind == "postgresql":
        import psycopg

        with psycopg.connect(store.url, autocommit=True) as conn:
            for table in ("book_transfers", "book_accounts", "merchants", "settlement_items",
                          "settlements", "settlement_runs"):
                conn.execute(f"VACUUM ANALYZE {table}")
            try:
                conn.execute("CHECKPOINT")
            except psycopg.Error:  # a server of someone else's: its own checkpoints run
                pass
        return store
    url = store.url
    store.close()
    lite = sqlite3.connect(url[len("sqlite:///"):])
    try:
        lite.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        lite.close()
    return open_store(url)


# -- measuring -----------------------------------------------------------------------------

def _floor_scan(store: Store) -> tuple[float, int, int]:
    """Time of one pass over the payable transfers (the second: caches as warm as the
    run's), their count and sum."""
    sql = ("SELECT count(*), sum(amount) FROM book_transfers WHERE municipality_id = ? "
           "AND code IN ('payment', 'refund')")
    took = 0.0
    count = total = 0
    for _ in range(2):
        with store.tx(write=False) as tx:
            t0 = time.perf_counter()
            row = tx.one(sql, (MUNICIPALITY,))
            took = time.perf_counter() - t0
        count, total = (int(row[0]), int(row[1] or 0)) if row else (0, 0)
    return took, count, total


def _status_kb(name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Linux: writing 5 to clear_refs resets the process's peak RSS (VmHWM)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _mb(kb: int | None) -> float | None:
    return None if kb is None else round(kb / 1024, 1)


def _compare(run_settlements: Sequence[Settlement], want: Expected) -> list[str]:
    problems = []
    got = {s.merchant_id: ("paid" if s.status in POSTED else s.status, s.gross, s.late_gross,
                           s.refunds, s.fees, s.net) for s in run_settlements}
    for m in sorted(set(got) | set(want.by_merchant)):
        if got.get(m) != want.by_merchant.get(m):
            problems.append(f"merchant {m}: settled (status, gross, late, refunds, fees, net) "
                            f"{got.get(m)}, the filled transfers give {want.by_merchant.get(m)}")
    if len(problems) > 5:
        problems = [*problems[:5], f"... {len(problems) - 5} merchants more"]
    return problems


def _fresh_schema(url: str) -> tuple[str, Callable[[], None]]:
    """A new empty schema on the server of ``url``: its URL, and how to drop it."""
    import psycopg

    name = "bench_settle_" + secrets.token_hex(4)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")

    def drop() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")

    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}options=-csearch_path%3D{name}", drop


def _one_run(store: Store, p: Plan, rules: FeeRules, want: Expected, folder: Path,
             progress: Callable[[str], None]) -> dict[str, Any]:
    try:
        t0 = time.perf_counter()
        fill(store, p, rules, progress)
        store = _settle_down(store)
        fill_s = time.perf_counter() - t0
        scan_s, count, _ = _floor_scan(store)
        fsyncs = raw_fsync_rate(folder, seconds=1.0)
        gc.collect()
        reset = _reset_peak_rss()
        rss_before = _status_kb("VmRSS")
        progress("  settling the day (timed)")
        t1 = time.perf_counter()
        run = settle(store, DAY, fee_rules=rules, municipality=MUNICIPALITY,
                     now_ms=_ms(DAY, 26))
        settle_s = time.perf_counter() - t1
        rss_peak = _status_kb("VmHWM") if reset else None
        progress(f"  settled in {settle_s:.2f} s; checking")
        problems = _compare(run.settlements, want)
        if count != want.payable_transfers:
            problems.append(f"{count:,} payments and refunds in the books, "
                            f"{want.payable_transfers:,} filled")
        proof = books.check(store)
        if not proof.balanced:
            problems.append(f"the books do not balance: {proof.as_json()}")
        day_check = settlement_check.check(store, DAY, municipality=MUNICIPALITY)
        if not day_check.clean:
            problems.append(f"the settlement check of {DAY} finds "
                            f"{len(day_check.problems)} merchants with problems")
        fsync_setting = None
        if store.kind == "postgresql":
            with store.tx(write=False) as tx:
                row = tx.one("SHOW fsync")
                fsync_setting = str(row[0]) if row else None
    finally:
        store.close()
    return {"settle_s": round(settle_s, 3), "floor_scan_s": round(scan_s, 4),
            "fsyncs_per_s": round(fsyncs), "fill_s": round(fill_s, 1),
            "rss_before_settle_mb": _mb(rss_before), "rss_peak_settle_mb": _mb(rss_peak),
            "settled": {"merchants": len(run.settlements), "paid": len(run.paid),
                        "held": len(run.held), "carried": len(run.carried),
                        "gross_all": sum(s.gross for s in run.settlements),
                        "late_gross": sum(s.late_gross for s in run.settlements),
                        "refunds": sum(s.refunds for s in run.settlements),
                        "gross": run.gross, "fees": run.fees, "net": run.net},
            "books_balanced": proof.balanced, "settlement_check_clean": day_check.clean,
            "postgresql_fsync": fsync_setting, "problems": problems}


def bench_settlement(merchants: int = 43_000, payments: int = 1_000_000, *,
                     store_url: str | None = None, runs: int = 3,
                     fee_rules: FeeRules | None = None,
                     progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Settle :data:`DAY` ``runs`` times, each in a fresh store: a new schema in the
    PostgreSQL database ``store_url``, or (None) a new SQLite file. The figures."""
    rules = fee_rules or DEFAULT_FEES
    p = plan(merchants, payments)
    want = expected(p, rules)
    kind = "sqlite" if store_url is None else "postgresql"
    results = []
    with tempfile.TemporaryDirectory(prefix="localpay-bench-settlement-") as tmp:
        folder = Path(tmp)
        for n in range(runs):
            progress(f"run {n + 1} of {runs}: filling {merchants:,} merchants, "
                     f"{payments:,} payments ({kind})")
            if store_url is None:
                url, drop = f"sqlite:///{folder / f'run{n}.sqlite'}", None
            else:
                url, drop = _fresh_schema(store_url)
            try:
                results.append(_one_run(open_store(url), p, rules, want, folder, progress))
            finally:
                if drop is not None:
                    drop()
                for leftover in folder.glob(f"run{n}.sqlite*"):
                    leftover.unlink()
    settle_s = [r["settle_s"] for r in results]
    scan_s = [r["floor_scan_s"] for r in results]
    median = statistics.median(settle_s)
    median_scan = statistics.median(scan_s)
    totals = want.totals()
    problems = [f"run {n + 1}: {why}" for n, r in enumerate(results) for why in r["problems"]]
    for n, r in enumerate(results):
        settled = {k: r["settled"][k] for k in totals}
        if settled != totals:
            problems.append(f"run {n + 1}: settled {settled}, the filled transfers give "
                            f"{totals}")
    return {
        "day": DAY, "store": kind,
        "postgresql_fsync": results[0]["postgresql_fsync"],
        "fresh_store_each_run": ("a new schema on the server" if kind == "postgresql"
                                 else "a new SQLite file (WAL, synchronous=FULL)"),
        "merchants": merchants, "payments": payments, "accounts": p.accounts,
        "refunds": len(p.refunds), "late_payments": len(p.late),
        "payments_day_before": len(p.before), "fee_rules": rules.as_dict(),
        "expected": totals, "settled": results[0]["settled"],
        "runs": [{k: v for k, v in r.items() if k not in ("settled", "problems")}
                 for r in results],
        "settle_s_median": median, "floor_scan_s_median": median_scan,
        "settle_over_scan": round(median / median_scan, 1) if median_scan else None,
        "fsyncs_per_s_median": round(statistics.median(r["fsyncs_per_s"] for r in results)),
        "process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                     / 1024, 1),
        "books_balanced": all(r["books_balanced"] for r in results),
        "gross_matches_filled": all(r["settled"]["gross_all"] == totals["gross_all"]
                                    for r in results),
        "settlement_check_clean": all(r["settlement_check_clean"] for r in results),
        "problems": problems, "cpus": os.cpu_count(),
    }


def render(f: dict[str, Any]) -> str:
    """The figures for people to read (``--json`` prints them all as JSON)."""
    s = f["settled"]
    fsync = f" (fsync {f['postgresql_fsync']})" if f["store"] == "postgresql" else ""
    lines = [
        f"settlement of {f['day']}: {f['merchants']:,} merchants, {f['payments']:,} payments "
        f"({f['refunds']:,} refunds, {f['late_payments']:,} late of the day before), "
        f"{f['accounts']:,} citizens",
        f"store     {f['store']}{fsync}, {f['fresh_store_each_run']} for each run",
        f"merchants paid {s['paid']:,}, held {s['held']:,}, carried {s['carried']:,} "
        f"(of {s['merchants']:,})",
        f"won       gross {s['gross_all']:,} (late {s['late_gross']:,}), refunds "
        f"{s['refunds']:,}; paid merchants: gross {s['gross']:,}, fees {s['fees']:,}, "
        f"net {s['net']:,}",
        "",
        f"{'run':<7}{'settle s':>10}{'floor scan s':>14}{'fsyncs/s':>10}"
        f"{'RSS settle MB':>15}{'fill s':>9}",
    ]
    for n, r in enumerate(f["runs"], 1):
        peak = r["rss_peak_settle_mb"]
        lines.append(f"{n:<7}{r['settle_s']:>10.2f}{r['floor_scan_s']:>14.3f}"
                     f"{r['fsyncs_per_s']:>10,}{'-' if peak is None else f'{peak:,.0f}':>15}"
                     f"{r['fill_s']:>9.1f}")
    ratio = f["settle_over_scan"]
    lines += [
        f"{'median':<7}{f['settle_s_median']:>10.2f}{f['floor_scan_s_median']:>14.3f}"
        f"{f['fsyncs_per_s_median']:>10,}",
        f"settle / scan {'-' if ratio is None else f'{ratio:,}'}x; process peak RSS "
        f"{f['process_peak_rss_mb']:,} MB (filling included); {f['cpus']} CPUs",
        "",
        f"checks    books balanced: {'yes' if f['books_balanced'] else 'NO'}; gross = "
        f"payments filled ({f['expected']['gross_all']:,}): "
        f"{'yes' if f['gross_matches_filled'] else 'NO'}; settlement check clean: "
        f"{'yes' if f['settlement_check_clean'] else 'NO'}",
    ]
    lines += [f"PROBLEM   {why}" for why in f["problems"]]
    return "\n".join(lines)
