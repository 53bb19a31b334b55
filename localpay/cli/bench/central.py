"""Benchmark of the central service: entries/s verified, ingested and proven.

Three figures per store (SQLite and a throwaway PostgreSQL cluster with fsync on):

- ``ingest``: the service's own rate, in process, for one validator's backlog in batches
  (decode, chain and signature checks, append to the tree, hooks, checkpoint, inclusion proof,
  then incentive crediting, which the service runs after each batch within the request);
- ``one_terminal``: a validator's whole backlog synced end to end through HTTP on loopback by
  :class:`sync.client.SyncClient` (proofs verified on the terminal's side too);
- ``many_terminals``: that many terminals syncing at once, each with its own ledger and client,
  from several client processes: three validators to one till.

Both figures over HTTP carry ``routes``: each route's requests from the service's access log
(how many, mean and slowest ms). Under the burst of batches, status reports, totals and
rounds must still be answered at once.

Entries carry what terminals really write (:mod:`localpay.cli.bench.traffic`): bus taps with
their bus type and rider, purchases with their merchant category, on a weekday, so crediting
does its real work; each figure says how many credits and points it granted. Batches are the
terminal's default size (``[central] batch_size``). Beside the figures, the floors measured in
the same run: the disk's raw ``write``+``fsync`` rate, the service's checks alone (chain
and signatures, ``check_batch``) over the same batches, and under ``many_terminals`` the
store's writes alone (``store_alone_per_s``: what the service wrote, written again into an
empty store by the bulk path, a batch a commit).

``localpay bench central``; ``run_central_bench()`` is the same as a function. Its throwaway
PostgreSQL cluster is stopped and removed however the run ends: SIGINT (Ctrl-C) and SIGTERM
raise KeyboardInterrupt, held while the cluster starts (so that it is known, then stopped)
and while it stops.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import resource
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from central import open_service
from central.service import check_batch
from central.store import ENTRY_COLUMNS, Store, open_store
from firmware_cfg.keys import public_hex
from localpay.cli.bench.stacks import BenchError, fill_ledger, signed_entries, start_central
from localpay.cli.bench.traffic import BATCH, WEEKDAY_MS, terminal_traffic, validator_traffic
from localpay.cli.bench.validator import raw_fsync_rate
from localpay.cli.common import UserError
from localpay.errors import ConfigError
from localpay.pgserver import PgCluster

#: the stores this benchmark measures
STORES = ("sqlite", "postgresql")
#: the service as operators start it
SERVE = ("-m", "localpay", "central", "serve")


def store_names(text: str) -> tuple[str, ...]:
    """``--stores``: names of :data:`STORES`, comma-separated, each once."""
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    for i, name in enumerate(names):
        if name not in STORES:
            raise UserError(f"--stores: {name!r} is not a store this benchmark measures "
                            f"({', '.join(STORES)})")
        if name in names[:i]:
            raise UserError(f"--stores: {name!r} is named twice")
    if not names:
        raise UserError(f"--stores: give at least one store ({', '.join(STORES)})")
    return names


class Interrupts:
    """SIGINT and SIGTERM raise KeyboardInterrupt (SIGTERM's default would end the process
    with no ``finally`` run, leaving the cluster behind), except inside :meth:`held`, where
    the signal waits until the block is done. Only in the main thread, where Python runs
    signal handlers; elsewhere it changes nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._holding = False
        self._pending: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)

    def _handle(self, signum: int, frame: object) -> None:
        if self._holding:
            self._pending = signum
            return
        raise KeyboardInterrupt(signal.Signals(signum).name)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold signals over a block that must finish (starting or stopping a server)."""
        outer = self._holding
        self._holding = True
        try:
            yield
        finally:
            self._holding = outer
            pending, self._pending = self._pending, None
            if pending is not None and not outer:
                raise KeyboardInterrupt(signal.Signals(pending).name)


def _credited(store: Store) -> dict[str, Any]:
    """What crediting granted, and how many log entries carry a detail (not ``{}``)."""
    with store.tx(write=False) as tx:
        row = tx.one("SELECT COUNT(*), COALESCE(SUM(points), 0) FROM incentive_credits")
        rules = tx.all("SELECT rule, COUNT(*) FROM incentive_credits GROUP BY rule")
        detailed = tx.one("SELECT COUNT(*) FROM entries WHERE detail <> '{}'")
        fsync = tx.one("SHOW fsync") if store.kind == "postgresql" else None
    out: dict[str, Any] = {"credits": int(row[0]) if row else 0,
                           "points": int(row[1]) if row else 0,
                           "by_rule": {str(r): int(n) for r, n in sorted(rules)},
                           "entries_with_detail": int(detailed[0]) if detailed else 0}
    if fsync is not None:
        out["postgresql_fsync"] = str(fsync[0])
    return out


def _ingest(db: str, folder: Path, entries: int, batch: int, verify: str) -> dict[str, Any]:
    svc = open_service(db, folder / "data", policy=verify)  # type: ignore[arg-type]
    key = Ed25519PrivateKey.generate()
    svc.add_terminal("BENCH-IN", bytes.fromhex(public_hex(key)))
    wire = signed_entries(key, "BENCH-IN", entries, wall0=WEEKDAY_MS,
                          traffic=validator_traffic(entries, bus_type="city"))
    t0 = time.perf_counter()
    for i in range(0, entries, batch):
        svc.ingest("BENCH-IN", wire[i : i + batch])
    dt = time.perf_counter() - t0
    credited = _credited(svc.store)
    svc.store.close()
    # the floor: the same batches through the checks alone (chain links and signatures)
    public = key.public_key()
    t1 = time.perf_counter()
    for i in range(0, entries, batch):
        check_batch("BENCH-IN", public, wire[i : i + batch], verify)  # type: ignore[arg-type]
    checks = entries / (time.perf_counter() - t1)
    return {"entries": entries, "batch": batch, "seconds": round(dt, 2),
            "entries_per_s": round(entries / dt), "checks_alone_per_s": round(checks),
            "credited": credited}


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
          processes: int, workers: int = 1,
          store_cpu: Callable[[], float | None] = lambda: None) -> dict[str, Any]:
    """``store_cpu``: the CPU seconds the store's server has used so far (PostgreSQL's
    processes), read around the timed part; None for SQLite, which runs in the service."""
    svc = open_service(db, folder / "data")
    ledgers = []
    for i in range(terminals):
        tid = f"BENCH-{i:04d}"
        key = Ed25519PrivateKey.generate()
        path = folder / f"{tid}.sqlite"
        fill_ledger(path, key, tid, per_terminal, start_ms=WEEKDAY_MS,
                    traffic=terminal_traffic(i, per_terminal, terminals)).close()
        svc.add_terminal(tid, bytes.fromhex(public_hex(key)))
        pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        ledgers.append((tid, str(path), pem))
    before = svc.size()
    svc.store.close()
    # the command operators run, in as many worker processes as asked
    server = start_central(db, folder / "data", command=SERVE, timeout=60,
                           extra=("--verify", verify, "--workers", str(workers)))
    try:
        groups = [ledgers[i::processes] for i in range(min(processes, terminals))]
        store0 = store_cpu()
        cpu0 = _cpu()
        t0 = time.perf_counter()
        if len(groups) == 1:
            sent = _client_worker((server.url, server.verifier, groups[0], batch))
        else:
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(len(groups)) as pool:
                sent = sum(pool.map(_client_worker, [(server.url, server.verifier, g, batch)
                                                     for g in groups]))
        dt = time.perf_counter() - t0
        # the client processes are reaped by now, the service not yet: what the clients
        # cost, then (once it is stopped) what the service's processes cost
        cpu1 = _cpu()
    finally:
        server.stop()
    routes = route_times(server.log_path)
    cpu2 = _cpu()
    store1 = store_cpu()
    svc = open_service(db, folder / "data")
    held = svc.size() - before
    credited = _credited(svc.store)
    svc.store.close()
    total = terminals * per_terminal
    return {"terminals": terminals, "entries": total, "sent": sent, "held": held,
            "batch": batch, "workers": workers, "seconds": round(dt, 2),
            "entries_per_s": round(total / dt),
            "clients_cpu_s": round(cpu1[0] - cpu0[0] + cpu1[1] - cpu0[1], 1),
            "service_cpu_s": round(cpu2[1] - cpu1[1], 1),
            "store_cpu_s": None if store0 is None or store1 is None else round(
                store1 - store0, 1), "credited": credited, "routes": routes}


def _store_alone(source: str, target: str, batch: int) -> int:
    """The store's floor under a figure: the entries and tree nodes the service wrote to
    ``source``, written again into the empty store ``target`` (same schema and indexes) by the
    store's bulk path, ``batch`` entries and their share of the nodes a commit, fsync on, and
    nothing else (no checks, crediting, proofs, HTTP or clients). Entries/s."""
    src = open_store(source)
    try:
        with src.tx(write=False) as tx:
            entries = tx.all(f"SELECT {', '.join(ENTRY_COLUMNS)} FROM entries "
                             "ORDER BY log_index")
            nodes = tx.all("SELECT level, idx, hash FROM nodes ORDER BY level, idx")
    finally:
        src.close()
    dst = open_store(target)
    try:
        commits = max(1, -(-len(entries) // batch))
        t0 = time.perf_counter()
        for i in range(commits):
            with dst.tx() as tx:
                tx.bulk("entries", ENTRY_COLUMNS, entries[i * batch:(i + 1) * batch])
                part = nodes[len(nodes) * i // commits:len(nodes) * (i + 1) // commits]
                if part:
                    tx.bulk("nodes", ("level", "idx", "hash"), part)
        dt = time.perf_counter() - t0
        with dst.tx(write=False) as tx:
            row = tx.one("SELECT COUNT(*) FROM entries")
    finally:
        dst.close()
    if row is None or int(row[0]) != len(entries):
        raise BenchError(f"the store's floor wrote {row[0] if row else 0} entries of "
                         f"{len(entries)}")
    return round(len(entries) / dt)


def route_times(log_path: Path) -> dict[str, dict[str, float]]:
    """Each route's requests in the service's access log (``METHOD /path``, the query cut):
    how many, and their mean and slowest time in ms. Under a burst of batches the other
    routes must still be answered in milliseconds, not wait behind the batches."""
    times: dict[str, list[float]] = {}
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue  # not an access line (the server's start-up text)
        if isinstance(doc, dict) and doc.get("event") == "access" and "ms" in doc:
            route = f"{doc.get('method')} {str(doc.get('path')).split('?', 1)[0]}"
            times.setdefault(route, []).append(float(doc["ms"]))
    return {route: {"n": len(ms), "mean_ms": round(sum(ms) / len(ms), 1),
                    "max_ms": round(max(ms), 1)} for route, ms in sorted(times.items())}


def _cpu() -> tuple[float, float]:
    """CPU seconds (user and system) of this process, and of its children reaped so far
    (a stopped service's workers are counted in it: it reaped them)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def run_central_bench(
    *,
    stores: tuple[str, ...] = ("sqlite", "postgresql"),
    backlog: int = 100_000,
    terminals: int = 200,
    per_terminal: int = 500,
    batch: int = BATCH,
    verify: str = "anchor",
    processes: int = 2,
    workers: int = 1,
    folder: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure ``ingest``, ``one_terminal`` and ``many_terminals`` on each store; return the
    figures as a JSON-able dict. ``verify`` is the service's signature policy; ``batch``
    the entries per batch (default: the terminal's own); ``workers`` the service's worker
    processes (``central serve --workers``) in the two figures over HTTP."""
    unknown = [kind for kind in stores if kind not in STORES]
    if workers < 1:
        raise ConfigError(f"workers: at least 1, not {workers}")
    if unknown or not stores or len(set(stores)) != len(stores):
        raise ConfigError(f"stores: expected some of {', '.join(STORES)}, each once; found "
                          f"{', '.join(stores) or 'none'}")
    with Interrupts() as interrupts:
        return _run(interrupts, stores=stores, backlog=backlog, terminals=terminals,
                    per_terminal=per_terminal, batch=batch, verify=verify,
                    processes=processes, workers=workers, folder=folder,
                    say=progress or (lambda msg: None))


def _run(interrupts: Interrupts, *, stores: tuple[str, ...], backlog: int, terminals: int,
         per_terminal: int, batch: int, verify: str, processes: int, workers: int,
         folder: Path | None, say: Callable[[str], None]) -> dict[str, Any]:
    result: dict[str, Any] = {"verify": verify, "cpus": multiprocessing.cpu_count(),
                              "batch": batch, "workers": workers}
    cluster: PgCluster | None = None
    with tempfile.TemporaryDirectory(prefix="localpay-bench-central-", dir=folder) as tmp:
        # the disk's own floor (the throwaway PostgreSQL cluster lives in the same /tmp
        # unless ``folder`` is elsewhere)
        say("measuring raw write+fsync rate of the disk")
        result["fsyncs_per_s"] = round(raw_fsync_rate(Path(tmp), seconds=1.0))
        try:
            for kind in stores:
                figures: dict[str, Any] = {}

                def db(name: str, kind: str = kind) -> str:
                    nonlocal cluster
                    if kind == "sqlite":
                        return f"sqlite:///{Path(tmp) / kind / name / 'central.sqlite'}"
                    if cluster is None:
                        with interrupts.held():
                            cluster = PgCluster(durable=True)
                        say(f"postgresql: started a throwaway cluster (fsync on) in "
                            f"{cluster.dir}")
                    return cluster.new_database()

                def store_cpu(kind: str = kind) -> float | None:
                    return cluster.cpu_seconds() if kind != "sqlite" and cluster else None

                base = Path(tmp) / kind
                say(f"{kind}: ingest {backlog} entries in process")
                figures["ingest"] = _ingest(db("in"), base / "in", backlog, batch, verify)
                say(f"{kind}: one terminal, {backlog}-entry backlog over HTTP")
                figures["one_terminal"] = _sync(db("one"), base / "one", 1, backlog, batch,
                                                verify, 1, workers, store_cpu)
                say(f"{kind}: {terminals} terminals x {per_terminal} entries at once")
                many = db("many")
                figures["many_terminals"] = _sync(many, base / "many", terminals,
                                                  per_terminal, min(batch, per_terminal),
                                                  verify, processes, workers, store_cpu)
                say(f"{kind}: floor: the same entries and nodes written alone")
                figures["many_terminals"]["store_alone_per_s"] = _store_alone(
                    many, db("alone"), min(batch, per_terminal))
                result[kind] = figures
        finally:
            if cluster is not None:
                with interrupts.held():
                    cluster.destroy()
    return result
