"""Every card and code application, registered with :func:`terminal.cards.register`.

Importing this module once (the transaction core does) makes the terminal read EMV cards
(contact and contactless) and QR codes (signed wallet codes, EMVCo CPM; MPM is recognised
and refused, since a merchant code is what a till shows, not what it accepts). UID-only
cards are registered by :mod:`terminal.cards` itself.
"""

from __future__ import annotations

from terminal import cards
from terminal.emv import app as emv_app
from terminal.qr import app as qr_app


def _register() -> None:
    names = {name for name, _ in cards.APPLICATIONS}
    if "emv" not in names:
        cards.register("emv", emv_app.claims, emv_app.read)
    if "qr" not in names:
        cards.register("qr", qr_app.claims, qr_app.read)


_register()
