"""Short tones for approve, decline and already-paid, generated at start-up.

A rising two-note chirp for an approval, one low buzz for a decline, two short low beeps
for a duplicate tap: different in pitch *and* rhythm, so a rider hears which without
looking. Samples are made with the ``array`` module in the mixer's own format (no numpy).
"""

from __future__ import annotations

import logging
import math
from array import array
from dataclasses import dataclass
from typing import Literal

import pygame

log = logging.getLogger(__name__)

Tone = Literal["approved", "declined", "already_paid", "claim_pending"]

#: (frequency Hz or 0 for silence, milliseconds) per note
PATTERNS: dict[Tone, tuple[tuple[float, int], ...]] = {
    "approved": ((1318.5, 70), (0, 15), (1760.0, 110)),
    "declined": ((220.0, 380),),
    "already_paid": ((440.0, 90), (0, 60), (440.0, 90)),
    # a campaign code read, a card still to come: a rising prompt, neither yes nor no
    "claim_pending": ((880.0, 80), (0, 40), (1174.7, 80), (0, 40), (1568.0, 80)),
}
_VOLUME = 0.45
#: fade in/out per note, so notes start and stop without a click
_RAMP_MS = 6


def samples(tone: Tone, rate: int, channels: int) -> array[int]:
    """Signed 16-bit samples of ``tone``, interleaved for ``channels``."""
    out = array("h")
    peak = int(32767 * _VOLUME)
    for freq, ms in PATTERNS[tone]:
        n = rate * ms // 1000
        ramp = max(1, rate * _RAMP_MS // 1000)
        for i in range(n):
            if freq:
                envelope = min(1.0, i / ramp, (n - 1 - i) / ramp)
                # a little third harmonic makes a small speaker louder than a pure sine
                phase = 2 * math.pi * freq * i / rate
                value = int(peak * envelope * (0.8 * math.sin(phase) + 0.2 * math.sin(3 * phase)))
            else:
                value = 0
            for _ in range(channels):
                out.append(value)
    return out


@dataclass
class Tones:
    """The three sounds, or silence when there is no audio device."""

    sounds: dict[Tone, pygame.mixer.Sound]

    @classmethod
    def load(cls) -> Tones:
        try:
            if not pygame.mixer.get_init():
                pygame.mixer.init(frequency=22050, size=-16, channels=1, buffer=512)
            init = pygame.mixer.get_init()
        except pygame.error as err:
            log.warning("no sound: the mixer did not start (%s)", err)
            return cls({})
        if init is None:
            return cls({})
        rate, size, channels = init
        if size != -16:
            # pygame converts a buffer only if it is in the mixer's format; we make 16-bit
            log.warning("no sound: mixer format %s is not signed 16-bit", size)
            return cls({})
        made = {}
        for tone in PATTERNS:
            made[tone] = pygame.mixer.Sound(buffer=samples(tone, rate, channels).tobytes())
        return cls(made)

    def play(self, tone: Tone) -> None:
        sound = self.sounds.get(tone)
        if sound is not None:
            pygame.mixer.stop()  # a new decision cuts off the last one's tone
            sound.play()
