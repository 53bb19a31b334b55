"""QR codes as a card application: who is paying, from a scanned code.

- Wallet code: signature by a provisioned issuer key, time window with clock skew, and
  the nonce handed to the core (``CardIdentity.nonce``), which declines a replay and records
  the nonce with the payment in one commit. Token: the wallet id under the ``wallet``
  namespace. An offline allowance in the code caps the amount of this payment.
- EMVCo CPM: the PAN (5A, or from 57) becomes the same keyed token an EMV card with that
  PAN gets; the payload's hash is a one-time nonce so the same code cannot pay twice.
- EMVCo MPM: the till shows these, the payer's app scans them; one scanned *here* is not a
  payment and is refused as unsupported.

Options read from ``ReadContext.options`` (all optional):

==========================  ===============================================================
``wallet_issuer_keys``      issuer public keys: ``Ed25519PublicKey``, 32 raw bytes or hex
``qr_clock_skew_s``         allowed clock difference for wallet codes (30)
``cpm_nonce_ttl_s``         how long a CPM code's nonce is kept against replay (86400)
``emv_aids``                AIDs accepted, also for CPM codes (the scheme's own by default)
==========================  ===============================================================
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from localpay.errors import ConfigError, QRFormatError
from localpay.types import Presentation
from terminal.cards import CardIdentity, Declined, ReadContext, card_token, display_pan
from terminal.emv.reader import DEFAULT_AIDS
from terminal.qr import campaign, cpm, detect, mpm, wallet
from terminal.risk import Reason

DEFAULT_SKEW_S = 30
DEFAULT_CPM_NONCE_TTL_S = 86_400

T = TypeVar("T")


def claims(p: Presentation) -> bool:
    return p.kind == "qr"


def issuer_keys(options: dict[str, Any]) -> list[Ed25519PublicKey]:
    """The provisioned wallet issuer keys, from any of the forms the options allow."""
    out = []
    for key in options.get("wallet_issuer_keys", ()):
        if isinstance(key, Ed25519PublicKey):
            out.append(key)
            continue
        try:
            raw = bytes.fromhex(key) if isinstance(key, str) else bytes(key)
            out.append(Ed25519PublicKey.from_public_bytes(raw))
        except ValueError as err:
            raise ConfigError(f"wallet issuer key is not 32 bytes: {err}") from err
    return out


def read(p: Presentation, ctx: ReadContext) -> CardIdentity:
    kind = detect(p.payload)
    if kind == "wallet":
        return _wallet(p.payload.strip(), ctx)
    if kind == "cpm":
        return _cpm(p.payload, ctx)
    if kind == "campaign":
        return _campaign(p.payload.strip(), ctx)
    mpm.parse(p.payload)  # a malformed one is QR_INVALID, a good one unsupported
    raise Declined(Reason.UNSUPPORTED,
                   "a merchant-presented code: the payer scans it with a payment app")


def _verified(verify: Callable[[str, list[Ed25519PublicKey]], T], text: str,
              keys: list[Ed25519PublicKey], missing: str) -> T:
    """A signed code checked against the provisioned keys, or the decline that says why not."""
    if not keys:
        raise Declined(Reason.UNSUPPORTED, missing)
    try:
        return verify(text, keys)
    except QRFormatError as err:
        raise Declined(Reason.QR_INVALID, str(err)) from err


def _in_window(problem: str | None, *, expired: str, invalid: str) -> None:
    if problem == "expired":
        raise Declined(Reason.QR_EXPIRED, expired)
    if problem is not None:
        raise Declined(Reason.QR_INVALID, f"{invalid}: {problem}")


def _wallet_card(ctx: ReadContext, wallet_id: str, label: str, nonce: tuple[str, int],
                 **more: Any) -> CardIdentity:
    return CardIdentity(token=card_token(ctx.token_key, "wallet", wallet_id),
                        display=f"wallet …{wallet_id[-4:]}", scheme="wallet", label=label,
                        nonce=nonce, **more)


def _wallet(text: str, ctx: ReadContext) -> CardIdentity:
    code = _verified(wallet.verify, text, issuer_keys(ctx.options),
                     "no wallet issuer key is provisioned")
    skew = int(ctx.options.get("qr_clock_skew_s", DEFAULT_SKEW_S))
    _in_window(wallet.time_problem(code, ctx.now_ms, skew),
               expired=f"code expired at {code.expires_at} (+{skew} s)",
               invalid=f"code issued at {code.issued_at}")
    if code.allowance is not None and ctx.amount > code.allowance:
        raise Declined(Reason.INSUFFICIENT_BALANCE,
                       f"{ctx.amount} won is over the code's offline allowance")
    return _wallet_card(ctx, code.wallet_id, "wallet QR",
                        (code.nonce_key, (code.expires_at + skew) * 1000),
                        allowance=code.allowance)


def _cpm(text: str, ctx: ReadContext) -> CardIdentity:
    code = cpm.parse(text)
    aids = tuple(ctx.options.get("emv_aids", DEFAULT_AIDS))
    chosen = code.accepting(aids)
    if chosen is None:
        raise Declined(Reason.UNSUPPORTED, "no application in the code is accepted here")
    code = chosen  # the PAN, label and ATC charged are the accepted template's (§5.1.1.7)
    pan = code.pan()
    token, display = card_token(ctx.token_key, "pan", pan), display_pan(pan)
    del pan  # the full PAN ends here (PCI DSS 3.5.1)
    ttl = int(ctx.options.get("cpm_nonce_ttl_s", DEFAULT_CPM_NONCE_TTL_S))
    digest = hashlib.sha256(code.payload.encode("ascii")).hexdigest()[:32]
    label = code.value(0x50)
    return CardIdentity(
        token=token, display=display, scheme="cpm",
        label=label.decode("ascii", "replace") if label else "",
        aid=code.aid.hex().upper(), atc=code.atc,
        nonce=("c:" + digest, ctx.now_ms + ttl * 1000),
    )


def _campaign_keys(options: dict[str, Any]) -> list[Ed25519PublicKey]:
    # Campaign codes are signed by the operator; without keys of their own the terminal
    # trusts the operator's wallet issuer keys (the signed messages differ by domain).
    given = options.get("campaign_keys")
    return issuer_keys({"wallet_issuer_keys": given} if given else options)


def _campaign(text: str, ctx: ReadContext) -> CardIdentity:
    """A scanned campaign code: which campaign, which wallet brought it, the points signed.
    Its token is the wallet's; the core credits the card presented after it instead."""
    code = _verified(campaign.verify, text, _campaign_keys(ctx.options),
                     "no campaign key is provisioned")
    skew = int(ctx.options.get("qr_clock_skew_s", DEFAULT_SKEW_S))
    _in_window(campaign.time_problem(code, ctx.now_ms, skew),
               expired=f"campaign code expired at {code.valid_until}",
               invalid=f"campaign code from {code.valid_from}")
    return _wallet_card(ctx, code.wallet_id, "campaign",
                        (code.nonce_key, (code.valid_until + skew) * 1000),
                        extra={"campaign": code.campaign_id, "points": code.points,
                               "code": text, "wallet": code.wallet_id})
