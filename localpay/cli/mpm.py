"""``localpay central mpm ...``: online payment of the till's QR code by the citizen's app
(:mod:`central.mpm_payments`), as the platform's operator registers the apps.

Registered under ``localpay central`` by the central command group.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from localpay.cli.accounts import municipality_scope
from localpay.cli.central import open_central, service_options
from localpay.cli.topups import add_partner_key, disable_partner_key

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

    add_partner_key(db, data, "app partner", name, municipality, add_app_partner)


@mpm.command("partner-disable")
@service_options
@_municipality
@click.option("--reason", default="operator", show_default=True,
              help="Why (a leaked key, an app withdrawn); recorded with the time.")
@click.argument("name")
def partner_disable(db: str | None, data: Path | None, municipality: str, reason: str,
                    name: str) -> None:
    """Refuse app partner NAME's key from now on (401 on POST /v1/mpm-payments); its
    payments stay. The disabling is recorded with its time and reason."""
    from central.mpm_payments import disable_app_partner

    disable_partner_key(db, data, "app partner", name, lambda store: disable_app_partner(
        store, name, reason=reason, municipality=municipality))


@mpm.command("partner-list")
@service_options
@_municipality
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
def partner_list(db: str | None, data: Path | None, municipality: str, as_json: bool) -> None:
    """The municipality's app partners: active or disabled (when, why). Keys are never
    shown: only their SHA-256 is kept."""
    from central.mpm_payments import app_partners

    service = open_central(db, data)
    try:
        rows = app_partners(service.store, municipality=municipality)
    finally:
        service.store.close()
    if as_json:
        click.echo(json.dumps({"municipality": municipality, "partners": rows},
                              sort_keys=True))
        return
    for row in rows:
        state = "active" if row["active"] else f"disabled at {row['disabled_ms']} " \
            f"({row['reason']})"
        click.echo(f"{row['partner']}\t{state}")
