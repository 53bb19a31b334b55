"""``localpay bench``: tap-to-decision on the validator path against what the disk allows.

An approval costs one durable commit, so the honest yardstick is the disk's own rate of
``write`` + ``fsync`` of a small record, measured in the same folder in the same run. The
ledger is grown between stages (bulk-filled with real signed, chained entries) to show
whether latency grows with the ledger.
"""

from __future__ import annotations

import os
import resource
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_cfg.config import DEFAULT, Config
from firmware_cfg.keys import DEMO_TOKEN_KEY
from localpay.cli import simulate
from offline_ledger import Ledger, encoding
from offline_ledger.encoding import EntryFields
from terminal.core import Terminal

Progress = Callable[[str], None]


def raw_fsync_rate(folder: Path, seconds: float = 2.0, record: int = 128) -> float:
    """Appends of ``record`` bytes each followed by ``fsync``, per second."""
    path = folder / "fsync-probe.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    data = os.urandom(record)
    n = 0
    try:
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            os.write(fd, data)
            os.fsync(fd)
            n += 1
            if n % 16 == 0 and time.perf_counter() >= deadline:
                break
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return n / elapsed


def prefill(path: Path, key: Ed25519PrivateKey, terminal_id: str, upto: int,
            progress: Progress | None = None) -> None:
    """Grow the ledger at ``path`` to ``upto`` entries of real, signed, chained taps.

    Bulk inserts with ``synchronous=OFF`` (this is set-up, not the thing measured); the
    entries are indistinguishable from appended ones and ``verify`` accepts them.
    """
    with Ledger(path, key=key, terminal_id=terminal_id, tail_check=0) as ledger:
        head = ledger.head
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=OFF")
        seq, prev, mono = head.seq, head.entry_hash, head.mono
        wall = int(time.time() * 1000) - (upto - seq)
        chunk = 20_000
        while seq < upto:
            rows = []
            for _ in range(min(chunk, upto - seq)):
                seq += 1
                wall += 1
                mono = max(mono + 1, wall)
                f = EntryFields(seq, "tap", terminal_id, f"prefill{seq:024d}", 1500, 0, "85",
                                wall, mono, '{"scheme":"uid"}', prev)
                data = encoding.encode(f)
                digest = encoding.entry_hash(data)
                rows.append((*_values(f), digest, key.sign(data)))
                prev = digest
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO entries VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            conn.execute("COMMIT")
            if progress:
                progress(f"ledger filled to {seq:,} entries")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _values(f: EntryFields) -> tuple[Any, ...]:
    return (f.seq, f.kind, f.terminal_id, f.card_token, f.amount, f.ref_seq, f.place,
            f.wall_ms, f.mono, f.detail, f.prev_hash)


def run(
    *,
    sizes: list[int],
    taps: int = 5000,
    folder: Path | None = None,
    config: Config = DEFAULT,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Measure ``taps`` validator taps at each ledger size in ``sizes`` (ascending)."""
    if taps < 1 or not sizes:
        raise ValueError("bench needs at least one tap and one ledger size")
    own_tmp = None
    if folder is None:
        own_tmp = tempfile.TemporaryDirectory(prefix="localpay-bench-")
        folder = Path(own_tmp.name)
    try:
        return _run(sorted(sizes), taps, folder, config, progress)
    finally:
        if own_tmp is not None:
            own_tmp.cleanup()


def _run(sizes: list[int], taps: int, folder: Path, config: Config,
         progress: Progress | None) -> dict[str, Any]:
    say = progress or (lambda _msg: None)
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "bench-ledger.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    key = Ed25519PrivateKey.generate()
    config = simulate.simulation_config(config, "validator")
    say("measuring raw write+fsync rate of the disk")
    fsyncs = raw_fsync_rate(folder)
    stages: list[dict[str, Any]] = []
    next_card = 0
    for size in sizes:
        prefill(db, key, config.terminal.id, size, say)
        ledger = Ledger(db, key=key, terminal_id=config.terminal.id)
        try:
            terminal = Terminal(config, ledger, DEMO_TOKEN_KEY)
            say(f"{taps:,} taps at {ledger.head.seq:,} entries")
            figures = simulate.run(terminal, taps, first_card=next_card)
            next_card += taps
            stage = figures.as_dict(terminal)
            stage["ledger_entries_before"] = size
            stages.append(stage)
        finally:
            ledger.close()
    first, last = stages[0], stages[-1]
    all_tps = sum(s["presentations"] for s in stages) / sum(s["seconds"] for s in stages)
    worst_p99 = max(float(s["p99_ms"]) for s in stages)
    return {
        "benchmark": "validator tap-to-decision (read, decide, sign, durable commit)",
        "machine": f"{os.cpu_count()} cores, {os.uname().machine}",
        "disk_folder": str(folder),
        "taps_per_stage": taps,
        "p50_ms": last["p50_ms"],
        "p99_ms": worst_p99,
        "max_ms": max(float(s["max_ms"]) for s in stages),
        "taps_per_s": round(all_tps, 1),
        "fsyncs_per_s": round(fsyncs, 1),
        "ratio": round(all_tps / fsyncs, 3),
        "p99_growth": round(float(last["p99_ms"]) / float(first["p99_ms"]), 3)
        if first["p99_ms"] else None,
        "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "stages": [
            {k: s[k] for k in ("ledger_entries_before", "p50_ms", "p99_ms", "max_ms",
                               "taps_per_s", "approved", "declined")}
            for s in stages
        ],
    }
