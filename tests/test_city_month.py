"""A simulated month of a city's programmable money, driven through the real entry points, on
SQLite and PostgreSQL.

September 2026 for 300 citizens and 22 merchant terminals: bus rides in the last week of
August earn points, paid on 1 September into the points pockets of the linked cards (into the
old single balance of the cards with no account, held for the cards with neither); youth and
welfare allowances are issued from recipient files, the welfare one expiring on the 15th;
citizens buy cash at a discount; each terminal's signed ledger is ingested by ``CentralLog``
once a day (the ``SpendingPoster`` and ``IncentiveCrediter`` following it), some batches only
after their day was settled; refunds and voids; payments at local shops, cafes, and a large
mart that the rules exclude for points and allowances; a merchant without a bank account until
the 20th. Every day the books balance, the day's settlement agrees with the merchants'
terminal ledgers (``settlement_check``), and an independent model written out below (its own
pocket split, refunds, expiry, settlement coverage and fees, points) agrees to the won with
every pocket, every merchant's settlement, and each programme's issued, spent and expired.
September's points are paid on 1 October into the pockets, and checked too.

Nothing here calls the modules' own arithmetic to compute what is expected; the generator is
seeded, so the month is the same every run.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from central import accounts, allowances, books
from central import settlement_check as check
from central.incentives import IncentiveCrediter
from central.merchants import Merchant, Registry
from central.payouts import fund_points, payout
from central.settlement import FeeRules, settle
from central.spending import SpendingPoster, load_rules, post_log
from central.topups import MonthlyLimitError, TopupTerms, fund_subsidy, topup
from localpay.pockets import DEFAULT_RULES
from tests.books_world import shop_lf01
from tests.incentives_data import Chain, chain, open_service, seoul_ms
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401
from tests.test_settlement import brn

SEED = 20260901
LINKED, OLD, LOOSE = 280, 10, 10          # citizens with an account; balances row; neither
YEAR, SEPT = 2026, 9
DAYS = [dt.date(YEAR, SEPT, d) for d in range(1, 31)]
AUGUST_RIDES = [dt.date(YEAR, 8, d) for d in range(24, 29)]   # Monday to Friday, no holiday
FARE, WEEK_CAP = 1500, 2900
TERMS = TopupTerms("goyang", 10, 500_000)
WELFARE_EXPIRES, YOUTH_EXPIRES = "2026-09-15", "2026-12-31"
FEES = FeeRules(50, (("ksic:47", 30),))
#: cash anywhere; points and both allowances never at a large mart; youth only in retail
RULES = DEFAULT_RULES + """
[[pocket]]
id = "youth"
kind = "allowance"
allow_categories = ["ksic:47"]
exclude_memberships = ["large-mart"]

[[pocket]]
id = "welfare"
kind = "allowance"
exclude_memberships = ["large-mart"]
"""


@dataclass(frozen=True)
class Shop:
    merchant_id: str
    category: str
    #: what its terminals write as the merchant category (local food earns points)
    sells: str
    large_mart: bool = False
    terminals: tuple[str, ...] = ()


def shops() -> list[Shop]:
    out = [Shop(f"LF{i:02d}", "ksic:47211", "local_food", terminals=(f"T-LF{i:02d}",))
           for i in range(1, 9)]
    out += [Shop(f"SH{i:02d}", "ksic:47190", "general", terminals=(f"T-SH{i:02d}",))
            for i in range(1, 8)]
    out += [Shop(f"CF{i:02d}", "ksic:56221", "general", terminals=(f"T-CF{i:02d}",))
            for i in range(1, 6)]
    out.append(Shop("MART", "ksic:47111", "general", True, ("T-MART-1", "T-MART-2")))
    return out


#: the merchant whose bank account is registered only on this day
NO_BANK, BANK_FROM = "CF05", dt.date(YEAR, SEPT, 20)


def card(n: int) -> str:
    return f"card{n:04d}"


def acct(n: int) -> str:
    return f"C{n:04d}"


def noon(d: dt.date, hour: int = 12, minute: int = 0) -> int:
    return seoul_ms(d.year, d.month, d.day, hour, minute)


# -- the independent model ---------------------------------------------------------------------


@dataclass
class Item:
    """A payable movement as settlement covers it."""

    kind: str        # payment | refund
    day: str         # its business day
    amount: int
    source: str      # pocket, or "receivable"


@dataclass
class Model:
    shops: dict[str, Shop]
    pockets: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    receivable: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    payable: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: (account, programme) -> [amount, expires, expired (None: not yet)]
    grants: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    #: (terminal, seq) -> [account, merchant, parts [[pocket, won]], refunded {pocket: won}]
    postings: dict[tuple[str, int], list[Any]] = field(default_factory=dict)
    open_items: dict[str, list[Item]] = field(default_factory=lambda: defaultdict(list))
    runs: set[str] = field(default_factory=set)
    banked: set[str] = field(default_factory=set)
    #: programme -> won: issued, spent (payments less refunds), expired
    issued: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    spent: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    expired: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    budgets: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    fees: int = 0
    in_transit: int = 0
    #: day -> merchant -> (status, gross, refunds, fees, net, late_gross, {pocket: [g, r]})
    settled: dict[str, dict[str, tuple[Any, ...]]] = field(default_factory=dict)
    #: refunds the payable could not hold when they came (their payment's money settled),
    #: in log order: [terminal, payment's seq, won, day, merchant]
    waiting: list[list[Any]] = field(default_factory=list)
    refunds_waited: int = 0
    discounts: int = 0
    prices: int = 0
    points_paid: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    # what may pay where, in which order: the rules above, written out again
    def may_pay(self, pocket: str, shop: Shop, day: str) -> bool:
        if pocket == "cash":
            return True
        if shop.large_mart:
            return False
        if pocket == "points":
            return True
        if pocket == "youth" and not shop.category.startswith("ksic:47"):
            return False
        return day <= self.expiry(pocket)

    @staticmethod
    def expiry(programme: str) -> str:
        return WELFARE_EXPIRES if programme == "welfare" else YOUTH_EXPIRES

    def order(self, account: str) -> list[str]:
        held = [p for (a, p), won in self.pockets.items() if a == account and won > 0]
        allowance = sorted((p for p in held if p in ("youth", "welfare")),
                           key=lambda p: (self.expiry(p), p))
        return allowance + [p for p in ("points", "cash") if p in held]

    def pay(self, tid: str, seq: int, account: str, shop: Shop, amount: int, day: str) -> None:
        left, parts = amount, list[list[Any]]()
        for pocket in self.order(account):
            if left and self.may_pay(pocket, shop, day):
                take = min(left, self.pockets[(account, pocket)])
                self.pockets[(account, pocket)] -= take
                parts.append([pocket, take])
                left -= take
        if left:
            self.receivable[account] -= left
            parts.append(["", left])
        for pocket, won in parts:
            if pocket in ("youth", "welfare"):
                self.spent[pocket] += won
            self.open_items[shop.merchant_id].append(
                Item("payment", day, won, pocket or "receivable"))
        self.payable[shop.merchant_id] += amount
        self.postings[(tid, seq)] = [account, shop.merchant_id, parts, {}]

    def unposted(self, day: str) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for _, _, amount, d, merchant in self.waiting:
            if d == day:
                out[merchant] += amount
        return out

    def refund(self, tid: str, ref_seq: int, amount: int, day: str) -> None:
        merchant = self.postings[(tid, ref_seq)][1]
        if any(w[:2] == [tid, ref_seq] for w in self.waiting) or not self.give_back(
                tid, ref_seq, amount, day):
            self.waiting.append([tid, ref_seq, amount, day, merchant])
            self.refunds_waited += 1

    def retry(self) -> None:
        """After every batch: the waiting refunds the payables now hold, in log order."""
        blocked: set[tuple[str, int]] = set()
        for w in list(self.waiting):
            tid, ref_seq, amount, day, _ = w
            if (tid, ref_seq) not in blocked and self.give_back(tid, ref_seq, amount, day):
                self.waiting.remove(w)
            else:
                blocked.add((tid, ref_seq))

    def give_back(self, tid: str, ref_seq: int, amount: int, day: str) -> bool:
        account, merchant, parts, refunded = self.postings[(tid, ref_seq)]
        want = min(amount, sum(w for _, w in parts) - sum(refunded.values()))
        if self.payable[merchant] < want:
            return False
        for pocket, paid in reversed(parts):
            take = min(paid - refunded.get(pocket, 0), want)
            if take <= 0:
                continue
            if pocket:
                self.pockets[(account, pocket)] += take
            else:
                self.receivable[account] += take
            if pocket in ("youth", "welfare"):
                self.spent[pocket] -= take
            refunded[pocket] = refunded.get(pocket, 0) + take
            self.payable[merchant] -= take
            self.open_items[merchant].append(Item("refund", day, take, pocket or "receivable"))
            want -= take
            if not want:
                break
        return True

    def expire(self, day: str) -> None:
        """What an expiry run on ``day`` returns: a pocket holds one grant per programme
        here, so its unspent part is the pocket's balance, at most the grant."""
        for (account, programme), grant in sorted(self.grants.items()):
            amount, expires, done = grant
            if done is None and expires < day:
                back = min(amount, max(0, self.pockets[(account, programme)]))
                self.pockets[(account, programme)] -= back
                self.budgets[f"allowance:{programme}"] += back
                self.expired[programme] += back
                grant[2] = back

    def settle(self, day: str) -> None:
        out: dict[str, tuple[Any, ...]] = {}
        for m in sorted(self.open_items):
            take = [i for i in self.open_items[m] if i.kind == "refund" or i.day == day
                    or (i.day < day and i.day in self.runs)]
            if not take:
                continue
            gross = sum(i.amount for i in take if i.kind == "payment")
            refunds = sum(i.amount for i in take if i.kind == "refund")
            late = sum(i.amount for i in take if i.kind == "payment" and i.day < day)
            bp = 30 if self.shops[m].category.startswith("ksic:47") else 50
            fee = gross * bp // 10_000
            net = gross - refunds - fee
            by_pocket: dict[str, list[int]] = {}
            for i in take:
                by_pocket.setdefault(i.source, [0, 0])[i.kind == "refund"] += i.amount
            if net <= 0:
                status = "carried"
            elif m not in self.banked:
                status = "held"
            else:
                status = "pending"
                self.open_items[m] = [i for i in self.open_items[m] if i not in take]
                self.payable[m] -= gross - refunds
                self.fees += fee
                self.in_transit += net
            out[m] = (status, gross, refunds, fee, net, late, by_pocket)
        self.runs.add(day)
        self.settled[day] = out


# -- the month ---------------------------------------------------------------------------------


@dataclass
class Event:
    terminal: str
    wall: int
    kind: str
    n: int            # the citizen
    amount: int
    pays: Event | None = None
    entry: Any = None
    seq: int = 0


def plan(rng: random.Random, all_shops: list[Shop]) -> dict[tuple[str, dt.date], list[Event]]:
    """Each terminal's entries by day, in its clock's order: payments, and refunds of some."""
    by_day: dict[tuple[str, dt.date], list[Event]] = defaultdict(list)
    terminals = [(s, t) for s in all_shops for t in s.terminals]
    weights = [6 if s.large_mart else 3 if s.sells == "local_food" else 2 for s, _ in terminals]
    for d in DAYS:
        for _ in range(rng.randrange(90, 130)):
            _, tid = rng.choices(terminals, weights)[0]
            wall = noon(d, rng.randrange(8, 21), rng.randrange(60)) + rng.randrange(60_000)
            pay = Event(tid, wall, "payment", rng.randrange(LINKED),
                        rng.randrange(1, 60) * 500 + rng.choice([0, 10, 70, 330]))
            by_day[(tid, d)].append(pay)
            if rng.random() < 0.07:
                later = min(d + dt.timedelta(days=rng.choice([0, 0, 1, 3])), DAYS[-1])
                back_wall = max(wall + 60_000, noon(later, rng.randrange(8, 22)))
                whole = rng.random() < 0.5
                amount = pay.amount if whole else rng.randrange(1, pay.amount)
                by_day[(tid, later)].append(Event(tid, back_wall, "void" if whole else "refund",
                                                  pay.n, amount, pays=pay))
    return by_day


@pytest.fixture
def city(store_url: str) -> Iterator[Any]:  # noqa: F811
    service = open_service(store_url, followers=[IncentiveCrediter(), SpendingPoster()])
    yield service
    service.store.close()


def test_a_month_of_the_city(city: Any) -> None:
    rng = random.Random(SEED)
    svc, store = city, city.store
    all_shops = shops()
    model = Model({s.merchant_id: s for s in all_shops})
    registry = Registry(store)
    chains: dict[str, Chain] = {}
    for n, s in enumerate(all_shops, 1):
        bank: dict[str, Any] = {} if s.merchant_id == NO_BANK else {
            "bank_code": "011", "account_no": f"301-0000-{n:04d}-11",
            "account_holder": f"Owner {s.merchant_id}"}
        registry.add(Merchant(s.merchant_id, f"Shop {s.merchant_id}", brn(n), s.category,
                              region="ilsan-dong",
                              memberships=("large-mart",) if s.large_mart else (), **bank))
        if bank:
            model.banked.add(s.merchant_id)
        for tid in s.terminals:
            chains[tid] = chain(svc, tid)
            registry.assign_terminal(tid, s.merchant_id)
    load_rules(store, RULES)
    with store.tx() as tx:
        for n in range(LINKED):
            accounts.link(tx, acct(n), card(n))
    old_cards = {card(n): 20_000 for n in range(LINKED, LINKED + OLD)}
    svc.set_balances(old_cards)

    # -- August: the last week's rides earn points ---------------------------------------------
    bus = {f"BUS-{b}": chain(svc, f"BUS-{b}") for b in range(1, 4)}
    earned: dict[str, int] = defaultdict(int)
    for d in AUGUST_RIDES:
        rides: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for n in range(LINKED + OLD + LOOSE):
            for _ in range(rng.choice([0, 1, 1, 2])):   # a second ride a day earns nothing
                rides[f"BUS-{rng.randrange(1, 4)}"].append(
                    (noon(d, rng.randrange(6, 22), rng.randrange(60)) + n, card(n)))
        firsts = {c for taps in rides.values() for _, c in taps}
        for c in firsts:
            earned[c] = min(WEEK_CAP, earned[c] + FARE)
        for tid, taps in sorted(rides.items()):
            svc.ingest(tid, [bus[tid].tap(c, ms, fare=FARE) for ms, c in sorted(taps)])
            for _, c in taps:
                if c in old_cards:
                    old_cards[c] -= FARE    # the balance hook charges a known card's fares

    # -- 1 September: the programmes' money, August's payout --------------------------------
    sept1 = noon(DAYS[0], 0, 30)
    fund_points(store, 2_000_000, "2026-09", at_ms=sept1)
    model.budgets["points"] = 2_000_000
    paid = payout(store, "2026-08", sept1)
    for n in range(LINKED + OLD + LOOSE):
        c = card(n)
        if n < LINKED and earned[c]:
            model.pockets[(acct(n), "points")] += earned[c]
            model.budgets["points"] -= earned[c]
            model.points_paid["2026-08"] += earned[c]
        elif c in old_cards:
            old_cards[c] += earned[c]
    assert (paid.pocket_cards, paid.pocket_points) == (
        sum(1 for n in range(LINKED) if earned[card(n)]), model.points_paid["2026-08"])
    assert paid.held_points == sum(earned[card(n)] for n in range(LINKED + OLD, LINKED + OLD
                                                                   + LOOSE))
    fund_subsidy(store, TERMS.programme, 30_000_000, "sept", now_ms=sept1)
    model.budgets["subsidy"] = 30_000_000
    youth = sorted(rng.sample(range(LINKED), 100))
    welfare = sorted(rng.sample(range(LINKED), 80))
    for programme, people, amount, expires in (("youth", youth, 50_000, YOUTH_EXPIRES),
                                               ("welfare", welfare, 30_000, WELFARE_EXPIRES)):
        allowances.fund(store, programme, amount * len(people) + 1_000, "sept", at_ms=sept1)
        # recipients by card or by account, as a programme's file may name them
        lines = "".join(f"{card(n) if n % 2 else acct(n)}\n" for n in people)
        allowances.issue(store, programme, "recipient\n" + lines, amount, expires, "2026-09",
                         at_ms=sept1)
        model.budgets[f"allowance:{programme}"] = 1_000
        for n in people:
            model.pockets[(acct(n), programme)] += amount
            model.grants[(acct(n), programme)] = [amount, expires, None]
            model.issued[programme] += amount

    # -- the days ---------------------------------------------------------------------------------
    by_day = plan(rng, all_shops)
    late = {(tid, d) for (tid, d) in by_day if rng.random() < 0.06}
    waiting: list[tuple[str, dt.date, list[Event]]] = []
    ledger: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])  # (merchant, day)
    merchant_of = {t: s for s in all_shops for t in s.terminals}
    late_batches = refused = 0
    bought: dict[int, int] = defaultdict(int)

    def sync(tid: str, d: dt.date, events: list[Event]) -> None:
        """The terminal's batch of day ``d`` reaches central, then its own day totals."""
        svc.ingest(tid, [e.entry for e in events])
        totals: dict[str, tuple[int, int]] = {}
        for e in events:
            count, won = totals.get(e.kind, (0, 0))
            totals[e.kind] = (count + 1, won + e.amount)
            ledger[(merchant_of[tid].merchant_id, d.isoformat())][e.kind != "payment"] += \
                e.amount
            # the model posts in the log's order, as the follower does
            if e.kind == "payment":
                model.pay(tid, e.seq, acct(e.n), merchant_of[tid], e.amount, d.isoformat())
            else:
                assert e.pays is not None
                model.refund(tid, e.pays.seq, e.amount, d.isoformat())
        model.retry()
        svc.report_totals(tid, d.isoformat(), totals)

    for d in DAYS:
        day = d.isoformat()
        start = noon(d, 0, 5)
        got = allowances.expire(store, day, at_ms=start)
        before = sum(model.expired.values())
        model.expire(day)
        assert got.amount == sum(model.expired.values()) - before, day
        if d == BANK_FROM:
            registry.update(NO_BANK, bank_code="011", account_no="301-0000-9999-11",
                            account_holder="Owner CF05")
            model.banked.add(NO_BANK)
        # yesterday's late batches arrive, after yesterday was settled
        for tid, when, events in waiting:
            sync(tid, when, events)
            late_batches += 1
        waiting = []
        # top-ups: everyone on the 1st, some again later
        buyers = range(LINKED) if d == DAYS[0] else rng.sample(range(LINKED), 12)
        for n in buyers:
            face = rng.randrange(5, 31) * 10_000 + rng.choice([0, 5_000, 9_999])
            who = card(n) if n % 3 else acct(n)
            if bought[n] + face > TERMS.monthly_limit:
                with pytest.raises(MonthlyLimitError):
                    topup(store, TERMS, who, face, f"{day}-{n}", now_ms=noon(d, 7))
                refused += 1
                continue
            done = topup(store, TERMS, who, face, f"{day}-{n}", now_ms=noon(d, 7))
            bought[n] += face
            discount = face * 10 // 100
            assert (done.price, done.discount) == (face - discount, discount)
            model.pockets[(acct(n), "cash")] += face
            model.discounts += discount
            model.prices += face - discount
            model.budgets["subsidy"] -= discount
        # the terminals' entries of the day, signed in each ledger's order
        for (tid, when), events in sorted(by_day.items()):
            if when != d:
                continue
            events.sort(key=lambda e: e.wall)
            signer = chains[tid]
            for e in events:
                if e.kind == "payment":
                    e.entry = signer.pay(card(e.n), e.amount, e.wall, merchant_of[tid].sells)
                else:
                    assert e.pays is not None
                    e.entry = signer.refund(card(e.n), e.amount, e.pays.seq, e.wall,
                                            kind=e.kind)
                e.seq = signer.seq
            if (tid, when) in late:
                waiting.append((tid, when, events))
            else:
                sync(tid, when, events)
        run = settle(store, day, fee_rules=FEES, now_ms=noon(d + dt.timedelta(days=1), 1))
        model.settle(day)
        assert_day(store, model, day, run, ledger)
    # the last day's late batches go into the first run of October
    for tid, when, events in waiting:
        sync(tid, when, events)
        late_batches += 1
    oct1 = dt.date(YEAR, 10, 1)
    run = settle(store, oct1.isoformat(), fee_rules=FEES,
                 now_ms=noon(oct1 + dt.timedelta(days=1), 1))
    model.settle(oct1.isoformat())
    assert_day(store, model, oct1.isoformat(), run, ledger)
    assert late_batches > 20 and refused > 0
    # every day again, now that every batch is in: each day's books are its ledgers' sums
    for d in DAYS:
        seen = check.check(store, d.isoformat())
        assert_check(seen, model, d.isoformat(), ledger)
        for line in seen.lines:
            assert line.open == sum(i.amount for i in model.open_items[line.merchant_id]
                                    if i.kind == "payment" and i.day == d.isoformat())

    # -- September's points, paid on 1 October ------------------------------------------------
    sept_points = september_points(by_day)
    sept_run = payout(store, "2026-09", noon(oct1, 9))
    due = {n: p for n, p in sept_points.items() if p > 0}
    assert (sept_run.pocket_cards, sept_run.pocket_points) == (len(due), sum(due.values()))
    assert any(e.kind != "payment" for (tid, _), events in by_day.items()
               if tid.startswith("T-LF") for e in events), "no refund took points back"
    for n, p in due.items():
        model.pockets[(acct(n), "points")] += p
        model.budgets["points"] -= p

    # -- the month against the model ----------------------------------------------------------
    assert_pockets(store, model)
    assert_programmes(store, model, old_cards)
    # a settled payment is covered once: the runs' gross over the month is the ledgers' sum
    with store.tx(write=False) as tx:
        settled = {str(m): int(g) for m, g in tx.all(
            "SELECT merchant_id, SUM(gross) FROM settlements WHERE status = 'pending' "
            "GROUP BY merchant_id")}
    for s in all_shops:
        paid_in = sum(v[0] for (m, _), v in ledger.items() if m == s.merchant_id)
        still = sum(i.amount for i in model.open_items[s.merchant_id] if i.kind == "payment")
        assert settled.get(s.merchant_id, 0) + still == paid_in, s.merchant_id
    entries = [e for events in by_day.values() for e in events]
    payments = sum(e.kind == "payment" for e in entries)
    assert payments > 3_000 and len(entries) - payments > 150
    assert model.refunds_waited > 0


def september_points(by_day: dict[tuple[str, dt.date], list[Event]]) -> dict[int, int]:
    """Local-food points by citizen: 0.3 % of a payment, rounded down; a refund takes back
    what the payment no longer earns (one refund per payment here)."""
    points: dict[int, int] = defaultdict(int)
    for (tid, _), events in by_day.items():
        if not tid.startswith("T-LF"):
            continue
        for e in events:
            if e.kind == "payment":
                points[e.n] += e.amount * 3 // 1000
            else:
                assert e.pays is not None
                p = e.pays.amount
                points[e.n] += (p - e.amount) * 3 // 1000 - p * 3 // 1000
    return points


def assert_day(store: Any, model: Model, day: str, run: Any,
               ledger: dict[tuple[str, str], list[int]]) -> None:
    proof = books.check(store)
    assert proof.balanced, (day, proof.disagreements, proof.unbalanced)
    got = {s.merchant_id: s for s in run.settlements}
    want = model.settled[day]
    assert sorted(got) == sorted(want), day
    for m, (status, gross, refunds, fee, net, late_gross, by_pocket) in want.items():
        s = got[m]
        assert (s.status, s.gross, s.refunds, s.fees, s.net, s.late_gross) == (
            status, gross, refunds, fee, net, late_gross), (day, m)
        assert {p: [v["gross"], v["refunds"]] for p, v in s.by_pocket.items()} == by_pocket, \
            (day, m)
    # the day's settlement check: the books' payments of the day are what the terminals'
    # ledgers hold, and what settlements covered (on time or late) plus what is open
    seen = check.check(store, day)
    assert_check(seen, model, day, ledger)
    for (m, d), (gross, _) in ledger.items():
        if d == day and gross:
            assert any(x.merchant_id == m for x in seen.lines), (day, m)


def assert_check(seen: Any, model: Model, day: str,
                 ledger: dict[tuple[str, str], list[int]]) -> None:
    """The day's check clean but for the refunds still waiting for their payable: there the
    terminals reported more refunds than the books hold, by exactly those refunds."""
    unposted = model.unposted(day)
    assert {x.merchant_id for x in seen.problems} == set(unposted), (
        day, [x.as_dict() for x in seen.problems])
    for line in seen.lines:
        gross, refunds = ledger.get((line.merchant_id, day), [0, 0])
        assert (line.books_gross, line.books_refunds) == (
            gross, refunds - unposted.get(line.merchant_id, 0)), (day, line)
        assert line.on_time + line.late + line.open == gross


def balance(tx: Any, account_id: str) -> int:
    found = books.find_account(tx, account_id)
    return 0 if found is None else found.balance


def assert_pockets(store: Any, model: Model) -> None:
    with store.tx(write=False) as tx:
        rows = tx.all("SELECT account_id, credits_posted - debits_posted FROM book_accounts "
                      "WHERE account_id LIKE 'pocket:%' OR account_id LIKE 'receivable:%'")
        got = {str(a): int(b) for a, b in rows}
        payables = {str(a): int(b) for a, b in tx.all(
            "SELECT account_id, credits_posted - debits_posted FROM book_accounts "
            "WHERE account_id LIKE 'merchant:%'")}
        fees, transit = balance(tx, books.OPERATOR_FEES), balance(tx,
                                                                  books.SETTLEMENT_IN_TRANSIT)
    want = {f"pocket:{a}:{p}": won for (a, p), won in model.pockets.items()}
    want.update({f"receivable:{a}": won for a, won in model.receivable.items()})
    assert {k: v for k, v in got.items() if v} == {k: v for k, v in want.items() if v}
    assert {k: v for k, v in payables.items() if v} == {
        f"merchant:{m}:payable": v for m, v in model.payable.items() if v}
    assert (fees, transit) == (model.fees, model.in_transit)
    assert any(m.startswith("receivable:") and v for m, v in got.items()), \
        "the month should have had an offline overdraft"


def assert_programmes(store: Any, model: Model, old_cards: dict[str, int]) -> None:
    with store.tx(write=False) as tx:
        budgets = {
            "points": balance(tx, books.programme_points("incentives")),
            "subsidy": balance(tx, books.programme_subsidy(TERMS.programme)),
            "allowance:youth": balance(tx, books.allowance("youth")),
            "allowance:welfare": balance(tx, books.allowance("welfare"))}
        topups = tx.all("SELECT code, SUM(amount) FROM book_transfers WHERE code IN "
                        "('topup', 'subsidy') GROUP BY code")
        balances = {str(t): int(b) for t, b in tx.all("SELECT card_token, balance FROM balances")}
    assert budgets == dict(model.budgets)
    assert {str(c): int(a) for c, a in topups} == {"topup": model.prices,
                                                   "subsidy": model.discounts}
    assert balances == old_cards
    report = {r.programme: r for r in allowances.report(
        store, month="2026-09", now_ms=noon(dt.date(YEAR, 10, 1)))}
    for programme in ("youth", "welfare"):
        r = report[programme]
        assert (r.issued, r.spent, r.expired) == (
            model.issued[programme], model.spent[programme], model.expired[programme])
        assert r.outstanding == sum(won for (_, p), won in model.pockets.items()
                                    if p == programme)
    assert model.expired["welfare"] > 0 and model.spent["youth"] > 0



# -- what the month found ------------------------------------------------------------------------


def _one_shop_two_citizens(svc: Any, store: Any) -> Any:
    """Shop LF01 with its till T-LF01, and citizens A and B with 50,000 cash each."""
    till = shop_lf01(svc)
    with store.tx() as tx:
        books.transfer(tx, [books.Transfer(books.BANK_OUTSIDE, f"pocket:{a}:cash", 50_000,
                                           "topup", f"top-{a}") for a in ("A", "B")])
    return till


def test_a_refund_after_its_payment_was_settled_waits_for_the_payable(city: Any) -> None:
    """A refund given the day after its payment was settled, when the merchant's payable
    holds less than the refund (the month met it in 28 of 214 refunds, each refused by the
    books and flagged, the citizen's money never coming back): it waits, and is posted with
    its own business day as soon as the payable holds it; the settlement nets it."""
    svc, store = city, city.store
    till = _one_shop_two_citizens(svc, store)
    d1, d2, d3 = (dt.date(YEAR, SEPT, n) for n in (1, 2, 3))

    def cash(account: str) -> int:
        with store.tx(write=False) as tx:
            return books.balance(tx, f"pocket:{account}:cash")

    svc.ingest("T-LF01", [till.pay("card-a", 20_000, noon(d1, 10), "general")])
    svc.report_totals("T-LF01", d1.isoformat(), {"payment": (1, 20_000)})
    first = settle(store, d1.isoformat(), fee_rules=FEES, now_ms=noon(d2, 1))
    assert [(s.gross, s.fees, s.net) for s in first.settlements] == [(20_000, 60, 19_940)]
    # the next day A brings it back: the payable holds nothing now
    svc.ingest("T-LF01", [till.refund("card-a", 20_000, 1, noon(d2, 9), kind="void")])
    assert cash("A") == 30_000
    # B pays: the payable holds 25,000, and A's refund is posted
    svc.ingest("T-LF01", [till.pay("card-b", 25_000, noon(d2, 11), "general")])
    svc.report_totals("T-LF01", d2.isoformat(), {"void": (1, 20_000), "payment": (1, 25_000)})
    assert cash("A") == 50_000 and cash("B") == 25_000
    with store.tx(write=False) as tx:
        assert books.balance(tx, books.merchant_payable("LF01")) == 25_000 - 20_000
        assert tx.all("SELECT reason FROM pocket_flags") == []
    second = settle(store, d2.isoformat(), fee_rules=FEES, now_ms=noon(d3, 1))
    fee = 25_000 * 30 // 10_000
    assert [(s.gross, s.refunds, s.fees, s.net) for s in second.settlements] == [
        (25_000, 20_000, fee, 25_000 - 20_000 - fee)]
    for d in (d1, d2):
        assert check.check(store, d.isoformat()).clean
    assert books.check(store).balanced


def test_waiting_refunds_keep_their_order_and_post_once(city: Any) -> None:
    svc, store = city, city.store
    till = _one_shop_two_citizens(svc, store)
    d1, d2 = dt.date(YEAR, SEPT, 1), dt.date(YEAR, SEPT, 2)

    def cash(account: str) -> int:
        with store.tx(write=False) as tx:
            return books.balance(tx, f"pocket:{account}:cash")

    def waiting() -> list[tuple[Any, ...]]:
        with store.tx(write=False) as tx:
            return [tuple(r) for r in tx.all("SELECT seq, ref_seq FROM pocket_waiting_refunds "
                                             "ORDER BY seq")]

    svc.ingest("T-LF01", [till.pay("card-a", 20_000, noon(d1, 10), "general")])
    settle(store, d1.isoformat(), fee_rules=FEES, now_ms=noon(d2, 1))
    # two refunds of the one payment; the second would fit in 2,000 won but waits behind
    svc.ingest("T-LF01", [till.refund("card-a", 9_000, 1, noon(d2, 9)),
                          till.refund("card-a", 1_000, 1, noon(d2, 9, 5)),
                          till.pay("card-b", 2_000, noon(d2, 10), "general")])
    assert cash("A") == 30_000 and waiting() == [(2, 1), (3, 1)]
    # the poster run again from the log's start posts nothing twice, waits nothing twice
    with store.tx() as tx:
        tx.run("UPDATE spending_cursor SET next_index = 0")
    post_log(store)
    assert cash("A") == 30_000 and waiting() == [(2, 1), (3, 1)]
    svc.ingest("T-LF01", [till.pay("card-b", 8_000, noon(d2, 11), "general")])
    assert cash("A") == 30_000 + 9_000 + 1_000 and waiting() == []
    assert cash("B") == 50_000 - 2_000 - 8_000
    with store.tx(write=False) as tx:
        assert books.balance(tx, books.merchant_payable("LF01")) == 2_000 + 8_000 - 10_000
        assert tx.one("SELECT COUNT(*) FROM book_transfers WHERE code = 'refund'") == (2,)
    assert books.check(store).balanced
