"""``localpay central topup ...``: buying local currency at a discount, as the city's staff
and its partners' operator do it.

Registered under ``localpay central`` by the central command group; every command takes
``--db`` / ``--data`` as the other central commands do, and ``--municipality`` (default
``default``; refused unless registered): a partner belongs to one municipality, and staff
sell and fund in one.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from localpay.cli.accounts import municipality_scope
from localpay.cli.central import open_central, service_options

if TYPE_CHECKING:
    from central.store import Store

_municipality = municipality_scope("The municipality whose currency this is.")


def add_partner_key(db: str | None, data: Path | None, what: str, name: str,
                    municipality: str, add: Callable[..., str]) -> None:
    """Register ``what`` (a partner, an app partner) NAME through ``add(store, name,
    municipality=...)`` and print its key, once (on stdout; what it is on stderr)."""
    service = open_central(db, data)
    try:
        key = add(service.store, name, municipality=municipality)
    finally:
        service.store.close()
    click.echo(f"{what} {name} of municipality {municipality} added; its key, shown this "
               "once (Authorization: Bearer <key>):", err=True)
    click.echo(key)


def disable_partner_key(db: str | None, data: Path | None, what: str, name: str,
                        disable: Callable[[Store], object]) -> None:
    """Disable ``what`` NAME through ``disable(store)``, which answers False when it was
    disabled already (said so) and anything else when it disabled it now."""
    service = open_central(db, data)
    try:
        changed = disable(service.store)
    finally:
        service.store.close()
    click.echo(f"{what} {name} was disabled already" if changed is False
               else f"{what} {name} disabled")


def _default_ref(kind: str) -> str:
    # unique enough for one operator's hand; a repeat of a command is made with --ref
    return f"{kind}-{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(4)}"


@click.group("topup")
def topup() -> None:
    """Local currency bought at a discount: the citizen pays the price, the programme's
    subsidy pays the discount, the cash pocket receives the face value."""


@topup.group("partner")
def partner() -> None:
    """Partners that sell top-ups through POST /v1/topups (the issuing bank, the app)."""


@partner.command("add")
@service_options
@_municipality
@click.argument("name")
def partner_add(db: str | None, data: Path | None, municipality: str, name: str) -> None:
    """Register partner NAME of the municipality and print its key, once: the service keeps
    only its SHA-256. Its top-ups credit that municipality's accounts only; NAME is one
    partner on the whole platform."""
    from central.topups import add_partner

    add_partner_key(db, data, "partner", name, municipality, add_partner)


@partner.command("disable")
@service_options
@_municipality
@click.argument("name")
def partner_disable(db: str | None, data: Path | None, municipality: str, name: str) -> None:
    """Refuse partner NAME's key from now on (a leaked key); its top-ups stay."""
    from central.topups import disable_partner

    disable_partner_key(db, data, "partner", name,
                        lambda store: disable_partner(store, name, municipality=municipality))


@topup.command("fund")
@service_options
@_municipality
@click.option("--programme", required=True, help="The programme whose discounts it pays.")
@click.option("--amount", type=click.IntRange(min=1), required=True, help="Won.")
@click.option("--ref", default=None, help="The payment's reference: the same one again "
              "moves nothing (default: a new one, printed).")
def fund(db: str | None, data: Path | None, municipality: str, programme: str, amount: int,
         ref: str | None) -> None:
    """The city pays AMOUNT won into the programme's subsidy for top-up discounts, in the
    municipality's books."""
    from central.topups import fund_subsidy

    ref = ref or _default_ref("fund")
    service = open_central(db, data)
    try:
        held = fund_subsidy(service.store, programme, amount, ref, municipality=municipality)
    finally:
        service.store.close()
    click.echo(f"funded programme {programme} (ref {ref}); its subsidy holds {held:,} won")


@topup.command("run")
@service_options
@_municipality
@click.argument("account_or_card")
@click.option("--face", type=click.IntRange(min=1), required=True,
              help="Face value in won: what the cash pocket receives.")
@click.option("--terms", "terms_file", required=True,
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="TOML file with a [topup] table, and [topup.<municipality>] tables for "
              "municipalities with terms of their own (the one `central serve --topup-terms` "
              "takes).")
@click.option("--paid", type=click.IntRange(min=1), default=None,
              help="What the citizen paid; refused unless it is the price.")
@click.option("--ref", default=None, help="The sale's reference: the same one again answers "
              "the first sale and moves nothing (default: a new one, printed).")
def run(db: str | None, data: Path | None, municipality: str, account_or_card: str, face: int,
        terms_file: Path, paid: int | None, ref: str | None) -> None:
    """Sell FACE won to ACCOUNT_OR_CARD (an account id, or a linked card token or wallet,
    of the municipality) at the counter, as partner `staff`, at the municipality's terms;
    prints the price, the discount and the new cash balance."""
    from central.topups import load_terms
    from central.topups import topup as sell

    terms = load_terms(terms_file).of(municipality)
    ref = ref or _default_ref("counter")
    service = open_central(db, data)
    try:
        done = sell(service.store, terms, account_or_card, face, ref, paid=paid,
                    municipality=municipality)
    finally:
        service.store.close()
    again = " (already done: nothing moved now)" if done.replayed else ""
    click.echo(f"top-up {ref} of account {done.account}{again}")
    click.echo(f"  face value    {done.face:>14,} won")
    click.echo(f"  price         {done.price:>14,} won")
    click.echo(f"  discount      {done.discount:>14,} won ({terms.programme})")
    click.echo(f"  cash balance  {done.cash_balance:>14,} won")
