"""``localpay qr``: parse any payment QR code, draw the till's code, issue wallet codes.

PANs inside CPM codes are always shown as first 6 / last 4 (PCI DSS 3.3).
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import click

from firmware_cfg import keys
from localpay.cli.common import UserError
from localpay.errors import LocalpayError
from terminal import tlv
from terminal.cards import display_pan
from terminal.qr import Parsed, mpm, parse_any, wallet


def _masked(tag: int, value: bytes) -> str:
    """Hex of a CPM value, with the PAN (5A) and track 2 (57) masked."""
    if tag == 0x5A:
        return display_pan(value.hex().upper().rstrip("F"))
    if tag == 0x57:
        digits = value.hex().upper()
        pan, _, rest = digits.partition("D")
        return f"{display_pan(pan)}D{'*' * len(rest)}"
    return value.hex().upper()


def _cpm_json(objs: tuple[tlv.Tlv, ...] | list[tlv.Tlv]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for obj in objs:
        value: Any = _cpm_json(obj.children) if obj.children is not None else \
            _masked(obj.tag, obj.value)
        key = obj.tag_hex
        if key in out:  # several application templates 61: a list, in order
            if not isinstance(out[key], list):
                out[key] = [out[key]]
            out[key].append(value)
        else:
            out[key] = value
    return out


def as_json(parsed: Parsed) -> dict[str, Any]:
    """The JSON form: MPM keyed by two-digit IDs, CPM by hex tags, templates nested."""
    if parsed.mpm is not None:
        return {"format": "mpm", "objects": parsed.mpm.objects}
    if parsed.cpm is not None:
        return {"format": "cpm", "objects": _cpm_json(parsed.cpm.objects)}
    if parsed.campaign is not None:
        c = parsed.campaign.code
        return {"format": "campaign", "objects": {
            "version": c.version, "campaign_id": c.campaign_id, "wallet_id": c.wallet_id,
            "points": c.points, "valid_from": c.valid_from, "valid_until": c.valid_until,
            "signature": parsed.campaign.signature.hex(),
        }}
    if parsed.wallet is None:
        raise click.ClickException("nothing was parsed")
    code = parsed.wallet.code
    return {"format": "wallet", "objects": {
        "version": code.version, "wallet_id": code.wallet_id, "issued_at": code.issued_at,
        "expires_at": code.expires_at, "nonce": code.nonce.hex(), "allowance": code.allowance,
        "signature": parsed.wallet.signature.hex(),
    }}


def _print_tree(node: Any, indent: int = 0) -> None:
    pad = "  " * indent
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, (dict, list)):
                click.echo(f"{pad}{key}:")
                _print_tree(value, indent + 1)
            else:
                click.echo(f"{pad}{key}: {value}")
    elif isinstance(node, list):
        for i, item in enumerate(node, 1):
            click.echo(f"{pad}[{i}]")
            _print_tree(item, indent + 1)


@click.group("qr")
def qr() -> None:
    """Payment QR codes: EMVCo MPM / CPM, the signed wallet code and campaign codes."""


@qr.command("parse")
@click.argument("payload")
@click.option("--json", "as_json_", is_flag=True, help="Print JSON instead of a tree.")
def parse_cmd(payload: str, as_json_: bool) -> None:
    """Detect the format of PAYLOAD, check every rule, and print its data objects."""
    try:
        data = as_json(parse_any(payload))
    except LocalpayError as err:
        raise click.ClickException(f"{type(err).__name__}: {err}") from err
    if as_json_:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    click.echo(f"format: {data['format']}")
    _print_tree(data["objects"], 1)


def _png(payload: str, path: Path, scale: int, *, till: bool = False) -> None:
    import segno

    # a full QR symbol always: scanners (zbar) do not read Micro QR; PNG whatever the name.
    # The till's code is drawn as the kiosk draws it (kiosk_ui.qr.till_symbol): one byte-mode
    # segment, behind ECI 000026 when template 64 is there (MPM §4.12.1.1, §4.12.1.2).
    if till:
        symbol = segno.make_qr(payload, error="m", mode="byte", encoding="utf-8",
                               eci=mpm.uses_eci(payload))
    else:
        symbol = segno.make_qr(payload, error="m")
    try:
        symbol.save(str(path), kind="png", scale=scale, border=4)
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror or err}") from err
    click.echo(f"wrote {path}", err=True)


@qr.command("make")
@click.option("--amount", type=click.IntRange(min=1), required=True, help="Amount in won.")
@click.option("--merchant", default=None, help="Merchant name, common character set "
              "(default: the config's merchant name).")
@click.option("--city", default=None, help="Merchant city (default: the config's city).")
@click.option("--merchant-id", default=None, help="Merchant id (default: the config's place).")
@click.option("--reference", default=None, help="Reference label (default: a fresh one).")
@click.option("--mcc", default="5499", show_default=True, help="Merchant category code.")
@click.option("--name-local", default="", help="Merchant name in Korean (template 64).")
@click.option("--city-local", default="", help="City in Korean (template 64).")
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also draw the code into this PNG file.")
@click.option("--scale", type=click.IntRange(1, 40), default=6, show_default=True,
              help="Pixels per module in the PNG.")
@click.pass_context
def make_cmd(ctx: click.Context, amount: int, merchant: str | None, city: str | None,
             merchant_id: str | None, reference: str | None, mcc: str, name_local: str,
             city_local: str, png: Path | None, scale: int) -> None:
    """Print the till's dynamic EMVCo merchant-presented code for AMOUNT won."""
    term = _config(ctx).terminal
    if merchant is not None and not merchant.strip():
        raise UserError("--merchant is empty: the merchant name (ID 59) is mandatory")
    if city_local and not name_local:
        raise UserError("--city-local needs --name-local: template 64 holds the city in the "
                        "local language only beside the name (ID 01)")
    try:
        payload = mpm.build_dynamic(
            amount, merchant_name=merchant or term.merchant_name, city=city or term.city,
            merchant_id=merchant_id or term.place, mcc=mcc,
            reference=reference or f"{term.place}-{secrets.token_hex(4).upper()}",
            terminal_label=term.id[:25], name_local=name_local, city_local=city_local,
        )
    except LocalpayError as err:
        raise click.ClickException(f"{type(err).__name__}: {err}") from err
    if png is not None:  # first: a code that could not be drawn is not printed either
        _png(payload, png, scale, till=True)
    click.echo(payload)


def _config(ctx: click.Context) -> Any:
    home = getattr(ctx.obj, "home", None)
    if home is not None:
        return home.config()
    from firmware_cfg.config import DEFAULT

    return DEFAULT


@qr.command("wallet")
@click.option("--wallet-id", required=True, help="Wallet id (1-32 of A-Z a-z 0-9 . _ -).")
@click.option("--ttl", type=click.IntRange(1, wallet.MAX_LIFETIME_S), default=60,
              show_default=True, help="Seconds the code stays valid.")
@click.option("--allowance", type=click.IntRange(min=0), default=None,
              help="Offline allowance in won carried by the code.")
@click.option("--key", "key_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Issuer private key file (default: the demo issuer key).")
@click.option("--now", type=int, default=None, help="Issue time, Unix seconds (default: now).")
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also draw the code into this PNG file.")
def wallet_cmd(wallet_id: str, ttl: int, allowance: int | None, key_path: Path | None,
               now: int | None, png: Path | None) -> None:
    """Issue a signed wallet code, as the local-currency app would (tests and demos)."""
    if key_path is None:
        key = keys.demo_issuer_key()
        click.echo("signing with the DEMO issuer key (public, for tests only)", err=True)
    else:
        key = keys.signing_key(key_path, "issuer key", create=False)
    try:
        code = wallet.make(key, wallet_id, now=now, ttl_s=ttl, allowance=allowance)
    except LocalpayError as err:
        raise click.ClickException(f"{type(err).__name__}: {err}") from err
    if png is not None:
        _png(code, png, 6)
    click.echo(code)


COMMANDS = [qr]
