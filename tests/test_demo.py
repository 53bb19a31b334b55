"""``localpay demo`` end to end: the morning offline, the sync onto the central chain with
every proof checked, the day's points, and one screenshot per decision. Real stacks: the
terminal core, SQLite ledgers, the central service over HTTP on 127.0.0.1, pygame."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import pygame
import pytest
from click.testing import CliRunner

from central import open_service
from firmware_cfg.config import DEFAULT
from localpay.cli import cli
from localpay.cli.demo_central import demo_day
from offline_ledger import Ledger
from sync.checkpoint import Checkpoint, NoteVerifier

STEP = re.compile(r"^(\d{2})  \d{2}:\d{2}:\d{2}  (validator|till)\s+(.+?)\s+"
                  r"(APPROVED|DECLINED|ALREADY PAID)")


@dataclass(frozen=True)
class Played:
    out: str
    keep: Path
    shots: Path


@pytest.fixture(scope="module")
def played(tmp_path_factory: pytest.TempPathFactory) -> Played:
    base = tmp_path_factory.mktemp("demo")
    keep, shots = base / "keep", base / "shots"
    result = CliRunner().invoke(cli, ["--home", str(base / "home"), "demo", "--keep", str(keep),
                                      "--screenshots", str(shots)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return Played(result.stdout, keep, shots)


def _steps(out: str) -> list[tuple[int, str, str, str]]:
    found = [STEP.match(line) for line in out.splitlines()]
    return [(int(m[1]), m[2], m[3], m[4]) for m in found if m]


def _entries(path: Path) -> list[bytes]:
    ledger = Ledger(path)
    try:
        assert ledger.synced_upto() == ledger.head.seq, f"{path} not synced to its head"
        return [e.encoded() for e in ledger.entries(ledger.first_seq())]
    finally:
        ledger.close()


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 Merkle tree hash, written out here apart from ``sync.merkle``."""
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + _mth(leaves[:k]) + _mth(leaves[k:])).digest()


def _printed_checkpoint(out: str) -> tuple[str, str]:
    """The signed note printed after "Latest checkpoint" (indented), and the verifier key."""
    lines = out.split("Latest checkpoint (C2SP signed note):\n", 1)[1].splitlines()
    note: list[str] = []
    for line in lines:
        if line.startswith("verifier key: "):
            return "\n".join(note) + "\n", line.removeprefix("verifier key: ")
        note.append(line.removeprefix("  "))
    raise AssertionError("no verifier key printed after the checkpoint")


def test_the_central_log_holds_both_ledgers_and_the_checkpoint_verifies(played: Played) -> None:
    bus = _entries(played.keep / "validator" / "ledger.sqlite")
    shop = _entries(played.keep / "till" / "ledger.sqlite")
    approved = [s for s in _steps(played.out) if s[3] == "APPROVED"]
    assert (len(bus), len(shop)) == (sum(s[1] == "validator" for s in approved),
                                     sum(s[1] == "till" for s in approved))
    service = open_service(None, played.keep / "central")
    try:
        assert service.size() == len(bus) + len(shop)
    finally:
        service.store.close()

    note, key = _printed_checkpoint(played.out)
    cp = Checkpoint.verify(note, NoteVerifier.parse(key))
    assert cp.size == len(bus) + len(shop)
    # The validator synced first, so its entries lead the log.
    assert cp.root == _mth(bus + shop)
    assert f"Central log: {len(bus) + len(shop)} entries" in played.out
    assert "every inclusion and consistency proof verified" in played.out
    for role in ("validator", "till"):
        assert (played.keep / role / "ledger.sqlite.sync.json").is_file()
    assert not [t for t in threading.enumerate() if t.name == "demo-central"]


def test_the_demo_day_earns_bus_points_and_minji_is_credited(played: Played) -> None:
    header = re.search(r"played on \w+ (\d{4}-\d{2}-\d{2})", played.out)
    assert header is not None
    day = dt.date.fromisoformat(header[1])
    assert day.weekday() < 5 and day < dt.date.today() + dt.timedelta(days=1)

    fare = DEFAULT.fares.adult
    # 0.3 % of a local-food payment, rounded down; a refund takes back what the rest no
    # longer earns.
    paid, refunded = 8_800, 2_800
    food = paid * 3 // 1_000
    food_back = (paid - refunded) * 3 // 1_000 - food
    statement = played.out.split("Minji's points:", 1)[1]
    rows = [line.split() for line in statement.splitlines() if line.startswith(day.isoformat())]
    assert [(r[2], int(r[3].replace(",", ""))) for r in rows] == [
        ("bus", fare), ("local_food", food), ("refund", food_back)]
    assert fare == 1_500 and food == 26 and food_back == -8
    expected = fare + (paid - refunded) * 30 // 10_000
    assert f"earned {expected:,};" in statement and expected == 1_518

    steps = _steps(played.out)
    first_rides = sum(1 for s in steps if s[1] == "validator" and s[3] == "APPROVED")
    shop_paid = {"Minji pays 8,800 won": 8_800, "Seoyeon pays 3,500 won": 3_500,
                 "Jiwoo pays 4,500 won by wallet QR": 4_500}
    assert {s[2] for s in steps if s[1] == "till" and s[3] == "APPROVED"
            and "pays" in s[2]} == set(shop_paid)
    credited = played.out.split("Points credited\n", 1)[1]
    assert re.search(rf"^bus\s+{first_rides} credits\s+{first_rides * fare:,} points$",
                     credited, re.M)
    food_total = sum(a * 30 // 10_000 for a in shop_paid.values())
    assert food_total == 26 + 10 + 13
    assert re.search(rf"^local_food\s+3 credits\s+{food_total:,} points$", credited, re.M)
    assert re.search(rf"^refund\s+1 credits\s+{food_back:,} points$", credited, re.M)


def test_one_screenshot_per_step_declines_included(played: Played) -> None:
    steps = _steps(played.out)
    assert [s[0] for s in steps] == list(range(1, len(steps) + 1))
    names = sorted(p.name for p in played.shots.iterdir())
    outcome = {"APPROVED": "approved", "DECLINED": "declined", "ALREADY PAID": "already-paid"}
    assert names == [f"{n:02d}-{role}-{outcome[o]}.png" for n, role, _, o in steps]
    assert any("-declined" in n for n in names) and any(n.startswith("05-") for n in names)
    assert f"{len(steps)} screenshots, one per step" in played.out
    for name in names:
        path = played.shots / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert pygame.image.load(str(path)).get_size() == (800, 480)


def test_the_demo_day_is_the_last_weekday_that_earns_points() -> None:
    assert demo_day(dt.date(2026, 11, 26)) == dt.date(2026, 11, 25)  # Thursday: Wednesday
    assert demo_day(dt.date(2026, 11, 30)) == dt.date(2026, 11, 27)  # Monday: Friday
    # Tuesday after National Foundation Day's substitute holiday (Monday 2026-10-05)
    assert demo_day(dt.date(2026, 10, 6)) == dt.date(2026, 10, 2)


def test_a_kept_folder_is_not_played_twice(tmp_path: Path) -> None:
    keep = tmp_path / "keep"
    (keep / "central").mkdir(parents=True)
    result = CliRunner().invoke(cli, ["--home", str(tmp_path / "home"), "demo", "--keep",
                                      str(keep)])
    assert result.exit_code != 0
    assert "already holds a demo" in result.output
