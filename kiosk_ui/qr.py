"""The till's merchant-presented QR code (EMVCo MPM), drawn module by module.

:func:`merchant_payload` is the one place that decides the payload text, through the
terminal's MPM builder (``terminal.qr.mpm.build_dynamic``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pygame
import segno

from firmware_cfg.config import Config
from localpay.errors import ConfigError, QRFormatError
from terminal.qr.mpm import build_dynamic, uses_eci

log = logging.getLogger(__name__)

#: merchant category codes (ISO 18245) for the till's configured category
_MCC = {"local_food": "5499", "general": "5999"}
def _ascii(text: str, limit: int) -> str:
    cleaned = "".join(c for c in text if 32 <= ord(c) < 127)
    return (cleaned or "LOCALPAY")[:limit]


def merchant_payload(config: Config, amount: int, reference: str) -> str:
    """The dynamic MPM payload for this till, ``amount`` won and sale ``reference``.

    Raises :class:`~localpay.errors.QRFormatError` when the config cannot make a valid code
    (the kiosk checks this once at start-up, see :func:`check_config`).
    """
    t = config.terminal
    name = _ascii(t.merchant_name, 25)
    local = t.merchant_name if name != t.merchant_name else ""
    return build_dynamic(
        amount,
        merchant_name=name,
        city=_ascii(t.city, 15),
        reference=_ascii(reference, 25),
        merchant_id=_ascii(t.place, 32),
        mcc=_MCC.get(t.merchant_category, "5999"),
        terminal_label=_ascii(t.id, 25),
        name_local=local[:25],
    )


def check_config(config: Config) -> None:
    """Refuse, at start-up, a till config that cannot make a merchant QR code."""
    try:
        merchant_payload(config, 1, "check")
    except QRFormatError as err:
        raise ConfigError(f"the till's QR code cannot be made from this config "
                          f"(terminal.merchant_name, city, place, id): {err}") from err


Matrix = Sequence[Sequence[int]]


def till_symbol(payload: str) -> segno.QRCode:
    """The till's code as a QR symbol: a full QR code (never Micro QR: phone apps and zbar
    skip those), one byte-mode segment (MPM §4.12.1.1) of the UTF-8 payload, behind ECI
    000026 when the Language Template 64 is there (MPM §4.12.1.2). Left to itself, segno
    picks alphanumeric or kanji mode for some payloads and never writes an ECI."""
    return segno.make_qr(payload, error="m", mode="byte", encoding="utf-8",
                         eci=uses_eci(payload))


def qr_matrix(payload: str) -> Matrix:
    """The modules of :func:`till_symbol`."""
    return till_symbol(payload).matrix


def qr_surface(payload: str | Matrix, side: int) -> pygame.Surface:
    """A white square of at most ``side`` pixels with the code in whole-pixel modules.

    Takes the payload, or its matrix already made (:func:`qr_matrix` is the slow part and
    may run on another thread). Whole pixels per module and a 4-module quiet zone
    (ISO/IEC 18004 §9.1) keep it readable by a phone camera at arm's length.
    """
    matrix = qr_matrix(payload) if isinstance(payload, str) else payload
    n = len(matrix)
    total = n + 8
    module = max(1, side // total)
    white, black = b"\xff\xff\xff", b"\x00\x00\x00"
    quiet_row = white * total
    rows = [quiet_row] * 4
    for row in matrix:
        rows.append(white * 4 + b"".join(black if dark else white for dark in row) + white * 4)
    rows += [quiet_row] * 4
    # one pixel per module, then scaled up: nearest-neighbour keeps the edges sharp
    small = pygame.image.frombytes(b"".join(rows), (total, total), "RGB")
    return pygame.transform.scale(small, (total * module, total * module))
