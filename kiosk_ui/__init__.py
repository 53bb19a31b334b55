"""Kiosk screens for the till and the validator (pygame).

Uses only the terminal's public API: a :class:`~terminal.core.Terminal` and a source of
presentations are injected (see :class:`kiosk_ui.app.KioskApp`); nothing here opens a
reader. pygame is imported only when a screen is made, so ``import kiosk_ui`` is cheap.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

# pygame prints a greeting on import; a CLI's stdout is for its own output
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")


def save_screenshots(folder: Path,
                     sizes: Sequence[tuple[int, int]] = ((800, 480), (1280, 720))) -> list[Path]:
    """Save a PNG of every screen state (both roles, both languages) at each size."""
    from kiosk_ui.shots import save_screenshots as save

    return save(Path(folder), sizes)


__all__ = ["save_screenshots"]
