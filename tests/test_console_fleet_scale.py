"""The Fleet page for a city's fleet: filtered, sorted and paged on the server, its JSON the
same page, and every figure the same as ``central terminals`` (``terminal_status.
terminals``) on real data: a seeded fleet whose first terminals synced through the real
ingest, and terminals of our own with two batches each (the lag is the newest batch's) and
one revoked. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import municipalities, open_service, terminal_status
from central.console.fleet import PER_PAGE
from central.console_data import fleet
from central.service import CentralLog
from central.terminal_reports import reports
from firmware_cfg.keys import public_hex
from localpay.cli.bench.console_seed import seed_fleet
from localpay.errors import ConfigError
from tests.console_fixtures import add_staff, logged_in
from tests.pg_fixtures import pg_cluster, signed_entries, store_url  # noqa: F401 - fixtures

SEEDED = 260
OWN = ("OWN-1", "OWN-2", "OWN-3")


@pytest.fixture
def svc(store_url: str, tmp_path: Path) -> Iterator[CentralLog]:  # noqa: F811
    service = open_service(store_url, tmp_path / "data")
    service.store.init_schema()
    seed_fleet(service, SEEDED, synced=40)
    now = int(time.time() * 1000)
    for k, tid in enumerate(OWN):
        key = Ed25519PrivateKey.generate()
        service.add_terminal(tid, bytes.fromhex(public_hex(key)))
        entries = signed_entries(key, tid, 6, wall0=now - 7_200_000 - k * 600_000,
                                 step_ms=60_000)
        service.ingest(tid, entries[:4])
        service.ingest(tid, entries[4:])  # the newest batch: its first entry is seq 5
    terminal_status.revoke(service.store, "OWN-2", "lost on the bus")
    municipalities.add(service.store, "elsewhere", "Elsewhere", "KRW")
    seed_fleet(service, 5, municipality="elsewhere", prefix="AWAY", synced=0)
    add_staff(service.store, "vera")
    yield service
    service.store.close()


def expected_lags(service: CentralLog) -> dict[str, int]:
    """Per terminal, from the tables themselves: its batch with the highest last seq, the
    arrival of that batch less the effective time of the batch's first entry (not below 0)."""
    with service.store.tx(write=False) as tx:
        batches = tx.all("SELECT terminal_id, first_seq, last_seq, received_ms FROM batches")
        effective = {(str(t), int(s)): int(e) for t, s, e in tx.all(
            "SELECT terminal_id, seq, effective_ms FROM entries")}
    newest: dict[str, tuple[int, int, int]] = {}
    for tid, first, last, received in batches:
        if str(tid) not in newest or int(last) > newest[str(tid)][1]:
            newest[str(tid)] = (int(first), int(last), int(received))
    return {tid: max(0, received - effective[(tid, first)])
            for tid, (first, _, received) in newest.items()}


def test_terminals_figures_match_the_tables(svc: CentralLog) -> None:
    rows = terminal_status.terminals(svc.store)
    assert len(rows) == SEEDED + len(OWN) + 5
    lags = expected_lags(svc)
    assert len(lags) == 40 + len(OWN)
    assert {r.terminal_id: r.sync_lag_ms for r in rows if r.sync_lag_ms is not None} == lags
    # the older whole-table computation (``/metrics`` uses it) agrees
    with svc.store.tx(write=False) as tx:
        assert terminal_status.sync_lags(tx) == lags
    # the newest batch's first entry, not the first batch's: about 2 h less 4 minutes
    own1 = next(r for r in rows if r.terminal_id == "OWN-1")
    assert own1.sync_lag_ms is not None
    assert 7_200_000 - 240_000 - 60_000 < own1.sync_lag_ms < 7_200_000 - 240_000 + 60_000
    assert own1.last_seq == 6 and own1.revoked_ms is None
    # the newest report of each terminal, as terminal_reports keeps it; each seeded till
    # assigned to the merchant its place names; our own terminals neither reported nor
    # assigned
    kept = reports(svc.store)
    assert {r.terminal_id: (r.software, r.faults, r.reported_ms) for r in rows
            if r.software} == {t: (k.software, k.faults, k.reported_ms)
                               for t, k in kept.items()}
    assert any(r.faults for r in rows)
    with svc.store.tx(write=False) as tx:
        merchants = {(str(m), str(t)): str(n) for m, t, n in tx.all(
            "SELECT a.municipality_id, a.terminal_id, m.name FROM merchant_terminals a JOIN "
            "merchants m ON m.municipality_id = a.municipality_id AND m.merchant_id = "
            "a.merchant_id")}
    for r in rows:
        if r.role == "till" and not r.terminal_id.startswith("OWN"):
            assert (r.merchant_id, r.merchant_name) == (
                r.place, merchants[(r.municipality, r.terminal_id)]), r
        else:
            assert (r.merchant_id, r.merchant_name) == ("", ""), r
    assert next(r for r in rows if r.terminal_id == "OWN-2").revoked_reason == "lost on the bus"
    # one terminal asked for alone is the same row as in the whole list
    for tid in ("OWN-2", "FLEET-00003", "FLEET-00250", "AWAY-00001"):
        assert terminal_status.terminals(svc.store, terminal_id=tid) == [
            r for r in rows if r.terminal_id == tid]
    assert terminal_status.terminals(svc.store, "default", terminal_id="AWAY-00001") == []
    assert terminal_status.terminals(svc.store, terminal_id="NOPE") == []


def order(r: Any, field: str) -> tuple[Any, ...]:
    """Missing values (no lag, not revoked) first, then by value (faults: how many), ties
    by id."""
    value = len(r.faults) if field == "faults" else getattr(r, field)
    return (0, 0, r.terminal_id) if value is None else (1, value, r.terminal_id)


def test_pages_are_the_whole_list_filtered_and_sorted(svc: CentralLog) -> None:
    whole = terminal_status.terminals(svc.store, "default")
    # (filter text, role, software, faulty, sort, descending)
    cases: list[tuple[str | None, str | None, str | None, bool, str, bool]] = [
        (None, None, None, False, "terminal_id", False),
        (None, None, None, False, "last_seen_ms", True),
        ("r1", "validator", None, False, "place", False),
        (None, "till", None, False, "sync_lag_ms", True),
        ("own", None, None, False, "revoked_ms", True), (None, None, None, False, "clock", False),
        ("shop 01", None, None, False, "merchant_id", True),
        (None, None, "localpay 0.2.0", False, "software", False),
        (None, None, None, True, "faults", True),
        ("0.3.0", "till", None, True, "software", True)]
    for text, role, software, faulty, sort, desc in cases:
        wanted = [r for r in whole
                  if (not text or text in " ".join((r.terminal_id, r.place, r.municipality,
                                                    r.merchant_id, r.merchant_name,
                                                    r.software)).lower())
                  and (not role or r.role == role)
                  and (not software or r.software == software)
                  and (not faulty or len(r.faults) > 0)]
        assert wanted, (text, role, software, faulty)  # each case shows something
        wanted.sort(key=lambda r: order(r, sort), reverse=desc)
        got: list[Any] = []
        offset = 0
        while True:
            page = fleet(svc.store, text, role, sort, desc, offset, 100,
                         municipality="default", software=software, faulty=faulty)
            assert page.total == len(wanted)
            # the console page's own paging of a kept listing: the same page
            assert terminal_status.page_of(whole, text, role, sort, desc, offset, 100,
                                           software=software, faulty=faulty) == (
                list(page.rows), page.total)
            got.extend(page.rows)
            offset += 100
            if offset >= page.total:
                break
        assert got == wanted, (text, role, software, faulty, sort, desc)


def test_the_kept_listing_is_renewed_without_waiting(svc: CentralLog) -> None:
    rows, age = terminal_status.recent_terminals(svc.store, "default")
    assert rows == terminal_status.terminals(svc.store, "default") and age < 30
    svc.add_terminal("NEW-1", bytes.fromhex(public_hex(Ed25519PrivateKey.generate())))
    fresh = terminal_status.terminals(svc.store, "default")
    assert "NEW-1" in [r.terminal_id for r in fresh]
    # young enough: given as kept
    assert terminal_status.recent_terminals(svc.store, "default")[0] == rows
    # too old to be recent: still given, while a thread takes the next listing
    assert terminal_status.recent_terminals(svc.store, "default", recent_s=0)[0] == rows
    deadline = time.monotonic() + 20
    while terminal_status.recent_terminals(svc.store, "default", recent_s=60)[0] != fresh:
        assert time.monotonic() < deadline, "the listing was not renewed"
        time.sleep(0.05)
    # too old to be shown at all: taken before it is given
    svc.add_terminal("NEW-2", bytes.fromhex(public_hex(Ed25519PrivateKey.generate())))
    now, _ = terminal_status.recent_terminals(svc.store, "default", stale_s=0)
    assert now == terminal_status.terminals(svc.store, "default")
    assert "NEW-2" in [r.terminal_id for r in now]
    # each municipality its own listing
    away, _ = terminal_status.recent_terminals(svc.store, "elsewhere")
    assert [r.terminal_id for r in away] == [f"AWAY-0000{i}" for i in range(1, 6)]
    with pytest.raises(ConfigError, match="sort"):
        terminal_status.page_of(now, sort="password")


def _ids(html: str) -> list[str]:
    return re.findall(r'<tr[^>]*><td><a href="/console/terminals/([^"]+)">', html)


def test_fleet_page_is_paged_and_its_json_is_the_same_page(svc: CentralLog) -> None:
    whole = terminal_status.terminals(svc.store, "default")
    by_id = [r.terminal_id for r in whole]
    total = len(by_id)
    assert total == SEEDED + len(OWN) and total > 2 * PER_PAGE
    with logged_in(svc, "vera") as c:
        first = c.get("/console/fleet?lang=en")
        assert first.status_code == 200
        assert _ids(first.text) == by_id[:PER_PAGE]
        assert f"{total} terminal(s)" in first.text
        assert f"1–{PER_PAGE} of {total} (page 1 of 3)" in first.text
        assert 'href="?q=&amp;role=&amp;sort=terminal&amp;dir=asc&amp;page=2" rel="next"' \
            in first.text
        assert "AWAY-" not in first.text  # another municipality's terminals
        # merchant, software and faults: each row's own, in the page and its JSON
        by_row = {r.terminal_id: r for r in whole}
        doc = c.get("/console/fleet.json").json()
        for row in doc["rows"]:
            r = by_row[row["terminal"]]
            assert row["software"] == (r.software or "-")
            assert row["faults"] == (", ".join(cause for cause, _ in r.faults) or "-")
            assert row["merchant"] == (f"{r.merchant_id} ({r.merchant_name})"
                                       if r.merchant_id else "-")
            assert f"<td>{row['merchant']}</td><td>default</td>" in first.text
        assert {row["faulty"] for row in doc["rows"]} == {"", "1"}

        third = c.get("/console/fleet?lang=en&page=3")
        assert _ids(third.text) == by_id[2 * PER_PAGE:]
        assert f"{2 * PER_PAGE + 1}–{total} of {total} (page 3 of 3)" in third.text
        assert 'rel="next"' not in third.text and 'aria-current="page">3<' in third.text
        # a page past the end shows the last; nonsense shows the first
        assert _ids(c.get("/console/fleet?page=99").text) == by_id[2 * PER_PAGE:]
        assert _ids(c.get("/console/fleet?page=x").text) == by_id[:PER_PAGE]

        # filter, role and sort in the query: the same rows in the page and in its JSON
        wanted = sorted((r for r in whole if r.role == "validator" and "r1" in r.place.lower()),
                        key=lambda r: (r.last_seen_ms, r.terminal_id), reverse=True)
        query = "q=R1&role=validator&sort=last_seen&dir=desc"
        html = c.get(f"/console/fleet?{query}").text
        doc = c.get(f"/console/fleet.json?{query}").json()
        assert _ids(html) == [r["terminal"] for r in doc["rows"]] == [
            r.terminal_id for r in wanted][:PER_PAGE]
        assert doc["total"] == doc["count"] == len(wanted) and doc["page"] == 1

        doc = c.get("/console/fleet.json?page=2&sort=sync_lag&dir=desc").json()
        lagged = sorted(whole, key=lambda r: order(r, "sync_lag_ms"), reverse=True)
        assert [r["terminal"] for r in doc["rows"]] == [
            r.terminal_id for r in lagged[PER_PAGE:2 * PER_PAGE]]
        assert (doc["page"], doc["pages"], doc["offset"], doc["total"]) == (2, 3, PER_PAGE,
                                                                           total)
        assert [link["rel"] for link in doc["links"]][:2] == ["prev", ""]
        assert {"label": "3", "rel": "",
                "href": "?q=&role=&sort=sync_lag&dir=desc&page=3"} in doc["links"]
        # 43 terminals synced: page 1 holds them all, newest lag first; page 2 none
        assert {r["sync_lag"] for r in doc["rows"]} == {"-"}
        top = c.get("/console/fleet.json?sort=sync_lag&dir=desc").json()["rows"]
        assert [r["sync_lag"] != "-" for r in top] == [True] * 43 + [False] * (PER_PAGE - 43)

        # a terminal's page, found alone
        own = c.get("/console/terminals/OWN-2?lang=en")
        assert own.status_code == 200 and "lost on the bus" in own.text
        assert c.get("/console/terminals/AWAY-00001").status_code == 404
