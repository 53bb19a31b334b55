"""A follower that failed catches up without waiting for the next batch.

A batch is answered once it is held, even when crediting failed after it (the store away
mid-run): the crediting cursor stays behind. It used to move again only with the next
batch or a restart of the service, so a failure in the evening left the day's last riders
uncredited until the first batch of the morning. ``central serve`` now runs the followers
at once and then every minute (:meth:`CentralLog.keep_following`).

What is due is the same batch credited by a service whose crediting never failed: the claim
here is that nothing is left out or credited twice by the failure, not the rules' amounts,
which the crediting tests compute on their own.
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from central import open_service
from central.service import CentralLog, Follower
from firmware_cfg.keys import public_hex
from localpay.cli.bench.traffic import WEEKDAY_MS, validator_traffic
from tests.pg_fixtures import new_terminal_key, signed_entries, start_central

SERVE = ("-m", "localpay", "central", "serve")

N = 120


class FailsOnce:
    """The real follower, whose first run fails as if the store had gone away (stands in for
    a lost connection, which a test cannot cause at this one moment)."""

    def __init__(self, real: Follower) -> None:
        self.real = real
        self.name = real.name
        self.runs = 0

    def follow(self, service: CentralLog) -> None:
        self.runs += 1
        if self.runs == 1:
            raise ConnectionError("the store went away")
        self.real.follow(service)


def _service(folder: Path) -> CentralLog:
    return open_service(f"sqlite:///{folder / 'central.sqlite'}", folder / "data")


def _credits(svc: CentralLog) -> tuple[int, list[tuple[int, str, int]]]:
    with svc.store.tx(write=False) as tx:
        cursor = tx.one("SELECT next_index FROM incentive_cursor WHERE id = 1")
        rows = tx.all("SELECT seq, rule, points FROM incentive_credits ORDER BY seq")
    return (int(cursor[0]) if cursor else 0), [(int(s), str(r), int(p)) for s, r, p in rows]


def _batch_and_due(folder: Path) -> tuple[Any, list[Any], tuple[int, list[Any]]]:
    """A terminal's key, a batch of its taps, and what crediting it earns: the batch through
    a service whose crediting never fails (cursor and credits)."""
    key = new_terminal_key()
    wire = signed_entries(key, "T-1", N, wall0=WEEKDAY_MS,
                          traffic=validator_traffic(N, bus_type="city"))
    reference = _service(folder / "reference")
    try:
        reference.add_terminal("T-1", bytes.fromhex(public_hex(key)))
        reference.ingest("T-1", wire)
        due = _credits(reference)
    finally:
        reference.store.close()
    assert due[0] == N and len(due[1]) > 0
    return key, wire, due


def test_a_failed_crediting_run_is_caught_up_without_another_batch(tmp_path: Path) -> None:
    key, wire, due = _batch_and_due(tmp_path)
    svc = _service(tmp_path / "failing")
    try:
        svc.add_terminal("T-1", bytes.fromhex(public_hex(key)))
        svc.followers = [FailsOnce(f) if f.name == "incentive crediting" else f
                         for f in svc.followers]
        receipt = svc.ingest("T-1", wire)
        assert receipt.accepted == N  # held and answered although crediting failed
        assert _credits(svc) == (0, [])
        stop = threading.Event()
        thread = threading.Thread(target=svc.keep_following, kwargs={"every_s": 0.05,
                                                                     "stop": stop})
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while _credits(svc)[0] < N and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            stop.set()
            thread.join(timeout=10)
        assert not thread.is_alive(), "keep_following did not end when told to stop"
        assert _credits(svc) == due
    finally:
        svc.store.close()


def test_keep_following_runs_at_once_then_every_period_until_stopped(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    try:
        runs: list[float] = []
        svc.run_followers = lambda: runs.append(time.monotonic())  # type: ignore[method-assign]
        stop = threading.Event()
        thread = threading.Thread(target=svc.keep_following,
                                  kwargs={"every_s": 0.05, "stop": stop})
        thread.start()
        deadline = time.monotonic() + 30
        while len(runs) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()
        thread.join(timeout=10)
        assert not thread.is_alive()
        assert len(runs) >= 3
        # each run after the first waited its period
        assert all(b - a >= 0.04 for a, b in itertools.pairwise(runs))
        # told to stop during a wait, it ends without running again
        count = len(runs)
        time.sleep(0.15)
        assert len(runs) == count
    finally:
        svc.store.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_central_serve_credits_what_was_left_uncredited(tmp_path: Path, workers: int) -> None:
    """The command operators run starts the catch-up thread (in each worker): entries held
    but not credited when the service stopped are credited with no batch sent."""
    key, wire, due = _batch_and_due(tmp_path)
    svc = _service(tmp_path / "left")
    svc.add_terminal("T-1", bytes.fromhex(public_hex(key)))
    svc.ingest("T-1", wire, follow=False)  # held; its crediting never ran (a stop)
    assert _credits(svc) == (0, [])
    svc.store.close()
    server = start_central(f"sqlite:///{tmp_path / 'left' / 'central.sqlite'}",
                           tmp_path / "left" / "data", command=SERVE,
                           extra=("--workers", str(workers)))
    try:
        svc = _service(tmp_path / "left")
        try:
            deadline = time.monotonic() + 60
            while _credits(svc)[0] < N and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _credits(svc) == due
        finally:
            svc.store.close()
    finally:
        server.stop()
