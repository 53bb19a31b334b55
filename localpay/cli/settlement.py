"""``localpay central settlement ...``: paying merchants what the books owe them, a business
day at a time, and following each transfer until the bank confirms or returns it.

Registered under ``localpay central`` by the central command group; every command takes
``--db`` / ``--data`` as the other central commands do.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from localpay.cli.accounts import municipality_scope
from localpay.cli.central import iso_day, service_options
from localpay.errors import LocalpayError

_municipality = municipality_scope("The municipality whose merchants these are.")


def _date(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--date", "day", required=True, metavar="YYYY-MM-DD",
                        callback=lambda _c, p, v: iso_day(v, "--date"),
                        help="The business day (in Seoul).")(func)


@contextmanager
def _store(db: str | None, data: Path | None) -> Iterator[tuple[Any, Path]]:
    """The store and the data folder; our errors become one line."""
    from central import default_data_dir
    from central.store import open_store

    folder = data or default_data_dir()
    try:
        store = open_store(db or f"sqlite:///{folder / 'central.sqlite'}")
        try:
            yield store, folder
        finally:
            store.close()
    except LocalpayError as err:
        raise click.ClickException(str(err)) from err


def _line(s: Any) -> str:
    late = f", late {s.late_gross - s.late_refunds:,}" if s.late_gross or s.late_refunds else ""
    back = f", returned {s.returned:,}" if s.returned else ""
    why = f"  ({s.reason})" if s.reason else ""
    return (f"{s.merchant_id:<16} {s.status:<9} gross {s.gross:>12,} refunds {s.refunds:>10,} "
            f"fees {s.fees:>9,} net {s.net:>12,}{late}{back}{why}")


@click.group("settlement")
def settlement() -> None:
    """Daily merchant settlement: each merchant's net of a business day (payments less
    refunds less fees) sent by bank bulk transfer, with held, carried and late money kept
    for the next run and nothing settled twice."""


@settlement.command("run")
@service_options
@_date
@click.option("--fees", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="TOML file with a [settlement] table: fee_bp and "
              "[settlement.category_fee_bp] (default: no fees).")
@click.option("--file", "path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The bank's bulk-transfer CSV (default: settlements/merchants-DAY.csv in "
              "the data folder).")
@_municipality
@click.option("--refund-wait-days", "wait_days", type=click.IntRange(min=0), default=None,
              help="Days a refund waits for its merchant's payable before the refund float "
              "pays it (default: 3).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of lines.")
def run(db: str | None, data: Path | None, day: str, fees: Path | None, path: Path | None,
        municipality: str, wait_days: int | None, as_json: bool) -> None:
    """Settle a finished business day and write its bank transfer file (CSV, 0600).

    First the refund float pays the refunds that waited too long for their merchant's
    payable; the run then takes back what owing merchants can repay. A day is settled
    once: running it again moves nothing and writes the same file.
    """
    from central import receivables
    from central.refund_float import pay_overdue
    from central.settlement import FeeRules, settle
    from central.settlement_file import write_bank_file

    with _store(db, data) as (store, folder):
        rules = FeeRules.load(fees) if fees else FeeRules()
        overdue = pay_overdue(store, municipality=municipality, wait_days=(
            receivables.DEFAULT_WAIT_DAYS if wait_days is None else wait_days))
        result = settle(store, day, fee_rules=rules, municipality=municipality)
        target = path or folder / "settlements" / f"merchants-{day}.csv"
        count = write_bank_file(store, day, target, municipality=municipality)
        with store.tx(write=False) as tx:
            owed = receivables.summary(tx, day, municipality)
    if as_json:
        click.echo(json.dumps({**result.as_dict(), "file": str(target),
                               "refund_float": overdue.as_dict(), "receivables": owed},
                              ensure_ascii=False))
        return
    if overdue.paid:
        click.echo(f"refund float paid {overdue.paid:,} waiting refunds, "
                   f"{overdue.paid_won:,} won")
    for w in overdue.short:
        click.echo(f"REFUND WAITING {w['terminal_id']} {w['seq']} {w['amount']:,} won: the "
                   "refund float holds less")
    for r in owed:
        click.echo(f"RECEIVABLE {r['merchant_id']}: recovered {r['recovered']:,} won, "
                   f"outstanding {r['outstanding']:,}")
    click.echo(f"settlement of {day}{' (already run)' if result.already else ''}: "
               f"{len(result.paid):,} merchants, gross {result.gross:,} won, fees "
               f"{result.fees:,}, net {result.net:,}; {len(result.held):,} held, "
               f"{len(result.carried):,} carried")
    for s in result.held:
        click.echo(f"HELD {_line(s)}")
    click.echo(f"{count:,} transfers in {target}")


@settlement.command("float-fund")
@service_options
@click.option("--amount", required=True, type=click.IntRange(min=1), help="Won to put in.")
@click.option("--ref", required=True, help="The funding's reference; the same reference "
              "again moves nothing.")
@_municipality
def float_fund(db: str | None, data: Path | None, amount: int, ref: str,
               municipality: str) -> None:
    """Put the city's money into the refund float that pays refunds a merchant's payable
    could not pay within the wait."""
    from central.refund_float import fund

    with _store(db, data) as (store, _folder):
        fresh, held = fund(store, amount, ref, municipality=municipality)
    click.echo(f"refund float {'funded' if fresh else 'already funded by ' + ref}: holds "
               f"{held:,} won")


@settlement.command("sent")
@service_options
@_date
@_municipality
def sent(db: str | None, data: Path | None, day: str, municipality: str) -> None:
    """Mark the day's bank file as sent to the bank (pending -> sent)."""
    from central.settlement import mark_sent

    with _store(db, data) as (store, _):
        count = mark_sent(store, day, municipality=municipality)
    click.echo(f"{count:,} settlements of {day} marked sent")


@settlement.command("confirm")
@service_options
@_date
@click.option("--merchant", default=None, metavar="ID",
              help="Only this merchant's (default: every sent settlement of the day).")
@_municipality
def confirm_cmd(db: str | None, data: Path | None, day: str, merchant: str | None,
                municipality: str) -> None:
    """The bank paid: sent -> confirmed, moving the money out of transit."""
    from central.settlement import confirm

    with _store(db, data) as (store, _):
        done = confirm(store, day, merchant, municipality=municipality)
    click.echo(f"{len(done):,} settlements of {day} confirmed, "
               f"{sum(s.net for s in done):,} won")


@settlement.command("returned")
@service_options
@_date
@click.option("--merchant", required=True, metavar="ID")
@click.option("--reason", required=True, help="The bank's reason, as it gave it.")
@_municipality
def returned(db: str | None, data: Path | None, day: str, merchant: str, reason: str,
             municipality: str) -> None:
    """The bank sent a merchant's transfer back: sent -> returned; the money is owed again
    and the next run pays it (fix the merchant's account first)."""
    from central.settlement import mark_returned

    with _store(db, data) as (store, _):
        s = mark_returned(store, day, merchant, reason, municipality=municipality)
    click.echo(f"settlement of {merchant} for {day} returned: {s.net:,} won owed again")


@settlement.command("status")
@service_options
@click.option("--date", "day", default=None, metavar="YYYY-MM-DD",
              callback=lambda _c, p, v: v and iso_day(v, "--date"),
              help="One day's settlements and its check (default: every run).")
@_municipality
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of lines.")
def status(db: str | None, data: Path | None, day: str | None, municipality: str,
           as_json: bool) -> None:
    """Runs and their statuses; with --date, the day's settlements and the check of the
    books against them and the terminals' own totals (exit 1 on a difference)."""
    from central.settlement import runs, settlements_of
    from central.settlement_check import check

    with _store(db, data) as (store, _):
        if day is None:
            heads = runs(store, municipality=municipality)
            if as_json:
                click.echo(json.dumps({"runs": heads}))
                return
            for h in heads:
                counts = ", ".join(f"{k} {v['count']}" for k, v in sorted(h["statuses"].items()))
                click.echo(f"{h['day']}  {h['merchants']:>7,} merchants  net {h['net']:>14,} "
                           f"won  {counts}")
            return
        result = settlements_of(store, day, municipality=municipality)
        report = check(store, day, municipality=municipality)
    if as_json:
        click.echo(json.dumps({**result.as_dict(), "check": report.as_dict()},
                              ensure_ascii=False))
    else:
        for s in result.settlements:
            click.echo(_line(s))
        for x in report.lines:
            if x.open:
                click.echo(f"OPEN {x.merchant_id}: {x.open:,} won of {day} not settled yet")
            for problem in x.problems:
                click.echo(f"DIFFERENCE {x.merchant_id}: {problem}")
        click.echo("the check is clean" if report.clean else
                   f"the check found differences for {len(report.problems):,} merchants")
    if not report.clean:
        raise click.exceptions.Exit(1)
