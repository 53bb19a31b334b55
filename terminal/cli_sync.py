"""``localpay central ...`` (the reference central service) and ``localpay sync``."""

from __future__ import annotations

import csv
import json
import logging
import sys
import threading
from pathlib import Path
from typing import Any

import click

from localpay.errors import ConfigError

log = logging.getLogger(__name__)


def service_options(func: Any) -> Any:
    func = click.option("--db", default=None, metavar="URL",
                        help="sqlite:///PATH or postgresql://... (default: SQLite in --data)."
                        )(func)
    func = click.option("--data", "data", type=click.Path(file_okay=False, path_type=Path),
                        default=None, help="Folder of the log key and the default SQLite "
                        "store (default: ~/.local/share/localpay/central).")(func)
    return func


def open_central(db: str | None, data: Path | None, **kw: Any) -> Any:
    from sync.server import open_service

    return open_service(db, data, **kw)


@click.group()
def central() -> None:
    """The central service: receives batches, keeps the central chain, serves deny lists."""


@central.command()
@service_options
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8470, show_default=True)
@click.option("--origin", default=None, help="Log name in checkpoints (first start only).")
@click.option("--rules", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help="Fraud rules TOML ([travel], [round_burst], [below_limit]).")
@click.option("--verify", type=click.Choice(["every", "anchor"]), default="every",
              show_default=True, help="every: check each entry's signature; anchor: check "
              "each hash link and the signature of each batch's last entry.")
def serve(db: str | None, data: Path | None, host: str, port: int, origin: str | None,
          rules: Path | None, verify: str) -> None:
    """Run the HTTP JSON API (FastAPI on uvicorn) until interrupted."""
    from sync.server.app import serve as run

    service = open_central(db, data, origin=origin, rules=rules, policy=verify)
    click.echo(f"central log {service.origin} on http://{host}:{port} "
               f"({service.store.kind}); verifier key:\n{service.signer.verifier.text()}",
               err=True)
    # Entries committed just before a stop are credited by the next batch, or here at once.
    threading.Thread(target=service.run_followers, name="catch-up", daemon=True).start()
    run(service, host, port)


@central.command("key")
@service_options
def show_key(db: str | None, data: Path | None) -> None:
    """Print the log's verifier key, for the terminals' config (keys.central_public_key)."""
    from sync.server import default_data_dir
    from sync.server.app import load_signer

    click.echo(load_signer(data or default_data_dir()).verifier.text())


@central.group()
def terminal() -> None:
    """Register terminals."""


@terminal.command("add")
@service_options
@click.argument("terminal_id")
@click.argument("public_key")
@click.option("--lat", type=float, default=None, help="Where it stands (for the travel rule).")
@click.option("--lon", type=float, default=None)
def terminal_add(db: str | None, data: Path | None, terminal_id: str, public_key: str,
                 lat: float | None, lon: float | None) -> None:
    """Register TERMINAL_ID with its Ed25519 PUBLIC_KEY (64 hex digits)."""
    try:
        raw = bytes.fromhex(public_key)
    except ValueError:
        raise click.BadParameter("must be 64 hex digits", param_hint="PUBLIC_KEY") from None
    open_central(db, data).add_terminal(terminal_id, raw, lat=lat, lon=lon)
    click.echo(f"terminal {terminal_id} registered")


@central.command("deny")
@service_options
@click.argument("card_token")
@click.option("--reason", default="operator", show_default=True)
@click.option("--remove", is_flag=True, help="Take the card off the deny list.")
def deny(db: str | None, data: Path | None, card_token: str, reason: str, remove: bool) -> None:
    """Put a card token on the deny list (or take it off)."""
    version = open_central(db, data).deny(card_token, reason, remove=remove)
    click.echo(f"deny list version {version}")


@central.command("balances")
@service_options
@click.argument("csv_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
def balances(db: str | None, data: Path | None, csv_file: Path) -> None:
    """Load balance snapshots from a CSV of card_token,balance (integer won)."""
    rows: dict[str, int] = {}
    with open(csv_file, newline="", encoding="utf-8") as fh:
        for n, row in enumerate(csv.reader(fh), 1):
            if not row or row[0] == "card_token":
                continue
            try:
                rows[row[0]] = int(row[1])
            except (IndexError, ValueError):
                raise ConfigError(f"{csv_file}:{n}: expected card_token,balance") from None
    version = open_central(db, data).set_balances(rows)
    click.echo(f"{len(rows)} balances loaded (version {version})")


@central.command("config")
@service_options
@click.argument("source", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--sign-for", "terminal_id", default=None, metavar="TERMINAL_ID",
              help="SOURCE is a terminal.toml: sign it with the operator key as the next "
              "version for TERMINAL_ID, then publish it.")
def publish_config(db: str | None, data: Path | None, source: Path,
                   terminal_id: str | None) -> None:
    """Publish a signed config bundle for the terminal it names to fetch on its next sync.

    SOURCE is a bundle signed elsewhere, or with --sign-for a TOML file that the service
    signs with its operator key.
    """
    from firmware_cfg import bundle as bundles
    from sync.server.enroll import load_operator_key

    service = open_central(db, data)
    text = source.read_text(encoding="utf-8")
    if terminal_id is not None:
        if service.data_dir is None:
            raise ConfigError("this service has no data folder holding an operator key")
        current = int(service.latest_config(terminal_id)["version"])
        text = bundles.make(load_operator_key(service.data_dir), terminal_id, current + 1,
                            text).decode("utf-8")
    version = service.publish_config(text)
    click.echo(f"config version {version} published")


@central.command()
@service_options
@click.option("--date", "day", required=True, metavar="YYYY-MM-DD")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
def report(db: str | None, data: Path | None, day: str, as_json: bool) -> None:
    """Reconcile the central totals with each terminal's own totals for one day.

    Exit 1 when anything differs, or when there are overdrafts or fraud flags.
    """
    from sync.server.reconcile import report as make

    rep = make(open_central(db, data), day)
    if as_json:
        click.echo(json.dumps({
            "day": day, "clean": rep.clean, "overdrafts": rep.overdrafts, "flags": rep.flags,
            "lines": [dict(line.__dict__, matches=line.matches) for line in rep.lines]}))
        sys.exit(0 if rep.clean else 1)
    click.echo(f"Reconciliation for {day}")
    head = (f"{'terminal':<18} {'kind':<10} {'central n':>9} {'central won':>13} "
            f"{'terminal n':>10} {'terminal won':>13}  ")
    click.echo(head)
    click.echo("-" * len(head))
    for line in rep.lines:
        tn = "-" if line.terminal_count is None else f"{line.terminal_count}"
        ta = "-" if line.terminal_amount is None else f"{line.terminal_amount:,}"
        mark = "ok" if line.matches else "DIFFERS"
        click.echo(f"{line.terminal_id:<18} {line.kind:<10} {line.central_count:>9} "
                   f"{line.central_amount:>13,} {tn:>10} {ta:>13}  {mark}")
    for line in rep.differences:
        if line.terminal_count is None:
            click.echo(f"DIFFERENCE {line.terminal_id} {line.kind}: the terminal reported no "
                       f"totals; central holds {line.central_count} for {line.central_amount:,}")
        else:
            click.echo(
                f"DIFFERENCE {line.terminal_id} {line.kind}: central "
                f"{line.central_count} / {line.central_amount:,} won, terminal "
                f"{line.terminal_count} / {line.terminal_amount:,} won "
                f"(count {line.central_count - line.terminal_count:+}, amount "
                f"{line.central_amount - (line.terminal_amount or 0):+,})")
    for o in rep.overdrafts:
        click.echo(f"OVERDRAFT card {o['card_token'][:12]}… at {o['terminal_id']} entry "
                   f"{o['seq']}: {o['amount']:,} won left the balance at "
                   f"{o['balance_after']:,}")
    for f in rep.flags:
        click.echo(f"FLAG {f['rule']} card {f['card_token'][:12]}… at {f['terminal_id']} "
                   f"entry {f['seq']}: {f['detail']}")
    if rep.clean:
        click.echo("all terminals reconcile")
    sys.exit(0 if rep.clean else 1)


@click.command("sync")
@click.option("--once", is_flag=True, help="One round, then exit (default: keep syncing).")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Ledger file (default: ledger.sqlite in the home folder).")
@click.option("--url", default=None, help="Central service URL (default: central.url).")
@click.option("--central-key", default=None,
              help="Central verifier key (default: keys.central_public_key).")
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=None)
@click.pass_context
def sync_cmd(ctx: click.Context, once: bool, db: Path | None, url: str | None,
             central_key: str | None, batch_size: int | None) -> None:
    """Send the ledger's unsynced entries to the central chain; fetch deny list and balances.

    Every batch's checkpoint, inclusion proof and consistency are verified before entries are
    marked synced.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from sync.client import SyncClient

    home = ctx.obj.home
    config = home.config()
    url = url or config.central.url
    central_key = central_key or config.keys.central_public_key
    if not url or not central_key:
        raise ConfigError("no central service: set central.url and keys.central_public_key "
                          "in the config, or give --url and --central-key")
    from terminal.config_update import save_pending

    fetched: list[int] = []

    def keep_config(version: int, body: str) -> None:
        # Only the terminal's own process appends to the ledger: it applies the bundle.
        if save_pending(home, version, body):
            fetched.append(version)

    client = SyncClient(db or home.ledger_path, home.terminal_key(config), url, central_key,
                        batch_size=batch_size or config.central.batch_size,
                        interval_s=config.central.sync_interval_s, on_config=keep_config)
    try:
        if not once:
            client.interval_s = config.central.sync_interval_s
            click.echo(f"syncing with {url} every {client.interval_s:g} s; Ctrl-C to stop",
                       err=True)
            client.start()
            try:
                while not client.wait(3600):
                    pass
            except KeyboardInterrupt:
                return
        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), TimeRemainingColumn(),
                      transient=True) as bar:
            task = bar.add_task("syncing", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total or 1)

            summary = client.sync_once(progress)
    finally:
        client.close()
    click.echo(f"sent {summary.sent} entries in {summary.batches} batches; synced up to "
               f"{summary.synced_upto} of {summary.head}; central log size "
               f"{summary.tree_size}; deny list v{summary.deny_version}; "
               f"{summary.balances} balances; retries {summary.retries}")
    if fetched:
        click.echo(f"config version {fetched[-1]} fetched: the terminal applies it between "
                   f"transactions, or at its next start")


COMMANDS = [central, sync_cmd]
