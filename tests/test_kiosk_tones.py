"""The approve, decline and already-paid tones: generated samples with the intended pitch
and length, loaded into the real mixer (SDL's dummy audio driver)."""

from __future__ import annotations

from array import array

import pygame
import pytest

from kiosk_ui.tones import PATTERNS, Tone, Tones, samples

RATE = 22050


def _crossings(data: array, start: int, end: int) -> int:
    return sum(1 for i in range(start + 1, end) if (data[i - 1] < 0) != (data[i] < 0))


@pytest.mark.parametrize("tone", list(PATTERNS))
def test_length_and_pitch_of_each_note(tone: Tone) -> None:
    data = samples(tone, RATE, 1)
    assert len(data) == sum(RATE * ms // 1000 for _, ms in PATTERNS[tone])
    start = 0
    for freq, ms in PATTERNS[tone]:
        n = RATE * ms // 1000
        if freq:
            # a sine (plus its 3rd harmonic) crosses zero twice per period
            measured = _crossings(data, start, start + n) / 2 / (ms / 1000)
            assert abs(measured - freq) / freq < 0.05, (tone, freq, measured)
            assert max(abs(v) for v in data[start:start + n]) > 8000  # audible
        else:
            assert not any(data[start:start + n])
        # notes fade in and out: no click at either end
        assert abs(data[start]) < 1000 and abs(data[start + n - 1]) < 1000
        start += n


def test_approve_and_decline_sound_different() -> None:
    approve = samples("approved", RATE, 1)
    decline = samples("declined", RATE, 1)
    assert approve != decline
    pitch = [f for f, _ in PATTERNS["approved"] if f]
    assert min(pitch) > 2 * max(f for f, _ in PATTERNS["declined"])


def test_stereo_is_interleaved() -> None:
    mono = samples("approved", RATE, 1)
    stereo = samples("approved", RATE, 2)
    assert len(stereo) == 2 * len(mono)
    assert stereo[0::2] == mono and stereo[1::2] == mono


def test_tones_load_into_the_mixer_and_play() -> None:
    pygame.mixer.quit()
    tones = Tones.load()
    try:
        assert set(tones.sounds) == set(PATTERNS)
        rate, _, _ = pygame.mixer.get_init()
        for tone, sound in tones.sounds.items():
            expected = sum(ms for _, ms in PATTERNS[tone]) / 1000
            assert sound.get_length() == pytest.approx(expected, abs=2 / rate + 0.002)
        tones.play("approved")
        tones.play("declined")  # a new decision's tone cuts off the last one
        assert pygame.mixer.get_busy()
    finally:
        pygame.mixer.quit()
