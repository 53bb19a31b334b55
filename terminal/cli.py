"""The ``localpay`` command line (also ``python -m terminal``).

Errors a user can cause become a one-line message and a non-zero exit, never a traceback
(``--debug`` shows it). PANs are redacted in every output.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import click

from localpay import __version__
from localpay.errors import LedgerCorruptError, LedgerError, LocalpayError
from terminal.home import Home, default_home

log = logging.getLogger("localpay")


class Context:
    def __init__(self, home: Path, debug: bool) -> None:
        self.home = Home(home)
        self.debug = debug


pass_ctx = click.make_pass_decorator(Context)


class LocalpayGroup(click.Group):
    """Turns our own errors into a clear message and exit code 2 (1 is for verdicts)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LocalpayError as err:
            if ctx.find_object(Context) and ctx.find_object(Context).debug:  # type: ignore[union-attr]
                raise
            raise click.ClickException(f"{type(err).__name__}: {err}") from err


def db_option(func: Any) -> Any:
    return click.option(
        "--db", "db", type=click.Path(dir_okay=False, path_type=Path), default=None,
        help="Ledger file (default: ledger.sqlite in the home folder).",
    )(func)


@click.group(cls=LocalpayGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="localpay")
@click.option(
    "--home", type=click.Path(file_okay=False, path_type=Path), envvar="LOCALPAY_HOME",
    default=None, show_envvar=True,
    help="Folder holding config, keys and ledger (default: ~/.local/share/localpay for a "
    "user, /var/lib/localpay for the service).",
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, home: Path | None, verbose: int, debug: bool) -> None:
    """Offline payment terminal for a city's local currency: till and bus validator."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    ctx.obj = Context(home or default_home(), debug)


# -- demo ----------------------------------------------------------------------------------


@cli.command()
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep the demo's ledgers in this folder instead of a temporary one.")
@click.option("--screenshots", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also save a PNG of every screen state (both roles and languages, "
              "800x480 and 1280x720) in this folder.")
def demo(keep: Path | None, screenshots: Path | None) -> None:
    """Play a simulated morning on a validator and a till, with the network down.

    Needs no config, no server and no hardware: virtual cards, embedded defaults.
    """
    from terminal import demo as demo_mod

    def show(step: demo_mod.Step) -> None:
        d = step.decision
        mark = {"approved": "APPROVED", "declined": "DECLINED", "already_paid": "ALREADY PAID"}
        why = f" ({d.reason.value}: {d.reason.message})" if d.reason else ""
        if d.outcome == "already_paid":
            why = f" ({d.detail})"
        if d.approved and d.points:
            week = f", {d.points_week:,} this week" if d.points_week is not None else ""
            why += f" (+{d.points:,} points{week})"
        click.echo(f"{step.at}  {step.terminal:<9}  {step.what:<38} {mark[d.outcome]}{why}")

    click.echo("localpay demo: a morning on bus route 85 and at a local-food shop, offline\n")
    with tempfile.TemporaryDirectory(prefix="localpay-demo-") as tmp:
        home = keep or Path(tmp)
        result = demo_mod.run(home, show)
    _demo_summary(result)
    if screenshots is not None:
        from kiosk_ui import save_screenshots

        saved = save_screenshots(screenshots)
        click.echo(f"\n{len(saved)} screenshots in {screenshots}")


def _demo_summary(result: Any) -> None:
    rows = []
    for name in ("validator", "till"):
        steps = [s for s in result.steps if s.terminal == name]
        outcomes = Counter(s.decision.outcome for s in steps)
        approved = [s.decision for s in steps if s.decision.approved]
        charged = sum(d.amount for d in approved if d.entry and d.entry.kind in ("tap", "payment"))
        refunded = sum(d.amount for d in approved if d.entry and d.entry.kind in ("refund", "void"))
        reasons = Counter(s.decision.reason.value for s in steps if s.decision.reason)
        rows.append((name, outcomes, charged, refunded, reasons))
    click.echo("\nSummary")
    header = f"{'terminal':<10} {'approved':>8} {'declined':>8} {'dup':>4} {'charged':>10} " \
             f"{'refunded':>9} {'net':>10}  declined because"
    click.echo(header)
    click.echo("-" * len(header))
    for name, outcomes, charged, refunded, reasons in rows:
        why = ", ".join(f"{k} x{v}" for k, v in sorted(reasons.items())) or "-"
        click.echo(f"{name:<10} {outcomes['approved']:>8} {outcomes['declined']:>8} "
                   f"{outcomes['already_paid']:>4} {charged:>10,} {refunded:>9,} "
                   f"{charged - refunded:>10,}  {why}")
    click.echo("\nLedgers")
    for name, (seq, head, summary) in result.ledgers.items():
        click.echo(f"{name:<10} head seq {seq}  hash {head[:16]}…  {summary}")


# -- ledger --------------------------------------------------------------------------------


@cli.group()
def ledger() -> None:
    """Inspect and verify an offline ledger."""


def _ledger_path(ctx: Context, db: Path | None) -> Path:
    return db if db is not None else ctx.home.ledger_path


@ledger.command("verify")
@db_option
@click.option("--pubkey", default=None, help="Terminal public key (hex) to verify against, "
              "instead of the one recorded in the ledger.")
@pass_ctx
def ledger_verify(ctx: Context, db: Path | None, pubkey: str | None) -> None:
    """Check every entry's hash link and signature.

    Exit 0 and one summary line when intact; exit 1 naming the first bad entry when not.
    """
    from firmware_cfg.keys import public_from_hex
    from offline_ledger import Ledger

    key = public_from_hex(pubkey, "--pubkey") if pubkey else None
    path = _ledger_path(ctx, db)
    try:
        with Ledger(path) as led:
            report = led.verify(key)
    except LedgerCorruptError as err:
        where = f"first bad entry: seq {err.seq}" if err.seq is not None else "file unreadable"
        click.echo(f"ledger BROKEN: {where}: {err}", err=True)
        sys.exit(1)
    except LedgerError as err:
        click.echo(f"ledger BROKEN: {err}", err=True)
        sys.exit(1)
    click.echo(report.summary())


@ledger.command("show")
@db_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per entry.")
@click.option("--from", "start", type=click.IntRange(min=1), default=1, show_default=True,
              help="First sequence number to show.")
@click.option("--limit", type=click.IntRange(min=0), default=0,
              help="Show at most this many entries (0: all).")
@pass_ctx
def ledger_show(ctx: Context, db: Path | None, as_json: bool, start: int, limit: int) -> None:
    """List ledger entries (card tokens and display forms only, never a PAN)."""
    from offline_ledger import Ledger

    with Ledger(_ledger_path(ctx, db)) as led:
        for n, entry in enumerate(led.entries(start)):
            if limit and n >= limit:
                break
            if as_json:
                click.echo(json.dumps(entry.as_dict(), ensure_ascii=False))
                continue
            f = entry.fields
            ref = f" ref {f.ref_seq}" if f.ref_seq else ""
            click.echo(f"{f.seq:>8} {f.kind:<13} {f.amount:>9,} {f.place:<8} "
                       f"{f.card_token[:12]:<12}{ref} {entry.entry_hash.hex()[:12]}")


@ledger.command("prune")
@db_option
@click.option("--upto", type=click.IntRange(min=1), default=None,
              help="Last sequence number to delete (default: all that the central chain has "
              "proved).")
@click.option("--keep", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Keep at least this many of the newest proved entries on the terminal.")
@pass_ctx
def ledger_prune(ctx: Context, db: Path | None, upto: int | None, keep: int) -> None:
    """Delete entries the central chain has proved to hold, to free the terminal's disk.

    Only entries up to the last sync's proved checkpoint can go; the deletion is recorded
    with that checkpoint and the chain's anchor, so `ledger verify` goes on from there.
    """
    from offline_ledger import Ledger

    config = ctx.home.config()
    key = ctx.home.terminal_key(config)
    with Ledger(_ledger_path(ctx, db), key=key) as led:
        synced = led.synced_upto()
        limit = synced - keep
        target = limit if upto is None else min(upto, limit)
        if target < led.first_seq():
            click.echo(f"nothing to prune: {synced} entries proved synced, keeping the newest "
                       f"{keep}, first kept entry is {led.first_seq()}")
            return
        removed = led.prune(target, led.sync_checkpoint())
        click.echo(f"pruned {removed} entries up to seq {target}; {led.count()} kept")


# -- simulate and bench --------------------------------------------------------------------


@cli.command()
@click.option("--role", type=click.Choice(["validator", "till"]), default="validator",
              show_default=True)
@click.option("--taps", type=click.IntRange(min=1), default=1000, show_default=True,
              help="How many presentations to drive through the terminal.")
@db_option
@click.option("--trace", is_flag=True,
              help="Print one JSON line per approval, flushed only once it is durable.")
@click.option("--first-card", type=click.IntRange(min=0), default=0,
              help="Number of the first card of the virtual pool.")
@pass_ctx
def simulate(ctx: Context, role: str, taps: int, db: Path | None, trace: bool,
             first_card: int) -> None:
    """Drive N presentations through the real core and ledger; print figures as JSON.

    Keys are made in the home folder on first use. The terminal-wide exposure limit is
    lifted, as for a long run with no sync.
    """
    from terminal import simulate as sim
    from terminal.core import Decision
    from terminal.home import open_terminal

    config = sim.simulation_config(ctx.home.config(), role)
    terminal = open_terminal(ctx.home, config, ledger_path=db, create_keys=True)
    if terminal.fault is not None:
        raise terminal.fault

    def emit(decision: Decision) -> None:
        if decision.approved and decision.entry is not None:
            sys.stdout.write(json.dumps({"seq": decision.entry.seq,
                                         "entry_hash": decision.entry.entry_hash.hex(),
                                         "amount": decision.amount}) + "\n")
            sys.stdout.flush()

    try:
        figures = sim.run(terminal, taps, first_card=first_card,
                          on_decision=emit if trace else None)
    finally:
        if terminal.ledger is not None:
            terminal.ledger.close()
    click.echo(json.dumps(figures.as_dict(terminal)))


def _progress(msg: str) -> None:
    click.echo(msg, err=True)


def _emit(result: dict[str, Any]) -> None:
    click.echo(json.dumps(result, indent=2, ensure_ascii=False))


@cli.group(invoke_without_command=True)
@click.option("--taps", type=click.IntRange(min=100), default=5000, show_default=True,
              help="Taps measured at each ledger size.")
@click.option("--sizes", default="1000,1000000", show_default=True,
              help="Ledger sizes (entries) to measure at, comma-separated.")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder on the disk to measure (default: a temporary folder).")
@click.pass_context
def bench(ctx: click.Context, taps: int, sizes: str, folder: Path | None) -> None:
    """Benchmarks, printed as JSON. Alone: the validator's tap-to-decision.

    Measures taps through the real core, signing and durable commits at each ledger size,
    against the disk's own write+fsync rate, plus a wallet-QR payment at the till. The
    subcommands measure the readers, the central service, the screens and incentives.
    """
    if ctx.invoked_subcommand is not None:
        return
    from terminal import bench as bench_mod
    from terminal.qr.bench import bench_wallet

    try:
        size_list = [int(s.replace("_", "")) for s in sizes.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(f"expected numbers separated by commas, got {sizes!r}",
                                 param_hint="--sizes") from None
    result = bench_mod.run(sizes=size_list, taps=taps, folder=folder, progress=_progress)
    _progress(f"{min(taps, 2000):,} wallet-QR payments at the till")
    result["wallet_qr"] = bench_wallet(min(taps, 2000), folder=folder)
    _emit(result)


@bench.command("readers")
def bench_readers_cmd() -> None:
    """APDU round trip and full EMV read through pcscd + vpcd; QR decode per 640x480 frame.

    Needs pcscd and vsmartcard-vpcd installed (make installs them); starts pcscd when none
    runs.
    """
    from terminal.bench_readers import bench_readers

    _emit(bench_readers(progress=_progress))


@bench.command("ui")
@click.option("--frames", type=click.IntRange(min=60), default=600, show_default=True,
              help="Frames measured for each role.")
def bench_ui_cmd(frames: int) -> None:
    """Frame time at 800x480 with the sync client in the background; process RSS."""
    from kiosk_ui.bench import bench_ui

    _emit(bench_ui(frames))


@bench.command("incentives")
@click.option("--events", type=click.IntRange(min=1000), default=1_500_000, show_default=True,
              help="Taps and purchases in the simulated day (Goyang: about 1.5 million).")
@click.option("--db", "store_url", default=None,
              help="Central store URL, e.g. postgresql://... (default: SQLite in a temporary "
              "folder).")
@click.option("--follow", type=click.Choice(["backlog", "batch"]), default="backlog",
              show_default=True,
              help="Credit the day's log in chunks, or after every hourly batch.")
@click.option("--chunk", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Log entries credited per transaction.")
def bench_incentives_cmd(events: int, store_url: str | None, follow: str,
                         chunk: int) -> None:
    """Credit computation for a city's day of taps and purchases, synced hourly."""
    from sync.server.bench_incentives import bench_incentives

    _emit(bench_incentives(events=events, store_url=store_url, follow=follow, chunk=chunk))


@bench.command("central")
@click.option("--stores", default="sqlite,postgresql", show_default=True,
              help="Stores to measure, comma-separated.")
@click.option("--backlog", type=click.IntRange(min=1000), default=100_000, show_default=True,
              help="One terminal's backlog, in entries.")
@click.option("--terminals", type=click.IntRange(min=1), default=200, show_default=True,
              help="Terminals syncing at once.")
@click.option("--per-terminal", type=click.IntRange(min=1), default=500, show_default=True,
              help="Entries each of those terminals sends.")
@click.option("--verify", type=click.Choice(["every", "anchor"]), default="every",
              show_default=True, help="Check every entry's signature, or each batch's last "
              "(the hash chain covers the rest).")
def bench_central_cmd(stores: str, backlog: int, terminals: int, per_terminal: int,
                      verify: str) -> None:
    """Entries/s verified, ingested and proven; one backlog and many terminals over loopback.

    Runs from a source checkout (it uses the test suite's throwaway PostgreSQL cluster).
    """
    root = Path(__file__).resolve().parent.parent
    if not (root / "tools" / "bench_central.py").exists():
        raise click.ClickException("bench central runs from a source checkout of localpay "
                                   "(tools/ and tests/ are not installed)")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from tools.bench_central import run_central_bench

    _emit(run_central_bench(stores=tuple(s for s in stores.split(",") if s), backlog=backlog,
                            terminals=terminals, per_terminal=per_terminal, verify=verify,
                            progress=_progress))


#: Modules that add commands: each defines ``COMMANDS``, a list of click commands or groups.
_EXTENSIONS: tuple[str, ...] = (
    "terminal.cli_provision",
    "terminal.cli_qr",
    "terminal.cli_readers",
    "terminal.cli_sync",
    "terminal.cli_incentives",
    "terminal.cli_ui",
)


def _register_extensions() -> None:
    import importlib

    for name in _EXTENSIONS:
        for command in importlib.import_module(name).COMMANDS:
            cli.add_command(command)


_register_extensions()


def main() -> None:
    cli(prog_name="localpay")


if __name__ == "__main__":  # pragma: no cover
    main()
