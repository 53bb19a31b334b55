"""``localpay clerk``: what an operator needs to give a till's clerks their PINs.

``hash-pin`` asks for a PIN twice without echoing it and prints the ``pin_hash`` line of a
``[[clerk]]`` table (firmware_cfg.config): the PIN itself is never shown, stored or logged.
"""

from __future__ import annotations

import click

from firmware_cfg.pins import PIN_FORM, hash_pin
from localpay.cli.common import UserError


@click.group()
def clerk() -> None:
    """Clerks who sign in at a till, and their PINs."""


@clerk.command("hash-pin")
def hash_pin_command() -> None:
    """Ask for a PIN (4 to 8 digits, typed twice, not shown) and print the TOML line
    ``pin_hash = "..."`` for its [[clerk]] table, salted afresh."""
    pin = click.prompt("PIN", hide_input=True, confirmation_prompt=True, err=True)
    if not PIN_FORM.fullmatch(pin):
        # the message says what is wrong with it, never what was typed
        raise UserError("a PIN is 4 to 8 digits, the only keys the till's PIN pad has")
    click.echo(f'pin_hash = "{hash_pin(pin)}"')


COMMANDS = [clerk]
