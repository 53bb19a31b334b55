"""``localpay read``: wait for one card or code and show what the terminal sees of it.

It goes through the same card applications as a payment (EMV, UID cards, QR formats), so
what it prints is exactly what a transaction would record: the application, the display
PAN (first 6 / last 4), the keyed card token and the ATC, or the QR format and its fields.
For an EMV card it then lists every application on the card (terminal.emv.survey), with
whether this terminal, by the home's ``[emv] aids``, would accept it. The full PAN never
appears. Nothing is written to the ledger.
"""

from __future__ import annotations

import importlib
import json
import time
from dataclasses import dataclass
from typing import Any

import click

from drivers import Reader, redact, wait
from drivers.spec import parse_reader_spec
from localpay.errors import CardRemovedError, LocalpayError, ReaderTimeoutError
from localpay.types import Presentation
from terminal.cards import CardIdentity, ReadContext, find_application
from terminal.emv.reader import terminal_aids
from terminal.emv.survey import Application, survey

READER_HELP = (
    "Reader to use, as KIND[:ARGS]: virtual (a demo EMV card is presented), pcsc[:NAME-PATTERN],"
    " nfc[:usb[:VID:PID]], nfc:tty:AMA0:pn532, nfc:udp:HOST:PORT, serial:PORT[:BAUD],"
    " camera[:INDEX]."
)


def load_applications() -> None:
    """Register every card and code application (EMV, QR) the build has."""
    try:
        importlib.import_module("terminal.cards_all")
    except ModuleNotFoundError as err:
        if err.name != "terminal.cards_all":
            raise


@dataclass
class ReadResult:
    """What ``read`` shows: never a full PAN."""

    presentation: Presentation
    application: str | None
    card: CardIdentity | None
    declined: str | None = None
    error: str | None = None
    #: every application on an EMV card (None: not an EMV card, or it could not be listed)
    applications: list[Application] | None = None
    applications_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        p = self.presentation
        out: dict[str, Any] = {"kind": p.kind, "reader": p.reader}
        if p.is_card:
            out.update(uid=p.uid.hex(), atr=p.atr.hex(), protocol=p.protocol)
        else:
            out["qr_length"] = len(p.payload)
        out["application"] = self.application
        if self.card is not None:
            c = self.card
            out.update(scheme=c.scheme, label=c.label, aid=c.aid, display=c.display,
                       token=c.token, atc=c.atc, weak=c.weak)
            if c.nonce is not None:
                out["nonce"] = c.nonce[0]
                out["expires_ms"] = c.nonce[1]
            if c.allowance is not None:
                out["allowance"] = c.allowance
            if c.verdict is not None:
                out["verdict"] = c.verdict
            # whatever an application put in its extras, no PAN-like digit run leaves here
            fields = {k: redact(v) if isinstance(v, str) else v for k, v in c.extra.items()
                      if isinstance(v, str | int | bool)}
            if fields:
                out["fields"] = fields
        if self.declined:
            out["declined"] = self.declined
        if self.error:
            out["error"] = self.error
        if self.applications is not None:
            chosen = self.card.aid if self.card is not None else None
            out["applications"] = [{**a.as_dict(), "selected": a.aid.hex().upper() == chosen}
                                   for a in self.applications]
        if self.applications_error:
            out["applications_error"] = self.applications_error
        return out


def read_once(reader: Reader, token_key: bytes, timeout: float, *, amount: int = 0,
              options: dict[str, Any] | None = None, every_application: bool = False
              ) -> ReadResult:
    """Wait for one presentation on ``reader`` and read it through the card applications;
    with ``every_application``, an EMV card's other applications too (each GPO advances
    that application's ATC, so the self-test, timing one read, leaves it off)."""
    from terminal.core import Declined

    load_applications()
    p = wait(reader, timeout)
    found = find_application(p)
    if found is None:
        return ReadResult(p, None, None, error="no card application claims this")
    name, read = found
    ctx = ReadContext(token_key, amount, int(time.time() * 1000), dict(options or {}))
    try:
        result = ReadResult(p, name, read(p, ctx))
    except Declined as err:
        result = ReadResult(p, name, None, declined=f"{err.reason.value}: {err}")
    except CardRemovedError as err:
        return ReadResult(p, name, None, error=f"card removed: {err}")
    except LocalpayError as err:
        result = ReadResult(p, name, None, error=f"{type(err).__name__}: {err}")
    if every_application and name == "emv":
        # after the payment's own read, on the same card: accepted or not, list them all
        try:
            result.applications = survey(p, ctx)
        except LocalpayError as err:
            result.applications_error = f"{type(err).__name__}: {err}"
    return result


def _token_key(ctx: click.Context) -> tuple[bytes, str]:
    from firmware_cfg.keys import DEMO_TOKEN_KEY

    home = getattr(ctx.find_root().obj, "home", None)
    if home is not None:
        try:
            config = home.config()
            if home.path.joinpath(config.keys.token_key).exists():
                return home.token_key(config), "home"
        except LocalpayError:
            pass
    return DEMO_TOKEN_KEY, "demo"


def _read_options(ctx: click.Context) -> dict[str, Any]:
    """What the home's config says about accepting cards (``[emv] aids``); the embedded
    defaults for a home with no config file. A config that cannot be read is an error: the
    answer "would this terminal accept it" must not come from defaults it does not run."""
    home = getattr(ctx.find_root().obj, "home", None)
    if home is None or not home.config_path.exists():
        return {}
    return {"emv_aids": terminal_aids(home.config().emv)}


def _configured_reader(ctx: click.Context) -> str:
    """The home's ``readers.card``; the virtual demo reader for a home with no config file
    (the embedded defaults name it too). A config that cannot be read is the caller's error."""
    home = getattr(ctx.find_root().obj, "home", None)
    if home is None or not home.config_path.exists():
        return "virtual"
    return str(home.config().readers.card)


def _present_demo_card(reader: Reader) -> None:
    from drivers.emulators.emv_card import EmvCard
    from drivers.virtual import VirtualCard, VirtualReader

    if isinstance(reader, VirtualReader):
        reader.present_card(VirtualCard(uid=bytes.fromhex("08d3e0c0"),
                                        handler=EmvCard().handle))


@click.command("read")
@click.option("--reader", "spec", default=None,
              help=READER_HELP + " [default: the home's readers.card, else virtual]")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds to wait for a card or code.")
@click.pass_context
def read_command(ctx: click.Context, spec: str | None, as_json: bool, timeout: float) -> None:
    """Wait for one card or code and show what the terminal sees (PAN first 6 / last 4).

    Reads through the card applications exactly as a payment would, records nothing. Without
    --reader it reads from the reader the home's config names (readers.card), so a
    technician checks the reader the terminal will use.
    """
    reader_spec = parse_reader_spec(spec if spec is not None else _configured_reader(ctx))
    token_key, key_source = _token_key(ctx)
    options = _read_options(ctx)
    reader = reader_spec.open()
    try:
        if reader_spec.kind == "virtual":
            _present_demo_card(reader)
        if not as_json:
            click.echo(f"waiting for a card or code on {reader.name} ({timeout:g} s)…", err=True)
        try:
            result = read_once(reader, token_key, timeout, options=options,
                               every_application=True)
        except ReaderTimeoutError as err:
            describe = getattr(reader, "describe", None)
            detail = f" ({describe()})" if callable(describe) else ""
            raise click.ClickException(f"{err}{detail}") from err
    finally:
        reader.close()
    data = result.as_dict()
    data["token_key"] = key_source
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False))
    else:
        for key, value in data.items():
            if key == "applications":
                click.echo(f"{key:<18} {len(value)} on the card")
                for app in value:
                    click.echo(f"  {_application_line(app)}")
            elif isinstance(value, dict):
                for sub, v in value.items():
                    click.echo(f"{key + '.' + sub:<18} {v}")
            elif value is not None and value != "":
                click.echo(f"{key:<18} {value}")
    if result.card is None:
        ctx.exit(1)


def _application_line(app: dict[str, Any]) -> str:
    """One application of ``read``'s text output, on one line."""
    parts = [app["aid"], app["label"] or "(no label)"]
    if app["priority"] is not None:
        parts.append(f"priority {app['priority']}")
    parts += [app["display"] or "PAN not read",
              f"expires {app['expiry']}" if app["expiry"] else "no expiry"]
    if app["accepted"]:
        parts.append("accepted here" + (" (a payment uses this one)" if app["selected"] else ""))
    else:
        parts.append(f"NOT accepted here: {app['reason']}")
    if app["error"]:
        parts.append(f"read error: {app['error']}")
    return "  ".join(parts)


COMMANDS = [read_command]
