"""Benchmark of the central service: entries/s verified, ingested and proven.

Three figures per store (SQLite and a throwaway PostgreSQL cluster):

- ``ingest``: the service's own rate, in process, for one terminal's backlog in batches
  (decode, chain and signature checks, append to the tree, hooks, checkpoint, inclusion proof);
- ``one_terminal``: a terminal's whole backlog synced end to end through HTTP on loopback by
  :class:`sync.client.SyncClient` (proofs verified on the terminal's side too);
- ``many_terminals``: that many terminals syncing at once, each with its own ledger and client,
  from several client processes.

``localpay bench central``; ``run_central_bench()`` is the same as a function.
"""

from __future__ import annotations

import multiprocessing
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from central import open_service
from firmware_cfg.keys import public_hex
from localpay.cli.bench.stacks import PgCluster, fill_ledger, signed_entries, start_central


def _ingest(db: str, folder: Path, entries: int, batch: int, verify: str) -> dict[str, Any]:
    svc = open_service(db, folder / "data", policy=verify)  # type: ignore[arg-type]
    key = Ed25519PrivateKey.generate()
    svc.add_terminal("BENCH-IN", bytes.fromhex(public_hex(key)))
    wire = signed_entries(key, "BENCH-IN", entries, cards=[f"{i:064x}" for i in range(997)])
    t0 = time.perf_counter()
    for i in range(0, entries, batch):
        svc.ingest("BENCH-IN", wire[i : i + batch])
    dt = time.perf_counter() - t0
    svc.store.close()
    return {"entries": entries, "batch": batch, "seconds": round(dt, 2),
            "entries_per_s": round(entries / dt)}


def _client_worker(args: tuple[str, str, list[tuple[str, str, bytes]], int]) -> int:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from sync.client import SyncClient

    url, verifier, ledgers, batch = args
    sent: list[int] = []

    def one(path: str, pem: bytes) -> None:
        key = load_pem_private_key(pem, password=None)
        client = SyncClient(path, key, url, verifier, batch_size=batch,  # type: ignore[arg-type]
                            max_retries=50)
        sent.append(client.sync_once().sent)  # list.append is atomic across threads
        client.close()

    threads = [threading.Thread(target=one, args=(p, pem)) for _, p, pem in ledgers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(sent)


def _sync(db: str, folder: Path, terminals: int, per_terminal: int, batch: int, verify: str,
          processes: int) -> dict[str, Any]:
    svc = open_service(db, folder / "data")
    ledgers = []
    for i in range(terminals):
        tid = f"BENCH-{i:04d}"
        key = Ed25519PrivateKey.generate()
        path = folder / f"{tid}.sqlite"
        fill_ledger(path, key, tid, per_terminal, cards=500).close()
        svc.add_terminal(tid, bytes.fromhex(public_hex(key)))
        pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        ledgers.append((tid, str(path), pem))
    before = svc.size()
    svc.store.close()
    server = start_central(db, folder / "data", extra=("--verify", verify))
    try:
        groups = [ledgers[i::processes] for i in range(min(processes, terminals))]
        t0 = time.perf_counter()
        if len(groups) == 1:
            sent = _client_worker((server.url, server.verifier, groups[0], batch))
        else:
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(len(groups)) as pool:
                sent = sum(pool.map(_client_worker, [(server.url, server.verifier, g, batch)
                                                     for g in groups]))
        dt = time.perf_counter() - t0
    finally:
        server.stop()
    svc = open_service(db, folder / "data")
    held = svc.size() - before
    svc.store.close()
    total = terminals * per_terminal
    return {"terminals": terminals, "entries": total, "sent": sent, "held": held,
            "batch": batch, "seconds": round(dt, 2), "entries_per_s": round(total / dt)}


def run_central_bench(
    *,
    stores: tuple[str, ...] = ("sqlite", "postgresql"),
    backlog: int = 100_000,
    terminals: int = 200,
    per_terminal: int = 500,
    batch: int = 1000,
    verify: str = "every",
    processes: int = 2,
    folder: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure ``ingest``, ``one_terminal`` and ``many_terminals`` on each store; return the
    figures as a JSON-able dict. ``verify`` is the service's signature policy."""
    say = progress or (lambda msg: None)
    result: dict[str, Any] = {"verify": verify, "cpus": multiprocessing.cpu_count()}
    cluster: PgCluster | None = None
    with tempfile.TemporaryDirectory(prefix="localpay-bench-central-", dir=folder) as tmp:
        try:
            for kind in stores:
                figures: dict[str, Any] = {}

                def db(name: str, kind: str = kind) -> str:
                    nonlocal cluster
                    if kind == "sqlite":
                        return f"sqlite:///{Path(tmp) / kind / name / 'central.sqlite'}"
                    if cluster is None:
                        cluster = PgCluster(durable=True)
                    return cluster.new_database()

                base = Path(tmp) / kind
                say(f"{kind}: ingest {backlog} entries in process")
                figures["ingest"] = _ingest(db("in"), base / "in", backlog, batch, verify)
                say(f"{kind}: one terminal, {backlog}-entry backlog over HTTP")
                figures["one_terminal"] = _sync(db("one"), base / "one", 1, backlog, batch,
                                                verify, 1)
                say(f"{kind}: {terminals} terminals x {per_terminal} entries at once")
                figures["many_terminals"] = _sync(db("many"), base / "many", terminals,
                                                  per_terminal, min(batch, per_terminal),
                                                  verify, processes)
                result[kind] = figures
        finally:
            if cluster is not None:
                cluster.destroy()
    return result
