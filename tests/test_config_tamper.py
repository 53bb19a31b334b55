"""Issue #16 A: a config changed behind the ledger's back.

The terminal refuses at start a ``terminal.toml`` that differs from its last signed bundle
outside the local fields, and keeps the technician's local settings across new bundles; the
central service records entries that contradict the terminal's signed config as config
violations (listed by ``central report``), refuses to publish a bundle of another role, and
hears of the bundles a terminal refused. Against a real ``localpay central serve`` on
loopback (SQLite and PostgreSQL stores) and the terminal's real core, ledger and sync client.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import open_service
from central.config_audit import contradictions
from central.incentive_rules import Rules
from drivers.virtual import VirtualReader
from firmware_cfg import bundle as bundles
from firmware_cfg.config import DEFAULT, LOCAL_FIELDS, SIGNED_FILE, Config, dumps, load
from firmware_cfg.keys import public_from_hex, public_hex
from localpay.cli import cli
from localpay.cli.bench.stacks import central
from localpay.errors import ConfigError
from localpay.types import Presentation
from offline_ledger import Ledger
from sync import client as sync_client
from sync.client import SyncClient
from terminal import config_update
from terminal.config_update import PENDING, apply_pending, install
from terminal.core import Decision, Terminal
from terminal.home import Home, open_terminal
from tests.enroll_fixtures import issue_code, localpay_central, provision
from tests.incentives_data import moved_clock
from tests.pg_fixtures import CentralProcess, pg_cluster, store_url  # noqa: F401


@pytest.fixture
def srv(tmp_path: Path, store_url: str) -> Iterator[CentralProcess]:  # noqa: F811
    with localpay_central(store_url, tmp_path / "central") as server:
        yield server


@pytest.fixture
def reader() -> Iterator[VirtualReader]:
    r = VirtualReader()
    yield r
    r.close()


def _provisioned(tmp_path: Path, srv: CentralProcess, role: str = "validator",
                 place: str = "85") -> Home:
    flag = "--route" if role == "validator" else "--merchant"
    home = tmp_path / "terminal"
    result = provision(home, srv, issue_code(srv), "--role", role, flag, place,
                       "--no-selftest")
    assert result.exit_code == 0, result.output
    return Home(home)


def _card(reader: VirtualReader, uid: str) -> Presentation:
    reader.present_uid(bytes.fromhex(uid))
    p = reader.poll(1.0)
    assert p is not None
    return p


def _run_anyway(home: Home, config: Config, work: list[tuple[str, int]],
                reader: VirtualReader) -> list[Decision]:
    """What a tampered terminal does with the config it was given: the real core signs the
    entries into the home's ledger (the start check is what a real start goes through)."""
    key = home.terminal_key(config)
    with Ledger(home.ledger_path, key=key, terminal_id=config.terminal.id) as ledger:
        t = Terminal(config, ledger, home.token_key(config))
        out = [t.tap(_card(reader, uid)) if amount == 0 else t.pay(_card(reader, uid), amount)
               for uid, amount in work]
    assert all(d.approved for d in out), out
    return out


def _sync(home: Home, srv: CentralProcess, config: Config,
          clock: Callable[[], float] = time.time) -> None:
    with SyncClient(home.ledger_path, home.terminal_key(config), srv.url, srv.verifier,
                    clock=clock) as c:
        c.sync_once()


def _back_to_an_earning_day() -> float:
    """Seconds to move a clock back (0 or whole days) to the latest day on which a bus tap
    earns under the default programme: none earns on a weekend or a public holiday, and
    the test below ran at 00:05 on a Saturday in Seoul once (when CI may run it)."""
    rules = Rules.default()
    now = datetime.now(ZoneInfo("Asia/Seoul"))
    for back in range(15):
        if rules.bus.earns_on((now - timedelta(days=back)).date()):
            return -back * 86_400.0
    raise AssertionError("no day of the last two weeks earns")


def _report(srv: CentralProcess, day: str) -> tuple[int, str]:
    out = CliRunner().invoke(cli, ["central", "report", "--db", srv.db, "--data",
                                   str(srv.data), "--date", day])
    return out.exit_code, out.output


def _day_of(srv: CentralProcess, terminal_id: str) -> str:
    svc = open_service(srv.db, srv.data)
    try:
        with svc.store.tx(write=False) as tx:
            row = tx.one("SELECT MAX(day) FROM entries WHERE terminal_id = ?", (terminal_id,))
    finally:
        svc.store.close()
    assert row is not None and row[0]
    return str(row[0])


# -- the terminal refuses a hand-edited config at start --------------------------------------


def test_hand_edited_money_fields_are_refused_at_start(tmp_path: Path,
                                                      srv: CentralProcess) -> None:
    home = _provisioned(tmp_path, srv)
    signed = home.config()
    tampered = signed.replace("fares", adult=100).replace("risk", max_amount=9_000_000)
    home.config_path.write_text(dumps(tampered), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        home.config()
    message = str(caught.value)
    assert "differs from the signed config version 1 in fares.adult, risk.max_amount" \
        in message and "\n" not in message
    # every command that starts from the home says so in one line, exit 2
    out = CliRunner().invoke(cli, ["--home", str(home.path), "sync", "--once"])
    assert out.exit_code == 2, out.output
    assert "fares.adult, risk.max_amount" in out.output
    assert len(out.output.strip().splitlines()) == 1
    # put back, it starts again
    home.config_path.write_text(dumps(signed), encoding="utf-8")
    assert home.config() == signed


def test_local_fields_may_change_and_survive_the_next_bundle(tmp_path: Path,
                                                            srv: CentralProcess) -> None:
    home = _provisioned(tmp_path, srv)
    signed = home.config()
    assert "readers.card" in LOCAL_FIELDS and "fares.adult" not in LOCAL_FIELDS
    local = signed.replace("readers", card="pcsc:ACR1252", buzzer=False).replace(
        "terminal", language="en")
    home.config_path.write_text(dumps(local), encoding="utf-8")
    assert home.config() == local
    # central publishes version 2 from the signed config it knows (readers "virtual")
    new_file = tmp_path / "v2.toml"
    new_file.write_text(dumps(signed.replace("fares", adult=1550)), encoding="utf-8")
    out = CliRunner().invoke(cli, ["central", "config", "--db", srv.db, "--data",
                                   str(srv.data), "--sign-for", signed.terminal.id,
                                   str(new_file)])
    assert out.exit_code == 0, out.output
    out = CliRunner().invoke(cli, ["--home", str(home.path), "sync", "--once"])
    assert out.exit_code == 0, out.output
    terminal = open_terminal(home, home.config())
    try:
        applied = apply_pending(terminal, home)
        assert applied is not None and applied.version == 2
        running = home.config()
        assert running.fares.adult == 1550 and terminal.config == running
        # what the technician set on site stays; the signed rest is version 2's
        assert (running.readers.card, running.readers.buzzer, running.terminal.language) == \
            ("pcsc:ACR1252", False, "en")
        assert bundles.current_version(home.path) == 2
    finally:
        assert terminal.ledger is not None
        terminal.ledger.close()


def test_an_unprovisioned_home_runs_on_its_file_or_the_defaults(tmp_path: Path) -> None:
    home = Home(tmp_path)
    assert home.config() == DEFAULT
    mine = DEFAULT.replace("fares", adult=100)
    home.config_path.write_text(dumps(mine), encoding="utf-8")
    assert home.config() == mine and not (tmp_path / SIGNED_FILE).exists()
    (tmp_path / SIGNED_FILE).write_text("{not a bundle", encoding="utf-8")
    with pytest.raises(ConfigError, match="is not a config bundle"):
        load(home.config_path)


def test_a_power_cut_between_the_kept_bundle_and_the_file(tmp_path: Path) -> None:
    """The kept bundle is written before the file: cut between the two, the terminal still
    starts (on the previous file) and the pending bundle completes the install."""
    operator = Ed25519PrivateKey.generate()
    home = Home(tmp_path / "home")
    config = DEFAULT.replace("terminal", id="BUS-85-0009").replace(
        "keys", operator_public_key=public_hex(operator))
    terminal = open_terminal(home, config, create_keys=True)
    try:
        install(terminal, home, bundles.make(operator, "BUS-85-0009", 1, dumps(config)))
        v2 = bundles.make(operator, "BUS-85-0009", 2, dumps(config.replace("fares", adult=1550)))
        (home.path / SIGNED_FILE).write_bytes(v2)                  # ... and the power goes
        (home.path / PENDING).write_bytes(v2)
        assert home.config() == config                            # starts, on version 1
        applied = apply_pending(terminal, home)
        assert applied is not None and applied.version == 2
        assert home.config().fares.adult == 1550 and bundles.current_version(home.path) == 2
    finally:
        assert terminal.ledger is not None
        terminal.ledger.close()


# -- central: entries against the signed config ------------------------------------------------


def test_taps_at_a_tampered_fare_are_violations_in_the_report(
        tmp_path: Path, srv: CentralProcess, reader: VirtualReader) -> None:
    """The issue's case: fare 1,500 -> 100 by hand; central took the 100-won taps and the
    report said "ok"."""
    home = _provisioned(tmp_path, srv)
    signed = home.config()
    tampered = signed.replace("fares", adult=100).replace("risk", max_amount=9_000_000)
    _run_anyway(home, tampered, [("08c10001", 0), ("08c10002", 0)], reader)
    _sync(home, srv, signed)
    code, output = _report(srv, _day_of(srv, signed.terminal.id))
    assert code == 1, output
    flagged = [line for line in output.splitlines() if line.startswith("FLAG config")]
    assert len(flagged) == 2, output
    assert '"fields":["fares.adult"]' in flagged[0] and '"signed":{"fares.adult":1500}' \
        in flagged[0] and '"entry":{"fares.adult":100}' in flagged[0]
    # nothing approved is lost: both taps are in the log as signed, and reconcile
    svc = open_service(srv.db, srv.data)
    try:
        with svc.store.tx(write=False) as tx:
            assert tx.all("SELECT amount FROM entries WHERE kind = 'tap'") == [(100,), (100,)]
    finally:
        svc.store.close()
    assert "DIFFERENCE" not in output


def test_payments_over_the_signed_limit_and_a_config_nobody_signed(
        tmp_path: Path, srv: CentralProcess, reader: VirtualReader) -> None:
    home = _provisioned(tmp_path, srv, "till", "M0427")
    signed = home.config()
    loose = signed.replace("risk", max_amount=9_000_000, uid_max_amount=9_000_000,
                           card_offline_amount=9_000_000, uid_card_offline_amount=9_000_000)
    _run_anyway(home, signed, [("08c10001", 9_000)], reader)        # within the limits
    _run_anyway(home, loose, [("08c10002", 200_000)], reader)       # over them
    # a config_change naming a version central never published
    with Ledger(home.ledger_path, key=home.terminal_key(signed),
                terminal_id=signed.terminal.id) as ledger:
        ledger.append("config_change", place=signed.terminal.place,
                      detail={"version": 7, "sha256": "0" * 64})
    _sync(home, srv, signed)
    code, output = _report(srv, _day_of(srv, signed.terminal.id))
    assert code == 1, output
    flagged = [line for line in output.splitlines() if line.startswith("FLAG config")]
    assert len(flagged) == 2, output
    assert '"fields":["risk.uid_max_amount"]' in flagged[0] and "200000" in flagged[0]
    assert "never published" in flagged[1]


def test_contradictions_of_one_entry() -> None:
    till = DEFAULT.replace("terminal", role="till", place="M1", merchant_category="general")
    assert contradictions(till, "payment", 50_000, "M1", {"scheme": "emv"}) == {}
    assert contradictions(till, "payment", 50_001, "M1", {"scheme": "emv"}) == {
        "risk.max_amount": (50_000, 50_001)}
    assert contradictions(till, "payment", 100, "M2", {"merchant_category": "local_food"}) \
        == {"terminal.place": ("M1", "M2"),
            "terminal.merchant_category": ("general", "local_food")}
    assert contradictions(till, "tap", 1500, "M1", {"rider": "adult"}) == {
        "terminal.role": ("till", "validator")}
    bus = DEFAULT.replace("fares", extra={"senior": 0})
    assert contradictions(bus, "tap", 0, "85", {"rider": "senior"}) == {}
    assert contradictions(bus, "tap", 900, "85", {"rider": "youth"}) == {}
    assert contradictions(bus, "tap", 900, "85", {"rider": "martian"}) == {
        "fares.adult": (1500, 900)}
    assert contradictions(bus, "refund", 10**9, "x", {}) == {}


def test_an_install_cut_short_is_recorded_and_its_fare_is_not_a_violation(
        tmp_path: Path, srv: CentralProcess, reader: VirtualReader) -> None:
    """A power cut after the files of version 2 were in place and before its config_change:
    at the next start the pending bundle is recorded, not refused as not newer, so central
    holds the taps to version 2's fare."""
    home = _provisioned(tmp_path, srv)
    signed = home.config()
    new_file = tmp_path / "v2.toml"
    new_file.write_text(dumps(signed.replace("fares", adult=1550)), encoding="utf-8")
    out = CliRunner().invoke(cli, ["central", "config", "--db", srv.db, "--data",
                                   str(srv.data), "--sign-for", signed.terminal.id,
                                   str(new_file)])
    assert out.exit_code == 0, out.output
    assert CliRunner().invoke(cli, ["--home", str(home.path), "sync", "--once"]).exit_code == 0
    data = (home.path / PENDING).read_bytes()
    operator = public_from_hex(signed.keys.operator_public_key, "operator key")
    v2 = bundles.verify(data, operator, signed.terminal.id, 1)
    bundles.apply(home.path, v2, lambda _c: None)               # ... and the power goes
    terminal = open_terminal(home, home.config())
    try:
        applied = apply_pending(terminal, home)
        assert applied is not None and applied.version == 2
        assert not (home.path / PENDING).exists()
        assert not (home.path / config_update.REJECTED_REPORT).exists()
        assert terminal.ledger is not None
        last = terminal.ledger.entry(terminal.ledger.head.seq)
        assert last is not None and last.kind == "config_change"
        assert json.loads(last.fields.detail) == {"version": 2, "sha256": applied.sha256}
    finally:
        assert terminal.ledger is not None
        terminal.ledger.close()
    _run_anyway(home, home.config(), [("08c10001", 0)], reader)
    _sync(home, srv, home.config())
    code, output = _report(srv, _day_of(srv, signed.terminal.id))
    assert code == 0 and "FLAG config" not in output, output


# -- central: publishing and refused bundles -----------------------------------------------------


def test_sign_for_refuses_a_bundle_of_another_role(tmp_path: Path,
                                                  srv: CentralProcess) -> None:
    home = _provisioned(tmp_path, srv)
    signed = home.config()
    till_file = tmp_path / "till.toml"
    till_file.write_text(dumps(signed.replace("terminal", role="till", place="M0427")),
                         encoding="utf-8")
    opts = ["--db", srv.db, "--data", str(srv.data)]
    out = CliRunner().invoke(cli, ["central", "config", *opts, "--sign-for",
                                   signed.terminal.id, str(till_file)])
    assert out.exit_code == 2, out.output
    assert f"{signed.terminal.id} is a validator (config version 1)" in out.output
    other = tmp_path / "other.toml"
    other.write_text(dumps(signed.replace("terminal", id="BUS-85-0099")), encoding="utf-8")
    out = CliRunner().invoke(cli, ["central", "config", *opts, "--sign-for",
                                   signed.terminal.id, str(other)])
    assert out.exit_code == 2 and "holds the config of terminal 'BUS-85-0099'" in out.output
    svc = open_service(srv.db, srv.data)
    try:
        assert svc.latest_config(signed.terminal.id)["version"] == 1
    finally:
        svc.store.close()


def test_a_refused_bundle_is_reported_at_the_next_sync(tmp_path: Path,
                                                      srv: CentralProcess) -> None:
    home = _provisioned(tmp_path, srv)
    signed = home.config()
    forged = bundles.make(Ed25519PrivateKey.generate(), signed.terminal.id, 3, dumps(signed))
    (home.path / PENDING).write_bytes(forged)
    terminal = open_terminal(home, signed)
    try:
        with pytest.raises(ConfigError, match="does not verify"):
            apply_pending(terminal, home)
    finally:
        assert terminal.ledger is not None
        terminal.ledger.close()
    report = json.loads((home.path / config_update.REJECTED_REPORT).read_text())
    assert report["version"] == 3 and "does not verify" in report["reason"]
    out = CliRunner().invoke(cli, ["--home", str(home.path), "sync", "--once"])
    assert out.exit_code == 0, out.output
    assert not (home.path / config_update.REJECTED_REPORT).exists()
    code, output = _report(srv, _day_of(srv, signed.terminal.id))
    assert code == 1
    assert f"CONFIG REFUSED by {signed.terminal.id}: version 3" in output
    assert "does not verify with the operator key" in output


def test_the_report_file_is_named_alike_on_both_sides() -> None:
    assert config_update.REJECTED_REPORT == sync_client.REJECTED_REPORT


def test_entries_against_the_signed_config_earn_no_points(
        tmp_path: Path, store_url: str, reader: VirtualReader) -> None:  # noqa: F811
    """A flagged entry stays in the log but must not become money: the crediting follower
    credits the tap made at the signed fare and nothing for the one at a hand-edited fare.

    The taps are the terminal's first entries (its clock not yet vouched for), so central
    dates them at their arrival. The service and the sync client run on a clock moved
    back to a day on which taps earn, or the honest tap would earn nothing either."""
    clock, server = moved_clock(_back_to_an_earning_day(), "central", "serve", "--init")
    with central(store_url, tmp_path / "central", command=server) as srv:
        home = _provisioned(tmp_path, srv)
        signed = home.config()
        _run_anyway(home, signed, [("08c10001", 0)], reader)
        _run_anyway(home, signed.replace("fares", adult=100), [("08c10002", 0)], reader)
        _sync(home, srv, signed, clock)
    svc = open_service(srv.db, srv.data)
    try:
        with svc.store.tx(write=False) as tx:
            taps = tx.all("SELECT seq, amount FROM entries WHERE kind = 'tap' ORDER BY seq")
            flagged = {int(r[0]) for r in tx.all(
                "SELECT seq FROM flags WHERE rule = 'config'")}
            credited = {int(r[0]) for r in tx.all("SELECT seq FROM incentive_credits")}
    finally:
        svc.store.close()
    assert [int(a) for _, a in taps] == [signed.fares.adult, 100]
    honest, tampered = (int(s) for s, _ in taps)
    assert flagged == {tampered}
    assert honest in credited and tampered not in credited


def test_a_deleted_config_file_is_not_the_embedded_defaults(tmp_path: Path,
                                                            srv: CentralProcess) -> None:
    home = _provisioned(tmp_path, srv)
    assert home.config().terminal.id != DEFAULT.terminal.id  # the provisioned file, read
    home.config_path.unlink()
    with pytest.raises(ConfigError, match=r"is missing but .*config\.bundle"):
        home.config()
