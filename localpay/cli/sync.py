"""``localpay sync``: send the ledger's unsynced entries to the central chain, by hand.

It runs beside the terminal that owns the ledger (``localpay run`` holds ``ledger.lock``,
:mod:`terminal.owner`) and takes no lock itself: it never appends an entry, so it cannot
fork the chain the writer keeps in memory; what it writes (synced marks and counters, the
deny list, balances, points, riders, the clock anchor) are single short transactions that
SQLite's WAL and busy timeout queue behind the writer's commits, exactly as the sync thread
inside ``localpay run`` does. A config bundle it fetches waits in the home for the writer to
apply and record.
"""

from __future__ import annotations

from pathlib import Path

import click

from localpay.errors import ConfigError


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
    from terminal.clock import kernel_ntp_synchronised

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
                        interval_s=config.central.sync_interval_s, on_config=keep_config,
                        synchronised=kernel_ntp_synchronised)
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


COMMANDS = [sync_cmd]
