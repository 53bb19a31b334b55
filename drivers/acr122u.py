"""ACR122U LED and buzzer through its pseudo-APDU (ACR122U API v2.04 §6.2).

``FF 00 40 P2 04 T1 T2 REP LINK``: ``P2`` sets the red and green LEDs (final state, update
masks, initial blink state, blink masks), ``T1``/``T2`` are the two halves of a blink in
units of 100 ms, ``REP`` the number of blinks, ``LINK`` when the buzzer sounds (0 never,
1 during T1, 2 during T2, 3 during both). The reader answers ``90 xx`` (xx: LED state).
The reader intercepts the command itself; it never reaches the card.
"""

from __future__ import annotations

from localpay.errors import ParseError

RED_FINAL, GREEN_FINAL = 0x01, 0x02
RED_MASK, GREEN_MASK = 0x04, 0x08
RED_BLINK_START, GREEN_BLINK_START = 0x10, 0x20
RED_BLINK_MASK, GREEN_BLINK_MASK = 0x40, 0x80

BUZZER_OFF, BUZZER_T1, BUZZER_T2, BUZZER_BOTH = 0, 1, 2, 3


def led_buzzer(state: int, t1: int, t2: int, repeat: int, buzzer: int) -> bytes:
    """The LED/buzzer pseudo-APDU; durations in units of 100 ms."""
    for label, value in (("state", state), ("t1", t1), ("t2", t2), ("repeat", repeat)):
        if not 0 <= value <= 0xFF:
            raise ParseError(f"ACR122U {label} must fit in one byte, got {value}")
    if buzzer not in (BUZZER_OFF, BUZZER_T1, BUZZER_T2, BUZZER_BOTH):
        raise ParseError(f"ACR122U buzzer link must be 0 to 3, got {buzzer}")
    return bytes([0xFF, 0x00, 0x40, state, 0x04, t1, t2, repeat, buzzer])


def approved() -> bytes:
    """Green blink of 200 ms with one short beep."""
    return led_buzzer(GREEN_BLINK_MASK | GREEN_BLINK_START | GREEN_MASK, 2, 1, 1, BUZZER_T1)


def declined() -> bytes:
    """Three red blinks, beeping on each."""
    return led_buzzer(RED_BLINK_MASK | RED_BLINK_START | RED_MASK, 1, 1, 3, BUZZER_BOTH)


def is_led_buzzer(apdu: bytes) -> bool:
    return apdu[:3] == b"\xff\x00\x40" and len(apdu) == 9
