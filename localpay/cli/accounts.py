"""``localpay central account ...``: citizens' accounts, their cards and wallets, and their
pockets, as the operator keeps them.

Registered under ``localpay central`` by the central command group; every command takes
``--db`` / ``--data`` as the other central commands do.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from localpay.cli.central import service_options
from localpay.cli.common import UserError
from localpay.errors import LocalpayError


def municipality_scope(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--municipality ID`` (default ``default``) for a command that also takes
    ``--db``/``--data``: refused before the command runs unless ID is registered, in one
    line naming the registered ones. The one place the central commands check it (merchant,
    account, allowance, topup, settlement, pockets)."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def checked(*args: Any, **kwargs: Any) -> Any:
            _check_registered(kwargs.get("db"), kwargs.get("data"), kwargs["municipality"])
            return func(*args, **kwargs)

        return click.option("--municipality", default="default", show_default=True,
                            metavar="ID", help=help_text)(checked)

    return decorate


def _check_registered(db: str | None, data: Path | None, municipality: str) -> None:
    from central import municipalities

    if municipality == municipalities.DEFAULT:  # always registered: no store to open
        return
    with central_store(db, data) as store:
        try:
            municipalities.known(store, municipality)
            return
        except municipalities.UnknownMunicipalityError as err:
            refused = str(err)
    raise UserError(refused)  # exit 2, a usage error, as click's own


municipality_option = municipality_scope("The municipality whose accounts these are.")


@contextmanager
def central_store(db: str | None, data: Path | None) -> Iterator[Any]:
    """The service's store (schema made if missing); a refusal becomes a one-line error."""
    from central import default_data_dir
    from central.store import open_store

    try:
        store = open_store(db or f"sqlite:///{(data or default_data_dir()) / 'central.sqlite'}")
    except LocalpayError as err:
        raise click.ClickException(str(err)) from err
    try:
        yield store
    except LocalpayError as err:
        raise click.ClickException(str(err)) from err
    finally:
        store.close()


@click.group("account")
def account() -> None:
    """Citizens' accounts: which cards and app wallets pay from them, and their pockets
    (cash, points, one per allowance programme)."""


@account.command("link")
@service_options
@municipality_option
@click.argument("account_id", metavar="ACCOUNT")
@click.argument("holder", metavar="CARD_OR_WALLET")
def link_cmd(db: str | None, data: Path | None, municipality: str, account_id: str,
             holder: str) -> None:
    """Link a card token or app wallet (w:<id>) to ACCOUNT, opened if new. A card belongs
    to one account at a time: linked elsewhere, it moves (the old account keeps its money)."""
    from central import accounts

    with central_store(db, data) as store, store.tx() as tx:
        before = accounts.link(tx, account_id, holder, municipality=municipality)
    click.echo(f"{holder} linked to account {account_id}"
               + (f" (moved from account {before})" if before else ""))


@account.command("unlink")
@service_options
@municipality_option
@click.argument("holder", metavar="CARD_OR_WALLET")
def unlink_cmd(db: str | None, data: Path | None, municipality: str, holder: str) -> None:
    """Unlink a card or wallet (a lost card); its account keeps its money."""
    from central import accounts

    with central_store(db, data) as store, store.tx() as tx:
        was = accounts.unlink(tx, holder, municipality=municipality)
    click.echo(f"{holder} unlinked from account {was}")


@account.command("show")
@service_options
@municipality_option
@click.argument("who", metavar="ACCOUNT_OR_CARD")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
def show_cmd(db: str | None, data: Path | None, municipality: str, who: str,
             as_json: bool) -> None:
    """An account (named by its id, or by a card or wallet linked to it): its cards and
    wallets, every pocket with its balance, and its allowance grants with their expiry."""
    from central import accounts, allowances

    with central_store(db, data) as store, store.tx(write=False) as tx:
        account_id = accounts.resolve(tx, who, municipality=municipality)
        holders = accounts.holders(tx, account_id, municipality=municipality)
        pockets = accounts.pockets(tx, account_id, municipality=municipality)
        grants = allowances.grants_of(tx, account_id, municipality=municipality)
    if as_json:
        click.echo(json.dumps({
            "account": account_id, "municipality": municipality, "holders": holders,
            "pockets": {p.name: p.balance for p in pockets},
            "grants": [{k: v for k, v in g.as_dict().items() if k != "municipality"}
                       for g in grants]}, ensure_ascii=False))
        return
    click.echo(f"account  {account_id}")
    click.echo(f"linked   {', '.join(holders) or '-'}")
    click.echo("pockets")
    for p in pockets:
        click.echo(f"  {p.name:<24} {p.balance:>14,} won")
    if grants:
        click.echo("allowance grants")
        click.echo(f"  {'programme':<16} {'period':<8} {'amount':>12} {'expires':<10} "
                   f"{'expired':>12}")
        for g in grants:
            expired = "-" if g.expired_amount is None else f"{g.expired_amount:,}"
            click.echo(f"  {g.programme:<16} {g.period:<8} {g.amount:>12,} {g.expires:<10} "
                       f"{expired:>12}")
