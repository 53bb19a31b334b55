"""Batches arriving at once leave the server's threads to the other requests (issue #18).

Each batch was decoded, appended and then waited for the shared crediting run inside one of
the server's 40 pool threads. 200 terminals syncing at once held them all, and a terminal's
status report, totals or round (a few milliseconds of work each) waited seconds for a
thread: seen in ``localpay bench central`` as means of 1.0 s (status) and 5.5 s (totals).
Now a worker decodes and appends :data:`BATCH_SLOTS` batches at once, and the others, and
every batch waiting for its crediting, wait without a thread.

First :class:`BatchGate` alone on an event loop, its runs blocked and released by the test.
Then a real server in a thread of the test, whose follower blocks until told, with more
batches in flight than the pool has threads: a signed request is still answered, and every
batch is answered only once a run that started after its commit has finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import uvicorn

from central import open_service
from central.app import create_app
from central.batch_gate import BATCH_SLOTS, BatchGate
from central.service import CentralLog
from firmware_cfg.keys import public_hex
from sync.protocol import batch_body
from tests.pg_fixtures import new_terminal_key, signed_entries
from tests.signed_requests import signed

#: the server's pool threads (anyio's default)
THREADS = 40
#: more batches in flight than the pool has threads
BATCHES = 48


class HeldRuns:
    """A stand-in for the service as the gate uses it: each run of the followers blocks
    until the test releases it, and notes when it started and ended."""

    def __init__(self) -> None:
        self.release = threading.Semaphore(0)
        self.started = threading.Event()
        self.log: list[str] = []
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0

    def run_followers(self) -> None:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.log.append("start")
        self.started.set()
        self.release.acquire()
        with self.lock:
            self.running -= 1
            self.log.append("end")


async def _until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_a_slot_count_below_one_is_refused() -> None:
    try:
        BatchGate(HeldRuns(), 0)  # type: ignore[arg-type]
    except ValueError as err:
        assert "at least one" in str(err)
    else:
        raise AssertionError("a gate of no slots was made")


def test_at_most_the_slots_run_at_once_and_every_call_runs() -> None:
    slots = 3
    gate = BatchGate(HeldRuns(), slots)  # type: ignore[arg-type]
    lock = threading.Lock()
    now = [0, 0]  # running, most at once
    gates = [threading.Event() for _ in range(10)]

    def work(i: int) -> int:
        with lock:
            now[0] += 1
            now[1] = max(now[1], now[0])
        gates[i].wait(10)
        with lock:
            now[0] -= 1
        return i * i

    async def main() -> list[int]:
        tasks = [asyncio.create_task(gate.take(work, i)) for i in range(10)]
        await _until(lambda: now[0] == slots)
        await asyncio.sleep(0.1)  # the others had time to start, had they been let in
        assert now[0] == slots
        for g in gates:
            g.set()
        return list(await asyncio.gather(*tasks))

    assert asyncio.run(main()) == [i * i for i in range(10)]
    assert now[1] == slots


def test_callers_that_wait_on_a_run_share_the_next_one() -> None:
    held = HeldRuns()
    gate = BatchGate(held)  # type: ignore[arg-type]

    async def main() -> None:
        first = asyncio.create_task(gate.follow())
        await _until(held.started.is_set)
        later = [asyncio.create_task(gate.follow()) for _ in range(5)]
        await asyncio.sleep(0.1)
        assert not any(t.done() for t in [first, *later])
        held.started.clear()
        held.release.release()
        await first
        # the first run started before the five asked: they are not covered by it
        await _until(held.started.is_set)
        await asyncio.sleep(0.1)
        assert not any(t.done() for t in later)
        assert held.log == ["start", "end", "start"]
        held.release.release()
        await asyncio.gather(*later)

    asyncio.run(main())
    assert held.log == ["start", "end", "start", "end"]
    assert held.most == 1


def test_a_run_whose_request_is_cancelled_still_ends_before_its_waiters_go() -> None:
    held = HeldRuns()
    gate = BatchGate(held)  # type: ignore[arg-type]

    async def main() -> None:
        runner = asyncio.create_task(gate.follow())
        await _until(held.started.is_set)
        runner.cancel()
        waiter = asyncio.create_task(gate.follow())
        await asyncio.sleep(0.1)
        # cancelled or not, the run is going: nothing may be told it is over
        assert not waiter.done()
        assert held.log == ["start"]
        held.release.release()  # the run the cancelled request started
        held.started.clear()
        await _until(held.started.is_set)  # the waiter's own run
        held.release.release()
        await waiter
        with contextlib.suppress(asyncio.CancelledError):
            await runner

    asyncio.run(main())
    assert held.log == ["start", "end", "start", "end"]


def test_one_gate_serves_one_event_loop_after_another() -> None:
    # A test client, or a restarted server, runs the same app on a new loop. asyncio's
    # locks belong to the loop of their first wait, so each loop here waits on them: a
    # second caller on the run's condition, a second taker on the one slot.
    held = HeldRuns()
    gate = BatchGate(held, 1)  # type: ignore[arg-type]
    slot = threading.Event()

    async def one_loop() -> tuple[int, int]:
        runner = asyncio.create_task(gate.follow())
        await _until(held.started.is_set)
        waiter = asyncio.create_task(gate.follow())
        first = asyncio.create_task(gate.take(lambda: slot.wait(10) and 1))
        second = asyncio.create_task(gate.take(lambda: 2))
        await asyncio.sleep(0.1)
        assert not waiter.done() and not second.done()
        slot.set()
        held.started.clear()
        held.release.release()
        await _until(held.started.is_set)  # the waiter's own run
        held.started.clear()
        held.release.release()
        await asyncio.gather(runner, waiter)
        return await first, await second

    for _ in range(2):
        slot.clear()
        assert asyncio.run(one_loop()) == (1, 2)
    assert held.log == ["start", "end"] * 4
    assert held.most == 1


class BlockingFollower:
    """Credits nothing; notes the log size each run saw as it started and when it ended,
    and blocks until released."""

    name = "blocking follower"

    def __init__(self) -> None:
        self.go = threading.Event()
        self.runs: list[tuple[int, float]] = []
        self.lock = threading.Lock()

    def follow(self, service: CentralLog) -> None:
        size = service.size()
        self.go.wait(60)
        with self.lock:
            self.runs.append((size, time.monotonic()))


@contextlib.contextmanager
def _server(service: CentralLog) -> Iterator[str]:
    config = uvicorn.Config(create_app(service), host="127.0.0.1", port=0,
                            log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),),
                              daemon=True)
    thread.start()
    try:
        for _ in range(600):
            if server.started:
                break
            time.sleep(0.05)
        assert server.started
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(20)
        if not thread.is_alive():  # else left to die with the test process
            loop.close()


def test_a_signed_request_is_answered_while_more_batches_wait_than_the_pool_has_threads(
        tmp_path: Path) -> None:
    follower = BlockingFollower()
    service = open_service(None, tmp_path / "data")
    service.followers = [follower]
    keys = {}
    for i in range(BATCHES + 1):
        keys[f"T{i:02d}"] = key = new_terminal_key()
        service.add_terminal(f"T{i:02d}", bytes.fromhex(public_hex(key)))
    bodies = {tid: batch_body(tid, [(e.data, e.signature) for e in signed_entries(key, tid, 3)])
              for tid, key in list(keys.items())[:BATCHES]}
    asker = f"T{BATCHES:02d}"
    answered: dict[str, float] = {}

    def send(tid: str) -> Any:
        resp = signed(url, keys[tid], tid, "POST", "/v1/batches", bodies[tid], timeout=90)
        answered[tid] = time.monotonic()
        return resp

    try:
        with _server(service) as url, ThreadPoolExecutor(BATCHES) as pool:
            sent = {tid: pool.submit(send, tid) for tid in bodies}
            # Before the gate, the first THREADS batches held every thread of the pool
            # here (the first running the blocked follower, the others waiting for it), and
            # the rest waited for a thread to be appended at all.
            deadline = time.monotonic() + 60
            while service.size() < 3 * THREADS:
                assert time.monotonic() < deadline, service.size()
                time.sleep(0.05)
            # authenticated in a pool thread, then answered from one
            answer = signed(url, keys[asker], asker, "GET", "/v1/checkpoint", timeout=20)
            assert answer.status_code == 200, answer.text
            # and the batches beyond the pool's threads are appended too, none answered
            while service.size() < 3 * BATCHES:
                assert time.monotonic() < deadline, service.size()
                time.sleep(0.05)
            assert not any(f.done() for f in sent.values())
            follower.go.set()
            answers = {tid: f.result(90) for tid, f in sent.items()}
        assert all(a.status_code == 200 for a in answers.values()), [
            a.text for a in answers.values() if a.status_code != 200]
        assert service.size() == 3 * BATCHES
        # each batch was answered only after a run that had seen its last entry had ended
        for tid, a in answers.items():
            index = a.json()["log_index"]
            assert any(size > index and ended <= answered[tid]
                       for size, ended in follower.runs), (tid, index, follower.runs)
        # runs were shared: far fewer than the batches
        assert len(follower.runs) <= 3, follower.runs
        assert BATCH_SLOTS < THREADS
    finally:
        follower.go.set()
        service.store.close()
