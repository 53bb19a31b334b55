"""``central serve --workers N``: any worker answers any request (issue #18).

A real ``localpay central serve --workers 2`` over a real PostgreSQL database. Which worker
takes a connection is the kernel's choice, so each check is made over many connections held
open at once, and the test reads from ``/proc`` which worker holds each of them: the checks
count only when both workers answered some.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from central import open_service
from central.terminal_status import revoke
from firmware_cfg.keys import public_hex
from sync.checkpoint import Checkpoint
from sync.client import SyncClient
from sync.protocol import (
    H_NONCE,
    H_SIGNATURE,
    H_TERMINAL,
    H_TIME,
    b64,
    new_nonce,
    request_message,
)
from tests.pg_fixtures import (  # noqa: F401 - fixtures
    CentralProcess,
    fill_ledger,
    new_terminal_key,
    pg_cluster,
    start_central,
)

SERVE = ("-m", "localpay", "central", "serve")
TERMINALS = 6
PER_TERMINAL = 240
CONNECTIONS = 40


@pytest.fixture
def served(pg_cluster, tmp_path: Path) -> Iterator[tuple[CentralProcess, dict]]:  # noqa: F811
    db, data = pg_cluster.new_database(), tmp_path / "data"
    svc = open_service(db, data)
    keys = {}
    for i in range(TERMINALS):
        tid = f"BUS-{i}"
        keys[tid] = new_terminal_key()
        svc.add_terminal(tid, bytes.fromhex(public_hex(keys[tid])))
        fill_ledger(tmp_path / f"{tid}.sqlite", keys[tid], tid, PER_TERMINAL,
                    start_ms=1_790_000_000_000 + i * 7).close()
    svc.store.close()
    # connections held open across a whole test, however slow the machine: the default
    # idle keep-alive (5 s) would let the service close some while others are still opening
    server = start_central(db, data, command=SERVE,
                           extra=("--workers", "2", "--keep-alive", "600"), timeout=60)
    try:
        yield server, keys
    finally:
        server.stop()


def _workers(server: CentralProcess) -> list[int]:
    """The service's worker processes (not multiprocessing's resource tracker)."""
    kids = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text()
    return [int(p) for p in kids.split()
            if b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes()]


def _established_by_worker(server: CentralProcess) -> dict[int, int]:
    """Worker pid -> connections to the service's port it holds open."""
    inodes: dict[str, int] = {}
    for pid in _workers(server):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = fd.readlink().as_posix()
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes[target[8:-1]] = pid
    held = dict.fromkeys(_workers(server), 0)
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        cols = line.split()
        local_port = int(cols[1].split(":")[1], 16)
        if local_port == server.port and cols[3] == "01" and cols[9] in inodes:
            held[inodes[cols[9]]] += 1
    return held


def _signed(key, terminal: str, path: str, nonce: str | None = None) -> dict[str, str]:
    nonce = nonce or new_nonce()
    import time

    now = int(time.time() * 1000)
    sig = key.sign(request_message("GET", path, now, nonce, b""))
    return {H_TERMINAL: terminal, H_TIME: str(now), H_NONCE: nonce, H_SIGNATURE: b64(sig)}


def _connections(server: CentralProcess) -> list[httpx.Client]:
    """CONNECTIONS clients, each holding its own open connection to the service, spread
    over both workers (the test stops if the kernel gave every one to one worker)."""
    # Which worker accepts a connection is the kernel's choice: on a loaded machine one
    # worker may take a whole run of them, so more are opened until both hold some.
    clients: list[httpx.Client] = []
    held: dict[int, int] = {}
    while len(clients) < 10 * CONNECTIONS:
        more = [httpx.Client(base_url=server.url, timeout=30) for _ in range(CONNECTIONS)]
        for c in more:
            assert c.get("/healthz").status_code == 200  # opens, and keeps, its connection
        clients += more
        held = _established_by_worker(server)
        assert len(held) == 2, held
        assert sum(held.values()) == len(clients), held
        if all(n > 0 for n in held.values()):
            return clients
    raise AssertionError(f"one worker took every connection: {held}")


def _counters(text: str) -> dict[str, float]:
    """The unlabelled samples of a Prometheus text page."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 9162's Merkle tree hash, written here from the RFC, not taken from sync.merkle."""
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + _mth(leaves[:k]) + _mth(leaves[k:])).digest()


def test_terminals_syncing_at_once_through_two_workers_leave_a_whole_chain(
        served: tuple[CentralProcess, dict], tmp_path: Path) -> None:
    server, keys = served
    sent: dict[str, int] = {}
    errors: list[BaseException] = []

    def sync(tid: str) -> None:
        try:
            # small batches: many requests per terminal, so both workers take some
            with SyncClient(tmp_path / f"{tid}.sqlite", keys[tid], server.url,
                            server.verifier, batch_size=20, max_retries=5) as client:
                sent[tid] = client.sync_once().sent
        except BaseException as err:  # reported below, in the test's thread
            errors.append(err)

    threads = [threading.Thread(target=sync, args=(t,)) for t in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert sent == dict.fromkeys(keys, PER_TERMINAL)
    # whichever worker answers /metrics counts every worker's batches
    batches = TERMINALS * -(-PER_TERMINAL // 20)
    clients = _connections(server)
    try:
        pages = [_counters(c.get("/metrics").text) for c in clients]
        seen = {(p["localpay_batches_accepted_total"], p["localpay_entries_accepted_total"])
                for p in pages}
        assert len(seen) == 1, seen  # the same sums from both workers
        (accepted, entries), = seen
        # a batch sent again after a lost answer is accepted again, its entries not
        assert accepted >= batches and entries == TERMINALS * PER_TERMINAL
    finally:
        for c in clients:
            c.close()
    svc = open_service(server.db, server.data)
    try:
        with svc.store.tx(write=False) as tx:
            rows = tx.all("SELECT log_index, terminal_id, seq, data FROM entries "
                          "ORDER BY log_index")
            note = tx.one("SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1")
    finally:
        svc.store.close()
    # every entry once, each terminal's 1..PER_TERMINAL, the log indexes 0..n-1 with no hole
    assert [int(r[0]) for r in rows] == list(range(TERMINALS * PER_TERMINAL))
    for tid in keys:
        assert sorted(int(r[2]) for r in rows if r[1] == tid) == list(
            range(1, PER_TERMINAL + 1))
    # the signed tree head is the tree of exactly those entries
    assert note is not None
    from central.keys import load_signer

    cp = Checkpoint.verify(str(note[0]), load_signer(server.data, create=False).verifier)
    assert cp.size == len(rows)
    assert cp.root == _mth([bytes(r[3]) for r in rows])


def test_a_replayed_request_is_refused_by_either_worker(
        served: tuple[CentralProcess, dict]) -> None:
    server, keys = served
    key = keys["BUS-0"]
    path = "/v1/deny?since=0"
    headers = _signed(key, "BUS-0", path)
    clients = _connections(server)
    try:
        first = clients[0].get(path, headers=headers)
        assert first.status_code == 200, first.text
        refused = [c.get(path, headers=headers) for c in clients]
        assert [r.status_code for r in refused] == [401] * len(clients)
        assert all("replayed" in r.json()["message"] for r in refused)
        # a new nonce is taken by every connection: it was the nonce that was refused
        fresh = [c.get(path, headers=_signed(key, "BUS-0", path)) for c in clients]
        assert [r.status_code for r in fresh] == [200] * len(clients)
    finally:
        for c in clients:
            c.close()


def test_a_revoke_is_seen_by_every_worker(served: tuple[CentralProcess, dict]) -> None:
    server, keys = served
    key = keys["BUS-1"]
    path = "/v1/config"
    clients = _connections(server)
    try:
        before = [c.get(path, headers=_signed(key, "BUS-1", path)) for c in clients]
        assert [r.status_code for r in before] == [200] * len(clients)
        svc = open_service(server.db, server.data)
        try:
            revoke(svc.store, "BUS-1", "stolen")
        finally:
            svc.store.close()
        after = [c.get(path, headers=_signed(key, "BUS-1", path)) for c in clients]
        assert [r.status_code for r in after] == [401] * len(clients)
        assert all("revoked" in r.json()["message"] for r in after)
        # another terminal is still answered by both
        other = [c.get(path, headers=_signed(keys["BUS-2"], "BUS-2", path)) for c in clients]
        assert [r.status_code for r in other] == [200] * len(clients)
    finally:
        for c in clients:
            c.close()
