"""Money that stays right over months: payouts in any order pay every point exactly once,
held points are paid once the card has an account, and nothing a terminal sends can block a
payout. Real ingest and crediting, on SQLite and a real PostgreSQL.

Every figure of points is compared with one computed in the test from the fares and rates
written here, not read back from the service.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from central.payouts import payout, statement
from central.service import CentralLog
from tests.incentives_data import chain, open_service, seoul_ms
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401

X, Y, Z = "7" * 32, "8" * 32, "9" * 32
FOOD_RATE_BP = 30  # the shipped rules: 0.3 % of a local-food payment


@pytest.fixture
def svc(store_url: str) -> Iterator[CentralLog]:  # noqa: F811
    log = open_service(store_url)
    yield log
    log.store.close()


def balance(svc: CentralLog, token: str) -> int:
    with svc.store.tx(write=False) as tx:
        row = tx.one("SELECT balance FROM balances WHERE card_token = ?", (token,))
    return int(row[0]) if row else 0


def after(year: int, month: int) -> int:
    """A moment just after ``month`` ended in Seoul."""
    return seoul_ms(year + month // 12, month % 12 + 1, 1, 0, 5)


def test_held_card_is_paid_once_whatever_order_months_are_paid_in(svc: CentralLog) -> None:
    """Reproduced on the old code: held in September, November paid before October, an
    account opened, then October and December paid: 'earned 1,450; paid 2,900'."""
    bus = chain(svc, "BUS-1")
    fare = 1450
    svc.ingest("BUS-1", [bus.tap(X, seoul_ms(2025, 9, 2, 8), fare=fare)])   # a Tuesday
    earned = fare                                  # first ride of a weekday: its fare back
    assert statement(svc.store, X)["earned"] == earned
    sep = payout(svc.store, "2025-09", after(2025, 9))
    assert (sep.cards, sep.held_cards, sep.held_points) == (0, 1, earned)
    nov = payout(svc.store, "2025-11", after(2025, 11))
    assert (nov.cards, nov.held_cards, nov.held_points) == (0, 1, earned)
    svc.set_balances({X: 0})                       # the card gets a balance account
    octo = payout(svc.store, "2025-10", after(2025, 10))
    assert (octo.cards, octo.points, octo.held_cards) == (1, earned, 0)
    dec = payout(svc.store, "2025-12", after(2025, 12))
    assert (dec.cards, dec.points, dec.held_cards) == (0, 0, 0)
    st = statement(svc.store, X)
    assert (st["earned"], st["paid"], st["pending"]) == (earned, earned, 0)
    assert balance(svc, X) == earned
    assert [(p["month"], p["status"], p["paid"]) for p in st["payouts"]] == [
        ("2025-09", "held", 0), ("2025-10", "paid", earned), ("2025-11", "held", 0)]
    assert [e["paid_in"] for e in st["entries"]] == ["2025-10"]


def test_months_paid_in_any_order_pay_every_point_once(svc: CentralLog) -> None:
    bus, till = chain(svc, "BUS-1"), chain(svc, "TILL-1")
    svc.set_balances({X: 0, Y: 0, Z: 0})
    pay = till.pay(Y, 100_000, seoul_ms(2025, 5, 14, 12))
    svc.ingest("BUS-1", [bus.tap(X, seoul_ms(2025, 4, 8, 8)),            # April, Tuesday
                         bus.tap(X, seoul_ms(2025, 5, 13, 8), fare=1200),  # May, Tuesday
                         bus.tap(Z, seoul_ms(2025, 6, 10, 8))])            # June, Tuesday
    svc.ingest("TILL-1", [pay, till.refund(Y, 40_000, pay.seq, seoul_ms(2025, 6, 2, 12))])
    food = 100_000 * FOOD_RATE_BP // 10_000                     # 300 in May
    back = (100_000 - 40_000) * FOOD_RATE_BP // 10_000 - food   # -120 in June
    want = {X: {"2025-04": 1500, "2025-05": 1200}, Y: {"2025-05": food, "2025-06": back},
            Z: {"2025-06": 1500}}
    # what each card spent from its balance (taps and payments, less the refund)
    spent = {X: 1500 + 1200, Y: 100_000 - 40_000, Z: 1500}
    # June first, then April, May twice, June again.
    jun = payout(svc.store, "2025-06", after(2025, 6))
    # Y's June net is negative: carried, not paid; Z is paid.
    assert (jun.cards, jun.points) == (1, 1500)
    apr = payout(svc.store, "2025-04", after(2025, 6))
    assert (apr.cards, apr.points) == (1, 1500)
    may = payout(svc.store, "2025-05", after(2025, 6))
    # May pays X's May, and Y's May with June's carried refund netted against it.
    assert (may.cards, may.points) == (2, 1200 + food + back)
    assert payout(svc.store, "2025-05", after(2025, 6)).already
    assert payout(svc.store, "2025-06", after(2025, 6)).already
    for token, months in want.items():
        earned = sum(months.values())
        st = statement(svc.store, token)
        assert st["earned"] == earned and st["paid"] == earned and st["pending"] == 0, token
        assert balance(svc, token) == earned - spent[token], token


# -- a wrong clock ------------------------------------------------------------------------------


def test_an_epoch_clock_is_accepted_flagged_and_blocks_no_payout(svc: CentralLog) -> None:
    """Reproduced on the old code: entries stamped 1970-01-01 were credited to 1970 and
    every later payout refused with 'pay out 1970-01 before 2026-09'."""
    from central.reconcile import report

    bus = chain(svc, "BUS-1")
    monday, tuesday = seoul_ms(2026, 9, 7, 8), seoul_ms(2026, 9, 8, 8)
    svc.ingest("BUS-1", [bus.tap(Z, monday)])
    # power cut overnight, no network at boot: the clock reads the epoch; NTP comes back
    booted = bus.tap(X, 5_000)
    svc.ingest("BUS-1", [booted, bus.tap(Y, tuesday)])
    st = statement(svc.store, X)
    # X's ride is placed at the latest time it can have happened: Y's ride after it
    assert [(e["day"], e["points"]) for e in st["entries"]] == [("2026-09-08", 1500)]
    rep = report(svc, "2026-09-08")
    [flag] = rep.flags
    assert (flag["rule"], flag["card_token"], flag["seq"]) == ("clock", X, booted.seq)
    assert "before the programme" in flag["detail"] and not rep.clean
    svc.set_balances({X: 0, Y: 0, Z: 0})
    sep = payout(svc.store, "2026-09", after(2026, 9))
    # three first rides of a weekday, each its fare back, onto accounts opened at 0 after
    # the rides
    assert (sep.cards, sep.points) == (3, 1500 * 3)
    for token in (X, Y, Z):
        assert balance(svc, token) == 0 + 1500


def test_a_clock_ahead_or_behind_is_bounded_by_arrival_and_neighbours(svc: CentralLog) -> None:
    import time as _time

    bus = chain(svc, "BUS-1")
    now = int(_time.time() * 1000)
    svc.ingest("BUS-1", [bus.tap(X, now - 3 * 86_400_000)])
    # an hour fast, then three days behind the previous entry: both flagged, both placed
    # no later than the batch's arrival and not before the previous entry
    fast, behind = bus.tap(Y, now + 3_600_000), bus.tap(Z, now - 5 * 86_400_000)
    svc.ingest("BUS-1", [fast, behind])
    with svc.store.tx(write=False) as tx:
        rows = {int(s): (int(w), int(e)) for s, w, e in tx.all(
            "SELECT seq, wall_ms, effective_ms FROM entries WHERE terminal_id = 'BUS-1'")}
        flags = {int(s): str(d) for s, d in tx.all(
            "SELECT seq, detail FROM flags WHERE rule = 'clock'")}
    done = int(_time.time() * 1000)
    assert rows[1] == (now - 3 * 86_400_000,) * 2           # plausible: taken as stated
    assert now <= rows[fast.seq][1] <= done                  # at arrival, not an hour ahead
    assert rows[fast.seq][1] <= rows[behind.seq][1] <= done  # never before its predecessor
    assert "after its batch arrived" in flags[fast.seq]
    assert "behind the terminal's previous entry" in flags[behind.seq]


def test_a_batch_cannot_go_back_in_time_against_the_last_accepted_one(svc: CentralLog) -> None:
    """Reproduced on the old code: the monotonic stamp was checked only inside a batch."""
    from localpay.errors import ChainMismatchError

    bus = chain(svc, "BUS-1")
    svc.ingest("BUS-1", [bus.tap(X, seoul_ms(2026, 9, 7, 8))])
    bus.mono = 0          # a terminal whose stamp restarted: the chain's order is broken
    back = bus.tap(Y, seoul_ms(2026, 9, 1, 8))
    with pytest.raises(ChainMismatchError, match="monotonic stamp"):
        svc.ingest("BUS-1", [back])
    assert statement(svc.store, Y)["entries"] == []


# -- rules versions in time ---------------------------------------------------------------------


def _version(n: int, effective: str, *, rate_bp: int = FOOD_RATE_BP, adult_cap: int = 2900,
             ) -> str:
    from central.incentive_rules import default_rules_text

    text = default_rules_text().replace("version = 1", f"version = {n}").replace(
        "effective_from = 2025-01-01", f"effective_from = {effective}")
    return text.replace("rate_bp = 30", f"rate_bp = {rate_bp}").replace(
        "adult = 2900", f"adult = {adult_cap}")


def test_a_new_version_applies_from_its_effective_date_not_back(svc: CentralLog) -> None:
    """Reproduced on the old code: a version loaded today credited last month's entries,
    arriving late, at the new rate the till had not shown."""
    from central.versions import load_rules

    till = chain(svc, "TILL-1")
    svc.ingest("TILL-1", [till.pay(X, 100_000, seoul_ms(2025, 5, 10, 12))])
    load_rules(svc.store, _version(2, "2025-06-01", rate_bp=100),
               now_ms=seoul_ms(2025, 5, 20, 9))
    late = chain(svc, "TILL-2")                # a May payment that syncs in June
    svc.ingest("TILL-2", [late.pay(Y, 100_000, seoul_ms(2025, 5, 30, 12)),
                          late.pay(Y, 100_000, seoul_ms(2025, 6, 2, 12))])
    old, new = 100_000 * FOOD_RATE_BP // 10_000, 100_000 * 100 // 10_000
    assert [(e["day"], e["points"], e["rule_version"])
            for e in statement(svc.store, Y)["entries"]] == [
        ("2025-05-30", old, 1), ("2025-06-02", new, 2)]
    assert [e["points"] for e in statement(svc.store, X)["entries"]] == [old]


def test_a_version_starting_in_the_past_needs_recredit_and_spares_paid_months(
        svc: CentralLog) -> None:
    from central.versions import load_rules
    from localpay.errors import ConfigError

    till, bus = chain(svc, "TILL-1"), chain(svc, "BUS-1")
    svc.set_balances({X: 10**6, Y: 10**6})
    svc.ingest("TILL-1", [till.pay(X, 100_000, seoul_ms(2025, 4, 10, 12)),
                          till.pay(X, 100_000, seoul_ms(2025, 5, 12, 12))])
    # Monday to Friday of one week: 1,500 + 1,400 reach the 2,900 cap
    svc.ingest("BUS-1", [bus.tap(Y, seoul_ms(2025, 5, 12 + d, 8)) for d in range(5)])
    assert payout(svc.store, "2025-04", after(2025, 4)).points == 300
    v2 = _version(2, "2025-04-01", rate_bp=100, adult_cap=5000)
    with pytest.raises(ConfigError, match="--recredit"):
        load_rules(svc.store, v2, now_ms=seoul_ms(2025, 5, 20, 9))
    assert [e["points"] for e in statement(svc.store, X)["entries"]] == [300, 300]
    load_rules(svc.store, v2, recredit=True, now_ms=seoul_ms(2025, 5, 20, 9))
    # April is paid: untouched. May's payment: 1 % now, the difference as an adjustment.
    x = statement(svc.store, X)["entries"]
    assert [(e["day"], e["points"], e["adjustment"]) for e in x] == [
        ("2025-04-10", 300, None), ("2025-05-12", 300, None),
        ("2025-05-12", 1000 - 300, "rules v2")]
    assert x[2]["note"]["was"] == 300 and x[2]["note"]["now"] == 1000
    # The week under a 5,000 cap: 1,500 a day until 500 is left on Thursday.
    want = [1500, 1500, 1500, 5000 - 3 * 1500, 0]
    by_day: dict[str, int] = {}
    for e in statement(svc.store, Y)["entries"]:
        by_day[e["day"]] = by_day.get(e["day"], 0) + e["points"]
    assert [by_day.get(f"2025-05-{12 + d}", 0) for d in range(5)] == want
    assert statement(svc.store, Y)["weeks"][0]["points"] == sum(want)
    # Loading it again changes nothing; May's payout pays what the new version says.
    assert load_rules(svc.store, v2, recredit=True, now_ms=seoul_ms(2025, 5, 21, 9))[1] is False
    may = payout(svc.store, "2025-05", after(2025, 5))
    assert may.points == 1000 + sum(want)
    for token, earned in ((X, 300 + 1000), (Y, sum(want))):
        st = statement(svc.store, token)
        assert st["earned"] == earned and st["paid"] == earned, token


# -- the city's books ---------------------------------------------------------------------------


def test_settlement_file_and_budget(svc: CentralLog, tmp_path: pytest.TempPathFactory) -> None:
    import csv
    from pathlib import Path

    from central.payouts import budget, settlement_rows, write_settlement
    from central.profiles import set_profiles

    bus, till = chain(svc, "BUS-1"), chain(svc, "TILL-1")
    set_profiles(svc.store, {Y: "youth"})
    svc.set_balances({X: 10**6, Y: 10**6})
    pay = till.pay(X, 50_000, seoul_ms(2025, 7, 1, 12))
    svc.ingest("TILL-1", [pay, till.refund(X, 10_000, pay.seq, seoul_ms(2025, 7, 2, 12))])
    svc.ingest("BUS-1", [bus.tap(X, seoul_ms(2025, 7, 8, 8)),
                         bus.tap(Y, seoul_ms(2025, 7, 8, 9), fare=900),
                         bus.tap(Z, seoul_ms(2025, 7, 9, 8)),         # Z has no account
                         bus.tap(X, seoul_ms(2025, 8, 5, 8))])        # August: not yet paid
    food = 50_000 * FOOD_RATE_BP // 10_000                   # 150
    back = (50_000 - 10_000) * FOOD_RATE_BP // 10_000 - food  # -30
    jul = payout(svc.store, "2025-07", after(2025, 7))
    assert (jul.cards, jul.points, jul.held_points) == (2, 1500 + food + back + 900, 1500)
    path = Path(str(tmp_path)) / "points-2025-07.csv"
    assert write_settlement(svc.store, "2025-07", path) == 2
    with open(path, newline="") as f:
        got = list(csv.reader(f))
    assert got[0] == ["card_token", "category", "month", "bus", "local_food", "refund",
                      "campaign", "total"]
    assert got[1:] == [[X, "", "2025-07", "1500", str(food), str(back), "0",
                        str(1500 + food + back)],
                       [Y, "youth", "2025-07", "900", "0", "0", "0", "900"]]
    assert path.stat().st_mode & 0o777 == 0o600
    assert settlement_rows(svc.store, "2025-07") == settlement_rows(svc.store, "2025-07")
    b = budget(svc.store, 2025)
    # spent: July's payout; committed: Z's held July ride and X's August ride
    assert (b.spent, b.committed) == (1500 + food + back + 900, 1500 + 1500)
    assert b.budget == 2_000_000_000 and b.left == b.budget - b.spent - b.committed


def test_no_month_before_the_programme_is_paid(svc: CentralLog) -> None:
    from localpay.errors import TransactionError

    with pytest.raises(TransactionError, match="before the programme started"):
        payout(svc.store, "2024-12", after(2025, 1))


def test_date_options_take_only_real_dates(tmp_path: pytest.TempPathFactory) -> None:
    from click.testing import CliRunner

    from localpay.cli import cli

    store = ["--db", f"sqlite:///{tmp_path}/c.sqlite", "--data", f"{tmp_path}/data"]
    assert CliRunner().invoke(cli, ["central", "init", *store]).exit_code == 0
    for bad in ("2025-02-30", "20250301", "2025-W10-1", "25-03-01", ""):
        out = CliRunner().invoke(cli, ["central", "report", "--date", bad, *store])
        assert out.exit_code == 2 and "YYYY-MM-DD" in out.output, (bad, out.output)
    for bad in ("2025-13", "2025-1", "202501"):
        out = CliRunner().invoke(cli, ["central", "payout", "--month", bad, *store])
        assert out.exit_code != 0 and "YYYY-MM" in out.output, (bad, out.output)


def test_a_time_before_the_programme_started_is_flagged_not_credited_to_it(
        store_url: str) -> None:  # noqa: F811
    """A clock a year behind (after 2020, before the programme's 2025-01-01 start) would
    have been credited to a month that can never be paid."""
    from central.incentives import programme_start_ms

    svc = open_service(store_url, programme_start=programme_start_ms)
    try:
        bus = chain(svc, "BUS-1")
        # a new validator's first boot, with a saved clock a year old and no network
        stale = bus.tap(X, seoul_ms(2024, 9, 2, 8))
        svc.ingest("BUS-1", [stale, bus.tap(Y, seoul_ms(2025, 9, 2, 9))])
        other = chain(svc, "BUS-2")
        svc.ingest("BUS-2", [other.tap(Z, seoul_ms(2025, 9, 1, 8))])
        assert [(e["day"], e["points"]) for e in statement(svc.store, X)["entries"]] == [
            ("2025-09-02", 1500)]
        with svc.store.tx(write=False) as tx:
            [(detail,)] = tx.all("SELECT detail FROM flags WHERE rule = 'clock'")
        assert "before the programme started" in str(detail)
        svc.set_balances({X: 0, Y: 0, Z: 0})
        assert payout(svc.store, "2025-09", after(2025, 9)).points == 3 * 1500
    finally:
        svc.store.close()


# -- crediting at its edges ---------------------------------------------------------------------


def test_a_late_credit_after_two_paid_months_is_paid_once_by_the_next_run(
        svc: CentralLog) -> None:
    bus = chain(svc, "BUS-1")
    svc.set_balances({X: 0, Y: 0})
    svc.ingest("BUS-1", [bus.tap(Y, seoul_ms(2025, 5, 6, 8))])
    payout(svc.store, "2025-05", after(2025, 5))
    payout(svc.store, "2025-06", after(2025, 6))
    late = chain(svc, "BUS-2")                   # a May ride that syncs in July
    svc.ingest("BUS-2", [late.tap(X, seoul_ms(2025, 5, 7, 8), fare=1200)])
    [entry] = statement(svc.store, X)["entries"]
    assert entry["payable_month"] == "2025-07"   # past both paid months
    jul = payout(svc.store, "2025-07", after(2025, 7))
    assert (jul.cards, jul.points) == (1, 1200)
    assert payout(svc.store, "2025-08", after(2025, 8)).points == 0
    assert statement(svc.store, X)["paid"] == 1200


def test_a_second_crediter_between_chunks_cannot_lift_a_week_over_its_cap(
        store_url: str) -> None:  # noqa: F811
    """Crediting keeps cards' weeks between its chunks; when another crediter moved the
    cursor in between, they are read again (else Mon 1,500 + Tue 1,400 + Thu 1,400: 4,300
    through a 2,900 cap)."""
    from central.incentives import credit_log

    svc = open_service(store_url, followers=[])      # crediting only by hand
    try:
        bus = chain(svc, "BUS-1")
        svc.ingest("BUS-1", [bus.tap(X, seoul_ms(2025, 3, 10, 8)),     # Mon
                             bus.tap(X, seoul_ms(2025, 3, 11, 8))])    # Tue
        interleaved = []

        def between(done: int, size: int) -> None:
            if interleaved:
                return
            interleaved.append(done)
            svc.ingest("BUS-1", [bus.tap(X, seoul_ms(2025, 3, 12, 8))])    # Wed
            credit_log(svc.store, chunk=10)       # another worker credits Tue and Wed
            svc.ingest("BUS-1", [bus.tap(X, seoul_ms(2025, 3, 13, 8))])    # Thu

        credit_log(svc.store, chunk=1, progress=between)
        credit_log(svc.store)
        assert interleaved == [1]
        st = statement(svc.store, X)
        assert [e["points"] for e in st["entries"]] == [1500, 2900 - 1500]
        assert st["earned"] == 2900 and st["weeks"][0]["points"] == 2900
    finally:
        svc.store.close()


def test_a_refund_larger_than_its_payment_takes_back_no_more_than_it_earned(
        svc: CentralLog) -> None:
    till = chain(svc, "TILL-1")
    pay = till.pay(X, 10_000, seoul_ms(2025, 4, 1, 12))
    svc.ingest("TILL-1", [pay, till.refund(X, 15_000, pay.seq, seoul_ms(2025, 4, 2, 12))])
    earned = 10_000 * FOOD_RATE_BP // 10_000
    assert [e["points"] for e in statement(svc.store, X)["entries"]] == [earned, -earned]
    assert statement(svc.store, X)["earned"] == 0


def test_a_settlement_file_that_cannot_be_written_is_one_error(svc: CentralLog,
                                                              tmp_path: pytest.TempPathFactory
                                                              ) -> None:
    from pathlib import Path

    from central.payouts import write_settlement
    from localpay.errors import ConfigError

    payout(svc.store, "2025-07", after(2025, 7))
    blocker = Path(str(tmp_path)) / "not-a-folder"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(ConfigError, match="run it again to write the file"):
        write_settlement(svc.store, "2025-07", blocker / "points-2025-07.csv")
    assert payout(svc.store, "2025-07", after(2025, 7)).already
