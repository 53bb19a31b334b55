"""``localpay ledger verify|show|prune``: look into a terminal's offline ledger."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from localpay.cli.common import Context, UserError, db_option, pass_ctx
from localpay.errors import LedgerCorruptError, LedgerError


@click.group()
def ledger() -> None:
    """Inspect and verify an offline ledger."""


def _ledger_path(ctx: Context, db: Path | None) -> Path:
    return db if db is not None else ctx.home.ledger_path


def _existing(ctx: Context, db: Path | None, *, verdict: bool = False) -> Path:
    """The ledger file to read; a missing one is a wrong path, not a broken ledger. For
    ``verify`` (``verdict``) it still fails the check: exit 1, as a broken one does."""
    path = _ledger_path(ctx, db)
    if not path.exists():
        where = "" if db is not None else f" (home folder {ctx.home.path})"
        message = f"no ledger at {path}: the file is missing{where}"
        raise click.ClickException(message) if verdict else UserError(message)
    return path


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
    path = _existing(ctx, db, verdict=True)
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

    with Ledger(_existing(ctx, db)) as led:
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
    config = ctx.home.config()
    path = _ledger_path(ctx, db)
    # deleting entries is writing: refused while the terminal (or another prune) runs
    hold = ctx.home.own(path, "localpay ledger prune")
    try:
        key = ctx.home.terminal_key(config)
    except BaseException:
        hold.release()
        raise
    # no terminal id: a --db ledger of another terminal may be pruned with its own key
    with ctx.home.open_ledger(key, "", ledger_path=path, hold=hold) as led:
        synced = led.synced_upto()
        limit = synced - keep
        target = limit if upto is None else min(upto, limit)
        if target < led.first_seq():
            click.echo(f"nothing to prune: {synced} entries proved synced, keeping the newest "
                       f"{keep}, first kept entry is {led.first_seq()}")
            return
        removed = led.prune(target, led.sync_checkpoint())
        click.echo(f"pruned {removed} entries up to seq {target}; {led.count()} kept")



COMMANDS = [ledger]
