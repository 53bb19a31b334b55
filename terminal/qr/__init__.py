"""QR payment codes: EMVCo merchant- and consumer-presented modes, the signed wallet code.

:func:`detect` tells the formats apart by their fixed openings, and :func:`parse_any`
parses whatever was scanned into one :class:`Parsed`:

- MPM (EMV QRCPS MPM): ``0002`` (the Payload Format Indicator, ID 00), or a run of
  ``ID LL VALUE`` data objects holding an ID 00 elsewhere: the MPM parser then names what
  is wrong with the indicator instead of "unknown format";
- CPM (EMV QRCPS CPM): Base64 of ``85 05 "CPV01"``, i.e. ``hQVDUFYw``;
- the wallet code: ``LPW1:``;
- the campaign code: ``LPC1:`` (incentive points, see :mod:`terminal.qr.campaign`).

White space around a scanned payload is dropped for every format.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from localpay.errors import QRFormatError
from terminal.qr import campaign, cpm, mpm, wallet
from terminal.qr.mpm import split_ids

Kind = Literal["mpm", "cpm", "wallet", "campaign"]


def detect(payload: str) -> Kind:
    if not isinstance(payload, str):
        raise QRFormatError(f"a QR payload is text, not {type(payload).__name__}")
    text = payload.strip()
    if text.startswith(wallet.PREFIX):
        return "wallet"
    if text.startswith(campaign.PREFIX):
        return "campaign"
    if text.startswith("0002") or "00" in split_ids(text):
        return "mpm"
    if text.startswith("hQVDUFYw"):
        return "cpm"
    raise QRFormatError("unknown QR format: not an EMVCo MPM/CPM code nor a wallet code")


@dataclass(frozen=True, slots=True)
class Parsed:
    kind: Kind
    mpm: mpm.Mpm | None = None
    cpm: cpm.Cpm | None = None
    wallet: wallet.SignedCode | None = None
    campaign: campaign.SignedCampaign | None = None


def parse_any(payload: str) -> Parsed:
    """Detect and parse (a wallet code's signature is not checked here)."""
    kind = detect(payload)
    text = payload.strip()
    if kind == "wallet":
        return Parsed(kind, wallet=wallet.decode(text))
    if kind == "campaign":
        return Parsed(kind, campaign=campaign.decode(text))
    if kind == "mpm":
        return Parsed(kind, mpm=mpm.parse(text))
    return Parsed(kind, cpm=cpm.parse(text))
