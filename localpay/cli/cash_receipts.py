"""``localpay central cash-receipts``: the day's cash-receipt requests (현금영수증), listed for
the issuing service.

Registered under ``localpay central`` by the central command group; it takes ``--db`` /
``--data`` as the other central commands do, and ``--municipality`` (default ``default``;
refused unless registered) as ``central report`` does.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from localpay.cli.accounts import municipality_scope
from localpay.cli.central import iso_day, open_central, service_options
from localpay.cli.common import UserError

_municipality = municipality_scope("The municipality whose terminals' requests these are.")


@click.command("cash-receipts")
@service_options
@click.option("--date", "day", required=True, metavar="YYYY-MM-DD", callback=lambda c, p, v:
              iso_day(v, "--date"), help="The day, in the service's time zone.")
@_municipality
@click.option("--csv", "csv_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write the rows to this CSV file (UTF-8, mode 0600).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of "
              "a table.")
def cash_receipts(db: str | None, data: Path | None, day: str, municipality: str,
                  csv_file: Path | None, as_json: bool) -> None:
    """List the cash-receipt requests of one day made at the terminals of one municipality,
    for the issuing service: terminal, merchant and its business registration number,
    payment seq, amount, purpose, identity kind and keyed token (never the number), time.

    A request whose payment the central chain does not bear out (missing, not a payment,
    another hash or amount) says so in its PROBLEM column; REFUNDED is the won given back
    of the payment since. Nothing here moves money.
    """
    from central.cash_receipts import COLUMNS, day_requests
    from central.csvfiles import write_private_csv

    service = open_central(db, data)
    try:
        rows = day_requests(service, day, municipality)
    finally:
        service.store.close()
    if csv_file is not None:
        try:
            write_private_csv(csv_file, COLUMNS, ([getattr(r, c) for c in COLUMNS]
                                                  for r in rows))
        except OSError as err:
            raise UserError(f"cannot write {csv_file}: {err.strerror or err}") from err
    if as_json:
        for r in rows:
            click.echo(json.dumps(r.as_dict(), ensure_ascii=False))
        return
    click.echo(f"Cash receipts for {day}"
               + (f", municipality {municipality}" if municipality != "default" else "")
               + f": {len(rows)}")
    for r in rows:
        brn = f"{r.brn[:3]}-{r.brn[3:5]}-{r.brn[5:]}" if len(r.brn) == 10 else "-"
        click.echo(f"  {r.time}  {r.terminal_id}  {r.merchant_id or '-'} ({brn})  "
                   f"payment {r.payment_seq}  {r.amount:,} won  {r.purpose}  {r.identity} "
                   f"{r.display}  token {r.token}"
                   + (f"  refunded {r.refunded:,}" if r.refunded else "")
                   + (f"  PROBLEM: {r.problem}" if r.problem else ""))
    if csv_file is not None:
        click.echo(f"{len(rows)} row(s) written to {csv_file}")
