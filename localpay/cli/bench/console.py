"""``localpay bench console``: the operator's console's Fleet page for a city's fleet, over
HTTP from a real ``localpay central serve``.

A throwaway store (SQLite in a temporary folder, or a local PostgreSQL cluster with fsync on,
destroyed however the run ends) gets ``terminals`` terminals from
:func:`localpay.cli.bench.console_seed.seed_fleet` (the first 500 synced through the real
ingest); an operator is created, the service started as operators start it (its default
workers, Secure cookies), and the benchmark logs in over HTTP like a browser (the login
form's CSRF token, then the session cookie, sent by hand: ``Secure`` cookies are not sent
over plain HTTP by a client's cookie jar).

**Timed** over one keep-alive connection (so one worker of the service answers them all,
after a few untimed requests that warm it: its first listing reads every config bundle),
``runs`` rounds of one GET each, in turn (a moment the machine is busy slows every series
alike), of: the Fleet page's first page in its default sort; a filtered, sorted later page
(tills of places ``M01..``, newest seen first, page 2); the terminals reporting faults, by
software version; the live table's JSON for the first page; and ``/healthz``, the
**floor** (HTTP and the service's own overhead on the same connection). A second floor,
before the service starts: :func:`central.console_data.fleet` alone in this process for the
same pages (the data read fresh, without HTTP, session or HTML). On PostgreSQL the store
is vacuumed and analysed after the bulk load, as a store in service is.

Target (issue #19): the Fleet page under 200 ms p99 for 5,000 terminals on a 2-core machine.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from central import open_service, terminal_status
from central.console import operators
from localpay.cli.bench.central import Interrupts
from localpay.cli.bench.console_seed import measure_fleet, percentiles, seed_fleet
from localpay.cli.bench.stacks import BenchError, start_central
from localpay.pgserver import PgCluster

Progress = Callable[[str], None]
TARGET_P99_MS = 200
SERVE = ("-m", "localpay", "central", "serve")
OPERATOR, PASSWORD = "bench", "bench console password"
#: what is timed: name -> (path, in-process floor's arguments to console_data.fleet)
PAGES: dict[str, tuple[str, dict[str, Any]]] = {
    "fleet_page": ("/console/fleet", {"sort": "terminal_id", "desc": False}),
    "fleet_page_filtered": ("/console/fleet?q=M01&role=till&sort=last_seen&dir=desc&page=2",
                            {"filter_text": "M01", "role": "till", "sort": "last_seen_ms",
                             "desc": True, "offset": 100}),
    "fleet_page_faults": ("/console/fleet?faults=1&sort=software&dir=desc",
                          {"faulty": True, "sort": "software", "desc": True}),
    "fleet_json": ("/console/fleet.json", {"sort": "terminal_id", "desc": False}),
}
WARM = 5


def _cookie_of(resp: httpx.Response, prefix: str) -> tuple[str, str]:
    """The (name, value) of the cookie ``resp`` sets whose name ends with ``prefix``."""
    for header in resp.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        if name.strip().endswith(prefix):
            return name.strip(), rest.split(";", 1)[0]
    raise BenchError(f"no {prefix} cookie in the answer ({resp.status_code})")


def log_in(client: httpx.Client) -> None:
    """Log in as :data:`OPERATOR` through the login form; the session's cookie is then sent
    with every request of ``client``."""
    form = client.get("/console/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    if form.status_code != 200 or csrf is None:
        raise BenchError(f"no login form: {form.status_code}")
    name, token = _cookie_of(form, "lp_console_login")
    done = client.post("/console/login", headers={"Cookie": f"{name}={token}"},
                       data={"csrf": csrf.group(1), "name": OPERATOR, "password": PASSWORD,
                             "next": "/console/fleet"})
    if done.status_code != 303:
        raise BenchError(f"login refused: {done.status_code}")
    name, sid = _cookie_of(done, "lp_console")
    client.headers["Cookie"] = f"{name}={sid}"


def _time(client: httpx.Client, paths: dict[str, str],
          runs: int) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """``runs`` rounds of one GET of each of ``paths`` in turn (a moment the machine is
    busy slows each series alike), after :data:`WARM` untimed rounds."""
    for _ in range(WARM):
        for path in paths.values():
            client.get(path)
    times: dict[str, list[float]] = {name: [] for name in paths}
    size: dict[str, int] = {}
    for _ in range(runs):
        for name, path in paths.items():
            start = time.perf_counter()
            resp = client.get(path)
            times[name].append((time.perf_counter() - start) * 1000)
            if resp.status_code != 200:
                raise BenchError(f"GET {path}: {resp.status_code}")
            size[name] = len(resp.content)
    return {name: percentiles(t) for name, t in times.items()}, size


def _check(client: httpx.Client, terminals: int) -> None:
    """The page timed is the page an operator sees: 100 rows and the fleet's total."""
    page = client.get("/console/fleet?lang=en").text
    rows = page.count('<tr><td><a href="/console/terminals/') + page.count(
        '<tr class="revoked"><td><a href="/console/terminals/')
    if rows != min(100, terminals) or f"{terminals:,} terminal(s)" not in page:
        raise BenchError(f"the fleet page shows {rows} rows, not the fleet's first 100 of "
                         f"{terminals:,}")


def one_run(db: str, folder: Path, *, terminals: int, runs: int, workers: int | None,
            progress: Progress) -> dict[str, Any]:
    """Seed ``terminals`` into the empty store ``db``, serve it, time the pages."""
    svc = open_service(db, folder / "data")
    svc.store.init_schema()
    seeded = seed_fleet(svc, terminals, progress=progress)
    progress(f"seeded {terminals:,} terminals ({len(seeded.synced)} synced) in "
             f"{seeded.seconds:.1f} s")
    operators.add_operator(svc.store, OPERATOR, "viewer", PASSWORD, by="bench")
    if svc.store.kind == "postgresql":
        import psycopg  # the central extra's, as every command's import of it

        # as a store in service is (autovacuum's work on the bulk load not left to the
        # timed part)
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
    terminal_status.terminals(svc.store)  # untimed, as the service is warmed: bundles read
    floors = {f"{name}_in_process": measure_fleet(svc.store, runs=runs, **args)
              for name, (_, args) in PAGES.items() if name != "fleet_json"}
    svc.store.close()
    extra = ("--workers", str(workers)) if workers else ()
    server = start_central(db, folder / "data", command=SERVE, extra=extra, timeout=120)
    out: dict[str, Any] = {"terminals": terminals, "synced": len(seeded.synced),
                           "seed_s": round(seeded.seconds, 1)}
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            log_in(client)
            _check(client, terminals)
            paths = {name: path for name, (path, _) in PAGES.items()}
            progress(f"{runs} rounds of GET {', '.join(paths.values())} and /healthz")
            got, sizes = _time(client, {**paths, "healthz_floor": "/healthz"}, runs)
            out.update(got)
            out.update({f"{name}_bytes": sizes[name] for name in paths})
    finally:
        server.stop()
    out.update(floors)
    return out


def bench_console(*, terminals: int, runs: int, store: str, store_url: str | None = None,
                  workers: int | None = None, progress: Progress) -> dict[str, Any]:
    """One run (see the module docstring) on ``store_url``, or on a throwaway store of
    kind ``store`` (``sqlite`` or ``postgresql``), the service with ``workers`` processes
    (default: ``central serve``'s); the figures as a JSON-able dict."""
    result: dict[str, Any] = {"store": store if store_url is None else "given",
                              "workers": workers or "default",
                              "cpus": multiprocessing.cpu_count(), "runs": runs,
                              "load_before": [round(x, 2) for x in os.getloadavg()],
                              "target_p99_ms": TARGET_P99_MS}
    cluster: PgCluster | None = None
    with Interrupts() as interrupts, tempfile.TemporaryDirectory(
            prefix="localpay-bench-console-") as tmp:
        try:
            db = store_url
            if db is None and store == "postgresql":
                with interrupts.held():
                    cluster = PgCluster(durable=True)
                progress(f"postgresql: a throwaway cluster (fsync on) in {cluster.dir}")
                db = cluster.new_database()
            elif db is None:
                db = f"sqlite:///{Path(tmp) / 'central.sqlite'}"
            result.update(one_run(db, Path(tmp), terminals=terminals, runs=runs,
                                  workers=workers, progress=progress))
        finally:
            if cluster is not None:
                with interrupts.held():
                    cluster.destroy()
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    result["within_target"] = result["fleet_page"]["p99_ms"] < TARGET_P99_MS
    return result


def render(f: dict[str, Any]) -> str:
    """The figures for people to read (``--json`` prints them all)."""
    lines = [f"fleet of {f['terminals']:,} terminals ({f['synced']} synced), store "
             f"{f['store']}, {f['workers']} workers, {f['cpus']} CPUs, load "
             f"{f['load_before']} -> {f['load_after']}",
             f"{'GET':<22}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'bytes':>10}   floor in "
             f"process p50/p99 ms"]
    for name in PAGES:
        got = f[name]
        floor = f.get(f"{name}_in_process") or f["fleet_page_in_process"]
        lines.append(f"{name:<22}{got['p50_ms']:>9.1f}{got['p99_ms']:>9.1f}"
                     f"{got['max_ms']:>9.1f}{f[name + '_bytes']:>10,}   "
                     f"{floor['p50_ms']:.1f} / {floor['p99_ms']:.1f}")
    h = f["healthz_floor"]
    lines += [f"{'/healthz (floor)':<22}{h['p50_ms']:>9.1f}{h['p99_ms']:>9.1f}"
              f"{h['max_ms']:>9.1f}",
              f"{f['runs']} rounds of one GET each over one connection; target: fleet page "
              f"p99 under "
              f"{f['target_p99_ms']} ms: {'met' if f['within_target'] else 'NOT met'}"]
    return "\n".join(lines)
