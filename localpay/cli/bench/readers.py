"""``localpay bench readers``: the reader stacks' share of a transaction, measured for real.

- APDU round trip through pyscard → pcscd → vpcd → a card in this process;
- a full EMV read (PPSE to the last record, through the EMV card application) the same way;
- EMV read + decision + durable commit: ``Terminal.tap`` on a validator over a real ledger,
  each tap a different card (the card's application is swapped between taps, so the figure
  is not an "already paid" shortcut);
- QR decode time per 640×480 frame (zbar, QR only) over distinct frames: real wallet codes
  (each different), each drawn plain, rotated, scaled, blurred, noisy and with small modules;
  the figure names how many distinct frames there were and how many decoded to their code.

Beside them, the floors of the same run: the APDU round trip (the bare PC/SC pipeline under
an EMV read), the disk's raw ``write``+``fsync`` rate (under the tap's durable commit), and
zbar's scan of a 640×480 frame with no code in it (the bare decode pipeline).

pcscd is reused when one runs (Debian's vpcd reader ``Virtual PCD 00 00``), else started for
the run (``pcscd -f -c`` with a reader of its own on a free port) and stopped afterwards.
Targets (issue "Real readers and scanners"): EMV read + decision + commit p99 < 50 ms on a
2-core machine; QR decode < 20 ms per frame.
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.camera import Frame, decode_frame, render_qr_frame
from drivers.emulators.emv_card import EmvCard
from drivers.emulators.vpcd_card import DEFAULT_PORT, VpcdCard
from drivers.pcsc import PcscReader, list_readers, service_up
from firmware_cfg.config import DEFAULT
from firmware_cfg.keys import DEMO_TOKEN_KEY, demo_issuer_key
from localpay.cli.bench.validator import raw_fsync_rate
from localpay.cli.readers import load_applications
from localpay.cli.simulate import simulation_config
from localpay.errors import ReaderUnavailableError
from offline_ledger import Ledger
from terminal.cards import ReadContext, find_application
from terminal.core import Terminal
from terminal.qr import wallet

Progress = Callable[[str], None]
LIBVPCD = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so"


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def _summary(samples_ms: list[float]) -> dict[str, float]:
    return {"n": len(samples_ms), "p50_ms": _pct(samples_ms, 0.50),
            "p99_ms": _pct(samples_ms, 0.99), "max_ms": round(max(samples_ms), 3)}


def _free_port_pair() -> int:
    for base in range(44100, 46000, 2):
        ok = True
        for port in (base, base + 1):
            with socket.socket() as s:
                try:
                    s.bind(("0.0.0.0", port))
                except OSError:
                    ok = False
        if ok:
            return base
    raise ReaderUnavailableError("no free TCP ports for a vpcd reader")


@contextlib.contextmanager
def pcsc_reader_slot() -> Iterator[tuple[str, int, str]]:
    """(PC/SC reader name, vpcd port, "reused" | "started") for the length of the block."""
    if service_up():
        name = "Virtual PCD 00 00"
        if name not in list_readers():
            raise ReaderUnavailableError("a pcscd runs without the vpcd reader "
                                         f"{name!r} (apt install vsmartcard-vpcd)")
        yield name, DEFAULT_PORT, "reused"
        return
    with tempfile.TemporaryDirectory(prefix="localpay-bench-pcscd-") as tmp:
        port = _free_port_pair()
        conf = Path(tmp) / "reader.conf"
        conf.write_text(f'FRIENDLYNAME "Localpay Bench PCD"\nDEVICENAME /dev/null:{port}\n'
                        f"LIBPATH {LIBVPCD}\nCHANNELID {port}\n")
        proc = subprocess.Popen(["pcscd", "-f", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        name = "Localpay Bench PCD 00 00"
        try:
            deadline = time.monotonic() + 20
            while name not in list_readers():
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise ReaderUnavailableError("pcscd did not start with its vpcd reader")
                time.sleep(0.05)
            yield name, port, "started"
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _echo(apdu: bytes) -> bytes:
    return apdu[1:3] + b"\x90\x00"


def bench_pcsc(apdus: int = 1000, reads: int = 200, taps: int = 200,
               progress: Progress | None = None) -> dict[str, Any]:
    """APDU round trip, full EMV read, and EMV tap (read + decide + commit) through pcscd."""
    load_applications()
    out: dict[str, Any] = {}
    with pcsc_reader_slot() as (name, port, how), \
            tempfile.TemporaryDirectory(prefix="localpay-bench-readers-") as tmp:
        out["pcscd"] = how
        card = VpcdCard(port, _echo, uid=bytes.fromhex("08be0001"))
        reader = PcscReader(name)
        try:
            card.insert()
            p = reader.poll(20.0)
            if p is None:
                raise ReaderUnavailableError(f"no card seen on {name!r}: {reader.describe()}")
            cmd = bytes.fromhex("00b2010c00")
            for _ in range(50):
                reader.transmit(cmd)
            samples = []
            for _ in range(apdus):
                t0 = time.perf_counter()
                reader.transmit(cmd)
                samples.append((time.perf_counter() - t0) * 1000)
            out["apdu_round_trip"] = _summary(samples)
            if progress:
                progress(f"APDU round trip: {out['apdu_round_trip']}")

            card.handler = EmvCard().handle
            found = find_application(p)
            if found is None or found[0] != "emv":
                raise ReaderUnavailableError("the EMV card application is not available")
            read = found[1]
            ctx = ReadContext(DEMO_TOKEN_KEY, 1500, int(time.time() * 1000))
            samples = []
            for _ in range(reads):
                t0 = time.perf_counter()
                read(p, ctx)
                samples.append((time.perf_counter() - t0) * 1000)
            out["emv_read"] = _summary(samples)
            if progress:
                progress(f"full EMV read: {out['emv_read']}")

            cfg = simulation_config(DEFAULT, "validator").replace(
                "terminal", id="BUS-BENCH-0001", place="85")
            ledger = Ledger(Path(tmp) / "ledger.sqlite", key=Ed25519PrivateKey.generate(),
                            terminal_id=cfg.terminal.id)
            try:
                terminal = Terminal(cfg, ledger, DEMO_TOKEN_KEY)
                samples, approved = [], 0
                for i in range(taps):
                    card.handler = EmvCard(pan=f"941012{i:010d}").handle
                    t0 = time.perf_counter()
                    decision = terminal.tap(p)
                    samples.append((time.perf_counter() - t0) * 1000)
                    approved += decision.approved
                out["emv_tap_read_decide_commit"] = {**_summary(samples), "approved": approved}
            finally:
                ledger.close()
            if progress:
                progress(f"EMV read + decision + commit: {out['emv_tap_read_decide_commit']}")
        finally:
            reader.close()
            card.remove()
    return out


def bench_qr(codes: int = 10, rounds: int = 1) -> dict[str, Any]:
    """zbar decode time per 640×480 frame over ``codes`` distinct wallet codes, each drawn
    in six camera-like ways (``codes`` × 6 distinct frames), each frame decoded ``rounds``
    times; and zbar over a frame with no code, the floor."""
    issuer = demo_issuer_key()
    texts = [wallet.make(issuer, f"bench-{i:04d}", now=1_790_000_000, ttl_s=60)
             for i in range(codes)]
    variants: list[dict[str, Any]] = [{}, {"angle": 33}, {"scale": 0.7}, {"blur": 2},
                                      {"noise": 40}, {"module_px": 3}]
    frames = [(",".join(f"{k}={x}" for k, x in v.items()) or "plain", text,
               render_qr_frame(text, **v, **({"seed": n} if "noise" in v else {})))
              for n, text in enumerate(texts) for v in variants]
    by_kind: dict[str, list[float]] = {}
    decoded = 0
    read: set[int] = set()
    for _ in range(rounds):
        for n, (key, text, frame) in enumerate(frames):
            t0 = time.perf_counter()
            ok = decode_frame(frame) == [text]
            by_kind.setdefault(key, []).append((time.perf_counter() - t0) * 1000)
            decoded += ok
            if ok:
                read.add(n)
    everything = [s for samples in by_kind.values() for s in samples]
    empty = Frame(bytes([128]) * (640 * 480), 640, 480)
    floor = []
    for _ in range(max(20, len(frames))):
        t0 = time.perf_counter()
        decode_frame(empty)
        floor.append((time.perf_counter() - t0) * 1000)
    return {"frame": "640x480", "distinct_frames": len(frames),
            "distinct_frames_decoded": len(read), "decodes": len(everything),
            "decoded": f"{decoded}/{len(everything)}",
            **_summary(everything),
            "p50_ms_by_frame": {k: _pct(s, 0.5) for k, s in by_kind.items()},
            "floor_no_code_frame": _summary(floor)}


def bench_readers(progress: Progress | None = None, *, apdus: int = 1000, reads: int = 200,
                  taps: int = 200, codes: int = 10) -> dict[str, Any]:
    """Every reader figure, as one JSON-ready dict."""
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "targets": {"emv_tap_p99_ms": 50, "qr_decode_ms": 20},
    }
    # the floor under the EMV tap's durable commit: its ledger is in a temporary folder too
    with tempfile.TemporaryDirectory(prefix="localpay-bench-readers-") as tmp:
        result["fsyncs_per_s"] = round(raw_fsync_rate(Path(tmp), seconds=1.0), 1)
    result["pcsc"] = bench_pcsc(apdus, reads, taps, progress=progress)
    result["qr_decode"] = bench_qr(codes)
    if progress:
        progress(f"QR decode: {result['qr_decode']}")
    return result
