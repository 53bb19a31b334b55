"""The followers' runs shared by batches committed together (``follow_committed``).

Every batch is credited before its answer, but 200 batches answered at once must not queue
200 runs of crediting one behind the other: a run covers every batch committed before it
started. Its bookkeeping (:class:`SharedRuns`) is tested here as plain calls, in the orders
the threads can meet in, including those a threaded test cannot bring about on purpose (which
waiter wakes first after a run). Then real threads against a real service: runs never overlap,
batches that wait together share one run, and nobody returns before a run that started after
its batch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from central.service import CentralLog, SharedRuns
from tests.incentives_data import open_service


def test_tickets_count_the_asks() -> None:
    runs = SharedRuns()
    assert [runs.take(), runs.take(), runs.take()] == [1, 2, 3]


def test_a_lone_caller_runs_at_once() -> None:
    runs = SharedRuns()
    ticket = runs.take()
    assert not runs.waits(ticket)
    assert not runs.done(ticket)
    assert runs.start() == ticket
    runs.finish(ticket)
    assert runs.done(ticket)
    assert not runs.running


def test_a_caller_waits_for_the_run_going_when_it_asks() -> None:
    runs = SharedRuns()
    first = runs.take()
    covers = runs.start()
    second = runs.take()
    assert runs.waits(second), "a run was going when it asked: it must wait for its end"
    runs.finish(covers)
    assert not runs.waits(second)
    assert not runs.done(second), "the run had started before it asked: it covers only the first"
    assert runs.done(first)


def test_the_next_run_covers_everyone_who_waited() -> None:
    """Three ask while a run goes; the first of them to wake starts the next run, which covers
    all three, whichever it is: the other two then wait for that run and need no run of
    their own."""
    runs = SharedRuns()
    runs.take()
    covers = runs.start()
    waiting = [runs.take(), runs.take(), runs.take()]
    runs.finish(covers)
    woke = waiting[1]  # not the first to ask: the order of waking is the threads' choice
    assert not runs.waits(woke) and not runs.done(woke)
    second_run = runs.start()
    assert second_run == waiting[-1]
    for other in (waiting[0], waiting[2]):
        assert runs.waits(other)
    runs.finish(second_run)
    assert all(runs.done(t) and not runs.waits(t) for t in waiting)


def test_a_covered_caller_does_not_wait_for_a_later_run() -> None:
    """A caller whose ticket a finished run covers returns, even if another caller started
    a new run before it woke: it does not wait for a run it does not need."""
    runs = SharedRuns()
    runs.take()
    covers = runs.start()
    waiter = runs.take()
    runs.finish(covers)
    covers = runs.start()  # the waiter's run, started by another thread in its name
    runs.finish(covers)
    late = runs.take()
    runs.start()  # the late caller's run is going when the waiter wakes
    assert runs.done(waiter)
    assert not runs.waits(waiter)
    assert runs.waits(late)


def test_a_run_not_finished_covers_nobody() -> None:
    runs = SharedRuns()
    ticket = runs.take()
    runs.start()
    assert not runs.done(ticket)
    assert runs.waits(runs.take())


class _Gate:
    """A follower whose first run is held until the test opens the gate; it records each
    run's overlap with another and the number of batches committed when each run started."""

    name = "gate"

    def __init__(self) -> None:
        self.open = threading.Event()
        self.entered = threading.Event()
        self.lock = threading.Lock()
        self.committed = 0
        self.inside = 0
        self.most_inside = 0
        self.finished: list[int] = []  # batches committed at each finished run's start

    def commit(self) -> int:
        with self.lock:
            self.committed += 1
            return self.committed

    def follow(self, service: CentralLog) -> None:
        with self.lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            seen = self.committed
        self.entered.set()
        self.open.wait(30)
        time.sleep(0.01)  # long enough for another thread to try to run beside it
        with self.lock:
            self.inside -= 1
            self.finished.append(seen)


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[tuple[CentralLog, _Gate]]:
    gate = _Gate()
    svc = open_service(f"sqlite:///{tmp_path / 'central.sqlite'}", hooks=[], followers=[gate])
    try:
        yield svc, gate
    finally:
        gate.open.set()
        svc.store.close()


def _batch(svc: CentralLog, gate: _Gate, out: list[tuple[int, list[int]]]) -> None:
    mine = gate.commit()
    svc.follow_committed()
    with gate.lock:
        out.append((mine, list(gate.finished)))


def test_batches_waiting_together_share_one_run(gated: tuple[CentralLog, _Gate]) -> None:
    svc, gate = gated
    out: list[tuple[int, list[int]]] = []
    first = threading.Thread(target=_batch, args=(svc, gate, out))
    first.start()
    assert gate.entered.wait(30), "the first batch's run never started"
    others = [threading.Thread(target=_batch, args=(svc, gate, out)) for _ in range(5)]
    for t in others:
        t.start()
    deadline = time.monotonic() + 30
    while True:  # the five have asked, and wait on the run going (asking and waiting is one hold)
        with svc._follow:
            if svc._runs.taken == 6:
                break
        assert time.monotonic() < deadline, "the five batches never asked"
        time.sleep(0.005)
    assert out == [], "nobody returns while the run that covers them has not finished"
    gate.open.set()
    for t in (first, *others):
        t.join(30)
        assert not t.is_alive()
    assert gate.most_inside == 1, "two runs of the followers overlapped"
    assert gate.finished == [1, 6], "the five waiting batches should share the second run"
    assert sorted(m for m, _ in out) == [1, 2, 3, 4, 5, 6]
    for mine, finished in out:
        assert any(seen >= mine for seen in finished), (
            f"batch {mine} returned before a run that started after it had finished")


def test_many_batches_at_once_are_each_covered(gated: tuple[CentralLog, _Gate]) -> None:
    svc, gate = gated
    gate.open.set()
    out: list[tuple[int, list[int]]] = []
    threads = [threading.Thread(target=_batch, args=(svc, gate, out)) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    assert gate.most_inside == 1
    assert len(out) == 40
    for mine, finished in out:
        assert any(seen >= mine for seen in finished)
