"""``localpay central books ...``: the operator's view of the central double-entry books."""

from __future__ import annotations

import json
from pathlib import Path

import click

from localpay.cli.central import service_options
from localpay.errors import LocalpayError


@click.group()
def books() -> None:
    """The central books: every movement of money as a balanced transfer between accounts."""


@books.command("check")
@service_options
@click.option("--municipality", default=None, metavar="ID",
              help="Check one municipality's books (default: each of them).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a summary.")
def check_books(db: str | None, data: Path | None, municipality: str | None,
                as_json: bool) -> None:
    """Prove the books balance: all debits equal all credits, and every account's posted
    totals equal the sums of its transfers.

    Exit 1 when they do not, listing every account that disagrees.
    """
    from central import default_data_dir
    from central.books import check, ensure_schema
    from central.store import open_store

    try:
        store = open_store(db or f"sqlite:///{(data or default_data_dir()) / 'central.sqlite'}")
        try:
            ensure_schema(store)
            result = check(store, municipality)
        finally:
            store.close()
    except LocalpayError as err:
        raise click.ClickException(str(err)) from err
    if as_json:
        click.echo(json.dumps(result.as_json()))
    else:
        scope = f"municipality {municipality}" if municipality else "all municipalities"
        click.echo(f"books of {scope}: {result.accounts:,} accounts, "
                   f"{result.transfers:,} transfers")
        click.echo(f"  debits posted   {result.debits_posted:>20,} won")
        click.echo(f"  credits posted  {result.credits_posted:>20,} won")
        click.echo(f"  transfers       {result.transfers_amount:>20,} won")
        for m in result.unbalanced:
            click.echo(f"UNBALANCED municipality {m}: its debits and credits differ")
        for d in result.disagreements:
            if d.debits_posted is None:
                click.echo(f"DISAGREES {d.municipality} {d.account_id}: not an open account, "
                           f"yet transfers debit it {d.debits_of_transfers:,} and credit it "
                           f"{d.credits_of_transfers:,} won")
            else:
                click.echo(f"DISAGREES {d.municipality} {d.account_id}: posted debits "
                           f"{d.debits_posted:,} / credits {d.credits_posted:,} won, its "
                           f"transfers {d.debits_of_transfers:,} / "
                           f"{d.credits_of_transfers:,} won")
        click.echo("the books balance" if result.balanced else
                   f"the books do NOT balance: {len(result.disagreements):,} accounts disagree")
    if not result.balanced:
        raise click.exceptions.Exit(1)
