"""``localpay central merchant ...``: the merchant registry, as its operator keeps it.

Registered under ``localpay central`` by the central command group; every command takes
``--db`` / ``--data`` as the other central commands do.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from localpay.cli.accounts import municipality_scope
from localpay.cli.central import open_central, service_options
from localpay.errors import ConfigError

_municipality = municipality_scope("The municipality whose registry this is.")


@contextmanager
def _registry(db: str | None, data: Path | None, municipality: str
              ) -> Iterator[tuple[Any, Any]]:
    """The registry over the service's store, and the service; a refusal becomes a one-line
    error."""
    from central.merchants import Registry, ensure_schema

    service = open_central(db, data)
    try:
        ensure_schema(service.store)
        yield Registry(service.store, municipality), service
    except ConfigError as err:
        raise click.ClickException(str(err)) from err
    finally:
        service.store.close()


def _publish(registry: Any, service: Any, terminal_ids: Sequence[str]) -> list[str]:
    """Sign and publish the next config version of each terminal that has one, carrying its
    merchant's facts now; the terminals fetch it on their next sync. Terminals not enrolled
    yet get the facts in their first bundle instead."""
    from central.enroll import load_operator_key
    from firmware_cfg import bundle as bundles
    from firmware_cfg.config import loads

    said: list[str] = []
    for terminal_id in terminal_ids:
        latest = service.latest_config(terminal_id)
        if not latest["body"]:
            said.append(f"{terminal_id}: no config published yet; nothing to update")
            continue
        text = bundles.peek_config(latest["body"].encode("utf-8"))
        new = registry.config_for(terminal_id, text)
        if loads(new) == loads(text):
            said.append(f"{terminal_id}: config version {latest['version']} is up to date")
            continue
        if service.data_dir is None:
            raise ConfigError("this service has no data folder holding an operator key")
        body = bundles.make(load_operator_key(service.data_dir), terminal_id,
                            int(latest["version"]) + 1, new).decode("utf-8")
        said.append(f"{terminal_id}: config version {service.publish_config(body)} published")
    return said


def _table(merchants: Sequence[Any]) -> list[str]:
    head = (f"{'id':<14} {'name':<24} {'brn':<12} {'category':<11} {'region':<14} "
            f"{'memberships':<20} {'active':<6} {'v':>3}")
    lines = [head, "-" * len(head)]
    for m in merchants:
        lines.append(f"{m.merchant_id:<14} {m.name:<24} {m.brn_display:<12} {m.category:<11} "
                     f"{m.region or '-':<14} {','.join(m.memberships) or '-':<20} "
                     f"{'yes' if m.active else 'no':<6} {m.version:>3}")
    return lines


@click.group("merchant")
def merchant() -> None:
    """The merchant registry: ids, names, business registration numbers, categories,
    regions, memberships, settlement accounts, and which terminals belong to whom."""


_FIELD_OPTIONS = [
    click.option("--name", default=None, help="The name a till shows."),
    click.option("--brn", default=None, help="Business registration number, 123-45-67890."),
    click.option("--category", default=None,
                 help="ksic:NNNNN (KSIC subclass) or mcc:NNNN (card MCC)."),
    click.option("--region", default=None, help="Region (district or dong)."),
    click.option("--membership", "memberships", multiple=True,
                 help="A programme membership such as large-mart (repeat for more; on update "
                 "the set replaces the old one)."),
    click.option("--bank-code", default=None, help="The settlement bank's 3-digit code."),
    click.option("--account-no", default=None, help="Settlement account number."),
    click.option("--account-holder", default=None, help="Settlement account holder."),
]


def _field_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_FIELD_OPTIONS):
        func = option(func)
    return func


def _given(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


@merchant.command("add")
@service_options
@_municipality
@click.argument("merchant_id")
@_field_options
@click.option("--inactive", is_flag=True, help="Register it as not active.")
def add_cmd(db: str | None, data: Path | None, municipality: str, merchant_id: str,
            name: str | None, brn: str | None, category: str | None, region: str | None,
            memberships: tuple[str, ...], bank_code: str | None, account_no: str | None,
            account_holder: str | None, inactive: bool) -> None:
    """Register MERCHANT_ID (--name, --brn and --category are required)."""
    from central.merchants import Merchant

    missing = [f"--{n}" for n, v in (("name", name), ("brn", brn), ("category", category))
               if v is None]
    if missing:
        raise click.UsageError(f"add needs {', '.join(missing)}")
    with _registry(db, data, municipality) as (registry, _service):
        m = registry.add(Merchant(merchant_id, name or "", brn or "", category or "",
                                  memberships=memberships, active=not inactive,
                                  **_given(region=region, bank_code=bank_code,
                                           account_no=account_no,
                                           account_holder=account_holder)))
    click.echo(f"merchant {m.merchant_id} registered (version {m.version})")


@merchant.command("update")
@service_options
@_municipality
@click.argument("merchant_id")
@_field_options
@click.option("--active/--inactive", default=None, help="Whether it takes payments.")
@click.option("--no-memberships", is_flag=True, help="Clear its memberships.")
@click.option("--publish", is_flag=True, help="Sign and publish a new config version for "
              "each of its terminals, carrying the changed facts.")
def update_cmd(db: str | None, data: Path | None, municipality: str, merchant_id: str,
               name: str | None, brn: str | None, category: str | None, region: str | None,
               memberships: tuple[str, ...], bank_code: str | None, account_no: str | None,
               account_holder: str | None, active: bool | None, no_memberships: bool,
               publish: bool) -> None:
    """Change only the fields given of MERCHANT_ID."""
    changes = _given(name=name, brn=brn, category=category, region=region,
                     bank_code=bank_code, account_no=account_no,
                     account_holder=account_holder, active=active)
    if memberships or no_memberships:
        changes["memberships"] = memberships
    if not changes:
        raise click.UsageError("nothing to change: give the fields to update")
    with _registry(db, data, municipality) as (registry, service):
        before = registry.get(merchant_id)
        m = registry.update(merchant_id, **changes)
        said = (_publish(registry, service, registry.terminals_of(merchant_id)) if publish else [])
    click.echo(f"merchant {m.merchant_id} " + (
        "unchanged" if before is not None and before.version == m.version
        else f"updated (version {m.version})"))
    for line in said:
        click.echo(line)


@merchant.command("list")
@service_options
@_municipality
@click.option("--category", default=None,
              help="mcc:NNNN, or ksic: with 2 to 5 digits (ksic:47 is all retail).")
@click.option("--region", default=None)
@click.option("--membership", default=None)
@click.option("--active/--inactive", default=None, help="Only active (or inactive) ones.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
def list_cmd(db: str | None, data: Path | None, municipality: str, category: str | None,
             region: str | None, membership: str | None, active: bool | None,
             as_json: bool) -> None:
    """The merchants, by id."""
    with _registry(db, data, municipality) as (registry, _service):
        found = registry.list(category=category, region=region, membership=membership,
                              active=active)
    if as_json:
        click.echo(json.dumps([m.as_dict() for m in found], ensure_ascii=False))
        return
    for line in _table(found):
        click.echo(line)
    click.echo(f"{len(found)} merchant(s)")


@merchant.command("show")
@service_options
@_municipality
@click.argument("merchant_id")
@click.option("--json", "as_json", is_flag=True)
def show_cmd(db: str | None, data: Path | None, municipality: str, merchant_id: str,
             as_json: bool) -> None:
    """One merchant in full, with its terminals."""
    with _registry(db, data, municipality) as (registry, _service):
        m = registry.get(merchant_id)
        if m is None:
            raise ConfigError(f"no merchant {merchant_id!r}")
        terminals = registry.terminals_of(merchant_id)
    if as_json:
        click.echo(json.dumps({**m.as_dict(), "terminals": list(terminals)},
                              ensure_ascii=False))
        return
    account = (f"{m.bank_code} {m.account_no} ({m.account_holder or 'holder not given'})"
               if m.bank_code else "-")
    for label, value in (("id", m.merchant_id), ("name", m.name), ("brn", m.brn_display),
                         ("category", m.category), ("region", m.region or "-"),
                         ("memberships", ", ".join(m.memberships) or "-"),
                         ("account", account), ("active", "yes" if m.active else "no"),
                         ("version", str(m.version)),
                         ("terminals", ", ".join(terminals) or "-")):
        click.echo(f"{label:<12} {value}")


@merchant.command("load")
@service_options
@_municipality
@click.argument("csv_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def load_cmd(db: str | None, data: Path | None, municipality: str, csv_file: Path,
             as_json: bool) -> None:
    """Add and update merchants from a CSV file, all or nothing.

    The header line names the columns: merchant_id, name, brn and category, and any of
    region, memberships (separated by ; or ,), bank_code, account_no, account_holder,
    active (1/0, yes/no). A column left out keeps its value in merchants already known.
    Every bad line is printed as FILE:LINE: reason; then nothing is applied (exit 1).
    """
    from central.merchants import MerchantFileError

    try:
        with _registry(db, data, municipality) as (registry, _service):
            result = registry.load_csv(csv_file)
    except click.ClickException as err:
        cause = err.__cause__
        if not isinstance(cause, MerchantFileError):
            raise
        for n, why in cause.problems:
            click.echo(f"{csv_file}:{n}: {why}", err=True)
        click.echo(f"{len(cause.problems)} bad line(s); nothing applied", err=True)
        raise SystemExit(1) from None
    if as_json:
        click.echo(json.dumps(result.as_dict()))
        return
    click.echo(f"{result.added} added, {result.updated} updated, {result.unchanged} "
               "unchanged")


@merchant.command("assign")
@service_options
@_municipality
@click.argument("terminal_id")
@click.argument("merchant_id")
@click.option("--publish", is_flag=True, help="Sign and publish the terminal's next config "
              "version carrying the merchant's facts.")
def assign_cmd(db: str | None, data: Path | None, municipality: str, terminal_id: str,
               merchant_id: str, publish: bool) -> None:
    """Make TERMINAL_ID a terminal of MERCHANT_ID (it leaves any merchant it had)."""
    with _registry(db, data, municipality) as (registry, service):
        before = registry.assign_terminal(terminal_id, merchant_id)
        said = _publish(registry, service, [terminal_id]) if publish else []
    click.echo(f"terminal {terminal_id} belongs to merchant {merchant_id}"
               + (f" (was {before})" if before else ""))
    for line in said:
        click.echo(line)

