"""QR codes from a camera: frames from ``pygame.camera`` (V4L2), decoded by zbar (pyzbar).

A worker thread grabs frames and decodes them, so a slow decode never blocks the terminal;
:meth:`CameraScanner.poll` only waits on the worker's queue. The same code seen again
within ``repeat_window_s`` (a phone held in front of the lens for a few seconds) is reported
once; the window restarts each time the code is seen, so it is reported again only after it
has been out of sight for that long.

Decoding is restricted to QR symbols (zbar otherwise tries every symbology, about 2.5 times
slower) and works on 8-bit grey: the green channel of the camera's RGB frame, which carries
most of the luminance, taken without any colour conversion.

Where frames come from is a :class:`FrameSource`; :class:`PygameCamera` is the real one and
:class:`StillFrames` plays prepared frames (the demo and the tests; see
:func:`render_qr_frame`).

=========================  ===========================================================
can sense                  QR codes (Model 2) on a screen or on paper, at any rotation,
                           several in one frame
cannot sense               cards; Micro QR (zbar cannot decode it); codes smaller than
                           about 3 camera pixels per module; anything in the dark
=========================  ===========================================================
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pyzbar import pyzbar
from pyzbar.pyzbar import ZBarSymbol

from drivers.base import Scanner
from localpay.errors import ConfigError, ReaderUnavailableError
from localpay.types import Presentation

log = logging.getLogger(__name__)
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")


@dataclass(frozen=True, slots=True)
class Frame:
    """One 8-bit grey frame, row by row."""

    gray: bytes
    width: int
    height: int


class FrameSource(Protocol):
    def read(self, timeout: float) -> Frame | None:
        """The next frame, or None when none came within ``timeout`` seconds."""
        ...

    def close(self) -> None: ...


def decode_frame(frame: Frame) -> list[str]:
    """Every QR code zbar finds in ``frame``, as text (codes that are not UTF-8 are skipped)."""
    found = pyzbar.decode((frame.gray, frame.width, frame.height), symbols=[ZBarSymbol.QRCODE])
    texts = []
    for symbol in found:
        try:
            texts.append(symbol.data.decode("utf-8"))
        except UnicodeDecodeError:
            log.warning("QR code that is not UTF-8 text ignored (%d bytes)", len(symbol.data))
    return texts


# -- frame sources --------------------------------------------------------------------------


class PygameCamera:
    """A V4L2 camera through ``pygame.camera``, by index in its list or by device path."""

    def __init__(self, index: int = 0, device: str | None = None,
                 size: tuple[int, int] = (640, 480)) -> None:
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        import pygame
        import pygame.camera

        pygame.camera.init()
        if device is None:
            cameras = pygame.camera.list_cameras()
            if index >= len(cameras):
                raise ReaderUnavailableError(
                    f"no camera number {index}; cameras found: {cameras or 'none'}")
            device = cameras[index]
        try:
            self._cam = pygame.camera.Camera(device, size, "RGB")
            self._cam.start()
        except Exception as err:  # pygame raises SystemError/ValueError for V4L2 failures
            raise ReaderUnavailableError(f"cannot start camera {device!r}: {err}") from err
        self.device = device
        self._pygame = pygame

    def read(self, timeout: float) -> Frame | None:
        deadline = time.monotonic() + timeout
        while not self._cam.query_image():
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.005)
        surface = self._cam.get_image()
        width, height = surface.get_size()
        rgb = self._pygame.image.tobytes(surface, "RGB")
        return Frame(rgb[1::3], width, height)

    def close(self) -> None:
        self._cam.stop()


class StillFrames:
    """Prepared frames played in a loop at ``fps`` (a camera that always sees the same)."""

    def __init__(self, frames: Sequence[Frame], fps: float = 30.0, *, loop: bool = True) -> None:
        if not frames:
            raise ConfigError("StillFrames needs at least one frame")
        self.frames = list(frames)
        self.interval = 1.0 / fps
        self.loop = loop
        self._i = 0
        self._closed = threading.Event()

    def read(self, timeout: float) -> Frame | None:
        if self._i >= len(self.frames):
            if not self.loop:
                self._closed.wait(timeout)
                return None
            self._i = 0
        if self._closed.wait(min(self.interval, timeout)):
            return None
        frame = self.frames[self._i]
        self._i += 1
        return frame

    def close(self) -> None:
        self._closed.set()


def render_qr_frame(text: str, *, width: int = 640, height: int = 480, module_px: int = 5,
                    angle: float = 0.0, scale: float = 1.0, blur: int = 0, noise: int = 0,
                    seed: int = 0) -> Frame:
    """A camera-like grey frame of a QR code made by segno: rotated by ``angle`` degrees,
    scaled, box-blurred ``blur`` times and with uniform noise of ``±noise`` grey levels."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    import pygame
    import segno

    code = segno.make_qr(text, error="m")  # never Micro QR: zbar cannot read it
    matrix = [list(row) for row in code.matrix]
    n = len(matrix)
    side = (n + 8) * module_px
    sym = pygame.Surface((side, side))
    sym.fill((255, 255, 255))
    for y, row in enumerate(matrix):
        for x, dark in enumerate(row):
            if dark:
                sym.fill((0, 0, 0), ((x + 4) * module_px, (y + 4) * module_px,
                                     module_px, module_px))
    if scale != 1.0:
        sym = pygame.transform.smoothscale(sym, (int(side * scale), int(side * scale)))
    if angle:
        sym = pygame.transform.rotozoom(sym, angle, 1.0)
    frame = pygame.Surface((width, height))
    frame.fill((200, 200, 200))
    rect = sym.get_rect(center=(width // 2, height // 2))
    frame.blit(sym, rect)
    for _ in range(blur):
        small = pygame.transform.smoothscale(frame, (width // 2, height // 2))
        frame = pygame.transform.smoothscale(small, (width, height))
    gray = bytearray(pygame.image.tobytes(frame, "RGB")[1::3])
    if noise:
        rng = random.Random(seed)
        for i in range(len(gray)):
            gray[i] = max(0, min(255, gray[i] + rng.randint(-noise, noise)))
    return Frame(bytes(gray), width, height)


def load_frame(path: str) -> Frame:
    """A frame from an image file (PNG and whatever pygame reads)."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    import pygame

    surface = pygame.image.load(path)
    width, height = surface.get_size()
    return Frame(pygame.image.tobytes(surface, "RGB")[1::3], width, height)


def save_frame(frame: Frame, path: str) -> None:
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    import pygame

    rgb = bytes(b for g in frame.gray for b in (g, g, g))
    pygame.image.save(pygame.image.frombytes(rgb, (frame.width, frame.height), "RGB"), path)


# -- the scanner ----------------------------------------------------------------------------


class CameraScanner(Scanner):
    """QR codes from ``frames`` (default: camera ``index`` or ``device`` through pygame)."""

    kind = "camera"

    def __init__(self, index: int = 0, *, device: str | None = None,
                 size: tuple[int, int] = (640, 480), name: str | None = None,
                 repeat_window_s: float = 3.0, frames: FrameSource | None = None) -> None:
        super().__init__(name or f"camera:{device or index}", debounce_s=0.0)
        self.repeat_window_s = repeat_window_s
        self._source: Any = frames if frames is not None else PygameCamera(index, device, size)
        self._found: queue.Queue[str] = queue.Queue()
        self._seen: dict[str, float] = {}
        self._halt = threading.Event()
        #: frames decoded so far, and the time spent decoding them (for diagnostics)
        self.frames_decoded = 0
        self.decode_seconds = 0.0
        self._worker = threading.Thread(target=self._work, name=f"{self.name}-decoder",
                                        daemon=True)
        self._worker.start()

    def _work(self) -> None:
        while not self._halt.is_set():
            try:
                frame = self._source.read(0.25)
            except Exception as err:  # a camera that failed: say so once a second, go on
                log.warning("%s: frame grab failed: %s", self.name, err)
                self._halt.wait(1.0)
                continue
            if frame is None:
                continue
            started = time.perf_counter()
            texts = decode_frame(frame)
            self.decode_seconds += time.perf_counter() - started
            self.frames_decoded += 1
            now = time.monotonic()
            for text in texts:
                last = self._seen.get(text)
                self._seen[text] = now
                if last is None or now - last >= self.repeat_window_s:
                    self._found.put(text)
            if len(self._seen) > 256:  # forget codes long out of sight
                self._seen = {t: s for t, s in self._seen.items()
                              if now - s < self.repeat_window_s}

    def _poll_internal(self, timeout: float) -> Presentation | None:
        try:
            text = self._found.get(timeout=timeout)
        except queue.Empty:
            return None
        self.forget()  # repeats are already filtered by the worker's window
        return Presentation(kind="qr", reader=self.name, payload=text)

    def _close_internal(self) -> None:
        self._halt.set()
        self._source.close()
        self._worker.join(5.0)
