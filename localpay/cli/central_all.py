"""``localpay central`` whole: the group of :mod:`localpay.cli.central` with the command
groups kept in modules of their own, which take ``service_options`` and ``open_central``
from it (so it cannot import them itself without a cycle)."""

from __future__ import annotations

from localpay.cli.accounts import account
from localpay.cli.allowances import allowance
from localpay.cli.books import books
from localpay.cli.cash_receipts import cash_receipts
from localpay.cli.central import central
from localpay.cli.central_audit import audit
from localpay.cli.central_serve import serve
from localpay.cli.console import audit_log, operator
from localpay.cli.merchants import merchant
from localpay.cli.mpm import mpm
from localpay.cli.municipalities import municipality
from localpay.cli.pockets import pockets, spend
from localpay.cli.settlement import settlement
from localpay.cli.terminals import terminals
from localpay.cli.topups import topup

central.add_command(merchant)
central.add_command(account)
central.add_command(allowance)
central.add_command(books)
central.add_command(settlement)
central.add_command(pockets)
central.add_command(spend)
central.add_command(topup)
central.add_command(municipality)
central.add_command(mpm)
central.add_command(cash_receipts)
central.add_command(terminals)  # and `central terminal revoke`
central.add_command(audit)
central.add_command(serve)
central.add_command(operator)  # the console's accounts
central.add_command(audit_log)

COMMANDS = [central]
