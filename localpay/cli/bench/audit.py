"""Benchmark of the entry audit (``central audit``): entries/s re-checked, each entry's own
Ed25519 signature and its hash link, on SQLite and on a throwaway PostgreSQL cluster with
fsync on.

For each store: ``terminals`` terminals' chains, ``entries`` in all, are ingested in the
terminal's batch size (interleaved, as terminals sync), then the audit runs from log index 0
to the end as the command runs it (chunks read, checked, their failures and the cursor
committed), and once more from the cursor (nothing new: the cost of a background run on an
idle log). Beside it, the floor: the same signatures verified alone, in memory. Each rate is
also given per second of this process's CPU, which a machine busy with other work keeps.

``localpay bench audit``; ``run_audit_bench()`` is the same as a function.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import open_service
from central.audit import run_audit
from firmware_cfg.keys import public_hex
from localpay.cli.bench.central import STORES, Interrupts
from localpay.cli.bench.stacks import signed_entries
from localpay.cli.bench.traffic import BATCH, WEEKDAY_MS
from localpay.errors import ConfigError
from localpay.pgserver import PgCluster


def run_audit_bench(*, stores: tuple[str, ...] = STORES, entries: int = 100_000,
                    terminals: int = 20, folder: Path | None = None,
                    progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure the audit on each store; return the figures as a JSON-able dict."""
    unknown = [kind for kind in stores if kind not in STORES]
    if unknown or not stores or len(set(stores)) != len(stores):
        raise ConfigError(f"stores: expected some of {', '.join(STORES)}, each once; found "
                          f"{', '.join(stores) or 'none'}")
    say = progress or (lambda msg: None)
    per = max(1, entries // terminals)
    keys = {f"BENCH-A{i:03d}": Ed25519PrivateKey.generate() for i in range(terminals)}
    say(f"signing {per * terminals} entries of {terminals} terminals")
    chains = {t: signed_entries(k, t, per, wall0=WEEKDAY_MS + i)
              for i, (t, k) in enumerate(keys.items())}
    pairs = [(k.public_key(), e) for t, k in keys.items() for e in chains[t]]
    t0, c0 = time.perf_counter(), time.process_time()
    for public, e in pairs:
        public.verify(e.signature, e.data)
    floor = len(pairs) / (time.perf_counter() - t0)
    floor_cpu = len(pairs) / (time.process_time() - c0)
    result: dict[str, Any] = {"entries": len(pairs), "terminals": terminals,
                              "signatures_alone_per_s": round(floor),
                              "signatures_alone_per_cpu_s": round(floor_cpu)}
    cluster: PgCluster | None = None
    with Interrupts() as interrupts, tempfile.TemporaryDirectory(
            prefix="localpay-bench-audit-", dir=folder) as tmp:
        try:
            for kind in stores:
                if kind == "sqlite":
                    db = f"sqlite:///{Path(tmp) / 'central.sqlite'}"
                else:
                    with interrupts.held():
                        cluster = PgCluster(durable=True)
                    say(f"postgresql: started a throwaway cluster (fsync on) in {cluster.dir}")
                    db = cluster.new_database()
                result[kind] = _one_store(db, Path(tmp) / kind, keys, chains, say)
        finally:
            if cluster is not None:
                with interrupts.held():
                    cluster.destroy()
    return result


def _one_store(db: str, folder: Path, keys: dict[str, Ed25519PrivateKey],
               chains: dict[str, list[Any]], say: Callable[[str], None]) -> dict[str, Any]:
    svc = open_service(db, folder / "data")
    svc.followers = []  # crediting is not what is measured here
    try:
        for t, k in keys.items():
            svc.add_terminal(t, bytes.fromhex(public_hex(k)))
        per = len(next(iter(chains.values())))
        say(f"{svc.store.kind}: ingesting {per * len(chains)} entries")
        for i in range(0, per, BATCH):
            for t, chain in chains.items():
                svc.ingest(t, chain[i:i + BATCH])
        say(f"{svc.store.kind}: auditing")
        c0 = time.process_time()
        first = run_audit(svc.store)
        cpu = time.process_time() - c0
        again = run_audit(svc.store)
        fsync = None
        if svc.store.kind == "postgresql":
            with svc.store.tx(write=False) as tx:
                fsync = tx.one("SHOW fsync")
    finally:
        svc.store.close()
    out: dict[str, Any] = {
        "checked": first.checked, "failures": len(first.failures),
        "seconds": round(first.seconds, 2),
        "entries_per_s": round(first.checked / first.seconds),
        # this process's CPU only (not PostgreSQL's): the figure a loaded machine keeps
        "cpu_seconds": round(cpu, 2), "entries_per_cpu_s": round(first.checked / cpu),
        "idle_run_ms": round(again.seconds * 1000, 1)}
    if fsync is not None:
        out["postgresql_fsync"] = str(fsync[0])
    return out
