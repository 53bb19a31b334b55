"""The terminal's clock with no real-time clock: its three states and their rules, the state
recorded in each entry, the central's signed time in every answer, a terminal whose clock
reads 1970 syncing after one stale refusal, and the self-test's clock line.

Mocked: only the kernel's NTP answer (``ntp=``), because a CI machine's NTP state cannot be
set from a test. Everything else is real: SQLite ledgers, the boot clock and boot id of the
machine running the test, the central service in its own process over HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import open_service
from central.clock import BEFORE_EARLIEST, CLOCK_UNKNOWN
from drivers.virtual import VirtualReader
from firmware_cfg.config import DEFAULT
from firmware_cfg.keys import DEMO_TOKEN_KEY, public_hex
from localpay.cli import cli
from localpay.errors import SyncStaleError
from localpay.types import Presentation
from offline_ledger import ClockAnchor, Ledger, boot_now
from sync.client import SyncClient
from sync.protocol import (
    H_NONCE,
    H_SIGNATURE,
    H_TERMINAL,
    H_TIME,
    b64,
    batch_body,
    new_nonce,
    request_message,
    response_message,
    unb64,
)
from terminal.clock import RELEASED_MS, ClockTrust
from terminal.core import Terminal
from tests.conftest import FakeClock
from tests.pg_fixtures import central
from tests.test_answer_key import answer_verifier
from tests.test_selftest import provisioned  # noqa: F401 - the provisioned home fixture

DAY_MS = 86_400_000
#: a wall time three weeks after the release
LATER_MS = RELEASED_MS + 21 * DAY_MS


def ntp(answer: bool) -> Callable[[], bool | None]:
    """The kernel's NTP answer, mocked: a test cannot set the machine's NTP state."""
    return lambda: answer


@pytest.fixture
def led(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(tmp_path / "ledger.sqlite", key=Ed25519PrivateKey.generate(),
                    terminal_id="BUS-CLK")
    yield ledger
    ledger.close()


def anchor_now(led: Ledger, central_ms: int, *, boot_id: str | None = None) -> None:
    """Keep an anchor as the sync client does: central's time received just now on this
    boot (or, with ``boot_id``, on another boot)."""
    this_boot, boot_ms = boot_now()
    led.set_clock_anchor(ClockAnchor(central_ms, central_ms, boot_id or this_boot, boot_ms))


def trust(led: Ledger, synced: bool) -> ClockTrust:
    return ClockTrust(led, ntp=ntp(synced))


def test_synchronised_when_the_kernel_says_ntp_is_in_sync(led: Ledger) -> None:
    r = trust(led, True).judge(LATER_MS)
    assert (r.state, r.why) == ("synchronised", "the kernel says NTP is in sync")


def test_no_ntp_fresh_anchor_is_anchored(led: Ledger) -> None:
    anchor_now(led, LATER_MS)
    r = trust(led, False).judge(LATER_MS + 2_000)
    assert r.state == "anchored" and "of the central's time" in r.why


def test_no_ntp_no_anchor_is_unknown(led: Ledger) -> None:
    r = trust(led, False).judge(LATER_MS)
    assert (r.state, r.why) == ("unknown", "no NTP and no time from the central service yet")


def test_before_the_last_entry_is_unknown(led: Ledger) -> None:
    led.append("tap", card_token="a" * 64, amount=1500, place="85", wall_ms=LATER_MS,
               detail={"clock": "synchronised"})
    judge = trust(led, True)
    assert judge.judge(LATER_MS - 3_600_000).state == "unknown"
    assert "before the time the ledger has seen" in judge.judge(LATER_MS - 3_600_000).why
    assert judge.judge(LATER_MS + 1_000).state == "synchronised"
    # An entry made with an unknown clock (here: far in the future) sets no floor.
    led.append("tap", card_token="a" * 64, amount=1500, place="85",
               wall_ms=LATER_MS + 400 * DAY_MS, detail={"clock": "unknown"})
    assert trust(led, True).judge(LATER_MS + 2_000).state == "synchronised"


def test_before_the_release_is_unknown_even_with_ntp(led: Ledger) -> None:
    r = trust(led, True).judge(RELEASED_MS - 1)
    assert r.state == "unknown" and "before this release was built" in r.why


def test_far_from_the_central_time_is_unknown_until_corrected(led: Ledger) -> None:
    anchor_now(led, LATER_MS)
    judge = trust(led, True)
    far = judge.judge(LATER_MS + 6 * 60_000)  # 6 minutes ahead of the central, NTP or not
    assert far.state == "unknown" and "+360 s from the central's time" in far.why
    assert judge.judge(LATER_MS + 1_000).state == "synchronised"  # corrected
    behind = judge.judge(LATER_MS - 6 * 60_000)  # behind it: before a time already seen
    assert behind.state == "unknown" and "before the time the ledger has seen" in behind.why


def test_after_a_reboot_the_anchor_is_only_a_floor(led: Ledger) -> None:
    anchor_now(led, LATER_MS, boot_id="a-boot-before-this-one")
    judge = trust(led, False)
    behind = judge.judge(LATER_MS - 3_600_000)
    assert behind.state == "unknown" and "before the time the ledger has seen" in behind.why
    ahead = judge.judge(LATER_MS + 3_600_000)
    assert ahead.state == "unknown" and "rebooted since the central's time" in ahead.why


def present(reader: VirtualReader, uid: bytes) -> Presentation:
    reader.present_uid(uid)
    p = reader.poll(1.0)
    assert p is not None
    return p


def test_state_recorded_in_the_detail_of_a_tap(led: Ledger) -> None:
    clock = FakeClock(LATER_MS / 1000)
    anchor_now(led, LATER_MS)
    config = DEFAULT.replace("terminal", role="validator", id="BUS-CLK", place="85")
    t = Terminal(config, led, DEMO_TOKEN_KEY, clock=clock,
                 clock_trust=ClockTrust(led, wall=clock, ntp=ntp(False)))
    reader = VirtualReader()
    try:
        d = t.tap(present(reader, bytes.fromhex("08000001")))
        clock.advance(3600 * 24)  # a day later by the wall clock, not by the boot clock
        late = t.tap(present(reader, bytes.fromhex("08000002")))
    finally:
        reader.close()
    assert d.entry is not None and late.entry is not None
    assert json.loads(d.entry.fields.detail)["clock"] == "anchored"
    assert json.loads(late.entry.fields.detail)["clock"] == "unknown"


# -- the central's time ---------------------------------------------------------------------


def _register(db: str, data: Path, tid: str, key: Ed25519PrivateKey) -> None:
    svc = open_service(db, data)
    svc.add_terminal(tid, bytes.fromhex(public_hex(key)))
    svc.store.close()


def test_every_answer_carries_the_signed_central_time(tmp_path: Path) -> None:
    import time

    db, data = f"sqlite:///{tmp_path / 'central.sqlite'}", tmp_path / "data"
    key = Ed25519PrivateKey.generate()
    _register(db, data, "BUS-T", key)
    with Ledger(tmp_path / "l.sqlite", key=key, terminal_id="BUS-T") as led:
        e = led.append("tap", card_token="b" * 64, amount=1500, place="85")
        body = batch_body("BUS-T", [(e.encoded(), e.signature)])
    with central(db, data) as srv:
        def call(method: str, path: str, content: bytes = b"") -> tuple[int, dict]:
            nonce, when = new_nonce(), int(time.time() * 1000)
            sig = key.sign(request_message(method, path, when, nonce, content))
            resp = httpx.request(method, srv.url + path, content=content, headers={
                H_TERMINAL: "BUS-T", H_TIME: str(when), H_NONCE: nonce, H_SIGNATURE: b64(sig)})
            answer_key = answer_verifier(srv).public_key
            answer_key.verify(unb64(resp.headers[H_SIGNATURE], "sig"),
                              response_message(nonce, resp.status_code, resp.content))
            doc = json.loads(resp.content)
            assert abs(doc["time_ms"] - time.time() * 1000) < 60_000
            return resp.status_code, doc

        status, receipt = call("POST", "/v1/batches", body)
        assert status == 200 and {"terminal_id", "checkpoint", "inclusion_proof"} <= set(receipt)
        status, points = call("GET", "/v1/points?since=0")
        assert status == 200 and {"version", "points", "rules", "week_start"} <= set(points)
        status, error = call("GET", "/v1/balances?since=x")
        assert status == 400 and {"error", "kind", "message", "seq"} <= set(error)


# -- a terminal whose clock reads 1970 -------------------------------------------------------


def test_a_1970_clock_syncs_after_one_stale_refusal(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    db, data = f"sqlite:///{tmp_path / 'central.sqlite'}", tmp_path / "data"
    key = Ed25519PrivateKey.generate()
    _register(db, data, "BUS-1970", key)
    path = tmp_path / "ledger.sqlite"
    clock = FakeClock(1_000.0)  # booted at the epoch, no network yet
    config = DEFAULT.replace("terminal", role="validator", id="BUS-1970", place="85")
    reader = VirtualReader()
    led = Ledger(path, key=key, terminal_id="BUS-1970")
    try:
        t = Terminal(config, led, DEMO_TOKEN_KEY, clock=clock,
                     clock_trust=ClockTrust(led, wall=clock, ntp=ntp(False)))
        early = [t.tap(present(reader, bytes.fromhex(f"080000{i:02x}"))) for i in range(1, 4)]
        assert all(d.approved for d in early)
        with central(db, data) as srv:
            client = SyncClient(path, key, srv.url, srv.verifier, batch_size=2, clock=clock)
            first = client.sync_once()
            assert client.anchor is not None and client.anchor.offset_ms > 50 * 365 * DAY_MS
            # Still 1970 by the wall clock: after the sync it is judged against the anchor.
            clock.advance(60)
            late = t.tap(present(reader, bytes.fromhex("08000009")))
            again = client.sync_once()
            client.close()
        kept = led.clock_anchor()
    finally:
        reader.close()
        entries = led.count()
        states = [json.loads(e.fields.detail)["clock"] for e in led.entries(1)]
        led.close()
    assert late.approved and states == ["unknown"] * 4
    assert sum("refused a stale request" in r.getMessage() for r in caplog.records) == 1
    assert kept is not None and kept.offset_ms == client.anchor.offset_ms
    assert (first.sent, again.sent, again.synced_upto) == (3, 1, 4)
    svc = open_service(db, data)
    try:
        assert svc.size() == entries == 4  # the central log against the ledger, counted apart
        with svc.store.tx(write=False) as tx:
            flags = [json.loads(r[0]) for r in tx.all(
                "SELECT detail FROM flags WHERE rule = 'clock' AND terminal_id = 'BUS-1970' "
                "ORDER BY seq")]
    finally:
        svc.store.close()
    assert [f["problem"] for f in flags] == [BEFORE_EARLIEST] * 4


def test_ntp_stepping_the_clock_under_a_request_does_not_skew_the_anchor(
        tmp_path: Path) -> None:
    """The wall clock reads three hours behind, and NTP steps it right while the first
    request is out. The round trip is the monotonic clock's: the stale refusal's time signs
    the retry, and the anchor is central's time, not off by half the step (which made the
    retry stale too, and the sync thread then waited 5 minutes)."""
    import time

    db, data = f"sqlite:///{tmp_path / 'central.sqlite'}", tmp_path / "data"
    key = Ed25519PrivateKey.generate()
    _register(db, data, "BUS-STEP", key)
    path = tmp_path / "ledger.sqlite"
    step_s = 3 * 3600
    clock = FakeClock(time.time() - step_s)
    stepped: list[float] = []

    def ntp_steps(_: httpx.Response) -> None:
        if not stepped:  # once: the first answer arrives after the step
            stepped.append(step_s)
            clock.advance(step_s)

    with Ledger(path, key=key, terminal_id="BUS-STEP") as led:
        led.append("tap", card_token="c" * 64, amount=1500, place="85",
                   wall_ms=int(clock() * 1000), detail={"clock": "unknown"})
    with central(db, data) as srv:
        client = SyncClient(path, key, srv.url, srv.verifier, clock=clock)
        client._http.event_hooks["response"].append(ntp_steps)  # the step, mid-request
        try:
            summary = client.sync_once()
            anchor = client.anchor
        finally:
            client.close()
    assert stepped == [step_s] and summary.sent == 1
    assert anchor is not None
    # central and this process share the machine's clock: the offset is the rounding only
    assert abs(anchor.offset_ms) < 60_000, anchor
    assert anchor.rtt_ms < 60_000, anchor


def test_the_sync_thread_tries_again_soon_after_a_stale_refusal(tmp_path: Path) -> None:
    """A wall clock that jumps three hours at every reading (NTP fighting a bad RTC): every
    round ends in a stale refusal even after its retry. That is a clock still moving, not a
    refusal for a person, so the thread tries again on its backoff, not after the 5-minute
    wait a real refusal earns."""
    import time

    from sync.client import Backoff

    db, data = f"sqlite:///{tmp_path / 'central.sqlite'}", tmp_path / "data"
    key = Ed25519PrivateKey.generate()
    _register(db, data, "BUS-DRIFT", key)
    path = tmp_path / "ledger.sqlite"
    start = time.time()
    with Ledger(path, key=key, terminal_id="BUS-DRIFT") as led:
        led.append("tap", card_token="c" * 64, amount=1500, place="85",
                   wall_ms=int(start * 1000), detail={"clock": "unknown"})
    readings = iter(range(1, 1_000_000))

    def jumping() -> float:
        return start + 3 * 3600 * next(readings)

    answers: list[int] = []
    with central(db, data) as srv:
        client = SyncClient(path, key, srv.url, srv.verifier, clock=jumping,
                            backoff=Backoff(base=0.05, cap=300.0))
        client._http.event_hooks["response"].append(lambda r: answers.append(r.status_code))
        client.start()
        deadline = time.monotonic() + 20
        while len(answers) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        client.stop()
        client.close()
    # three rounds (a request and its one retry each) within seconds: the cap allows one
    assert len(answers) >= 6 and set(answers) == {401}, answers
    assert isinstance(client.last_error, SyncStaleError)

def test_an_unknown_clock_with_a_plausible_time_is_flagged(tmp_path: Path) -> None:
    import time

    db, data = f"sqlite:///{tmp_path / 'central.sqlite'}", tmp_path / "data"
    key = Ed25519PrivateKey.generate()
    _register(db, data, "BUS-2", key)
    now_ms = int(time.time() * 1000)
    with Ledger(tmp_path / "l.sqlite", key=key, terminal_id="BUS-2") as led:
        a = led.append("tap", card_token="c" * 64, amount=1500, place="85",
                       wall_ms=now_ms - 7_200_000, detail={"clock": "unknown"})
        b = led.append("tap", card_token="c" * 64, amount=1500, place="85",
                       wall_ms=now_ms - 3_600_000, detail={"clock": "anchored"})
        body = [(a.encoded(), a.signature), (b.encoded(), b.signature)]
    from sync.protocol import parse_batch

    svc = open_service(db, data)
    try:
        svc.ingest("BUS-2", parse_batch(batch_body("BUS-2", body))[1])
        with svc.store.tx(write=False) as tx:
            flags = [json.loads(r[0]) for r in tx.all(
                "SELECT detail FROM flags WHERE rule = 'clock' ORDER BY seq")]
    finally:
        svc.store.close()
    # The unknown one is dated by the next trusted entry; the anchored one keeps its time.
    assert flags == [{"wall_ms": now_ms - 7_200_000, "effective_ms": now_ms - 3_600_000,
                      "problem": CLOCK_UNKNOWN}]


# -- the technician's line -------------------------------------------------------------------


def test_selftest_prints_the_clock_state(provisioned: Path) -> None:  # noqa: F811
    result = CliRunner().invoke(cli, ["--home", str(provisioned), "selftest", "--only",
                                      "clock"])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("PASS   clock"))
    state = line.split()[2].rstrip(":")
    assert state in ("synchronised", "anchored", "unknown")
    assert len(line.split(":", 1)[1].strip()) > 10  # and why
