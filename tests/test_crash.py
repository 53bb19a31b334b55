"""kill -9 at random moments never loses a reported approval nor breaks the chain."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from offline_ledger import Ledger

ROUNDS = 15


def test_kill_9_never_loses_a_reported_approval(tmp_path: Path) -> None:
    home, db = tmp_path / "home", tmp_path / "ledger.sqlite"
    rng = random.Random(20261122)
    reported: dict[int, str] = {}
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    kills = 0
    for round_no in range(ROUNDS):
        proc = subprocess.Popen(
            [sys.executable, "-m", "localpay", "--home", str(home), "simulate",
             "--taps", "100000", "--db", str(db), "--trace",
             "--first-card", str(round_no * 100_000)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )
        assert proc.stdout is not None
        # Let it start and approve some, then kill it while it is mid-stream.
        wanted = rng.randint(1, 400)
        lines: list[bytes] = []
        deadline = time.monotonic() + 60
        while len(lines) < wanted and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        time.sleep(rng.random() * 0.05)
        proc.send_signal(signal.SIGKILL)
        rest, err = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, err.decode()
        kills += 1
        # A partial last line was cut mid-write: it was not a completed report.
        for raw in lines + rest.splitlines(keepends=True):
            if not raw.endswith(b"\n"):
                continue
            record = json.loads(raw)
            reported[record["seq"]] = record["entry_hash"]
        assert lines, f"round {round_no}: nothing approved before the kill: {err.decode()}"

    assert kills == ROUNDS
    with Ledger(db) as ledger:
        report = ledger.verify()
        stored = {e.seq: e.entry_hash.hex() for e in ledger.entries()}
    assert report.entries == len(stored) >= len(reported)
    missing = {seq for seq in reported if stored.get(seq) != reported[seq]}
    assert not missing, f"reported approvals lost or changed: {sorted(missing)[:10]}"
