"""The kiosk: one window, the screens, the engine's threads, touches, keys and tones.

The screen thread only draws and dispatches: every frame it takes the pygame events (touch,
mouse, keys), drains the engine's outbox, lets the model's timers run and, when anything
changed, redraws the whole screen. It never waits on a reader or the ledger.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pygame

from kiosk_ui.clerks import ClerkDesk
from kiosk_ui.draw import Painter
from kiosk_ui.engine import Engine, LinkState, PresentationSource
from kiosk_ui.fonts import Fonts, load_fonts
from kiosk_ui.i18n import Language
from kiosk_ui.model import Command, KioskModel, Pay, Result, SyncView
from kiosk_ui.qr import check_config, merchant_payload
from kiosk_ui.screens import Statics, render
from kiosk_ui.service import Blocker
from kiosk_ui.tones import Tones
from terminal.core import Terminal
from terminal.mpm_online import Link as MpmLink
from terminal.receipt import ReceiptDesk

log = logging.getLogger(__name__)

FPS = 60
#: GIL hand-over interval while the kiosk runs (CPython's default is 5 ms)
SWITCH_INTERVAL_S = 0.001
#: key names pygame gives for the numeric keypad, mapped to the main keys'
_KEY_ALIASES = {"enter": "return", **{f"[{n}]": str(n) for n in range(10)}}


@dataclass(frozen=True)
class Frame:
    """What one call of :meth:`KioskApp.step` did."""

    work_ms: float
    drawn: bool
    #: for each decision first shown in this frame: ms from the engine having it to pixels
    decision_ms: tuple[float, ...] = ()


class KioskApp:
    """The kiosk over ``terminal``, fed by ``source`` (see :class:`~kiosk_ui.engine.Engine`).

    ``shortcuts`` maps key names (``"f1"``) to callables, for the demo's test cards.
    ``size`` is the window size; ``fullscreen`` takes the display's own size instead.
    ``home`` is the terminal's home folder (checked for a read-only file system when no
    ledger is open to tell where it is); ``blockers`` are causes found before the terminal
    existed, such as a missing key (see :mod:`kiosk_ui.service`). ``mpm`` is a till's link
    to central's online QR payments (``sync.mpm.MpmLink``): the sale's QR code can then be
    paid from the citizen's app (:mod:`kiosk_ui.engine`); None: the code is the offline one.
    """

    def __init__(
        self,
        terminal: Terminal,
        source: PresentationSource | Sequence[PresentationSource] | None,
        *,
        size: tuple[int, int] = (800, 480),
        fullscreen: bool = False,
        language: Language | None = None,
        demo: bool = False,
        shortcuts: dict[str, Callable[[], None]] | None = None,
        link: LinkState | None = None,
        sound: bool = True,
        fonts: Fonts | None = None,
        idle_task: Callable[[], None] | None = None,
        home: Path | None = None,
        blockers: Sequence[Blocker] = (),
        receipts: ReceiptDesk | None = None,
        mpm: MpmLink | None = None,
    ) -> None:
        config = terminal.config
        self.terminal = terminal
        self.fonts = fonts or load_fonts()
        pygame.display.init()
        flags = pygame.FULLSCREEN if fullscreen else 0
        self.screen = pygame.display.set_mode((0, 0) if fullscreen else size, flags)
        pygame.display.set_caption("localpay")
        if fullscreen:
            pygame.mouse.set_visible(False)  # a touch kiosk: no pointer over the screens
        if terminal.role == "till":
            check_config(config)
        self.tones = Tones.load() if sound else Tones({})
        t = config.terminal
        self.model = KioskModel(
            role=terminal.role,
            language=language or t.language,
            place=t.place,
            merchant_name=t.merchant_name,
            fare=config.fares.default_fare if terminal.role == "validator" else 0,
            demo=demo,
            max_amount=config.risk.max_amount,
            desk=ClerkDesk(config.clerk) if config.clerk and terminal.role == "till" else None,
        )
        self.statics = Statics(
            qr_payload=(lambda amount, ref: merchant_payload(config, amount, ref))
            if terminal.role == "till" else None,
            background=True,
        )
        self.painter = Painter(self.screen, self.fonts)
        self.engine = Engine(terminal, source, link=link, idle_task=idle_task, home=home,
                             blockers=blockers, receipts=receipts, mpm=mpm)
        #: whether any status came, and whether one found the terminal able to approve
        self.status_seen = False
        self.in_service_seen = False
        self.shortcuts = dict(shortcuts or {})
        self.running = False
        self._drawn_version = -1
        self._started = False
        self._switch_interval = sys.getswitchinterval()
        self.latencies: deque[float] = deque(maxlen=1000)

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        if not self._started:
            # A sync client busy in Python code on another thread would otherwise keep the
            # GIL for 5 ms at a time, several times a frame: measured p99 frame time went
            # from over 100 ms to about 10 ms with 1 ms (`localpay bench ui`).
            self._switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(SWITCH_INTERVAL_S)
            self.engine.start()
            self._started = True
            self.running = True

    def close(self) -> None:
        self.running = False
        if self._started:
            self.engine.stop()
            self._started = False
            sys.setswitchinterval(self._switch_interval)
        self.statics.close()
        pygame.display.quit()

    def __enter__(self) -> KioskApp:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, *, seconds: float | None = None) -> None:
        """The main loop, until the window closes, Ctrl+Q, or ``seconds`` pass."""
        self.start()
        clock = pygame.time.Clock()
        until = None if seconds is None else time.monotonic() + seconds
        while self.running:
            self.step()
            if until is not None and time.monotonic() >= until:
                break
            clock.tick(FPS)

    # -- one frame -------------------------------------------------------------------------

    def step(self, *, force: bool = False) -> Frame:
        """Handle input and engine events, redraw if anything changed (or ``force``)."""
        started = time.perf_counter()
        for event in pygame.event.get():
            self._input(event)
        shown: list[float] = []
        for item in self.engine.events():
            if isinstance(item, SyncView):
                self.status_seen = True
                self.in_service_seen = self.in_service_seen or not item.blocked
            self._send(self.model.on_event(item))
            if isinstance(item, Result):
                shown.append(item.at)
                self.tones.play(item.view.outcome)
        self._send(self.model.tick())
        drawn = (force or self.model.version != self._drawn_version
                 or self.statics.take_ready())
        latencies: tuple[float, ...] = ()
        if drawn:
            self._drawn_version = self.model.version
            render(self.painter, self.model, self.statics)
            pygame.display.flip()
            done = time.perf_counter()
            latencies = tuple((done - at) * 1000 for at in shown)
            self.latencies.extend(latencies)
        return Frame((time.perf_counter() - started) * 1000, drawn, latencies)

    def _send(self, commands: list[Command]) -> None:
        for command in commands:
            self.engine.send(command)
            if isinstance(command, Pay) and command.method == "qr" and self.model.sale_ref:
                # the code on screen names this reference: an app may pay it online
                self.engine.sell_online(command.amount, self.model.sale_ref)

    def _input(self, event: pygame.event.Event) -> None:
        if event.type == pygame.QUIT:
            self.running = False
        elif event.type == pygame.KEYDOWN:
            name = pygame.key.name(event.key)
            name = _KEY_ALIASES.get(name, name)
            if name == "q" and event.mod & pygame.KMOD_CTRL:
                self.running = False
            elif name in self.shortcuts:
                self.shortcuts[name]()
            else:
                self._send(self.model.key(name))
        elif event.type == pygame.MOUSEBUTTONDOWN:
            # SDL also reports a touch as a mouse click; the FINGERDOWN is the one we use
            if event.button == 1 and not getattr(event, "touch", False):
                self.touch(event.pos)
        elif event.type == pygame.FINGERDOWN:
            w, h = self.screen.get_size()
            self.touch((int(event.x * w), int(event.y * h)))

    def touch(self, pos: tuple[int, int]) -> str | None:
        """A touch at ``pos`` on the last frame drawn; returns the button it hit."""
        button = self.painter.hit(pos)
        if button is not None:
            self._send(self.model.press(button))
        return button

    def save_frame(self, path: Path) -> None:
        """The last frame drawn, as a PNG (burn-in checks, a technician's report)."""
        pygame.image.save(self.screen, str(path))

    @property
    def out_of_service_throughout(self) -> bool:
        """Every status since the start found the terminal unable to approve."""
        return self.status_seen and not self.in_service_seen

    def button_rect(self, ident: str) -> pygame.Rect | None:
        """Where button ``ident`` is on the last frame drawn (None: not there or disabled)."""
        for name, rect in self.painter.buttons:
            if name == ident:
                return rect
        return None
