"""``localpay central allowance ...``: allowance programmes paid by entering the recipients.

Registered under ``localpay central`` by the central command group; every command takes
``--db`` / ``--data`` as the other central commands do.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
from pathlib import Path
from zoneinfo import ZoneInfo

import click

from localpay.cli.accounts import central_store, municipality_option
from localpay.cli.central import iso_day, service_options


def _today() -> dt.date:
    from central.allowances import TIMEZONE

    return dt.datetime.now(ZoneInfo(TIMEZONE)).date()


def _month(value: str | None, name: str) -> str | None:
    if value is not None and not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", value):
        raise click.BadParameter(f"{value!r} is not a month written YYYY-MM", param_hint=name)
    return value


@click.group("allowance")
def allowance() -> None:
    """Allowance programmes: fund a budget, issue grants from a recipients file, expire
    what was not spent in time, and report issued, spent, expired and outstanding."""


@allowance.command("fund")
@service_options
@municipality_option
@click.option("--programme", required=True, help="The programme id (lowercase).")
@click.option("--amount", type=click.IntRange(min=1), required=True, help="Won to add.")
@click.option("--ref", default=None, help="Idempotency reference: the same ref funds once "
              "(default: a new one, printed).")
def fund_cmd(db: str | None, data: Path | None, municipality: str, programme: str,
             amount: int, ref: str | None) -> None:
    """Move AMOUNT won of the city's money into the programme's allowance budget."""
    from central.allowances import fund

    ref = ref or f"fund-{dt.datetime.now(ZoneInfo('UTC')):%Y%m%d%H%M%S}-{secrets.token_hex(3)}"
    with central_store(db, data) as store:
        done = fund(store, programme, amount, ref, municipality=municipality)
    said = "funded" if done.fresh else "already funded by this ref; nothing moved"
    click.echo(f"programme {programme}: {amount:,} won {said} (ref {ref}); its budget holds "
               f"{done.budget:,} won")


@allowance.command("issue")
@service_options
@municipality_option
@click.option("--programme", required=True, help="The programme id (lowercase).")
@click.option("--recipients", "recipients", required=True,
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="CSV with a header: recipient (account id, card token or w:<wallet>) "
              "and optionally amount.")
@click.option("--amount", type=click.IntRange(min=1), required=True,
              help="Won per recipient, unless the file's amount column says otherwise.")
@click.option("--expires", required=True, metavar="YYYY-MM-DD",
              callback=lambda c, p, v: iso_day(v, "--expires"),
              help="The last day the grants may be spent.")
@click.option("--period", default=None, metavar="YYYY-MM",
              callback=lambda c, p, v: _month(v, "--period"),
              help="The month the grants pay for (default: this month).")
def issue_cmd(db: str | None, data: Path | None, municipality: str, programme: str,
              recipients: Path, amount: int, expires: str, period: str | None) -> None:
    """Grant every recipient of the file its allowance, all or nothing.

    Every bad line is printed as FILE:LINE: reason, and then nothing is applied (exit 1).
    Issuing the same file again for the same period moves nothing.
    """
    from central.allowances import RecipientFileError, issue

    shown: dict[str, int] = {}

    def progress(stage: str, done: int, total: int) -> None:
        # only big files say how far they are, about every tenth of the way
        step = max(10_000, total // 10)
        if total >= 10_000 and (done == total or done - shown.get(stage, 0) >= step):
            shown[stage] = done
            click.echo(f"{stage} {done:,} / {total:,}", err=True)

    try:
        with central_store(db, data) as store:
            result = issue(store, programme, recipients, amount, expires,
                           period or _today().strftime("%Y-%m"), municipality,
                           progress=progress)
    except click.ClickException as err:
        cause = err.__cause__
        if not isinstance(cause, RecipientFileError):
            raise
        for n, why in cause.problems:
            click.echo(f"{recipients}:{n}: {why}", err=True)
        click.echo(f"{len(cause.problems)} bad line(s); nothing applied", err=True)
        raise SystemExit(1) from None
    click.echo(f"programme {programme}, period {result.period}: {len(result.grants):,} "
               f"grant(s), {result.amount:,} won; {result.new:,} new ({result.new_amount:,} "
               f"won), {result.repeated:,} already issued")


@allowance.command("expire")
@service_options
@municipality_option
@click.option("--date", "day", default=None, metavar="YYYY-MM-DD",
              callback=lambda c, p, v: None if v is None else iso_day(v, "--date"),
              help="Expire the grants whose last day is before this day (default: today).")
def expire_cmd(db: str | None, data: Path | None, municipality: str, day: str | None) -> None:
    """Return the unspent part of every grant past its expiry to its programme's budget
    (safe to run again; a stopped run goes on where it stopped)."""
    from central.allowances import expire

    def progress(pockets: int, grants: int) -> None:
        # a chunk of pockets is 500: only long runs say how far they are
        if pockets >= 1000:
            click.echo(f"{pockets:,} pocket(s), {grants:,} grant(s) so far", err=True)

    with central_store(db, data) as store:
        done = expire(store, day or _today().isoformat(), municipality, progress=progress)
    click.echo(f"expired before {done.day}: {done.grants:,} grant(s) in {done.pockets:,} "
               f"pocket(s), {done.amount:,} won returned to the budgets")
    for programme, won in sorted(done.by_programme.items()):
        click.echo(f"  {programme:<20} {won:>14,} won")


@allowance.command("report")
@service_options
@municipality_option
@click.option("--programme", default=None, help="Only this programme.")
@click.option("--month", default=None, metavar="YYYY-MM",
              callback=lambda c, p, v: _month(v, "--month"), help="Only this month.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
def report_cmd(db: str | None, data: Path | None, municipality: str, programme: str | None,
               month: str | None, as_json: bool) -> None:
    """Per programme and month: won issued, spent (payments less refunds), expired, and
    outstanding in the pockets at the month's end."""
    from central.allowances import report

    with central_store(db, data) as store:
        rows = report(store, programme, month, municipality)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in rows]))
        return
    head = (f"{'programme':<20} {'month':<7} {'issued':>14} {'spent':>14} {'expired':>14} "
            f"{'outstanding':>14}")
    click.echo(head)
    click.echo("-" * len(head))
    for r in rows:
        click.echo(f"{r.programme:<20} {r.month:<7} {r.issued:>14,} {r.spent:>14,} "
                   f"{r.expired:>14,} {r.outstanding:>14,}")
