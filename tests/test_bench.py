"""`localpay bench` runs end to end and reports every figure the README quotes; running it
twice on the same folder works (no timing is asserted: figures are for people to read)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from localpay.cli import cli


def test_bench_twice_on_one_folder(tmp_path: Path) -> None:
    runner = CliRunner()
    for _ in range(2):
        result = runner.invoke(cli, ["bench", "--sizes", "100,300", "--taps", "100",
                                     "--dir", str(tmp_path)], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        figures = json.loads(result.stdout)
        for key in ("p50_ms", "p99_ms", "max_ms", "taps_per_s", "fsyncs_per_s", "ratio",
                    "p99_growth", "rss_mb"):
            assert figures[key] > 0, key
        assert [s["ledger_entries_before"] for s in figures["stages"]] == [100, 300]
        assert all(s["approved"] == 100 and s["declined"] == 0 for s in figures["stages"])
        assert figures["wallet_qr"]["approved"] == 100
        assert figures["wallet_qr"]["fsyncs_per_s"] == figures["fsyncs_per_s"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench-ledger.sqlite"]


def test_bench_payout_pays_every_credited_point_once() -> None:
    result = CliRunner().invoke(cli, ["bench", "payout", "--cards", "300"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    f = json.loads(result.stdout)
    # every point credited is either paid or held; the file has one row per paid card
    assert f["paid_points"] + f["held_points"] == f["points_credited"] > 0
    assert f["paid_cards"] + f["held_cards"] == f["cards"] == 300
    assert f["settlement_cards"] == f["paid_cards"]
    assert f["total_s"] >= 0 and f["fsyncs_per_s"] > 0


def test_bench_fills_the_tables_a_tap_reads_in_proportion(tmp_path: Path) -> None:
    from localpay.cli.bench.validator import DENIED_EVERY, ENTRIES_PER_CARD

    result = CliRunner().invoke(cli, ["bench", "--sizes", "400,2000", "--taps", "100",
                                      "--dir", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    stages = json.loads(result.stdout)["stages"]
    for stage in stages:
        size, tables = stage["ledger_entries_before"], stage["tables"]
        cards = size // ENTRIES_PER_CARD
        assert tables["entries"] == size
        # one counters row per card seen, one balance per card, the deny list in proportion
        assert tables["card_counters"] == tables["balances"] == cards
        assert cards // DENIED_EVERY // 2 <= tables["deny_list"] <= cards // DENIED_EVERY + 1
        assert 0 < tables["points_snapshot"] < cards and tables["rider_categories"] > 0
        # returning riders are charged (not "already paid"), none is declined
        assert stage["returning_taps"] > 0
        assert stage["approved"] == 100 and stage["declined"] == 0
    assert stages[1]["tables"]["card_counters"] == 5 * stages[0]["tables"]["card_counters"]


def test_bench_central_entries_carry_details_and_earn_credits() -> None:
    from localpay.cli.bench.traffic import BATCH
    from sync.client import SyncClient

    # the sync client's own default, which the terminal's config repeats
    assert BATCH == inspect.signature(SyncClient).parameters["batch_size"].default
    result = CliRunner().invoke(cli, ["bench", "central", "--stores", "sqlite", "--backlog",
                                      "1200", "--terminals", "4", "--per-terminal", "150"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    f = json.loads(result.stdout)
    assert f["batch"] == BATCH and f["fsyncs_per_s"] > 0
    figures = f["sqlite"]
    assert figures["ingest"]["batch"] == BATCH
    assert figures["ingest"]["checks_alone_per_s"] > 0
    for name, entries in (("ingest", 1200), ("one_terminal", 1200), ("many_terminals", 600)):
        credited = figures[name]["credited"]
        assert credited["entries_with_detail"] == entries, name
        assert credited["credits"] > 0 and credited["points"] > 0, name
    # the fourth terminal is a local-food store: its purchases earn points too
    assert figures["many_terminals"]["credited"]["by_rule"]["local_food"] > 0
    # each route's requests, from the service's access log: 4 terminals of 150 entries send
    # one batch each, and each reports its status and totals once and fetches one round
    routes = figures["many_terminals"]["routes"]
    batches = 4 * -(-150 // BATCH)
    assert routes["POST /v1/batches"]["n"] == batches == 4
    for route in ("POST /v1/status", "POST /v1/totals", "GET /v1/round"):
        assert routes[route]["n"] == 4, route
    for route, t in routes.items():
        assert 0 < t["mean_ms"] <= t["max_ms"], route
    assert figures["many_terminals"]["store_alone_per_s"] > 0
    # SQLite runs inside the service: no server of its own whose CPU could be told apart
    assert figures["one_terminal"]["store_cpu_s"] is None
    assert figures["many_terminals"]["store_cpu_s"] is None


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_bench_central_store_floor_writes_the_same_rows_again(tmp_path: Path,
                                                              kind: str) -> None:
    """The floor under the 200-terminal figure writes what the service wrote (every entry and
    tree node, same bytes) into an empty store, and only then gives a rate."""
    from central.store import ENTRY_COLUMNS, open_store
    from localpay.cli.bench import central as bench
    from localpay.pgserver import PgCluster

    cluster = PgCluster() if kind == "postgresql" else None
    try:
        def db(name: str) -> str:
            if cluster is not None:
                return cluster.new_database()
            return f"sqlite:///{tmp_path / name / 'central.sqlite'}"

        source, target = db("source"), db("target")
        assert bench._ingest(source, tmp_path / "in", 300, 100, "anchor")["entries"] == 300
        assert bench._store_alone(source, target, 120) > 0

        def rows(url: str) -> tuple[list[Any], list[Any]]:
            store = open_store(url)
            try:
                with store.tx(write=False) as tx:
                    return ([tuple(r) for r in tx.all(
                        f"SELECT {', '.join(ENTRY_COLUMNS)} FROM entries ORDER BY log_index")],
                        [tuple(r) for r in tx.all(
                            "SELECT level, idx, hash FROM nodes ORDER BY level, idx")])
            finally:
                store.close()

        entries, nodes = rows(source)
        assert len(entries) == 300 and len(nodes) > 0
        assert rows(target) == (entries, nodes)
    finally:
        if cluster is not None:
            cluster.destroy()


def test_bench_central_counts_the_store_servers_cpu_over_the_timed_part(tmp_path: Path) -> None:
    """The store server's CPU is read just before the clients start and after the service
    stops, not around the set-up (ledgers filled, terminals registered). The reader here
    stands in for PostgreSQL's processes (``PgCluster.cpu_seconds``, tested with a real
    server below) so that the figure can be checked exactly."""
    from localpay.cli.bench import central as bench

    readings = iter([40.0, 43.25])
    reads: list[float] = []

    def reader() -> float:
        reads.append(next(readings))
        return reads[-1]

    figure = bench._sync(f"sqlite:///{tmp_path / 'central.sqlite'}", tmp_path / "run", 2, 40,
                         20, "anchor", 1, 1, reader)
    assert figure["held"] == 80 and len(reads) == 2
    assert figure["store_cpu_s"] == 3.2  # 43.25 - 40.0, rounded to a tenth as the others


def test_a_postgresql_servers_cpu_seconds_follow_its_work() -> None:
    """``PgCluster.cpu_seconds`` sums the server's processes: a query that keeps one backend
    busy adds at least what that backend's own ``/proc`` entry says it used (read here
    separately), and the backend's time stays counted once it has exited."""
    import os

    import psycopg

    from localpay.pgserver import PgCluster

    def own_cpu(pid: int) -> float:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    tick = 1 / os.sysconf("SC_CLK_TCK")
    cluster = PgCluster()
    try:
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
            before, own_before = cluster.cpu_seconds(), own_cpu(backend)
            conn.execute("SELECT count(*) FROM generate_series(1, 3000000)").fetchone()
            during, own_used = cluster.cpu_seconds(), own_cpu(backend) - own_before
        after = cluster.cpu_seconds()  # the backend exited and was reaped: still counted
        assert before is not None and during is not None and after is not None
        assert own_used > 0.05, "the query should keep its backend busy for a while"
        assert during - before >= own_used - 2 * tick, (before, during, own_used)
        assert after >= during - 2 * tick
    finally:
        cluster.destroy()
    assert cluster.cpu_seconds() is None  # no server running, nothing to tell


def test_bench_central_traffic_earns_bus_and_local_food_points() -> None:
    from central.incentive_rules import Rules
    from localpay.cli.bench.traffic import terminal_traffic

    rules = Rules.default()
    kinds = [terminal_traffic(i, 50, 8) for i in range(8)]
    assert {t.kind for t in kinds} == {"tap", "payment"}
    details = [json.loads(d) for t in kinds for d in t.details]
    assert all(d["clock"] == "synchronised" and d["scheme"] and d["rider"] for d in details)
    assert any(d.get("bus_type") in rules.bus.bus_types for d in details)
    # tills that earn local-food points are drawn, as in a city
    tills = [terminal_traffic(i, 1, 400) for i in range(3, 400, 4)]
    assert any(rules.food.merchant_categories & {json.loads(t.details[0])["merchant_category"]}
               for t in tills)


def test_bench_incentives_measures_production_mode_by_default() -> None:
    from localpay.cli.bench.traffic import BATCH

    result = CliRunner().invoke(cli, ["bench", "incentives", "--events", "1000"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    f = json.loads(result.stdout)
    assert f["follow"] == "batch" and f["mode"].startswith("production")
    assert f["batch_size"] == BATCH and f["credits"] > 0 and f["points"] > 0
    assert f["credit_s"] > 0 and f["fsyncs_per_s"] > 0


def test_bench_readers_names_distinct_frames_and_floors(monkeypatch: Any) -> None:
    from localpay.cli.bench import readers

    qr = readers.bench_qr(codes=2)
    assert qr["distinct_frames"] == 12 and qr["decodes"] == 12
    assert 0 < qr["distinct_frames_decoded"] <= 12
    assert qr["floor_no_code_frame"]["p50_ms"] > 0
    # the PC/SC part needs the machine's one pcscd: not started here
    monkeypatch.setattr(readers, "bench_pcsc", lambda *a, **k: {"apdu_round_trip": {}})
    f = readers.bench_readers(codes=1)
    assert f["fsyncs_per_s"] > 0 and f["qr_decode"]["distinct_frames"] == 6


def test_bench_wallet_and_ui_print_their_floors(tmp_path: Path) -> None:
    from localpay.cli.bench.ui import bench_ui
    from localpay.cli.bench.wallet import bench_wallet

    wallet = bench_wallet(50, folder=tmp_path)
    assert wallet["approved"] == 50 and wallet["fsyncs_per_s"] > 0 and wallet["ratio"] > 0
    ui = bench_ui(60, prefill=10)
    assert ui["floor_bare_redraw"]["frames"] >= 120 and ui["floor_bare_redraw"]["p50_ms"] > 0
    assert all(r["bare_redraw"]["p50_ms"] > 0 for r in ui["roles"].values())
