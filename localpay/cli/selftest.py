"""The terminal's self-test: what a technician checks before leaving a terminal in service.

Each check is a row ``(check, ok, detail)``: the config loads; the keys load (mode 0600);
the configured card reader reads a test card through the card applications (first 6 /
last 4 at most, never a PAN); the code scanner reads a test QR; a signed ledger entry is
written, synced to disk, read back and verified, and the terminal's own ledger verifies;
the central service answers a request signed by the terminal key, with an answer signed by
the log key the config names; and the clock's state (``terminal.clock``: synchronised,
anchored or unknown) with why, a line that never fails the test since the terminal takes
payments whatever its clock says. ``localpay selftest`` prints the rows as a table, and so does
``localpay provision`` after enrolment.

On the ``virtual`` reader the test card (a demo EMV card) and the test QR are presented by
the self-test itself, so the whole test runs with no hardware. On real readers it waits
``timeout`` seconds for the technician's test card and test code, saying so through
``prompt``.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from drivers import Reader, wait
from drivers.spec import parse_reader_spec
from firmware_cfg.config import Config
from firmware_cfg.keys import public_hex
from localpay.errors import LocalpayError, ReaderTimeoutError
from terminal.home import Home

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

log = logging.getLogger(__name__)

#: what the virtual scanner shows, and what a printed test QR may carry
TEST_QR = "LOCALPAY-SELFTEST"
CHECKS = ("config", "keys", "card reader", "QR scanner", "ledger", "central", "clock")


@dataclass(frozen=True)
class Check:
    check: str
    ok: bool
    detail: str


Prompt = Callable[[str], None]


def run(home: Home, *, timeout: float = 30.0, central_timeout: float = 10.0,
        prompt: Prompt | None = None, only: Sequence[str] = CHECKS) -> list[Check]:
    """Run the checks named in ``only`` (all by default) in order; never raises for a
    failed check, only reports it."""
    say = prompt or (lambda _msg: None)
    rows: list[Check] = []
    try:
        config = home.config() if home.config_path.exists() else None
    except LocalpayError as err:
        config = None
        rows.append(Check("config", False, str(err)))
    else:
        if config is None:
            rows.append(Check("config", False, f"no {home.config_path}: run "
                                               "`localpay provision` first"))
        else:
            t = config.terminal
            where = "route" if t.role == "validator" else "merchant"
            rows.append(Check("config", True, f"{t.id}: {t.role}, {where} {t.place}"))
    if config is None:
        return [r for r in rows if r.check in only] + [
            Check(name, False, "not run: no valid config") for name in CHECKS[1:]
            if name in only]
    key, token_key, row = _keys(home, config)
    rows.append(row)
    if key is None or token_key is None:
        rows += [Check(name, False, "not run: the keys do not load") for name in CHECKS[2:]]
        return [r for r in rows if r.check in only]
    steps: list[tuple[str, Callable[[], Check]]] = [
        ("card reader", lambda: card_check(config.readers.card, token_key, timeout, say)),
        ("QR scanner", lambda: qr_check(config, token_key, timeout, say)),
        ("ledger", lambda: ledger_check(home, config, key)),
        ("central", lambda: central_check(config, key, central_timeout)),
        ("clock", lambda: clock_check(home, config, key)),
    ]
    for name, step in steps:
        if name not in only:
            continue
        try:
            rows.append(step())
        except LocalpayError as err:
            rows.append(Check(name, False, f"{type(err).__name__}: {err}"))
    return [r for r in rows if r.check in only]


def _keys(home: Home, config: Config) -> tuple[Ed25519PrivateKey | None, bytes | None, Check]:
    try:
        key = home.terminal_key(config)
        token_key = home.token_key(config)
    except LocalpayError as err:
        return None, None, Check("keys", False, str(err))
    # The public half only: the private key never leaves its file.
    return key, token_key, Check("keys", True, f"terminal key {public_hex(key)[:16]}… and "
                                               "token key load (mode 0600)")


# -- readers -------------------------------------------------------------------------------------


def _present_test_card(reader: Reader) -> None:
    from drivers.emulators.emv_card import EmvCard
    from drivers.virtual import VirtualCard, VirtualReader

    if isinstance(reader, VirtualReader):
        reader.present_card(VirtualCard(uid=bytes.fromhex("08d3e0c0"),
                                        handler=EmvCard().handle))


def card_check(spec_text: str, token_key: bytes, timeout: float, say: Prompt) -> Check:
    """Read one test card on the reader ``spec_text`` through the card applications."""
    from localpay.cli.readers import read_once

    spec = parse_reader_spec(spec_text)
    reader = spec.open()
    try:
        if spec.kind == "virtual":
            _present_test_card(reader)
        else:
            say(f"tap or insert the test card on {reader.name} ({timeout:g} s)")
        started = time.monotonic()
        try:
            result = read_once(reader, token_key, timeout)
        except ReaderTimeoutError:
            return Check("card reader", False, f"no card on {reader.name} within {timeout:g} s")
        took = (time.monotonic() - started) * 1000
    finally:
        reader.close()
    if result.card is None:
        why = result.declined or result.error or "unreadable"
        return Check("card reader", False, f"{reader.name}: a card was seen but not read: {why}")
    c = result.card
    return Check("card reader", True, f"{reader.name}: {result.application} {c.label} "
                                      f"{c.display} read in {took:.0f} ms")


def qr_check(config: Config, token_key: bytes, timeout: float, say: Prompt) -> Check:
    """Scan one test code with the configured scanner (the virtual reader's, when the card
    reader is virtual and no scanner is configured)."""
    from localpay.cli.readers import load_applications
    from terminal.cards import find_application

    spec_text = config.readers.scanner
    if not spec_text:
        if config.readers.card.split(":", 1)[0] != "virtual":
            return Check("QR scanner", True, "none configured (readers.scanner is empty)")
        spec_text = "virtual"
    spec = parse_reader_spec(spec_text)
    if spec.kind == "serial":
        spec.options.setdefault("terminator", config.readers.serial_terminator)
    reader = spec.open()
    try:
        if spec.kind == "virtual":
            from drivers.virtual import VirtualReader

            if isinstance(reader, VirtualReader):
                reader.present_code(TEST_QR)
        else:
            say(f"show the test QR code to {reader.name} ({timeout:g} s)")
        try:
            found = wait(reader, timeout)
        except ReaderTimeoutError:
            return Check("QR scanner", False, f"no code on {reader.name} within {timeout:g} s")
    finally:
        reader.close()
    if found.is_card:
        return Check("QR scanner", False, f"{reader.name} saw a card, not a code")
    load_applications()
    app = find_application(found)
    if found.payload == TEST_QR:
        what = "the test code"
    else:
        what = f"a {app[0]} code" if app else "a code (not a payment code)"
    # the payload itself is not shown: a code may carry card data
    return Check("QR scanner", True, f"{reader.name}: {what} of {len(found.payload)} "
                                     "characters read")


# -- ledger --------------------------------------------------------------------------------------


def ledger_check(home: Home, config: Config, key: Ed25519PrivateKey) -> Check:
    """A signed entry written to a scratch ledger on the same disk, synced, re-read and
    verified; then the terminal's own ledger verified (made when it does not exist yet)."""
    from offline_ledger import Ledger

    home.path.mkdir(parents=True, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=".selftest-", dir=home.path)
    try:
        started = time.monotonic()
        path = f"{scratch}/ledger.sqlite"
        with Ledger(path, key=key, terminal_id=config.terminal.id) as led:
            written = led.append("config_change", place=config.terminal.place,
                                 detail={"selftest": True})
        with Ledger(path) as led:
            led.verify(key.public_key())
            back = led.entry(written.seq)
        if back is None or back.entry_hash != written.entry_hash or \
                back.signature != written.signature:
            return Check("ledger", False, "the entry read back is not the one written")
        took = (time.monotonic() - started) * 1000
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    with Ledger(home.ledger_path, key=key, terminal_id=config.terminal.id) as own:
        report = own.verify(key.public_key())
    return Check("ledger", True, f"signed entry written, synced, re-read and verified in "
                                 f"{took:.0f} ms; {home.ledger_path.name}: {report.summary()}")


def clock_check(home: Home, config: Config, key: Ed25519PrivateKey) -> Check:
    """The clock's state and why, for the technician (riders never see it). It passes
    whatever the state: an ``unknown`` clock is recorded in each entry, not a fault."""
    from offline_ledger import Ledger
    from terminal.clock import ClockTrust

    with Ledger(home.ledger_path, key=key, terminal_id=config.terminal.id) as own:
        reading = ClockTrust(own).reading()
    note = "" if reading.state != "unknown" else " (payments go on; central dates the entries)"
    return Check("clock", True, reading.line() + note)


# -- central -------------------------------------------------------------------------------------


def central_check(config: Config, key: Ed25519PrivateKey, timeout: float) -> Check:
    """A request signed by the terminal key; the answer must be signed by the answer key
    that the log key's statement names."""
    import base64

    import httpx
    from cryptography.exceptions import InvalidSignature

    from localpay.errors import ProofError, SyncProtocolError
    from sync.checkpoint import Checkpoint, NoteVerifier
    from sync.protocol import (
        ANSWER_KEY_PATH,
        H_NONCE,
        H_SIGNATURE,
        H_TERMINAL,
        H_TIME,
        b64,
        new_nonce,
        open_answer_key,
        request_message,
        response_message,
    )

    url = config.central.url.rstrip("/")
    if not url:
        return Check("central", False, "central.url is not set")
    if not config.keys.central_public_key:
        return Check("central", False, "keys.central_public_key is not set")
    verifier = NoteVerifier.parse(config.keys.central_public_key)
    path = "/v1/checkpoint"
    nonce, now = new_nonce(), int(time.time() * 1000)
    sig = key.sign(request_message("GET", path, now, nonce, b""))
    headers = {H_TERMINAL: config.terminal.id, H_TIME: str(now), H_NONCE: nonce,
               H_SIGNATURE: b64(sig)}
    started = time.monotonic()
    try:
        resp = httpx.get(url + path, headers=headers, timeout=timeout)
    except httpx.HTTPError as err:
        return Check("central", False, f"{url} unreachable: {type(err).__name__}: {err}")
    took = (time.monotonic() - started) * 1000
    try:
        doc = json.loads(resp.content)
    except ValueError:
        doc = {}
    message = doc.get("message", "") if isinstance(doc, dict) else ""
    if not resp.headers.get(H_SIGNATURE) and resp.status_code in (400, 401):
        # central never signs for a caller it did not authenticate: its words are unverified
        return Check("central", False, f"{url} refused {config.terminal.id} (HTTP "
                                       f"{resp.status_code}, unverified: the answer is not "
                                       f"signed): {message}")
    try:
        statement = httpx.get(url + ANSWER_KEY_PATH, timeout=timeout).json()["note"]
        answers = open_answer_key(statement, verifier)
    except (httpx.HTTPError, ValueError, KeyError, TypeError, ProofError,
            SyncProtocolError) as err:
        return Check("central", False, f"{url} names no answer key that the configured log "
                                       f"key signed: {type(err).__name__}: {err}")
    try:
        answers.public_key.verify(base64.b64decode(resp.headers.get(H_SIGNATURE, "")),
                                  response_message(nonce, resp.status_code, resp.content))
    except (InvalidSignature, ValueError):
        return Check("central", False, f"{url} answered (HTTP {resp.status_code}) without the "
                                       "signature of the answer key the configured log key "
                                       "names")
    if resp.status_code != 200:
        return Check("central", False, f"{url} refused {config.terminal.id} (HTTP "
                                       f"{resp.status_code}): {message}")
    cp = Checkpoint.verify(str(doc.get("checkpoint", "")), verifier)
    return Check("central", True, f"{url} knows {config.terminal.id}, answered in "
                                  f"{took:.0f} ms; log {cp.origin} size {cp.size}")


def passed(rows: Sequence[Check]) -> bool:
    return bool(rows) and all(r.ok for r in rows)


def table(rows: Sequence[Check]) -> list[str]:
    """The rows as text lines: ``PASS  check  detail``."""
    width = max((len(r.check) for r in rows), default=5)
    lines = [f"{'result':<6} {'check':<{width}}  detail", "-" * (width + 40)]
    lines += [f"{'PASS' if r.ok else 'FAIL':<6} {r.check:<{width}}  {r.detail}" for r in rows]
    failed = sum(not r.ok for r in rows)
    lines.append(f"{len(rows) - failed} passed, {failed} failed")
    return lines
