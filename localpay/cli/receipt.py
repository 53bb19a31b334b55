"""``localpay receipt verify|show|print``: e-receipts checked, receipts shown and reprinted.

``show`` and ``print`` also take a ``z_report`` entry: the closing's Z report, reprinted.

A receipt is made again from the ledger entry (``terminal.receipt``), so a reprint says what
the first print said; PANs are only ever the entry's first 6 / last 4.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from localpay.cli.common import Context, UserError, db_option, pass_ctx

if TYPE_CHECKING:
    from terminal.receipt import Shown


@click.group()
def receipt() -> None:
    """Verify e-receipts, show and reprint receipts from the ledger."""


def _ledger_path(ctx: Context, db: Path | None) -> Path:
    path = db if db is not None else ctx.home.ledger_path
    if not path.exists():
        raise UserError(f"no ledger at {path}")
    return path


def _lines(ctx: Context, db: Path | None, seq: int) -> tuple[list[str], str]:
    """The receipt lines of entry ``seq`` and its e-receipt payload ("" for a Z report,
    which is no receipt of money: it has no e-receipt)."""
    from offline_ledger import Ledger
    from terminal import receipt as rc
    from terminal import zreport

    path = _ledger_path(ctx, db)
    with Ledger(path) as led:
        entry = led.entry(seq)
        cash = rc.cash_receipt_of(led, entry) if entry is not None else None
    if entry is None:
        raise UserError(f"no entry {seq} in {path}")
    config = ctx.home.config()
    if entry.kind == zreport.KIND:
        # a closing's Z report prints again from its entry, clerks by this config's names
        names = {c.id: c.name for c in config.clerk}
        return zreport.printed_lines(zreport.from_entry(entry), names, rc.WIDTH), ""
    shown = rc.ReceiptJournal(rc.journal_path(path)).shown(seq)
    made = rc.from_entry(entry, config, shown, cash)
    return rc.lines(made), rc.e_receipt(entry)


@receipt.command("show")
@click.argument("seq", type=click.IntRange(min=1))
@db_option
@click.option("--payload", is_flag=True, help="Also the e-receipt payload (LPR1:...).")
@click.option("--qr", "qr_png", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the e-receipt as a QR code to this PNG file.")
@pass_ctx
def receipt_show(ctx: Context, seq: int, db: Path | None, payload: bool,
                 qr_png: Path | None) -> None:
    """Show the receipt of ledger entry SEQ as it prints (or the Z report it records)."""
    lines, code = _lines(ctx, db, seq)
    if not code and (payload or qr_png is not None):
        raise UserError(f"entry {seq} is a Z report: it has no e-receipt")
    for line in lines:
        click.echo(line)
    if payload:
        click.echo(code)
    if qr_png is not None:
        import segno

        # a full QR symbol (zbar and phones do not read Micro QR), level M for a screen or
        # a crumpled print; byte mode, as base64url's lower case needs
        try:
            segno.make_qr(code, error="m", mode="byte").save(str(qr_png), kind="png",
                                                             scale=4, border=4)
        except OSError as err:
            raise UserError(f"cannot write {qr_png}: {err}") from err


@receipt.command("print")
@click.argument("seq", type=click.IntRange(min=1))
@db_option
@click.option("--printer", "spec", default=None,
              help="Printer spec (virtual, serial:PORT[:BAUD], usb:VID:PID); default: the "
              "config's readers.printer.")
@pass_ctx
def receipt_print(ctx: Context, seq: int, db: Path | None, spec: str | None) -> None:
    """Reprint the receipt of ledger entry SEQ (a missed print, or a customer's copy), or
    the Z report a closing recorded as entry SEQ."""
    from drivers.printer import VirtualPrinter, open_printer
    from terminal.receipt import ReceiptJournal, journal_path

    spec = spec or ctx.home.config().readers.printer
    if not spec:
        raise UserError("no printer: give --printer or set readers.printer in the config")
    lines, _ = _lines(ctx, db, seq)
    with open_printer(spec) as printer:
        printer.print_lines(lines)  # a PrinterError becomes a one-line message, exit 2
        size = len(printer.output) if isinstance(printer, VirtualPrinter) else None
    path = _ledger_path(ctx, db)
    journal = ReceiptJournal(journal_path(path))
    shown = journal.shown(seq)
    if shown is not None:
        journal.record(seq, shown, printed=True)
    extra = f" ({size} bytes captured)" if size is not None else ""
    click.echo(f"receipt {seq} printed on {spec}{extra}")


@receipt.command("verify")
@click.argument("payload_or_file")
@click.option("--key", "key_hex", default=None,
              help="Terminal public key (hex); default: the key recorded in the home's ledger.")
@db_option
@pass_ctx
def receipt_verify(ctx: Context, payload_or_file: str, key_hex: str | None,
                   db: Path | None) -> None:
    """Check an e-receipt (LPR1:..., or a file holding one) against the terminal's key.

    Exit 0 and the receipt's lines when it verifies; exit 1 when it does not.
    """
    from firmware_cfg.config import Config
    from firmware_cfg.keys import public_from_hex
    from localpay.errors import QRFormatError
    from offline_ledger import Ledger
    from terminal import receipt as rc

    text = payload_or_file
    if not text.startswith(rc.PREFIX) and Path(text).is_file():
        text = Path(text).read_text(encoding="utf-8").strip()
    if key_hex:
        key = public_from_hex(key_hex, "--key")
    else:
        with Ledger(_ledger_path(ctx, db)) as led:
            key = led.public_key
    try:
        found = rc.verify(text, key)
    except QRFormatError as err:
        click.echo(f"e-receipt INVALID: {err}", err=True)
        sys.exit(1)
    # Only what the signature covers is shown: this machine's [merchant] facts may belong
    # to another shop than the one that issued the receipt.
    made = rc.from_entry(found.entry, Config())
    f = found.fields
    click.echo(f"e-receipt VALID: terminal {f.terminal_id}, entry {f.seq}, {f.kind} "
               f"{f.amount:,} won at {f.place}, {rc.when(f.wall_ms)}, card {made.card or '-'}, "
               f"approval {made.approval}")
    if made.signed:
        click.echo(f"signed facts: {_facts(made.shown)}")


def _facts(shown: Shown) -> str:
    """The receipt facts an entry signs, as ``receipt verify`` prints them; only those the
    terminal knew."""
    said = [f"AID {shown.aid}" if shown.aid else "", f"label {shown.label}" if shown.label
            else "", f"points earned {shown.points:,}" if shown.points is not None else "",
            f"balance left {shown.balance:,} won" if shown.balance is not None else ""]
    return ", ".join(s for s in said if s)


COMMANDS = [receipt]
