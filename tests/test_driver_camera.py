"""The ``camera`` backend: real zbar (pyzbar) on frames rendered from segno-made QR codes.

The camera itself cannot exist on this machine (no V4L2 device): frames come from
:class:`drivers.camera.StillFrames` instead of :class:`drivers.camera.PygameCamera`, which
is exercised only as far as finding no camera. Everything after the frame grab (the
worker thread, zbar, the repeat window) is the real code path.
"""

from __future__ import annotations

import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

from drivers import open_reader
from drivers.camera import (
    CameraScanner,
    Frame,
    PygameCamera,
    StillFrames,
    decode_frame,
    load_frame,
    render_qr_frame,
)
from localpay.errors import ConfigError, ReaderUnavailableError

DATA = Path(__file__).parent / "data"
WALLET = "LPW1.eyJ3IjoiMDAxIiwiYSI6NTAwMCwibiI6ImFiY2RlZiJ9.c2lnbmF0dXJlLWJ5dGVz"
BLANK = Frame(bytes([200]) * (640 * 480), 640, 480)


@pytest.mark.parametrize("options", [
    {},
    {"angle": 33},
    {"angle": 90},
    {"angle": 180},
    {"scale": 0.7},
    {"scale": 1.6},
    {"blur": 2},
    {"noise": 40, "seed": 1},
    {"noise": 40, "angle": 17, "seed": 2},
    {"module_px": 3},
    {"angle": -20, "scale": 0.8, "blur": 1},
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "plain")
def test_qr_decodes_from_camera_like_frames(options: dict[str, float]) -> None:
    frame = render_qr_frame(WALLET, **options)  # type: ignore[arg-type]
    assert (frame.width, frame.height) == (640, 480)
    assert decode_frame(frame) == [WALLET]


def test_unreadable_frames_give_nothing() -> None:
    assert decode_frame(BLANK) == []
    # heavy noise on 3-pixel modules is beyond zbar: the scanner must simply see nothing
    assert decode_frame(render_qr_frame(WALLET, module_px=3, noise=110, blur=1, seed=3)) == []


def test_stored_camera_frame_decodes() -> None:
    frame = load_frame(str(DATA / "qr_wallet_rotated30_scaled80_blur1_640x480.png"))
    assert decode_frame(frame) == [WALLET]


def test_short_text_is_never_micro_qr() -> None:
    assert decode_frame(render_qr_frame("A1")) == ["A1"]


def test_scanner_reports_a_code_once_while_it_stays_in_view() -> None:
    frames = StillFrames([render_qr_frame(WALLET)], fps=60)
    with closing(CameraScanner(frames=frames, repeat_window_s=30.0)) as cam:
        p = cam.poll(15.0)
        assert p is not None and p.kind == "qr" and p.payload == WALLET
        assert cam.poll(1.0) is None  # still in front of the lens: not a second scan
        assert cam.frames_decoded > 1


def test_scanner_reports_again_after_the_window() -> None:
    code = render_qr_frame("LPW1.second")
    # the code, then a long stretch of nothing, then the code again
    frames = StillFrames([code] + [BLANK] * 40 + [code], fps=60, loop=False)
    with closing(CameraScanner(frames=frames, repeat_window_s=0.2)) as cam:
        first = cam.poll(15.0)
        second = cam.poll(15.0)
        assert first is not None and second is not None
        assert first.payload == second.payload == "LPW1.second"


def test_two_codes_in_sequence() -> None:
    frames = StillFrames([render_qr_frame("CODE-ONE"), render_qr_frame("CODE-TWO")], fps=30)
    with closing(CameraScanner(frames=frames, repeat_window_s=30.0)) as cam:
        got = {p.payload for p in (cam.poll(15.0), cam.poll(15.0)) if p is not None}
        assert got == {"CODE-ONE", "CODE-TWO"}


def test_stop_and_close_end_the_worker() -> None:
    cam = CameraScanner(frames=StillFrames([BLANK], fps=30))
    out: list[object] = []
    t = threading.Thread(target=lambda: out.append(cam.poll(120.0)))
    t.start()
    time.sleep(0.1)
    cam.stop()
    t.join(10.0)
    assert not t.is_alive() and out == [None]
    cam.close()
    assert not cam._worker.is_alive()


def test_no_camera_on_this_machine_is_a_clear_error() -> None:
    with pytest.raises(ReaderUnavailableError, match="camera"):
        PygameCamera(7)
    with pytest.raises(ReaderUnavailableError):
        open_reader("camera", index=7)


def test_still_frames_need_frames() -> None:
    with pytest.raises(ConfigError):
        StillFrames([])
