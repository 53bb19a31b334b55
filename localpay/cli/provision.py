"""The field technician's commands: ``provision``, ``readers``, ``selftest``; and
``central enroll``, which issues the single-use codes ``provision`` needs.

No secret is ever printed or taken on the command line: the terminal key and the token key
go straight into their 0600 files. The enrolment code is a one-time credential, typed once:
read from standard input or a file, never from the command line (which ``ps`` shows to
every user of the machine while the command runs).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from localpay.cli.common import UserError
from localpay.errors import ConfigError
from terminal.home import Home

if TYPE_CHECKING:
    from localpay.cli.selftest import Check

log = logging.getLogger(__name__)


def _home(ctx: click.Context) -> Home:
    home = getattr(ctx.find_root().obj, "home", None)
    if home is None:  # pragma: no cover - the root group always sets it
        raise click.UsageError("no home folder")
    return home


def _print_rows(rows: Sequence[Check], as_json: bool) -> None:
    from localpay.cli import selftest

    if as_json:
        click.echo(json.dumps([{"check": r.check, "ok": r.ok, "detail": r.detail}
                               for r in rows], ensure_ascii=False))
        return
    for line in selftest.table(rows):
        click.echo(line)


# -- provision -----------------------------------------------------------------------------------


@click.command()
@click.option("--central", "central_url", required=True, metavar="URL",
              help="The central service, e.g. https://central.example.")
@click.option("--code-file", "code_file", type=click.Path(dir_okay=False, allow_dash=True,
                                                          path_type=Path),
              default=None, metavar="PATH", help="File holding the single-use code from "
              "`localpay central enroll` (XXXX-XXXX-XXXX-XXXX); - for standard input. "
              "Default: standard input when it is not a terminal, else asked for (hidden).")
@click.option("--enroll-code", default=None, hidden=True, metavar="CODE",
              help="Refused: a code on the command line is visible to every user (ps).")
@click.option("--role", type=click.Choice(["validator", "till"]), required=True)
@click.option("--route", default=None, help="Validator: the bus route, e.g. 85.")
@click.option("--merchant", default=None, help="Till: the merchant id, e.g. M0427.")
@click.option("--reader", default="", metavar="SPEC",
              help="Card reader for the config (default: the service's template), e.g. "
              "pcsc:ACR1252, nfc:usb:072f:2200, nfc:tty:AMA0:pn532.")
@click.option("--scanner", default="", metavar="SPEC",
              help="Code scanner for the config, e.g. serial:/dev/ttyACM0, camera:0.")
@click.option("--central-key", default=None, metavar="KEY",
              help="Pin the central log's verifier key (from `localpay central key`).")
@click.option("--selftest-timeout", type=click.FloatRange(min=0.1), default=30.0,
              show_default=True, help="Seconds to wait for the test card and test QR.")
@click.option("--no-selftest", is_flag=True, help="Enrol only; run `localpay selftest` later.")
@click.pass_context
def provision(ctx: click.Context, central_url: str, code_file: Path | None,
              enroll_code: str | None, role: str,
              route: str | None, merchant: str | None, reader: str, scanner: str,
              central_key: str | None, selftest_timeout: float, no_selftest: bool) -> None:
    """Make this terminal's keys, enrol it with the central service, install the signed
    config it sends, and run the self-test.

    Exit 0 when enrolled and every check passed. Non-zero with the reason when enrolment
    failed (nothing is installed) or a check failed (the terminal stays enrolled: fix what
    the table says and run `localpay selftest`).
    """
    from firmware_cfg.provision import enroll
    from localpay.cli import selftest
    from terminal.config_update import can_start

    place = route if role == "validator" else merchant
    other = merchant if role == "validator" else route
    if not place:
        need = "--route" if role == "validator" else "--merchant"
        raise click.UsageError(f"a {role} needs {need}")
    if other:
        raise click.UsageError("--route is for validators, --merchant for tills")
    if enroll_code is not None:
        raise UserError("--enroll-code puts the code on the command line, where every user "
                        "of this machine sees it (ps): give it on standard input or with "
                        "--code-file PATH")
    enroll_code = read_code(code_file)
    home = _home(ctx)
    done = enroll(home.path, central_url, enroll_code, role=role, place=place, reader=reader,
                  scanner=scanner, central_key=central_key, start_check=can_start(home))
    _record(home, done.version, done.config_sha256)
    where = "route" if role == "validator" else "merchant"
    click.echo(f"enrolled as {done.terminal_id} ({role}, {where} {place}) with {central_url}")
    click.echo(f"terminal public key {done.public_key}")
    click.echo(f"config version {done.version} (sha256 {done.config_sha256[:16]}…) written to "
               f"{home.config_path}; keys in {home.path / 'keys'} (mode 0600)")
    if no_selftest:
        return
    rows = selftest.run(home, timeout=selftest_timeout,
                        prompt=lambda msg: click.echo(msg + " …", err=True))
    click.echo("")
    _print_rows(rows, False)
    if not selftest.passed(rows):
        sys.exit(1)


def read_code(path: Path | None) -> str:
    """The enrolment code from ``path`` (``-``: standard input), or from standard input
    when no path is given: piped, or typed at a hidden prompt on a terminal."""
    if path is None and sys.stdin.isatty():
        text = click.prompt("Enrolment code", hide_input=True, err=True)
    elif path is None or str(path) == "-":
        text = sys.stdin.read()
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise UserError(f"--code-file {path}: cannot be read: {err}") from err
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    where = "standard input" if path is None or str(path) == "-" else str(path)
    if len(lines) != 1:
        raise UserError(f"{where}: {'no enrolment code' if not lines else 'more than one line'};"
                        " one code expected (XXXX-XXXX-XXXX-XXXX)")
    return lines[0]


def _record(home: Home, version: int, sha256: str) -> None:
    """The first config goes into the ledger as every later one does (config_change)."""
    config = home.config()
    # the one writer of the home's ledger: provisioning a home a running terminal holds is
    # refused with that process's PID, not raced
    with home.open_ledger(home.terminal_key(config), config.terminal.id,
                          holder="localpay provision") as led:
        led.append("config_change", place=config.terminal.place,
                   detail={"version": version, "sha256": sha256})


# -- readers -------------------------------------------------------------------------------------


@click.command("readers")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
@click.pass_context
def readers(ctx: click.Context, as_json: bool) -> None:
    """Find PC/SC readers, nfcpy devices, serial ports and cameras; say which the config
    uses and, on a problem, exactly what to do.

    Exit 0 when nothing is wrong, 1 when something needs fixing.
    """
    from drivers.discovery import discover, format_report

    home = _home(ctx)
    try:
        config = home.config()
    except ConfigError as err:
        click.echo(f"config not used: {err}", err=True)
        config = None
    report = discover(config.readers.specs() if config is not None else None)
    if as_json:
        click.echo(json.dumps({
            "ok": report.ok,
            "findings": [f.__dict__ for f in report.findings],
            "problems": [f.__dict__ for f in report.problems]}, ensure_ascii=False))
    else:
        for line in format_report(report):
            click.echo(line)
    if not report.ok:
        sys.exit(1)


# -- selftest ------------------------------------------------------------------------------------


@click.command("selftest")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds to wait for the test card and the test QR.")
@click.option("--central-timeout", type=click.FloatRange(min=0.1), default=10.0,
              show_default=True, help="Seconds to wait for the central service.")
@click.option("--only", multiple=True, type=click.Choice(
    ["config", "keys", "card reader", "QR scanner", "ledger", "central", "clock"]),
    help="Run only these checks (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="One JSON list instead of a table.")
@click.pass_context
def selftest_cmd(ctx: click.Context, timeout: float, central_timeout: float,
                 only: tuple[str, ...], as_json: bool) -> None:
    """Read a test card, scan a test QR, write and verify a ledger entry, reach the central
    service; print a pass/fail table.

    On the virtual reader the test card and code are presented by the test itself.
    Exit 0 when every check passed, 1 otherwise.
    """
    from localpay.cli import selftest

    rows = selftest.run(_home(ctx), timeout=timeout, central_timeout=central_timeout,
                        only=only or selftest.CHECKS,
                        prompt=lambda msg: click.echo(msg + " …", err=True))
    _print_rows(rows, as_json)
    if not selftest.passed(rows):
        sys.exit(1)


COMMANDS = [provision, readers, selftest_cmd]
