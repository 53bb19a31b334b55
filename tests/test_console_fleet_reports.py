"""The Fleet's merchant, software version and faults (issue #19: "every terminal with place,
role, merchant, ... software version, faults it reported; filter and sort"), from the
product's own paths end to end: a real ``localpay central serve`` on PostgreSQL; a till
enrolled through the real enrolment with its place naming a registered merchant, and a bus
validator; both sync through the real sync client, which reports what each terminal shows
(``POST /v1/status``). The console (the real application over ``https://``, on the same
store) shows it in the Fleet page, its JSON and the terminal's page, filters and sorts on
it, and ``central terminals`` prints the same.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from central import open_service
from central.console_data import fleet
from central.merchants import Merchant, Registry
from central.service import CentralLog
from central.terminal_reports import reports
from firmware_cfg import provision
from firmware_cfg.config import DEFAULT
from firmware_cfg.keys import load_terminal_key
from localpay import __version__
from localpay.cli import cli
from sync.client import SyncClient
from tests.console_fixtures import add_staff, logged_in, table
from tests.enroll_fixtures import issue_code, start_localpay_central
from tests.pg_fixtures import CentralProcess, fill_ledger, pg_cluster  # noqa: F401 - fixture
from tests.test_settlement import brn

SOFTWARE = f"localpay {__version__}"
BAKERY = Merchant("M-77", "Bakery Seo", brn(77), "ksic:10712")
#: the Fleet table's columns, in order (central.console.fleet.COLUMNS, written out here)
COLUMNS = ["terminal", "place", "role", "merchant", "municipality", "enrolled", "last_seen",
           "sync_lag", "clock", "config", "software", "faults", "state"]


@dataclass
class Fleet:
    svc: CentralLog
    server: CentralProcess
    till: str
    bus: str
    #: what each terminal's screen shows now (its sync client reports it)
    shows: dict[str, list[tuple[str, str]]]
    clients: dict[str, SyncClient]

    def sync(self, tid: str) -> None:
        self.clients[tid].sync_once()


@pytest.fixture
def world(pg_cluster: Any, tmp_path: Path) -> Iterator[Fleet]:  # noqa: F811
    db, data = pg_cluster.new_database(), tmp_path / "data"
    server = start_localpay_central(db, data, timeout=90)
    svc = open_service(db, data)
    clients: dict[str, SyncClient] = {}
    try:
        Registry(svc.store).add(BAKERY)
        add_staff(svc.store, "vera")
        till = provision.enroll(tmp_path / "till", server.url, issue_code(server),
                                role="till", place="M-77")
        bus = provision.enroll(tmp_path / "bus", server.url, issue_code(server),
                               role="validator", place="720")
        shows: dict[str, list[tuple[str, str]]] = {till.terminal_id: [], bus.terminal_id: []}
        for done, home, kind, place in ((till, tmp_path / "till", "payment", "M-77"),
                                        (bus, tmp_path / "bus", "tap", "720")):
            tid = done.terminal_id
            key = load_terminal_key(home / DEFAULT.keys.terminal_key)
            fill_ledger(tmp_path / f"{tid}.sqlite", key, tid, 3, kind=kind, place=place,
                        amount=1500).close()
            client = SyncClient(tmp_path / f"{tid}.sqlite", key, server.url, server.verifier)
            client.faults = (lambda t=tid: list(shows[t]))  # type: ignore[misc]
            clients[tid] = client
        yield Fleet(svc, server, till.terminal_id, bus.terminal_id, shows, clients)
    finally:
        for client in clients.values():
            client.close()
        svc.store.close()
        server.stop()


def local(svc: CentralLog, ms: int) -> str:
    """A time as the console shows it (the service's zone), worked out here."""
    return dt.datetime.fromtimestamp(ms / 1000, svc.tz).strftime("%Y-%m-%d %H:%M:%S")


def test_reports_and_merchant_in_the_fleet_json_page_and_terminal_page(world: Fleet) -> None:
    w = world
    w.shows[w.till] = [("no_reader", "pcsc: no reader"), ("clock_unknown", "clock not set")]
    w.sync(w.till)
    w.sync(w.bus)
    kept = reports(w.svc.store)
    assert kept[w.till].faults == (("no_reader", "pcsc: no reader"),
                                   ("clock_unknown", "clock not set"))
    assert kept[w.bus].software == SOFTWARE and kept[w.bus].faults == ()
    with logged_in(w.svc, "vera") as c:
        doc = c.get("/console/fleet.json?lang=en").json()
        assert doc["columns"] == COLUMNS
        rows = {r["terminal"]: r for r in doc["rows"]}
        assert sorted(rows) == sorted([w.till, w.bus])
        till, bus = rows[w.till], rows[w.bus]
        assert (till["role"], till["place"], till["merchant"]) == ("till", "M-77",
                                                                   "M-77 (Bakery Seo)")
        assert (till["software"], till["faults"], till["faulty"]) == (
            SOFTWARE, "no_reader, clock_unknown", "1")
        assert (bus["role"], bus["merchant"], bus["software"], bus["faults"],
                bus["faulty"]) == ("validator", "-", SOFTWARE, "-", "")

        # the page's table: the same cells, in the columns' order
        page = c.get("/console/fleet?lang=en")
        for lang, words in (("en", ("Merchant", "Software", "Faults", "reporting faults")),
                            ("ko", ("가맹점", "소프트웨어", "고장", "고장 보고만"))):
            shown = c.get(f"/console/fleet?lang={lang}").text
            assert all(word in shown for word in words), lang
        cells = {r[0]: r for r in table(page.text, "fleet")}
        assert cells[w.till][COLUMNS.index("merchant")] == "M-77 (Bakery Seo)"
        assert cells[w.till][COLUMNS.index("software")] == SOFTWARE
        assert cells[w.till][COLUMNS.index("faults")] == "no_reader, clock_unknown"
        assert cells[w.bus][COLUMNS.index("faults")] == "-"
        assert f'<option value="{SOFTWARE}" >{SOFTWARE}</option>' in page.text

        # the terminal's page: merchant, software, each fault with its detail, and when
        own = c.get(f"/console/terminals/{w.till}?lang=en").text
        assert '<dd id="fact-merchant">M-77 (Bakery Seo)</dd>' in own
        assert f'<dd id="fact-software">{SOFTWARE}</dd>' in own
        assert table(own, "faults") == [["no_reader", "pcsc: no reader"],
                                        ["clock_unknown", "clock not set"]]
        assert f"reported {local(w.svc, kept[w.till].reported_ms)}" in own
        other = c.get(f"/console/terminals/{w.bus}?lang=ko").text
        assert "보고된 고장이 없습니다." in other and 'id="faults"' not in other

    # the reader is back: told at the till's next round, shown on its page
    w.shows[w.till].clear()
    w.sync(w.till)
    assert reports(w.svc.store)[w.till].faults == ()
    with logged_in(w.svc, "vera") as c:
        own = c.get(f"/console/terminals/{w.till}?lang=en").text
        assert "No fault reported." in own and 'id="faults"' not in own

    # ``central terminals`` prints the same figures
    out = CliRunner().invoke(cli, ["central", "terminals", "--json", "--db", w.server.db,
                                   "--data", str(w.server.data)])
    assert out.exit_code == 0, out.output
    listed = {r["terminal_id"]: r for r in map(json.loads, out.output.splitlines())}
    assert (listed[w.till]["merchant_id"], listed[w.till]["merchant_name"],
            listed[w.till]["software"], listed[w.till]["faults"]) == (
        "M-77", "Bakery Seo", SOFTWARE, [])
    assert listed[w.bus]["merchant_id"] == ""
    text = CliRunner().invoke(cli, ["central", "terminals", "--db", w.server.db, "--data",
                                    str(w.server.data)]).output
    line = next(x for x in text.splitlines() if w.till in x)
    assert "merchant M-77 (Bakery Seo)" in line and f"software {SOFTWARE}" in line
    assert "faults -" in line


def test_filter_and_sort_on_merchant_software_and_faults(world: Fleet) -> None:
    w = world
    w.shows[w.bus] = [("no_reader", "pcsc: no reader")]
    w.sync(w.bus)  # the till never reports: no software, no faults known
    with logged_in(w.svc, "vera") as c:
        def ids(query: str) -> list[str]:
            return [r["terminal"] for r in c.get(f"/console/fleet.json?{query}").json()["rows"]]

        assert ids("faults=1") == [w.bus]
        assert ids(f"software={SOFTWARE}") == [w.bus]
        assert ids("software=localpay+0.0.1") == []
        assert ids("q=bakery") == [w.till]  # the merchant's name
        assert ids("q=m-77&role=till") == [w.till]
        assert ids(f"q={__version__}") == [w.bus]  # the software's
        # a terminal that never reported sorts first, as the smallest
        assert ids("sort=software") == [w.till, w.bus]
        assert ids("sort=software&dir=desc") == [w.bus, w.till]
        assert ids("sort=faults&dir=desc") == [w.bus, w.till]
        assert ids("sort=merchant") == [w.bus, w.till]  # none, then M-77
        # the filters stay in the page's links and form
        page = c.get("/console/fleet?faults=1&sort=software&dir=desc&lang=en").text
        assert 'href="?q=&amp;role=&amp;faults=1&amp;sort=software&amp;dir=asc&amp;page=1"' \
            in page
        assert 'id="faults" checked' in page
        never = c.get(f"/console/terminals/{w.till}?lang=en").text
        assert 'id="no-report"' in never and '<dd id="fact-software">-</dd>' in never
    # the same rows from the console's data function, which the CLI's figures come from
    assert [r.terminal_id for r in fleet(w.svc.store, faulty=True).rows] == [w.bus]
    assert [r.terminal_id for r in fleet(w.svc.store, sort="faults", desc=True).rows] == [
        w.bus, w.till]
