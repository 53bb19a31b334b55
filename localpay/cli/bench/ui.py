"""``localpay bench ui``: frame times of the kiosk while cards are tapped and sync runs.

Issue "Kiosk screens", Performance: a decision appears on screen in the next frame, frame
time p99 under 16 ms at 800×480 on a 2-core machine while the sync client runs in the
background; RSS of the whole process under 120 MB.

What is measured, per role (validator, then till), over ``frames`` frames paced at 60 fps:
the work of each frame (input, engine events, a *full* redraw forced every frame, flip),
the interval between frame starts, and for every decision the time from the engine having
it to the flip that shows it. Cards come through the real engine threads into a real
terminal over a real ledger on disk (signed, ``synchronous=FULL``), pre-filled with
``prefill`` entries. In the background the real sync client uploads to the reference
central service (a child process at lower priority, as if it were on another machine);
where that cannot start, a stand-in thread reads and hashes the ledger instead, and the
result says which ran.

Beside the figure, its floor measured in the same run: the bare pipeline, the same screens
redrawn in full every frame with no card, no engine work and no sync in the background
(``floor_bare_redraw``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import queue
import resource
import secrets
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_cfg.config import DEFAULT, Config
from localpay.errors import LocalpayError
from localpay.types import Presentation
from terminal.core import Terminal
from terminal.home import Home, open_terminal

log = logging.getLogger(__name__)

SIZE = (800, 480)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def _summary(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(_percentile(values, 50), 3),
            "p99_ms": round(_percentile(values, 99), 3),
            "max_ms": round(max(values, default=0.0), 3)}


def _rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MB."""
    current = 0.0
    with contextlib.suppress(OSError), open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                current = int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return round(current, 1), round(peak, 1)


def _card(n: int) -> Presentation:
    return Presentation(kind="card", reader="bench", uid=b"\x08\xbe" + n.to_bytes(4, "big"),
                        protocol="UID", sensed_at=time.monotonic())


def _config(role: str) -> Config:
    cfg = DEFAULT.replace("terminal", role=role, id=f"BENCH-{role.upper()}",
                          place="85" if role == "validator" else "M0001",
                          merchant_name="Bench Store")
    # a long offline run: lift the terminal-wide cap, as `localpay simulate` does
    return cfg.replace("risk", terminal_exposure=10**12, unknown_clock_amount=10**12)


def _prefill(terminal: Terminal, count: int) -> None:
    for n in range(count):
        if terminal.role == "validator":
            terminal.tap(_card(1_000_000 + n))
        else:
            terminal.pay(_card(1_000_000 + n), 1_000 + n % 9_000)


@contextlib.contextmanager
def _stand_in(path: Path) -> Iterator[str]:
    """A sync-like load: read the ledger in batches through its own connection and hash."""
    stop = threading.Event()

    def work() -> None:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            while not stop.is_set():
                last = 0
                while not stop.is_set():
                    rows = conn.execute("SELECT * FROM entries WHERE seq > ? ORDER BY seq "
                                        "LIMIT 500", (last,)).fetchall()
                    if not rows:
                        break
                    batch = [{"seq": r[0], "h": hashlib.sha256(repr(r).encode()).hexdigest()}
                             for r in rows]
                    json.dumps(batch)
                    last = rows[-1][0]
                    stop.wait(0.01)
                stop.wait(0.5)
        finally:
            conn.close()

    thread = threading.Thread(target=work, name="bench-sync-stand-in", daemon=True)
    thread.start()
    try:
        yield "stand-in: ledger reads + SHA-256 in a thread (the sync client could not start)"
    finally:
        stop.set()
        thread.join(5)


@contextlib.contextmanager
def _background(folder: Path, path: Path, key: Ed25519PrivateKey,
                terminal_id: str) -> Iterator[tuple[str, Any]]:
    with contextlib.ExitStack() as stack:
        try:
            from localpay.cli.ui import central_in_background, sync_link

            client = stack.enter_context(
                central_in_background(folder, path, key, terminal_id, interval_s=1.0))
            what = "real: sync.client.SyncClient every 1 s to the reference central service"
            link = sync_link(client)
        except (ImportError, LocalpayError) as err:
            log.warning("sync client not available for the benchmark (%s); using a stand-in",
                        err)
            what = stack.enter_context(_stand_in(path))
            link = None
        yield what, link


class _Driver:
    """Plays a busy clerk or a busy bus door through the real screens, one action a frame."""

    def __init__(self, app: Any, cards: queue.Queue[Presentation]) -> None:
        self.app = app
        self.cards = cards
        self.n = 0
        self.cycle = 0
        self.since = 0

    def act(self, frame: int) -> None:
        from kiosk_ui.model import Screen

        model = self.app.model
        if model.role == "validator":
            if frame % 6 == 0:  # 10 taps a second; every 5th card taps twice (already paid)
                self.n += 1
                self.cards.put(_card(self.n - 1 if self.n % 5 == 0 else self.n))
            return
        screen = model.screen
        self.since = self.since + 1 if screen == getattr(self, "_last", None) else 0
        self._last = screen
        if screen == Screen.KEYPAD:
            if self.cycle % 5 == 4 and not model.digits:
                self._press("menu:today")
            elif len(model.digits) < 4:
                self._press(f"digit:{'1200'[len(model.digits)]}")
            else:
                self.cycle += 1
                self._press("pay:qr" if self.cycle % 3 == 0 else "pay:card")
        elif screen in (Screen.WAIT_CARD, Screen.WAIT_QR) and self.since == 8:
            self.n += 1
            self.cards.put(_card(self.n))
        elif screen == Screen.RESULT and self.since >= 10:
            self._press("ok")
        elif screen == Screen.TODAY and self.since >= 10:
            self.cycle += 1
            self._press("back")

    def _press(self, ident: str) -> None:
        rect = self.app.button_rect(ident)
        if rect is not None:
            self.app.touch(rect.center)


def _bare_redraw(terminal: Terminal, frames: int) -> list[float]:
    """Work per frame of full redraws of the idle screen: no card, no sync."""
    from kiosk_ui.app import KioskApp

    app = KioskApp(terminal, None, size=SIZE)
    try:
        app.start()
        app.step(force=True)  # the first frame draws the statics, as in the measured run
        return [app.step(force=True).work_ms for _ in range(frames)]
    finally:
        app.close()


def _run_role(role: str, frames: int, prefill: int, folder: Path) -> dict[str, Any]:
    from kiosk_ui.app import FPS, KioskApp

    cfg = _config(role)
    home = Home(folder / role)
    terminal = open_terminal(home, cfg, create_keys=True, token_key=secrets.token_bytes(32))
    ledger = terminal.ledger
    if ledger is None:
        raise terminal.fault or LocalpayError("no ledger")
    key = home.terminal_key(cfg)
    path = home.ledger_path
    try:
        _prefill(terminal, prefill)
        bare = _bare_redraw(terminal, max(60, frames // 10))
        cards: queue.Queue[Presentation] = queue.Queue()

        def source(timeout: float) -> Presentation | None:
            try:
                return cards.get(timeout=timeout)
            except queue.Empty:
                return None

        with _background(folder / role, path, key, cfg.terminal.id) as (what, link):
            app = KioskApp(terminal, source, size=SIZE, link=link)
            work: list[float] = []
            intervals: list[float] = []
            decisions: list[float] = []
            outcomes: dict[str, int] = {}
            driver = _Driver(app, cards)
            try:
                app.start()
                app.step(force=True)
                period = 1.0 / FPS
                next_at = time.perf_counter()
                last_start = None
                for frame in range(frames):
                    now = time.perf_counter()
                    if next_at > now:
                        time.sleep(next_at - now)
                    start = time.perf_counter()
                    if last_start is not None:
                        intervals.append((start - last_start) * 1000)
                    last_start = start
                    next_at = max(next_at + period, start)
                    driver.act(frame)
                    result = app.step(force=True)
                    work.append(result.work_ms)
                    decisions.extend(result.decision_ms)
                    if result.decision_ms and app.model.result is not None:
                        outcome = app.model.result.outcome
                        outcomes[outcome] = outcomes.get(outcome, 0) + 1
                synced = ledger.synced_upto()
            finally:
                app.close()
            head = ledger.head.seq
    finally:
        ledger.close()
    return {
        "frames": len(work),
        **_summary(work),
        "work": work,
        "bare": bare,
        "bare_redraw": _summary(bare),
        "interval": _summary(intervals),
        "decision_to_pixels": {"count": len(decisions), **_summary(decisions)},
        "outcomes": outcomes,
        "ledger_head": head,
        "synced_upto": synced,
        "sync": what,
    }


def bench_ui(frames: int = 600, *, prefill: int = 1000) -> dict[str, Any]:
    """Frame time p50/p99/max (ms) at 800×480 and RSS (MB), validator and till."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="localpay-bench-ui-") as tmp:
        roles = {role: _run_role(role, frames, prefill, Path(tmp))
                 for role in ("validator", "till")}
    work = [ms for r in roles.values() for ms in r.pop("work")]
    bare = [ms for r in roles.values() for ms in r.pop("bare")]
    current, peak = _rss_mb()
    return {
        "size": f"{SIZE[0]}x{SIZE[1]}",
        "frames": len(work),
        **_summary(work),
        "floor_bare_redraw": {"frames": len(bare), **_summary(bare)},
        "rss_mb": current,
        "rss_peak_mb": peak,
        "video_driver": os.environ.get("SDL_VIDEODRIVER", ""),
        # other work on the machine shows up in frame times: say how busy it was
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                   f"{platform.python_version()}",
        "roles": roles,
    }
