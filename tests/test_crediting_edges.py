"""Edges of incentive crediting that the broader tests pass over: the exact day and cap
boundaries of bus first rides, what one crediting run still does after an entry it skips,
refunds within one batch, the text credits and weeks are stored as, the rules' cache and
the points snapshot terminals fetch. Each figure is recomputed here from the shipped rules
(adult cap 2,900 a week, local food 30 basis points), not read back from the code."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import incentives
from central.incentive_rules import Rules, default_rules_text
from central.incentives import (
    CreditEntry,
    IncentiveCrediter,
    active_rules,
    credit,
    credit_log,
    detail_of,
    epoch_ms,
    lock_crediting,
    points_delta,
    programme_start_ms,
    rules_versions,
)
from central.payouts import payout, settlement_rows, statement
from central.service import CentralLog
from central.versions import load_rules
from localpay.errors import ConfigError, TransactionError
from terminal.qr import campaign
from tests.incentives_data import chain, open_service, seoul_ms, tap_detail
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401
from tests.test_incentives_central import _campaign_rules

A, B, C = "a" * 32, "b" * 32, "c" * 32
CAP = 2900          # the shipped adult weekly cap
RATE_BP = 30        # the shipped local-food rate


@pytest.fixture
def svc(store_url: str) -> Iterator[CentralLog]:  # noqa: F811
    log = open_service(store_url)
    yield log
    log.store.close()


@pytest.fixture
def quiet(store_url: str) -> Iterator[CentralLog]:  # noqa: F811
    """A service that credits only when the test says so."""
    log = open_service(store_url, followers=[])
    yield log
    log.store.close()


def points(svc: CentralLog, token: str) -> list[int]:
    return [int(e["points"]) for e in statement(svc.store, token)["entries"]]


def entry(log_index: int, seq: int, kind: str, token: str, amount: int, when: int,
          detail: str = "{}", *, tid: str = "T-1", ref_seq: int = 0,
          place: str = "85") -> CreditEntry:
    return CreditEntry(log_index, tid, seq, kind, token, amount, ref_seq, place, when, detail)


def run(svc: CentralLog, batch: list[CreditEntry], rules: Rules | list[Rules] | None = None,
        now_ms: int = 0) -> incentives.CreditResult:
    with svc.store.tx() as tx:
        lock_crediting(tx)
        return credit(tx, batch, Rules.default() if rules is None else rules, now_ms)


def rules_with(changes: dict[str, str]) -> Rules:
    """The shipped rules with each line ``old`` changed to ``new``."""
    text = default_rules_text()
    for old, new in changes.items():
        assert old in text
        text = text.replace(old, new, 1)
    return Rules.from_toml(text)


def future_version(version: int) -> str:
    """The shipped rules as ``version``, taking effect in a month of 2030 of that number."""
    return default_rules_text().replace("version = 1", f"version = {version}").replace(
        "effective_from = 2025-01-01", f"effective_from = 2030-{version:02d}-01")


def column(svc: CentralLog, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    with svc.store.tx(write=False) as tx:
        return [r[0] for r in tx.all(sql, params)]


# -- small pieces -------------------------------------------------------------------------


def test_credit_times_are_unix_milliseconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(incentives.time, "time", lambda: 1_741_564_800.25)
    assert epoch_ms() == 1_741_564_800_250


def test_a_detail_that_is_not_a_json_object_reads_as_empty() -> None:
    assert detail_of("[1, 2]") == {} and detail_of("7") == {} and detail_of("{") == {}
    assert detail_of('{"rider": "youth"}') == {"rider": "youth"}


def test_stored_rules_are_parsed_once_and_read_as_stored_versions() -> None:
    text = default_rules_text()
    # A version stored before the [programme] section existed is read, not refused
    # (a file being loaded today must have it).
    old = text[:text.index("[programme]")] + text[text.index("[bus]"):]
    with pytest.raises(ConfigError):
        Rules.from_toml(old)
    first = incentives._parsed("sha-of-old", old)
    assert first.version == 1
    assert incentives._parsed("sha-of-old", old) is first
    # A broken stored body is named as the stored rules in the error the operator reads.
    with pytest.raises(ConfigError, match=r"^stored incentive rules: not valid TOML"):
        incentives._parsed("sha-of-broken", "version = ")


def test_the_newest_version_is_in_force_whatever_the_cache_holds(svc: CentralLog) -> None:
    load_rules(svc.store, future_version(2))
    incentives._PARSED.clear()
    with svc.store.tx() as tx:
        assert active_rules(tx).version == 2
    load_rules(svc.store, future_version(3))
    with svc.store.tx(write=False) as tx:
        sha3 = str(tx.one("SELECT sha256 FROM incentive_rules WHERE version = 3")[0])  # type: ignore[index]
    incentives._PARSED.pop(sha3, None)
    with svc.store.tx() as tx:
        assert active_rules(tx).version == 3
    incentives._PARSED.clear()
    with svc.store.tx() as tx:
        assert active_rules(tx).version == 3


def test_the_programme_start_follows_a_new_version(svc: CentralLog) -> None:
    v3 = future_version(3).replace("start = 2025-01-01", "start = 2024-07-01")
    load_rules(svc.store, future_version(2))
    incentives._PARSED.clear()
    with svc.store.tx(write=False) as tx:
        assert programme_start_ms(tx) == seoul_ms(2025, 1, 1, 0)
    load_rules(svc.store, v3)
    with svc.store.tx(write=False) as tx:
        sha3 = str(tx.one("SELECT sha256 FROM incentive_rules WHERE version = 3")[0])  # type: ignore[index]
    incentives._PARSED.pop(sha3, None)
    with svc.store.tx(write=False) as tx:
        assert programme_start_ms(tx) == seoul_ms(2024, 7, 1, 0)


def test_the_programme_start_parses_the_shipped_rules_only_when_none_is_held(
        svc: CentralLog, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every batch asks for the start: the shipped defaults are parsed only for a store that
    holds no version of its own, whose start they give."""
    parsed: list[int] = []
    shipped = incentives.Rules.default

    def counted() -> incentives.Rules:
        parsed.append(1)
        return shipped()

    monkeypatch.setattr(incentives.Rules, "default", staticmethod(counted))
    with svc.store.tx(write=False) as tx:
        assert tx.one("SELECT COUNT(*) FROM incentive_rules")[0] == 0  # type: ignore[index]
        assert programme_start_ms(tx) == seoul_ms(2025, 1, 1, 0)
    assert parsed == [1]
    load_rules(svc.store, future_version(2).replace("start = 2025-01-01",
                                                    "start = 2024-09-01"))
    parsed.clear()  # loading may read the shipped rules; asking for the start may not
    for cached in (True, False):
        if not cached:
            incentives._PARSED.clear()
        with svc.store.tx(write=False) as tx:
            assert programme_start_ms(tx) == seoul_ms(2024, 9, 1, 0)
    assert parsed == []


def test_rules_versions_say_when_each_was_loaded(svc: CentralLog,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(incentives, "epoch_ms", lambda: 1_700_000_000_000)
    load_rules(svc.store, future_version(2))
    got = rules_versions(svc.store)
    assert [set(v) for v in got] == [{"version", "sha256", "loaded_ms"}] * len(got)
    assert got[-1]["version"] == 2 and got[-1]["loaded_ms"] == 1_700_000_000_000


def test_a_store_without_a_crediting_cursor_is_refused_by_name(svc: CentralLog) -> None:
    with svc.store.tx() as tx:
        tx.run("DELETE FROM incentive_cursor")
    with pytest.raises(TransactionError, match=r"^the central store has no incentive cursor$"):
        credit_log(svc.store)


def test_the_crediter_credits_in_the_chunks_it_was_given(
        quiet: CentralLog, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(incentives, "credit_log", lambda store, **kw: seen.append(kw))
    IncentiveCrediter(chunk=7).follow(quiet)
    IncentiveCrediter().follow(quiet)       # by default 5,000 log entries a transaction
    assert seen == [{"chunk": 7}, {"chunk": 5000}]


def test_credits_carry_the_crediting_time_they_were_given(quiet: CentralLog) -> None:
    bus = chain(quiet, "BUS-1")
    quiet.ingest("BUS-1", [bus.tap(A, seoul_ms(2025, 3, 10, 7))])
    at = seoul_ms(2025, 3, 10, 9)
    assert credit_log(quiet.store, now_ms=at).points == 1500
    assert column(quiet, "SELECT credited_ms FROM incentive_credits") == [at]


def test_a_crediting_run_stops_at_the_log_size_it_read(quiet: CentralLog) -> None:
    """A batch committed during a run is left to that batch's own crediting."""
    bus = chain(quiet, "BUS-1")
    quiet.ingest("BUS-1", [bus.tap(A, seoul_ms(2025, 3, 10, 7))])
    late = [bus.tap(B, seoul_ms(2025, 3, 10, 8))]

    def commit_another(done: int, size: int) -> None:
        if late:
            quiet.ingest("BUS-1", [late.pop()])

    r = credit_log(quiet.store, progress=commit_another)
    assert (r.credits, r.points) == (1, 1500)
    assert column(quiet, "SELECT next_index FROM incentive_cursor") == [1]
    assert credit_log(quiet.store).points == 1500           # B's, on the next run


def test_ingest_does_not_wait_for_a_crediting_run(pg_cluster: Any) -> None:  # noqa: F811
    """The crediting lock is the cursor's row alone: a batch commits while it is held. On
    PostgreSQL only: on SQLite one write transaction at a time is the database's own rule."""
    svc = open_service(pg_cluster.new_schema(), followers=[])
    try:
        bus = chain(svc, "BUS-1")
        done = threading.Event()
        with svc.store.tx() as tx:
            lock_crediting(tx)
            def send() -> None:
                svc.ingest("BUS-1", [bus.tap(A, seoul_ms(2025, 3, 10, 7))])
                done.set()

            worker = threading.Thread(target=send)
            worker.start()
            committed = done.wait(10)
        worker.join()
        assert committed
    finally:
        svc.store.close()


# -- what one run still does after an entry it skips --------------------------------------


def test_an_entry_without_a_card_does_not_stop_the_ones_after_it(svc: CentralLog) -> None:
    t = seoul_ms(2025, 3, 10, 7)
    r = run(svc, [entry(0, 1, "tap", "", 1500, t, tap_detail()),
                  entry(1, 2, "tap", A, 1500, t + 1, tap_detail())])
    assert (r.credits, r.points) == (1, 1500)


def test_an_entry_already_credited_does_not_stop_the_ones_after_it(svc: CentralLog) -> None:
    first = entry(0, 1, "tap", A, 1500, seoul_ms(2025, 3, 10, 7), tap_detail())
    second = entry(1, 2, "tap", A, 1200, seoul_ms(2025, 3, 11, 7), tap_detail())
    assert run(svc, [first]).points == 1500
    r = run(svc, [first, second])
    assert (r.credits, r.points) == (1, 1200)


def test_the_same_entry_twice_in_one_call_is_stored_once(svc: CentralLog) -> None:
    pay = entry(0, 1, "payment", A, 10_000, seoul_ms(2025, 3, 10, 12),
                json.dumps({"merchant_category": "local_food"}), place="M-1")
    run(svc, [pay, pay])
    assert column(svc, "SELECT points FROM incentive_credits") == [10_000 * RATE_BP // 10_000]


def test_a_late_ride_of_a_paid_day_leaves_the_rest_of_its_batch_credited(
        svc: CentralLog) -> None:
    t1, t2 = chain(svc, "BUS-1"), chain(svc, "BUS-2")
    svc.set_balances({A: 0})
    svc.ingest("BUS-2", [t2.tap(A, seoul_ms(2025, 4, 1, 18))])
    assert payout(svc.store, "2025-04", seoul_ms(2025, 5, 1, 1)).points == 1500
    # the earlier ride of the paid day moves nothing; another card's ride after it still
    # earns, payable in May as April is paid
    svc.ingest("BUS-1", [t1.tap(A, seoul_ms(2025, 4, 1, 7)), t1.tap(B, seoul_ms(2025, 4, 1, 8))])
    assert [(e["terminal_id"], e["points"]) for e in statement(svc.store, A)["entries"]] == [
        ("BUS-2", 1500)]
    assert [(e["terminal_id"], e["points"], e["payable_month"])
            for e in statement(svc.store, B)["entries"]] == [("BUS-1", 1500, "2025-05")]
    assert column(svc, "SELECT next_index FROM incentive_cursor") == [3]


# -- bus first rides ------------------------------------------------------------------------


def test_a_tap_that_names_no_rider_earns_as_an_adult(svc: CentralLog) -> None:
    bus = chain(svc, "BUS-1")
    no_rider = json.dumps({"bus_type": "city"})
    svc.ingest("BUS-1", [bus.entry("tap", A, 1500, seoul_ms(2025, 3, 10 + d, 7),
                                   detail=no_rider) for d in range(3)])
    assert points(svc, A) == [1500, CAP - 1500]      # the adult cap, not the youth one


def test_first_rides_are_told_apart_by_weekday(svc: CentralLog) -> None:
    t1, t2 = chain(svc, "BUS-1"), chain(svc, "BUS-2")
    svc.ingest("BUS-1", [t1.tap(A, seoul_ms(2025, 3, 10, 9), fare=1000),
                         t1.tap(A, seoul_ms(2025, 3, 11, 7), fare=1200)])
    # An earlier Monday ride takes Monday's credit, not Tuesday's.
    svc.ingest("BUS-2", [t2.tap(A, seoul_ms(2025, 3, 10, 6), fare=900)])
    st = statement(svc.store, A)["entries"]
    assert [(e["terminal_id"], e["day"], e["points"]) for e in st] == [
        ("BUS-1", "2025-03-10", 1000), ("BUS-1", "2025-03-10", -1000),
        ("BUS-2", "2025-03-10", 900), ("BUS-1", "2025-03-11", 1200)]


def test_a_first_ride_moves_after_a_payout_of_another_month(svc: CentralLog) -> None:
    t1, t2 = chain(svc, "BUS-1"), chain(svc, "BUS-2")
    svc.set_balances({A: 0})
    assert payout(svc.store, "2025-02", seoul_ms(2025, 3, 1, 1)).points == 0
    svc.ingest("BUS-2", [t2.tap(A, seoul_ms(2025, 3, 10, 18), fare=1200)])
    svc.ingest("BUS-1", [t1.tap(A, seoul_ms(2025, 3, 10, 7), fare=1500)])
    assert points(svc, A) == [1200, -1200, 1500]


def test_a_first_ride_moves_whatever_characters_its_terminal_id_holds(
        svc: CentralLog) -> None:
    """The entry encoding takes any text as a terminal id, separators and spaces included:
    the week's stored first rides must give it back whole."""
    odd = " NIGHT\x1fBUS 7"
    night, day = chain(svc, odd), chain(svc, "BUS-1")
    svc.ingest(odd, [night.tap(A, seoul_ms(2025, 3, 10, 18), fare=1200)])
    svc.ingest("BUS-1", [day.tap(A, seoul_ms(2025, 3, 10, 7), fare=1500)])
    st = statement(svc.store, A)["entries"]
    assert [(e["terminal_id"], e["points"], e["adjustment"]) for e in st] == [
        (odd, 1200, None), (odd, -1200, "first ride moved to BUS-1/1"), ("BUS-1", 1500, None)]


def test_a_ride_at_the_same_moment_as_the_first_does_not_take_its_credit(
        svc: CentralLog) -> None:
    t1, t2 = chain(svc, "BUS-1"), chain(svc, "BUS-2")
    at = seoul_ms(2025, 3, 10, 7)
    svc.ingest("BUS-1", [t1.tap(A, at, fare=1500)])
    svc.ingest("BUS-2", [t2.tap(A, at, fare=1200)])
    assert [(e["terminal_id"], e["points"]) for e in statement(svc.store, A)["entries"]] == [
        ("BUS-1", 1500)]


def test_a_late_first_ride_of_a_capped_day_earns_nothing(svc: CentralLog) -> None:
    t1, t2 = chain(svc, "BUS-1"), chain(svc, "BUS-2")
    svc.ingest("BUS-2", [t2.tap(A, seoul_ms(2025, 3, 10, 7)), t2.tap(A, seoul_ms(2025, 3, 11, 7)),
                         t2.tap(A, seoul_ms(2025, 3, 12, 18))])     # the cap is reached
    svc.ingest("BUS-1", [t1.tap(A, seoul_ms(2025, 3, 12, 7))])      # Wednesday's first ride
    assert points(svc, A) == [1500, CAP - 1500]
    assert statement(svc.store, A)["weeks"][0]["points"] == CAP


def test_a_lower_cap_from_midweek_never_takes_back_points_already_earned(
        svc: CentralLog) -> None:
    v1 = Rules.default()
    v2 = rules_with({"version = 1": "version = 2", "adult = 2900": "adult = 1000",
                     "effective_from = 2025-01-01": "effective_from = 2025-03-12"})
    both = [v1, v2]
    mon, tue = seoul_ms(2025, 3, 10, 7), seoul_ms(2025, 3, 11, 7)
    wed_evening, wed_morning = seoul_ms(2025, 3, 12, 18), seoul_ms(2025, 3, 12, 7)
    run(svc, [entry(0, 1, "tap", A, 1500, mon, tap_detail()),
              entry(1, 2, "tap", A, 1400, tue, tap_detail()),
              entry(2, 3, "tap", A, 1500, wed_evening, tap_detail())], both)
    assert column(svc, "SELECT points FROM incentive_weeks") == [1500 + 1400]
    run(svc, [entry(3, 1, "tap", A, 1500, wed_morning, tap_detail(), tid="T-2")], both)
    # Wednesday is over the new cap: nothing more, and the week keeps the 2,900 earned.
    assert column(svc, "SELECT points FROM incentive_weeks") == [1500 + 1400]
    assert points(svc, A) == [1500, 1400]


def test_a_moved_first_ride_counts_in_the_points_of_the_run(quiet: CentralLog) -> None:
    t1, t2 = chain(quiet, "BUS-1"), chain(quiet, "BUS-2")
    quiet.ingest("BUS-2", [t2.tap(A, seoul_ms(2025, 3, 10, 18), fare=1200)])
    assert credit_log(quiet.store).points == 1200
    quiet.ingest("BUS-1", [t1.tap(A, seoul_ms(2025, 3, 10, 7), fare=1500)])
    r = credit_log(quiet.store)
    assert (r.credits, r.points) == (1, 1500 - 1200)


# -- what is stored -------------------------------------------------------------------------


def test_notes_and_first_rides_are_stored_as_compact_text(svc: CentralLog) -> None:
    bus, till = chain(svc, "BUS-1"), chain(svc, "TILL-1")
    at = seoul_ms(2025, 3, 10, 7)
    svc.ingest("BUS-1", [bus.tap(A, at)])
    svc.ingest("TILL-1", [till.pay(B, 10_000, seoul_ms(2025, 3, 10, 12))])
    notes = column(svc, "SELECT note FROM incentive_credits ORDER BY terminal_id")
    assert notes == ['{"bus_type":"city","rider":"adult","route":"85"}',
                     '{"merchant":"M-1","rate_bp":30}']
    # one record per weekday: weekday, effective ms, seq, points, terminal (US apart)
    assert column(svc, "SELECT firsts FROM incentive_weeks") == [
        f"0\x1f{at}\x1f1\x1f1500\x1fBUS-1"]


def test_a_week_stored_before_first_rides_were_kept_gains_them(svc: CentralLog) -> None:
    bus = chain(svc, "BUS-1")
    svc.ingest("BUS-1", [bus.tap(A, seoul_ms(2025, 3, 10, 7))])
    with svc.store.tx() as tx:         # as the column was added to an older store
        tx.run("UPDATE incentive_weeks SET firsts = ''")
    tue = seoul_ms(2025, 3, 11, 7)
    svc.ingest("BUS-1", [bus.tap(A, tue)])
    assert column(svc, "SELECT firsts FROM incentive_weeks") == [
        f"1\x1f{tue}\x1f2\x1f{CAP - 1500}\x1fBUS-1"]


def test_a_campaign_credit_has_no_base_amount(svc: CentralLog) -> None:
    key = Ed25519PrivateKey.generate()
    load_rules(svc.store, _campaign_rules(key))
    t1 = chain(svc, "BUS-1")
    when = seoul_ms(2025, 4, 6, 11)            # the campaign's last day
    code = campaign.make(key, "tree-day", "w-1", 1000, valid_from=when // 1000 - 60)
    svc.ingest("BUS-1", [t1.entry("incentive", A, 0, when, detail=json.dumps(
        {"campaign": "tree-day", "code": code}))])
    assert column(svc, "SELECT base FROM incentive_credits") == [0]
    assert points(svc, A) == [1000]


def test_campaign_refusals_name_the_entry_campaign_and_day(
        svc: CentralLog, caplog: pytest.LogCaptureFixture) -> None:
    key = Ed25519PrivateKey.generate()
    load_rules(svc.store, _campaign_rules(key))
    t1 = chain(svc, "BUS-1")
    when = seoul_ms(2025, 4, 5, 11)
    other = campaign.make(Ed25519PrivateKey.generate(), "tree-day", "w-1", 1000,
                          valid_from=when // 1000 - 60)
    with caplog.at_level(logging.WARNING, logger="central.incentives"):
        svc.ingest("BUS-1", [t1.entry("incentive", A, 0, when, detail="{}"),
                             t1.entry("incentive", A, 0, when, detail=json.dumps(
                                 {"campaign": "tree-day", "code": other}))])
    assert [r.getMessage() for r in caplog.records if r.name == "central.incentives"] == [
        "incentive entry BUS-1/1: campaign '' unknown or not running on 2025-04-05",
        "incentive entry BUS-1/2: campaign code does not verify"]


def test_a_wallet_claimed_in_an_earlier_batch_is_not_paid_again(svc: CentralLog) -> None:
    key = Ed25519PrivateKey.generate()
    load_rules(svc.store, _campaign_rules(key))
    t1 = chain(svc, "BUS-1")
    when = seoul_ms(2025, 4, 5, 11)
    code = campaign.make(key, "tree-day", "w-1", 1000, valid_from=when // 1000 - 60)
    detail = json.dumps({"campaign": "tree-day", "code": code})
    svc.ingest("BUS-1", [t1.entry("incentive", A, 0, when, detail=detail)])
    # another card of the same wallet, then a ride of a third card in the same batch
    svc.ingest("BUS-1", [t1.entry("incentive", B, 0, when + 60_000, detail=detail),
                         t1.tap(C, seoul_ms(2025, 4, 7, 7))])
    assert (points(svc, A), points(svc, B), points(svc, C)) == ([1000], [], [1500])


# -- local food and refunds -----------------------------------------------------------------


def test_two_refunds_of_one_payment_in_one_batch_take_back_in_turn(svc: CentralLog) -> None:
    till = chain(svc, "TILL-1")
    t = seoul_ms(2025, 3, 12, 12)
    pay = till.pay(A, 12_000, t)
    svc.ingest("TILL-1", [pay, till.refund(A, 2_000, pay.seq, t + 1),
                          till.refund(A, 3_000, pay.seq, t + 2)])
    earned = 12_000 * RATE_BP // 10_000                     # 36
    after_first = (12_000 - 2_000) * RATE_BP // 10_000      # 30
    after_second = (12_000 - 5_000) * RATE_BP // 10_000     # 21
    assert points(svc, A) == [earned, after_first - earned, after_second - after_first]


def test_local_food_earns_only_when_enabled_and_paid(svc: CentralLog) -> None:
    food = json.dumps({"merchant_category": "local_food"})
    off = Rules.from_toml(default_rules_text().replace(
        "enabled = true\n# Points", "enabled = false\n# Points"))
    t = seoul_ms(2025, 3, 12, 12)
    assert run(svc, [entry(0, 1, "payment", A, 100_000, t, food)], off).credits == 0
    # At 10,000 basis points a won earns a point: a payment of 1 won earns 1.
    full = rules_with({"rate_bp = 30": "rate_bp = 10000"})
    r = run(svc, [entry(1, 2, "payment", A, 1, t, food),
                  entry(2, 3, "refund", A, 5, t + 1, ref_seq=2)], full)
    # the refund of more than was paid leaves nothing kept: -1
    assert points(svc, A) == [1, -1] and (r.credits, r.points) == (2, 0)


# -- the points snapshot ----------------------------------------------------------------------


def test_the_points_snapshot_is_versioned_by_log_size_and_cut_whole(svc: CentralLog) -> None:
    bus = chain(svc, "BUS-1")
    now = seoul_ms(2025, 3, 12, 9)
    cards = [f"{n:032x}" for n in range(1, 5)]
    for card in cards:
        svc.ingest("BUS-1", [bus.tap(card, seoul_ms(2025, 3, 11, 7))])
    doc = points_delta(svc.store, 0, now)
    assert doc["version"] == svc.size() == 4
    cut = points_delta(svc.store, 0, now, limit=4)
    # the fourth card's version is left for the next fetch: three cards, up to version 3
    assert cut["version"] == 3 and sorted(cut["points"]) == cards[:3]
    # the holidays sent are those of the request's year and the next, not of today's
    assert "2025-05-05" in doc["rules"]["holidays"]
    assert "2026-01-01" in doc["rules"]["holidays"]


# -- payouts and statements -------------------------------------------------------------------


def test_a_single_point_is_paid_or_held_and_the_payout_is_logged(
        svc: CentralLog, caplog: pytest.LogCaptureFixture) -> None:
    till = chain(svc, "TILL-1")
    svc.set_balances({A: 0})                 # B and C have no account: their points wait
    fare = 334                               # the smallest payment earning one point
    assert fare * RATE_BP // 10_000 == 1 and (fare - 1) * RATE_BP // 10_000 == 0
    t = seoul_ms(2025, 3, 12, 12)
    svc.ingest("TILL-1", [till.pay(card, fare, t + i) for i, card in enumerate((A, B, C))])
    with caplog.at_level(logging.INFO, logger="central.payouts"):
        r = payout(svc.store, "2025-03", seoul_ms(2025, 4, 1, 1))
    assert (r.cards, r.points, r.held_cards, r.held_points) == (1, 1, 2, 2)
    assert [m.getMessage() for m in caplog.records if m.name == "central.payouts"] == [
        "payout 2025-03: 1 cards, 1 points; 2 held"]


def test_a_statement_lists_a_day_in_log_order_whenever_it_was_credited(
        quiet: CentralLog) -> None:
    till = chain(quiet, "TILL-1")
    t = seoul_ms(2025, 3, 12, 12)
    quiet.ingest("TILL-1", [till.pay(A, 10_000, t)])
    credit_log(quiet.store, now_ms=t + 2_000)
    quiet.ingest("TILL-1", [till.pay(A, 20_000, t + 60_000)])
    credit_log(quiet.store, now_ms=t + 1_000)          # a clock stepped back between runs
    assert [e["seq"] for e in statement(quiet.store, A)["entries"]] == [1, 2]


def test_settlement_adds_a_rules_credits_and_adjustments(svc: CentralLog) -> None:
    t1, t2 = chain(svc, "BUS-1"), chain(svc, "BUS-2")
    svc.set_balances({A: 0})
    svc.ingest("BUS-2", [t2.tap(A, seoul_ms(2025, 3, 10, 18), fare=1200)])
    svc.ingest("BUS-1", [t1.tap(A, seoul_ms(2025, 3, 10, 7), fare=1500)])
    assert payout(svc.store, "2025-03", seoul_ms(2025, 4, 1, 1)).points == 1500
    # bus: 1,200 + 1,500 credited, 1,200 taken back by the move
    assert settlement_rows(svc.store, "2025-03") == [
        (A, "", "2025-03", 1200 + 1500 - 1200, 0, 0, 0, 1500)]
    with svc.store.tx() as tx:
        tx.run("UPDATE incentive_credits SET rule = 'mystery' WHERE seq = 1 AND "
               "terminal_id = 'BUS-1'")
    with pytest.raises(TransactionError,
                       match=re.escape("settlement 2025-03: no column for rules ['mystery']")):
        settlement_rows(svc.store, "2025-03")
