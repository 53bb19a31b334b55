"""``localpay central mpm ...``: online payment of the till's QR code by the citizen's app
(:mod:`central.mpm_payments`), as the platform's operator registers the apps.

Registered under ``localpay central`` by the central command group.
"""

from __future__ import annotations

from pathlib import Path

import click

from localpay.cli.accounts import municipality_scope
from localpay.cli.central import open_central, service_options

_municipality = municipality_scope("The municipality whose tills the app pays.")


@click.group("mpm")
def mpm() -> None:
    """Online QR payments: the citizen's app pays a till's code through POST
    /v1/mpm-payments."""


@mpm.command("partner-add")
@service_options
@_municipality
@click.argument("name")
def partner_add(db: str | None, data: Path | None, municipality: str, name: str) -> None:
    """Register app partner NAME of the municipality and print its key, once (only its
    SHA-256 is kept). An app key pays tills' codes and cannot top up; a top-up partner's
    key cannot pay."""
    from central.mpm_payments import add_app_partner

    service = open_central(db, data)
    try:
        key = add_app_partner(service.store, name, municipality=municipality)
    finally:
        service.store.close()
    click.echo(f"app partner {name} of municipality {municipality} added; its key, shown "
               "this once (Authorization: Bearer <key>):", err=True)
    click.echo(key)
