"""End to end over HTTP: a validator's taps go up through the real sync client to the real
central service (its own process), points are credited once, the points snapshot comes down
into the ledger, and the next tap shows what the service then credits. Operator commands
(rules, profile, statement, payout) through the real CLI."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import open_service
from central.incentive_rules import default_rules_text
from central.service import CentralLog
from drivers.virtual import VirtualReader
from firmware_cfg.config import DEFAULT
from firmware_cfg.keys import DEMO_TOKEN_KEY, public_hex
from localpay.cli import cli
from localpay.types import Presentation
from offline_ledger import Ledger
from sync.client import SyncClient
from terminal.cards import card_token
from terminal.core import Terminal
from tests.conftest import FakeClock
from tests.incentives_data import Chain, moved_clock, seoul_ms
from tests.pg_fixtures import central

ADULT, YOUTH = bytes.fromhex("08000011"), bytes.fromhex("08000012")


# A fixed week (Monday 2025-03-10 to Sunday 2025-03-16): taps on its Wednesday and Thursday,
# synced on its Friday, so that nothing depends on the day the test runs.
WEDNESDAY = date(2025, 3, 12)
NOW_MS = seoul_ms(2025, 3, 14, 10)   # Friday 10:00 in Seoul, for the client and the service
PAID_MONTH = "2025-02"               # a month that ended before that week


def fixed_now(now_ms: int) -> tuple[Callable[[], float], tuple[str, ...]]:
    """A wall clock that reads ``now_ms`` at this call and then runs on, for the sync client,
    and the ``python`` arguments that start the central service on the same clock."""
    return moved_clock(now_ms / 1000 - time.time(), "central", "serve")


def tap(t: Terminal, reader: VirtualReader, uid: bytes) -> tuple[int | None, int | None]:
    reader.present_uid(uid)
    p: Presentation | None = reader.poll(1.0)
    assert p is not None
    d = t.tap(p)
    assert d.approved
    return d.points, d.points_week


def test_points_credited_once_and_shown_offline(tmp_path: Path) -> None:
    db, data = f"sqlite:///{tmp_path / 'central.sqlite'}", tmp_path / "data"
    key = Ed25519PrivateKey.generate()
    svc = open_service(db, data)
    svc.add_terminal("BUS-E2E", bytes.fromhex(public_hex(key)))
    svc.store.close()
    adult, youth = card_token(DEMO_TOKEN_KEY, "uid", ADULT), card_token(DEMO_TOKEN_KEY, "uid",
                                                                       YOUTH)
    run = CliRunner()
    opts = ["--db", db, "--data", str(data)]
    rules = tmp_path / "rules.toml"
    text = default_rules_text().replace("version = 1", "version = 2")
    start = text.index("holidays = [")
    rules.write_text(text[:start] + "holidays = []\n" + text[text.index("]\n", start) + 2:])
    out = run.invoke(cli, ["central", "rules", "load", str(rules), *opts])
    assert out.exit_code == 0 and "version 2 in force" in out.output, out.output
    out = run.invoke(cli, ["central", "profile", "set", youth, "--rider", "youth", *opts])
    assert out.exit_code == 0, out.output

    wed = WEDNESDAY
    assert wed.weekday() == 2
    clock = FakeClock(seoul_ms(wed.year, wed.month, wed.day, 8) / 1000)
    path = tmp_path / "ledger.sqlite"
    config = DEFAULT.replace("terminal", role="validator", id="BUS-E2E", place="85")
    reader = VirtualReader()
    ledger = Ledger(path, key=key, terminal_id="BUS-E2E")
    try:
        t = Terminal(config, ledger, DEMO_TOKEN_KEY, clock=clock)
        assert tap(t, reader, ADULT) == (None, None)      # no rules known yet
        tap(t, reader, YOUTH)
        now, server = fixed_now(NOW_MS)
        with central(db, data, command=server) as srv:
            client = SyncClient(path, key, srv.url, srv.verifier, batch_size=1, clock=now)
            first = client.sync_once()
            snap = ledger.points_snapshot(adult)
            assert snap is not None and (snap.points_week, snap.days_mask) == (1500, 0b100)
            ysnap = ledger.points_snapshot(youth)
            assert ysnap is not None and ysnap.rider == "youth"
            clock.advance(86_400)                          # Thursday
            t = Terminal(config, ledger, DEMO_TOKEN_KEY, clock=clock)
            shown = [tap(t, reader, ADULT), tap(t, reader, YOUTH)]
            assert shown == [(1400, 2900), (520, 2020)]
            again = client.sync_once()
            assert client.sync_once().sent == 0
            client.close()
        assert (first.sent, first.points, again.sent) == (2, 2, 2)
    finally:
        ledger.close()
        reader.close()
    for token, week in ((adult, 2900), (youth, 2020)):
        out = run.invoke(cli, ["central", "points", "--card", token, "--json", *opts])
        assert out.exit_code == 0, out.output
        st = json.loads(out.output)
        assert st["earned"] == week and {e["rule_version"] for e in st["entries"]} == {2}
        assert len(st["entries"]) == 2 and st["weeks"][0]["points"] == week
    out = run.invoke(cli, ["central", "points", "--card", adult, *opts])
    assert "earned 2,900" in out.output and "BUS-E2E/1" in out.output
    out = run.invoke(cli, ["central", "credit", *opts])    # the service credited them all
    assert out.exit_code == 0 and "credited 0 entries, 0 points" in out.output, out.output
    last = PAID_MONTH
    out = run.invoke(cli, ["central", "payout", "--month", last, *opts])
    assert out.exit_code == 0 and f"{last} paid out" in out.output, out.output
    out = run.invoke(cli, ["central", "payout", "--month", last, *opts])
    assert f"{last} already paid out" in out.output


def test_central_credit_catches_up_a_backlog(tmp_path: Path) -> None:
    db, data = f"sqlite:///{tmp_path / 'central.sqlite'}", tmp_path / "data"
    svc = open_service(db, data)
    # The same store under a service that does not credit: its batches wait in the log, as
    # they would when the service stopped between a batch and its crediting.
    bare = CentralLog(svc.store, svc.signer)
    bus = Chain("BUS-1")
    bare.add_terminal("BUS-1", bytes.fromhex(public_hex(bus.key)))
    for d in range(3):
        bare.ingest("BUS-1", [bus.tap("a" * 32, seoul_ms(2025, 3, 10 + d, 7))])
    svc.store.close()
    run = CliRunner()
    opts = ["--db", db, "--data", str(data)]
    out = run.invoke(cli, ["central", "credit", "--chunk", "2", *opts])
    assert out.exit_code == 0 and "credited 2 entries, 2,900 points" in out.output, out.output
    out = run.invoke(cli, ["central", "credit", *opts])
    assert out.exit_code == 0 and "credited 0 entries, 0 points" in out.output, out.output
