"""Batches arriving at once share their followers' runs (issue #18).

Each accepted batch used to run every follower (incentive crediting, spending posting)
itself, after its commit and before its answer: 200 batches at once made 200 runs, queued
one after another on the cursor's row lock. Now a batch committed while a run is under way
waits for the next run, which covers every batch committed before it started; each batch
is still followed before its answer. Real stores, real threads.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from central import CentralLog
from central.keys import load_signer
from central.store import open_store
from firmware_cfg.keys import public_hex
from tests.pg_fixtures import new_terminal_key, pg_cluster, signed_entries, store_url  # noqa: F401

BATCHES = 16


class SlowFollower:
    """Notes the log size each run saw; slow enough that batches pile up meanwhile."""

    name = "slow follower"

    def __init__(self) -> None:
        self.runs: list[int] = []
        self.lock = threading.Lock()

    def follow(self, service: CentralLog) -> None:
        size = service.size()
        time.sleep(0.2)
        with self.lock:
            self.runs.append(size)


def test_batches_committed_together_are_followed_in_few_runs_each_before_its_answer(
        store_url: str, tmp_path: Any) -> None:  # noqa: F811
    follower = SlowFollower()
    svc = CentralLog(open_store(store_url), load_signer(tmp_path / "data"),
                     followers=[follower])
    try:
        wire = {}
        for i in range(BATCHES):
            key = new_terminal_key()
            svc.add_terminal(f"T{i}", bytes.fromhex(public_hex(key)))
            wire[f"T{i}"] = signed_entries(key, f"T{i}", 5)
        covered: dict[str, tuple[int, int]] = {}
        failures: list[BaseException] = []
        start = threading.Barrier(BATCHES)

        def send(tid: str) -> None:
            try:
                start.wait()
                receipt = svc.ingest(tid, wire[tid])
                with follower.lock:
                    # the largest log size a finished run had seen when the answer came
                    covered[tid] = (receipt.log_index, max(follower.runs, default=0))
            except BaseException as err:  # the test's thread reports it below
                failures.append(err)

        threads = [threading.Thread(target=send, args=(t,)) for t in wire]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not failures, failures
        assert svc.size() == BATCHES * 5
        # every batch's last entry was in the log a run read before its answer went
        assert all(seen >= index + 1 for index, seen in covered.values()), covered
        # one run each would be BATCHES runs of 0.2 s; shared, a handful
        assert len(follower.runs) <= BATCHES // 2, follower.runs
        assert follower.runs[-1] == BATCHES * 5
    finally:
        svc.store.close()
