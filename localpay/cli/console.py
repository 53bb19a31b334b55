"""``localpay central operator add|list|disable`` (the console's operator accounts) and
``localpay central audit-log`` (what was changed through the console, by whom).

Registered under ``localpay central`` by the central command group; both take ``--db`` /
``--data`` as the other central commands do and refuse a store ``central init`` did not make.
A password is never an argument (a command line is visible to every user of the machine):
it is asked for twice at a prompt, or read from ``--password-file`` (``-``: standard input).
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import sys
import time
from pathlib import Path

import click

from localpay.cli.central import municipality_flag, open_central, service_options
from localpay.cli.common import UserError


def _when(ms: int | None) -> str:
    if not ms:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ms / 1000))


def _who() -> str:
    """Who ran an operator command, for the audit log: the machine's user."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # a user id with no name (a container)
        return "cli"


def _password(path: str | None) -> str:
    if path is None:
        return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))
    if path == "-":
        text = sys.stdin.readline()
    else:
        try:
            text = Path(path).read_text(encoding="utf-8").splitlines()[0]
        except (OSError, UnicodeDecodeError, IndexError) as err:
            raise UserError(f"--password-file {path}: cannot read a first line ({err})"
                            ) from err
    return text.rstrip("\r\n")


@click.group("operator")
def operator() -> None:
    """The operator's console's accounts: roles viewer < callcentre < operator < admin."""


@operator.command("add")
@service_options
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(["viewer", "callcentre", "operator",
                                                          "admin"]),
              help="What the operator may do (each role also does what those before it do).")
@click.option("--password-file", "password_file", default=None, metavar="FILE",
              help="Read the password from the first line of FILE (-: standard input) "
                   "instead of asking twice.")
@municipality_flag
def add(db: str | None, data: Path | None, name: str, role: str, password_file: str | None,
        municipality: str) -> None:
    """Create operator NAME with a role, acting in one municipality.

    NAME is 2 to 40 of a-z, 0-9, dot, underscore and hyphen; the password (12 to 256
    characters) is stored only as its Argon2id hash."""
    from central.console.operators import ConsoleError, add_operator
    from localpay.errors import ConfigError

    password = _password(password_file)
    service = open_central(db, data)
    try:
        op = add_operator(service.store, name, role, password, municipality=municipality,
                          by=_who())
    except (ConsoleError, ConfigError) as err:
        raise UserError(str(err)) from err
    finally:
        service.store.close()
    click.echo(f"operator {op.name} added: role {op.role}, municipality {op.municipality}")


@operator.command("list")
@service_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_cmd(db: str | None, data: Path | None, as_json: bool) -> None:
    """Every operator: name, role, municipality, when added, and whether disabled."""
    from central.console.operators import operators

    service = open_central(db, data)
    try:
        rows = operators(service.store)
    finally:
        service.store.close()
    if as_json:
        for op in rows:
            click.echo(json.dumps(op.as_dict(), ensure_ascii=False))
        return
    click.echo(f"{len(rows)} operator(s)")
    for op in rows:
        state = f"DISABLED {_when(op.disabled_ms)}" if op.disabled_ms else "active"
        click.echo(f"  {op.name:<20} {op.role:<10} {op.municipality:<12} added "
                   f"{_when(op.created_ms)}  {state}")


@operator.command("disable")
@service_options
@click.argument("name")
@click.option("--reason", default="", help="Why (kept in the audit log).")
def disable(db: str | None, data: Path | None, name: str, reason: str) -> None:
    """Disable operator NAME: its sessions end now and it can log in no more (its past
    changes stay in the audit log under its name)."""
    from central.console.operators import ConsoleError, disable_operator

    service = open_central(db, data)
    try:
        disable_operator(service.store, name, by=_who(), reason=reason)
    except ConsoleError as err:
        raise UserError(str(err)) from err
    finally:
        service.store.close()
    click.echo(f"operator {name} disabled")


def _since_ms(text: str | None) -> int:
    if not text:
        return 0
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"--since {text!r}: a date or time written YYYY-MM-DD[THH:MM[:SS]] "
                        "(UTC unless it names its offset)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


@click.command("audit-log")
@service_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--since", default=None, metavar="WHEN",
              help="Only changes at or after WHEN (YYYY-MM-DD or an ISO time; UTC).")
@click.option("--operator", "who", default=None, metavar="NAME", help="Only this operator's.")
@click.option("--municipality", default=None, metavar="ID",
              help="Only this municipality's (default: every one).")
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True,
              help="At most this many (the newest).")
def audit_log(db: str | None, data: Path | None, as_json: bool, since: str | None,
              who: str | None, municipality: str | None, limit: int) -> None:
    """What was changed through the console and the operator commands, oldest first: when,
    who, the action, its object, the state before and after, and the reason given."""
    from central.console.operators import audit_rows

    since_ms = _since_ms(since)
    service = open_central(db, data)
    try:
        rows = audit_rows(service.store, municipality=municipality, since_ms=since_ms,
                          operator=who, limit=limit)
    finally:
        service.store.close()
    rows.reverse()
    if as_json:
        for r in rows:
            click.echo(json.dumps(r.as_dict(), ensure_ascii=False, sort_keys=True))
        return
    for r in rows:
        change = ""
        if r.before is not None or r.after is not None:
            change = (f"  {json.dumps(r.before, ensure_ascii=False, sort_keys=True)} -> "
                      f"{json.dumps(r.after, ensure_ascii=False, sort_keys=True)}")
        click.echo(f"{_when(r.at_ms)}  {r.operator}  {r.action}  {r.object}{change}"
                   + (f"  reason: {r.reason}" if r.reason else ""))
