"""``localpay bench ...``: every benchmark, printed as JSON, progress on stderr.

Benchmarks are commands, never timed assertions in tests. Each module here measures one
part against its floor measured in the same run (raw fsync, a bare pipeline).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from localpay.cli.bench import validator
from localpay.cli.bench.wallet import bench_wallet
from localpay.cli.common import UserError, emit, progress


@contextlib.contextmanager
def central_store(url: str | None, kind: str) -> Iterator[str | None]:
    """The store a central benchmark measures: ``url`` when given, else a throwaway local
    PostgreSQL cluster with fsync on (``kind`` postgresql), else None (SQLite in a
    temporary folder, made by the benchmark)."""
    from localpay.pgserver import PgCluster

    if url is not None or kind != "postgresql":
        yield url
        return
    progress("starting a throwaway PostgreSQL cluster (fsync on)")
    cluster = PgCluster(durable=True)
    try:
        yield cluster.new_database()
    finally:
        cluster.destroy()


def store_options(func: Any) -> Any:
    """``--db URL`` or ``--store sqlite|postgresql``: the store a central benchmark uses."""
    func = click.option("--store", type=click.Choice(["sqlite", "postgresql"]),
                        default="sqlite", show_default=True,
                        help="Without --db: SQLite in a temporary folder, or a throwaway "
                        "local PostgreSQL cluster with fsync on.")(func)
    return click.option("--db", "store_url", default=None,
                        help="Central store URL, e.g. postgresql://... (default: see "
                        "--store).")(func)


def ledger_sizes(text: str) -> list[int]:
    """``--sizes``: entries already in the ledger at each stage, 0 or more."""
    try:
        sizes = [int(s.replace("_", "")) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--sizes: expected numbers separated by commas, got {text!r}") \
            from None
    if not sizes:
        raise UserError("--sizes: give at least one ledger size")
    for size in sizes:
        if size < 0:
            raise UserError(f"--sizes: {size} is not a ledger size (entries already in the "
                            f"ledger: 0 or more)")
    return sizes


@click.group(invoke_without_command=True)
@click.option("--taps", type=click.IntRange(min=100), default=5000, show_default=True,
              help="Taps measured at each ledger size.")
@click.option("--sizes", default="1000,1000000", show_default=True,
              help="Ledger sizes (entries) to measure at, comma-separated.")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder on the disk to measure (default: a temporary folder).")
@click.pass_context
def bench(ctx: click.Context, taps: int, sizes: str, folder: Path | None) -> None:
    """Benchmarks, printed as JSON. Alone: the validator's tap-to-decision.

    Measures taps through the real core, signing and durable commits at each ledger size
    (with the cards' counters, balances and deny list filled in proportion), against the
    disk's own write+fsync rate, plus a wallet-QR payment at the till. The
    subcommands measure the readers, the central service, the screens and incentives.
    """
    if ctx.invoked_subcommand is not None:
        return
    size_list = ledger_sizes(sizes)
    result = validator.run(sizes=size_list, taps=taps, folder=folder, progress=progress)
    progress(f"{min(taps, 2000):,} wallet-QR payments at the till")
    result["wallet_qr"] = bench_wallet(min(taps, 2000), folder=folder,
                                       fsyncs_per_s=result["fsyncs_per_s"])
    emit(result)


@bench.command("readers")
def bench_readers_cmd() -> None:
    """APDU round trip and full EMV read through pcscd + vpcd; QR decode per 640x480 frame.

    Needs pcscd and vsmartcard-vpcd installed (make installs them); starts pcscd when none
    runs.
    """
    from localpay.cli.bench.readers import bench_readers

    emit(bench_readers(progress=progress))


@bench.command("ui")
@click.option("--frames", type=click.IntRange(min=60), default=600, show_default=True,
              help="Frames measured for each role.")
def bench_ui_cmd(frames: int) -> None:
    """Frame time at 800x480 with the sync client in the background; process RSS."""
    from localpay.cli.bench.ui import bench_ui

    emit(bench_ui(frames))


@bench.command("split")
@click.option("--payments", type=click.IntRange(min=100), default=2000, show_default=True,
              help="Payments with pockets in each run (and as many without).")
@click.option("--runs", type=click.IntRange(min=1), default=5, show_default=True,
              help="Runs, each over a fresh ledger; the medians are printed.")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder on the disk to measure (default: a temporary folder).")
def bench_split_cmd(payments: int, runs: int, folder: Path | None) -> None:
    """A till's payment split by pocket offline against the same payment without pockets.

    Cards with pockets (an allowance with limits, points, cash) and cards with a single
    balance take turns through the real core and durable commits; p50/p99 of each, of the
    split decision alone, and what the split adds (target: under 0.2 ms at p99).
    """
    from localpay.cli.bench.split import bench_split

    emit(bench_split(payments, runs, folder, progress=progress))


@bench.command("incentives")
@click.option("--events", type=click.IntRange(min=1000), default=1_500_000, show_default=True,
              help="Taps and purchases in the simulated day (Goyang: about 1.5 million).")
@store_options
@click.option("--follow", type=click.Choice(["batch", "backlog"]), default="batch",
              show_default=True,
              help="batch: credit after every batch, as the service does (the figure that "
              "counts); backlog: bulk-load and checkpoint the day, then credit it in one "
              "catch-up run (a capacity figure, not what production does).")
@click.option("--chunk", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Log entries credited per transaction at most (the service's default).")
def bench_incentives_cmd(events: int, store_url: str | None, store: str, follow: str,
                         chunk: int) -> None:
    """Credit computation for a city's day of taps and purchases, synced hourly.

    By default each batch is credited as it arrives, as the service does; with
    --store postgresql the cluster runs with fsync on.
    """
    from localpay.cli.bench.incentives import bench_incentives

    with central_store(store_url, store) as url:
        emit(bench_incentives(events=events, store_url=url, follow=follow, chunk=chunk))


@bench.command("payout")
@click.option("--cards", type=click.IntRange(min=100), default=100_000, show_default=True,
              help="Cards with credits in the month.")
@store_options
def bench_payout_cmd(cards: int, store_url: str | None, store: str) -> None:
    """A month's payout for a city's cards, settlement file included."""
    from localpay.cli.bench.payout import bench_payout

    with central_store(store_url, store) as url:
        emit(bench_payout(cards, url))


@bench.command("settlement")
@click.option("--merchants", type=click.IntRange(min=1), default=43_000, show_default=True,
              help="Merchants in the registry, every one paid on the day.")
@click.option("--payments", type=click.IntRange(min=1), default=1_000_000, show_default=True,
              help="Payments of the day (at least --merchants).")
@click.option("--store", type=click.Choice(["postgresql", "sqlite"]), default="postgresql",
              show_default=True, help="Without --store-url: a throwaway local PostgreSQL "
              "cluster with fsync on, or SQLite files (WAL, synchronous=FULL) in a temporary "
              "folder.")
@click.option("--store-url", "--db", "store_url", default=None,
              help="An existing PostgreSQL server (postgresql://...): each run fills a new "
              "schema in its database and drops it after.")
@click.option("--runs", type=click.IntRange(min=1), default=3, show_default=True,
              help="Runs, each on a fresh store (a new schema, or a new SQLite file) filled "
              "with the same day; the median is printed.")
@click.option("--fees", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Fee rules ([settlement] fee_bp, category_fee_bp; default: "
              "30 bp, ksic:47 25 bp, ksic:56 15 bp).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def bench_settlement_cmd(merchants: int, payments: int, store: str, store_url: str | None,
                         runs: int, fees: Path | None, as_json: bool) -> None:
    """A city's daily merchant settlement: merchants paid, held and carried, the run's time
    beside a scan of the day's transfers and the disk's fsync rate, then the books proven.

    Filling (not timed) goes through the books' triggers and constraints. Exits 1 when the
    settlement disagrees with what was filled or the books do not balance.
    """
    from central.settlement import FeeRules
    from localpay.cli.bench.settlement import bench_settlement, render

    if payments < merchants:
        raise click.BadParameter("every merchant is paid at least once: give at least as "
                                 "many payments as merchants", param_hint="--payments")
    if store_url is not None and not store_url.startswith(("postgresql://", "postgres://")):
        raise click.BadParameter("a PostgreSQL server URL (postgresql://...); for SQLite "
                                 "use --store sqlite", param_hint="--store-url")
    rules = FeeRules.load(fees) if fees is not None else None
    with central_store(store_url, store) as url:
        result = bench_settlement(merchants, payments, store_url=url, runs=runs,
                                  fee_rules=rules, progress=progress)
    if as_json:
        emit(result)
    else:
        click.echo(render(result))
    if result["problems"]:
        raise click.ClickException("the settlement disagrees with what was filled: "
                                   + "; ".join(result["problems"]))


@bench.command("mpm-online")
@click.option("--payments", type=click.IntRange(min=10), default=100, show_default=True,
              help="Online QR payments in each run.")
@click.option("--runs", type=click.IntRange(min=1), default=3, show_default=True,
              help="Runs, each over a fresh central and till; the medians are printed.")
def bench_mpm_online_cmd(payments: int, runs: int) -> None:
    """The app pays a till's QR code online: app POST to the till's approved decision,
    p50/p99 over loopback with a real central serve (SQLite), beside a bare signed GET
    round trip (target: p99 under 300 ms)."""
    from localpay.cli.bench.mpm_online import bench_mpm_online

    emit(bench_mpm_online(payments=payments, runs=runs, progress=progress))


@bench.command("console")
@click.option("--terminals", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Terminals in the fleet (the first 500 sync through the real ingest).")
@click.option("--runs", type=click.IntRange(min=10), default=200, show_default=True,
              help="GETs timed of each page.")
@store_options
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes of the service (default: central serve's, a core each).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def bench_console_cmd(terminals: int, runs: int, store_url: str | None, store: str,
                      workers: int | None, as_json: bool) -> None:
    """The console's Fleet page for a city's fleet over HTTP from a real central serve:
    p50/p99 of the first page, a filtered sorted page and the live table's JSON, beside
    /healthz and the page's data read in process (target: p99 under 200 ms)."""
    from localpay.cli.bench.console import bench_console, render

    result = bench_console(terminals=terminals, runs=runs, store=store, store_url=store_url,
                           workers=workers, progress=progress)
    if as_json:
        emit(result)
    else:
        click.echo(render(result))


@bench.command("audit")
@click.option("--stores", default="sqlite,postgresql", show_default=True,
              help="Stores to measure, comma-separated.")
@click.option("--entries", type=click.IntRange(min=1000), default=100_000, show_default=True,
              help="Entries in the log audited.")
@click.option("--terminals", type=click.IntRange(min=1), default=20, show_default=True,
              help="Terminals whose chains they are.")
def bench_audit_cmd(stores: str, entries: int, terminals: int) -> None:
    """Entries/s of `central audit` (each entry's own signature and hash link) from the
    start of the log; PostgreSQL is a throwaway local cluster with fsync on."""
    from localpay.cli.bench.audit import run_audit_bench
    from localpay.cli.bench.central import store_names

    emit(run_audit_bench(stores=store_names(stores), entries=entries, terminals=terminals,
                         progress=progress))


@bench.command("central")
@click.option("--stores", default="sqlite,postgresql", show_default=True,
              help="Stores to measure, comma-separated.")
@click.option("--backlog", type=click.IntRange(min=1000), default=100_000, show_default=True,
              help="One terminal's backlog, in entries.")
@click.option("--terminals", type=click.IntRange(min=1), default=200, show_default=True,
              help="Terminals syncing at once.")
@click.option("--per-terminal", type=click.IntRange(min=1), default=500, show_default=True,
              help="Entries each of those terminals sends.")
@click.option("--verify", type=click.Choice(["every", "anchor"]), default="anchor",
              show_default=True, help="Check every entry's signature, or each batch's last "
              "(the hash chain covers the rest).")
@click.option("--workers", type=click.IntRange(min=1), default=os.cpu_count() or 1,
              show_default="the number of cores", help="Worker processes of the service "
              "(central serve --workers) for the figures over HTTP.")
def bench_central_cmd(stores: str, backlog: int, terminals: int, per_terminal: int,
                      verify: str, workers: int) -> None:
    """Entries/s verified, ingested, proven and credited; one backlog and many terminals
    over loopback.

    Entries are bus taps and purchases as terminals write them, in batches of the
    terminal's default size; crediting runs after each batch, within the request.
    PostgreSQL is a throwaway local cluster with fsync on, as in production. Floors of
    the same run: the disk's fsync rate, the checks alone, and the store's writes alone
    (what the many terminals wrote, written again into an empty store).
    """
    from localpay.cli.bench.central import run_central_bench, store_names

    emit(run_central_bench(stores=store_names(stores), backlog=backlog,
                           terminals=terminals, per_terminal=per_terminal, verify=verify,
                           workers=workers, progress=progress))


COMMANDS = [bench]
