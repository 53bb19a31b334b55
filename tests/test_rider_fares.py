"""Each rider pays their category's fare at the validator, offline.

The category comes from the card where a card application reads one, else from the card's
central profile (set at the real central service, fetched by the real sync client into the
ledger with the points snapshot), else from the config's default. Fares are the figures
written in each test's own config; money is checked on the decision and again in the ledger
entry (and, after the next sync, in the central log).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import open_service
from central.profiles import profiles_delta, remove_profile, set_profiles
from central.store import open_store
from drivers.virtual import VirtualReader
from firmware_cfg.config import Config, loads
from firmware_cfg.keys import DEMO_TOKEN_KEY, public_hex
from localpay.cli import cli
from localpay.errors import ConfigError
from localpay.types import Presentation
from offline_ledger import Ledger
from sync.client import SyncClient, SyncSummary
from terminal import cards
from terminal.cards import CardIdentity, ReadContext, card_token
from terminal.core import Decision, Terminal
from tests.conftest import FakeClock
from tests.pg_fixtures import central, pg_cluster, store_url  # noqa: F401

YOUTH, CHILD, NOBODY = bytes.fromhex("08c10001"), bytes.fromhex("08c10002"), bytes.fromhex(
    "08c10003")
#: cards whose own application says their category (the hook no product application uses yet)
SENIOR, OWN_CHILD = bytes.fromhex("08c10004"), bytes.fromhex("08c10005")
OWN_CATEGORY = {SENIOR: "senior", OWN_CHILD: "child"}

RIDER_CONFIG = """
[terminal]
id = "BUS-RIDERS"
role = "validator"
place = "85"

[fares]
adult = 1450
youth = 870
child = 430
default = "adult"

[fares.extra]
senior = 0
"""


def token(uid: bytes) -> str:
    return card_token(DEMO_TOKEN_KEY, "uid", uid)


@pytest.fixture
def reader() -> Iterator[VirtualReader]:
    r = VirtualReader()
    yield r
    r.close()


@pytest.fixture
def own_category_cards() -> Iterator[None]:
    """A card application that reads the category off the card, tried before the others."""

    def claims(p: Presentation) -> bool:
        return p.protocol == "TEST-CATEGORY"

    def read(p: Presentation, ctx: ReadContext) -> CardIdentity:
        return CardIdentity(card_token(ctx.token_key, "uid", p.uid), "own category", "test",
                            rider=OWN_CATEGORY[p.uid])

    cards.register("test-category", claims, read, first=True)
    yield
    cards.APPLICATIONS[:] = [a for a in cards.APPLICATIONS if a[0] != "test-category"]


def tap(t: Terminal, reader: VirtualReader, uid: bytes) -> Decision:
    if uid in OWN_CATEGORY:
        d = t.tap(Presentation("card", "t", uid=uid, protocol="TEST-CATEGORY"))
    else:
        reader.present_uid(uid)
        p = reader.poll(1.0)
        assert p is not None
        d = t.tap(p)
    assert d.approved, d
    return d


def charged(ledger: Ledger, d: Decision) -> tuple[int, str]:
    """The entry as the ledger holds it: its amount and the category its detail records."""
    assert d.entry is not None
    stored = ledger.entry(d.entry.seq)
    assert stored is not None and stored.kind == "tap"
    return stored.amount, json.loads(stored.fields.detail)["rider"]


def register(db: str, data: Path, key: Ed25519PrivateKey, terminal_id: str) -> None:
    svc = open_service(db, data)
    svc.add_terminal(terminal_id, bytes.fromhex(public_hex(key)))
    svc.store.close()


def sync(path: Path, key: Ed25519PrivateKey, db: str, data: Path) -> SyncSummary:
    """One sync round against the real service, in its own process."""
    with central(db, data) as srv:
        client = SyncClient(path, key, srv.url, srv.verifier)
        try:
            return client.sync_once()
        finally:
            client.close()


# -- the defect ---------------------------------------------------------------------------------


def test_youth_profile_pays_the_youth_fare_not_the_adult_fare(tmp_path: Path,
                                                              reader: VirtualReader) -> None:
    """The defect: no card application sets the category, so a youth rider with a youth
    profile at central paid the adult 1,500 instead of the youth 900."""
    db, data = f"sqlite:///{tmp_path / 'central.sqlite'}", tmp_path / "data"
    key = Ed25519PrivateKey.generate()
    # Only keys that existed before the fix: this config means the same on either side of it.
    config = loads('[terminal]\nid = "BUS-85-0007"\nrole = "validator"\nplace = "85"\n'
                   "[fares]\nadult = 1500\nyouth = 900\nchild = 550\n")
    register(db, data, key, "BUS-85-0007")
    out = CliRunner().invoke(cli, ["central", "profile", "set", token(YOUTH), "--rider",
                                   "youth", "--db", db, "--data", str(data)])
    assert out.exit_code == 0, out.output
    path = tmp_path / "ledger.sqlite"
    Ledger(path, key=key, terminal_id="BUS-85-0007").close()
    sync(path, key, db, data)
    with Ledger(path, key=key, terminal_id="BUS-85-0007") as ledger:       # offline now
        d = Terminal(config, ledger, DEMO_TOKEN_KEY, clock=FakeClock()).tap(
            _poll(reader, YOUTH))
        assert d.approved and d.amount == 900
        assert d.entry is not None
        stored = ledger.entry(d.entry.seq)
        assert stored is not None and stored.amount == 900


def _poll(reader: VirtualReader, uid: bytes) -> Presentation:
    reader.present_uid(uid)
    p = reader.poll(1.0)
    assert p is not None
    return p


# -- every category, through central and the sync client ----------------------------------------


def test_each_category_pays_its_fare_offline(tmp_path: Path, reader: VirtualReader,
                                             own_category_cards: None) -> None:
    db, data = f"sqlite:///{tmp_path / 'central.sqlite'}", tmp_path / "data"
    opts = ["--db", db, "--data", str(data)]
    key = Ed25519PrivateKey.generate()
    config = loads(RIDER_CONFIG)
    register(db, data, key, "BUS-RIDERS")
    run = CliRunner()
    for uid, rider in ((YOUTH, "youth"), (CHILD, "child"), (OWN_CHILD, "youth")):
        out = run.invoke(cli, ["central", "profile", "set", token(uid), "--rider", rider, *opts])
        assert out.exit_code == 0, out.output
    path = tmp_path / "ledger.sqlite"
    Ledger(path, key=key, terminal_id="BUS-RIDERS").close()
    assert sync(path, key, db, data).riders == 3
    clock = FakeClock()
    taps: dict[bytes, Decision] = {}
    with Ledger(path, key=key, terminal_id="BUS-RIDERS") as ledger:       # offline: no service
        assert ledger.riders_version() == 3 and ledger.rider_of(token(YOUTH)) == "youth"
        t = Terminal(config, ledger, DEMO_TOKEN_KEY, clock=clock)
        for uid in (YOUTH, CHILD, NOBODY, SENIOR, OWN_CHILD):
            taps[uid] = d = tap(t, reader, uid)
            assert (d.amount, d.rider) == charged(ledger, d)
        assert charged(ledger, taps[YOUTH]) == (870, "youth")
        assert charged(ledger, taps[CHILD]) == (430, "child")
        assert charged(ledger, taps[NOBODY]) == (1450, "adult")      # no profile: the default
        assert charged(ledger, taps[SENIOR]) == (0, "senior")        # free, and still recorded
        assert charged(ledger, taps[OWN_CHILD]) == (430, "child")    # the card beats its profile
        senior = taps[SENIOR].entry
        assert senior is not None and ledger.card_state(token(SENIOR)).last_tap_seq == senior.seq

    # Removing a profile reaches the terminal: the card pays the default fare again.
    out = run.invoke(cli, ["central", "profile", "remove", token(YOUTH), *opts])
    assert out.exit_code == 0 and "removed" in out.output, out.output
    again = sync(path, key, db, data)               # the taps go up, the removal comes down
    assert (again.sent, again.riders) == (5, 1)
    clock.advance(3600)
    with Ledger(path, key=key, terminal_id="BUS-RIDERS") as ledger:
        assert ledger.rider_of(token(YOUTH)) is None
        d = tap(Terminal(config, ledger, DEMO_TOKEN_KEY, clock=clock), reader, YOUTH)
        assert d.amount == 1450 and charged(ledger, d) == (1450, "adult")

    # The central log holds what the terminal charged, with the category it charged.
    store = open_store(db)
    try:
        with store.tx(write=False) as tx:
            rows = tx.all("SELECT seq, amount, detail FROM entries WHERE terminal_id = ? "
                          "ORDER BY seq", ("BUS-RIDERS",))
    finally:
        store.close()
    assert [(int(a), json.loads(dt)["rider"]) for _, a, dt in rows] == [
        (870, "youth"), (430, "child"), (1450, "adult"), (0, "senior"), (430, "child")]


def test_points_answer_carries_riders_only_when_asked(tmp_path: Path) -> None:
    db, data = f"sqlite:///{tmp_path / 'central.sqlite'}", tmp_path / "data"
    key = Ed25519PrivateKey.generate()
    register(db, data, key, "BUS-1")
    svc = open_service(db, data)
    set_profiles(svc.store, {token(YOUTH): "youth", token(CHILD): "child"})
    svc.store.close()
    path = tmp_path / "ledger.sqlite"
    Ledger(path, key=key, terminal_id="BUS-1").close()
    with central(db, data) as srv:
        client = SyncClient(path, key, srv.url, srv.verifier)
        client.terminal_id = "BUS-1"
        try:
            old = client._request("GET", "/v1/points?since=0")
            new = client._request("GET", "/v1/points?since=0&riders_since=1")
        finally:
            client.close()
    assert "riders" not in old and {"version", "week_start", "rules", "points"} <= set(old)
    # One version per card, numbered in token order: version 2 is the second token's.
    second = max(token(YOUTH), token(CHILD))
    rider = {token(YOUTH): "youth", token(CHILD): "child"}[second]
    assert new["riders"] == {"version": 2, "changes": {second: rider}}
    # time_ms: the service's clock when it answered (central.app), different each time
    assert {k: v for k, v in new.items() if k not in ("riders", "time_ms")} == {
        k: v for k, v in old.items() if k != "time_ms"}


# -- profiles at central ------------------------------------------------------------------------


def test_profile_changes_are_versioned_for_terminals(store_url: str) -> None:  # noqa: F811
    store = open_store(store_url)
    try:
        a, b, c = "a" * 32, "b" * 32, "c" * 32
        assert set_profiles(store, {a: "youth", b: "child"}) == 2
        first = profiles_delta(store, 0)
        assert first == {"version": 2, "changes": {a: "youth", b: "child"}}
        assert profiles_delta(store, 2) == {"version": 2, "changes": {}}
        set_profiles(store, {a: "youth", b: "adult"})    # a unchanged: no new version for it
        assert profiles_delta(store, 2) == {"version": 3, "changes": {b: "adult"}}
        assert remove_profile(store, a) is True
        assert remove_profile(store, a) is False         # already gone
        assert remove_profile(store, c) is False         # never had one
        assert profiles_delta(store, 3) == {"version": 4, "changes": {a: ""}}
        set_profiles(store, {c: "child"})
        # A page stops at its last version; asking from it gets the rest.
        page = profiles_delta(store, 0, limit=2)
        assert page == {"version": 4, "changes": {b: "adult", a: ""}}
        rest = profiles_delta(store, page["version"], limit=2)
        assert rest == {"version": 5, "changes": {c: "child"}}
        with pytest.raises(ConfigError, match="rider must be one of"):
            set_profiles(store, {c: "senior"})
        with pytest.raises(ConfigError, match="rider must be one of"):
            set_profiles(store, {"": "youth"})
    finally:
        store.close()


def test_profiles_from_before_versions_reach_a_new_terminal(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'central.sqlite'}")
    try:
        with store.tx() as tx:      # as a store upgraded with the version column holds them
            tx.run("INSERT INTO incentive_profiles (card_token, rider, updated_ms, version) "
                   "VALUES (?, 'youth', 1, 0)", ("d" * 32,))
        assert profiles_delta(store, 0) == {"version": 0, "changes": {"d" * 32: "youth"}}
        set_profiles(store, {"e" * 32: "child"})
        assert profiles_delta(store, 0) == {"version": 1, "changes": {"d" * 32: "youth",
                                                                      "e" * 32: "child"}}
        assert profiles_delta(store, 1)["changes"] == {}
    finally:
        store.close()


# -- the terminal's side -------------------------------------------------------------------------


def test_ledger_riders_apply_in_version_order(ledger: Ledger) -> None:
    assert ledger.riders_version() == 0 and ledger.rider_of("a" * 32) is None
    ledger.set_riders({"a" * 32: "youth", "b" * 32: "child"}, 2)
    ledger.set_riders({"a" * 32: "", "b" * 32: "adult"}, 5)
    assert (ledger.rider_of("a" * 32), ledger.rider_of("b" * 32)) == (None, "adult")
    ledger.set_riders({}, 5)                                  # the same version again: taken
    from localpay.errors import LedgerStateError

    with pytest.raises(LedgerStateError, match="older"):
        ledger.set_riders({"b" * 32: "youth"}, 4)
    assert ledger.riders_version() == 5 and ledger.rider_of("b" * 32) == "adult"


def test_unknown_category_pays_the_default(ledger: Ledger, clock: FakeClock,
                                           reader: VirtualReader) -> None:
    config = loads(RIDER_CONFIG.replace('default = "adult"', 'default = "youth"'))
    ledger.set_riders({token(YOUTH): "student", token(CHILD): "child"}, 1)
    t = Terminal(config.replace("terminal", id="T-TEST-01"), ledger, DEMO_TOKEN_KEY,
                 clock=clock)
    assert charged(ledger, tap(t, reader, YOUTH)) == (870, "youth")   # "student": no fare here
    assert charged(ledger, tap(t, reader, NOBODY)) == (870, "youth")  # no profile
    assert charged(ledger, tap(t, reader, CHILD)) == (430, "child")


# -- config -------------------------------------------------------------------------------------


def test_config_categories_round_trip() -> None:
    from firmware_cfg.config import dumps

    config = loads(RIDER_CONFIG)
    fares = config.fares
    assert fares.categories() == {"adult": 1450, "youth": 870, "child": 430, "senior": 0}
    assert (fares.fare("senior"), fares.fare("youth"), fares.fare("nobody"), fares.fare(None)) \
        == (("senior", 0), ("youth", 870), ("adult", 1450), ("adult", 1450))
    assert loads(dumps(config)) == config
    assert hash(config) == hash(loads(dumps(config)))
    assert Config().fares.categories() == {"adult": 1500, "youth": 900, "child": 550}


@pytest.mark.parametrize(("text", "message"), [
    ("[fares]\nyouth = 900.5\n", "fares.youth: expected a whole number, found 900.5"),
    ("[fares]\nchild = -550\n", "fares.child: expected a number of 0 or more, found -550"),
    ("[fares.extra]\nsenior = \"free\"\n",
     "fares.extra.senior: expected a whole number, found 'free'"),
    ("[fares.extra]\nsenior = -100\n",
     "fares.extra.senior: expected a number of 0 or more, found -100"),
    ("[fares.extra]\nsenior = 0.0\n", "fares.extra.senior: expected a whole number"),
    ("[fares]\ndefault = \"senior\"\n",
     "fares.default: expected a category with a fare, one of ['adult', 'child', 'youth'], "
     "found 'senior'"),
    ("[fares]\ndefault = 1\n", "fares.default: expected text, found 1"),
    ("[fares]\nsenior = 0\n", "[fares]: unknown key 'senior'"),            # a typo stays one
    ("[fares]\nextra = 5\n", "fares.extra: expected a table, found 5"),
    ("[fares.extra]\nadult = 1200\n", "fares.extra.adult: adult is set in [fares] itself"),
    ("[fares.extra]\n\"Senior Citizen\" = 0\n",
     "fares.extra: expected category names of a-z, 0-9 and _"),
])
def test_fare_errors_name_the_field(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        loads(text)
    assert message in str(err.value)


# -- the screen ---------------------------------------------------------------------------------


def test_validator_screen_shows_the_category_beside_the_fare(tmp_path: Path,
                                                              reader: VirtualReader) -> None:
    import time

    from kiosk_ui.app import KioskApp
    from kiosk_ui.model import Screen

    config = loads(RIDER_CONFIG.replace('place = "85"', 'place = "85"\nlanguage = "ko"'))
    ledger = Ledger(tmp_path / "ledger.sqlite", key=Ed25519PrivateKey.generate(),
                    terminal_id="BUS-RIDERS")
    ledger.set_riders({token(YOUTH): "youth", token(CHILD): "child"}, 1)
    app = KioskApp(Terminal(config, ledger, DEMO_TOKEN_KEY), reader.poll, size=(800, 480))
    app.start()
    try:
        shown: dict[bytes, dict[str, str]] = {}
        for uid in (YOUTH, CHILD, NOBODY):
            app.model.result = None
            reader.present_uid(uid)
            deadline = time.monotonic() + 10
            while app.model.result is None or app.model.screen != Screen.RESULT:
                assert time.monotonic() < deadline, "no decision on screen"
                app.step()
                time.sleep(0.005)
            app.step()
            shown[uid] = {r.name: r.text for r in app.painter.records}
        assert (shown[YOUTH]["amount"], shown[YOUTH]["rider"]) == ("870원", "청소년")
        assert (shown[CHILD]["amount"], shown[CHILD]["rider"]) == ("430원", "어린이")
        assert (shown[NOBODY]["amount"], shown[NOBODY]["rider"]) == ("1,450원", "일반")
        assert ledger.head.seq == 3
    finally:
        app.close()
        ledger.close()


def test_category_labels_in_english_and_a_config_category_by_name() -> None:
    import pygame

    from kiosk_ui.draw import Painter
    from kiosk_ui.fonts import load_fonts
    from kiosk_ui.model import KioskModel, ResultView, Screen
    from kiosk_ui.screens import Statics, render

    painter = Painter(pygame.Surface((800, 480)), load_fonts())
    for rider, label in (("adult", "Adult"), ("youth", "Youth"), ("child", "Child"),
                         ("senior", "senior")):
        render(painter, KioskModel(role="validator", language="en", screen=Screen.RESULT,
                                   result=ResultView("approved", "tap", 870, rider=rider)),
               Statics())
        drawn = {r.name: r for r in painter.records}
        assert drawn["rider"].text == label and drawn["rider"].fits and drawn["rider"].inside()
    render(painter, KioskModel(role="validator", language="en", screen=Screen.RESULT,
                               result=ResultView("approved", "tap", 870)), Statics())
    assert "rider" not in {r.name for r in painter.records}     # no category: no label


def test_sync_client_reads_the_riders_answer(ledger: Ledger) -> None:
    from localpay.errors import SyncProtocolError

    summary = SyncSummary()
    # A service from before riders answers without them: nothing stored, nothing lost.
    assert SyncClient._store_riders(ledger, None, 0, summary) == 0
    assert SyncClient._store_riders(ledger, {"version": 4, "changes": {"a" * 32: "child"}}, 0,
                                    summary) == 4
    assert (ledger.riders_version(), ledger.rider_of("a" * 32), summary.riders) == (4, "child", 1)
    for bad in ({"version": 5}, {"version": 5, "changes": {"a" * 32: 3}}, [],
                {"version": 3, "changes": {}}):
        with pytest.raises(SyncProtocolError):
            SyncClient._store_riders(ledger, bad, 4, summary)
    assert ledger.riders_version() == 4
