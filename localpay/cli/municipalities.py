"""``localpay central municipality ...``: the municipalities one central service holds.

Registered under ``localpay central`` by the central command group; every command takes
``--db`` / ``--data`` as the other central commands do.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from localpay.cli.central import open_central, service_options


@click.group("municipality")
def municipality() -> None:
    """The municipalities on this platform, each with its own currency, merchants, accounts
    and terminals (`default` is always there)."""


@municipality.command("add")
@service_options
@click.argument("municipality_id")
@click.option("--name", required=True, help="The municipality's name (Goyang).")
@click.option("--currency", required=True, help="Its currency's name (Goyang Pay).")
def add_cmd(db: str | None, data: Path | None, municipality_id: str, name: str,
            currency: str) -> None:
    """Register MUNICIPALITY_ID (lower-case letters, digits and '-')."""
    from central import municipalities

    store = open_central(db, data).store
    try:
        added = municipalities.add(store, municipality_id, name, currency)
    finally:
        store.close()
    click.echo(f"municipality {added.municipality_id} ({added.name}, {added.currency}) "
               "registered")


@municipality.command("list")
@service_options
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
def list_cmd(db: str | None, data: Path | None, as_json: bool) -> None:
    """Every registered municipality."""
    from central import municipalities

    store = open_central(db, data).store
    try:
        held = municipalities.all_of(store)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps([m.as_dict() for m in held]))
        return
    for m in held:
        click.echo(f"{m.municipality_id:<20} {m.name:<24} {m.currency}")


@municipality.command("show")
@service_options
@click.argument("municipality_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of lines.")
def show_cmd(db: str | None, data: Path | None, municipality_id: str, as_json: bool) -> None:
    """One municipality and how many terminals, merchants and accounts it holds."""
    from central import municipalities

    store = open_central(db, data).store
    try:
        m = municipalities.require(store, municipality_id)
        counts = municipalities.counts(store, municipality_id)
    finally:
        store.close()
    doc = {**m.as_dict(), **counts}
    if as_json:
        click.echo(json.dumps(doc))
        return
    click.echo(f"municipality {m.municipality_id}: {m.name}, currency {m.currency}")
    click.echo(", ".join(f"{n} {k}" for k, n in counts.items()))
