"""The signed wallet QR: codec, signature, time window, replay, through the real core."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

import terminal.cards_all  # noqa: F401 - registers the QR application
from drivers import wait
from drivers.virtual import VirtualReader
from firmware_cfg.config import DEFAULT
from firmware_cfg.keys import DEMO_TOKEN_KEY, demo_issuer_key
from localpay.errors import QRFormatError
from localpay.types import Presentation
from offline_ledger import Ledger
from terminal.cards import card_token
from terminal.core import Terminal
from terminal.qr import detect, wallet
from terminal.risk import Reason
from tests.strategies_cards import wallet_ids

ISSUER = Ed25519PrivateKey.generate()
NOW = 1_790_000_000


@settings(max_examples=200, deadline=None)
@given(wallet_ids, st.integers(0, 2**32 - 1 - 600), st.integers(1, 600),
       st.none() | st.integers(0, 2**32 - 1), st.binary(min_size=12, max_size=12))
def test_round_trip(wid: str, now: int, ttl: int, allowance: int | None, nonce: bytes) -> None:
    text = wallet.make(ISSUER, wid, now=now, ttl_s=ttl, allowance=allowance, nonce=nonce)
    assert detect(text) == "wallet"
    code = wallet.verify(text, [ISSUER.public_key()])
    assert (code.wallet_id, code.issued_at, code.expires_at, code.allowance, code.nonce) == (
        wid, now, now + ttl, allowance, nonce)
    # alphanumeric QR mode: upper case, digits and ':' only
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567LPW1:")
    assert len(text) <= wallet.MAX_TEXT


def test_wrong_issuer_and_tampering() -> None:
    text = wallet.make(ISSUER, "minji-01", now=NOW)
    other = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(QRFormatError, match="signature"):
        wallet.verify(text, [other])
    assert wallet.verify(text, [other, ISSUER.public_key()]).wallet_id == "minji-01"
    raw = bytearray(base64.b32decode(text[5:] + "=" * (-len(text[5:]) % 8)))
    raw[4] ^= 0x01  # one bit of the wallet id
    forged = "LPW1:" + base64.b32encode(bytes(raw)).decode().rstrip("=")
    with pytest.raises(QRFormatError, match="signature"):
        wallet.verify(forged, [ISSUER.public_key()])


@pytest.mark.parametrize("text, message", [
    ("LPW2:AAAA", "must start with"),
    ("LPW1:abc", "Base32"),
    ("LPW1:AAAAAAAA", "truncated"),
    ("LPW1:" + "A" * 300, "bad length"),
])
def test_malformed(text: str, message: str) -> None:
    with pytest.raises(QRFormatError, match=message):
        wallet.decode(text)


def _forge(body: bytes) -> str:
    sig = ISSUER.sign(wallet.DOMAIN + body)
    return "LPW1:" + base64.b32encode(body + sig).decode().rstrip("=")


@pytest.mark.parametrize("body, message", [
    (bytes([2, 0, 1]) + b"A" + bytes(8 + 12), "version 2"),
    (bytes([1, 2, 1]) + b"A" + bytes(8 + 12), "flags"),
    (bytes([1, 0, 1]) + b"!" + NOW.to_bytes(4, "big") + (NOW + 60).to_bytes(4, "big")
     + bytes(12), "wallet id"),
    (bytes([1, 0, 1]) + b"A" + NOW.to_bytes(4, "big") + NOW.to_bytes(4, "big") + bytes(12),
     "expires before"),
    (bytes([1, 0, 1]) + b"A" + NOW.to_bytes(4, "big") + (NOW + 601).to_bytes(4, "big")
     + bytes(12), "at most 600"),
    (bytes([1, 1, 1]) + b"A" + NOW.to_bytes(4, "big") + (NOW + 60).to_bytes(4, "big")
     + bytes(12), "expected"),
])
def test_signed_but_invalid_bodies(body: bytes, message: str) -> None:
    with pytest.raises(QRFormatError, match=message):
        wallet.verify(_forge(body), [ISSUER.public_key()])


def test_time_window() -> None:
    code = wallet.verify(wallet.make(ISSUER, "w", now=NOW, ttl_s=60), [ISSUER.public_key()])
    assert wallet.time_problem(code, (NOW + 60 + 30) * 1000, 30) is None
    assert wallet.time_problem(code, (NOW + 60 + 30) * 1000 + 1, 30) == "expired"
    assert wallet.time_problem(code, (NOW - 30) * 1000, 30) is None
    assert wallet.time_problem(code, (NOW - 30) * 1000 - 1, 30) == "not yet valid"


# -- through the transaction core -----------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = float(NOW)

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Terminal, Ledger, Clock, VirtualReader]]:
    ledger = Ledger(tmp_path / "ledger.sqlite", key=Ed25519PrivateKey.generate(),
                    terminal_id="T-TEST-01")
    cfg = DEFAULT.replace("terminal", role="till", id="T-TEST-01", place="M0001")
    clock = Clock()
    terminal = Terminal(cfg, ledger, DEMO_TOKEN_KEY, clock=clock, read_options={
        "ledger": ledger, "wallet_issuer_keys": [ISSUER.public_key()], "qr_clock_skew_s": 30})
    yield terminal, ledger, clock, VirtualReader()
    ledger.close()


def pay(setup: tuple[Terminal, Ledger, Clock, VirtualReader], text: str, amount: int = 3000):
    terminal, _, _, reader = setup
    reader.present_code(text)
    return terminal.pay(wait(reader, 1), amount)


def test_wallet_pays_once_then_replay_is_declined(setup) -> None:  # type: ignore[no-untyped-def]
    _, ledger, _, _ = setup
    text = wallet.make(ISSUER, "minji-01", now=NOW, ttl_s=60)
    first = pay(setup, text)
    assert first.approved and first.entry is not None
    assert first.card is not None and first.card.scheme == "wallet"
    assert first.card.token == card_token(DEMO_TOKEN_KEY, "wallet", "minji-01")
    nonce = wallet.decode(text).code.nonce_key
    assert ledger.nonce_used(nonce)
    second = pay(setup, text)
    assert second.reason is Reason.QR_REPLAY
    # a fresh code of the same wallet is a new payment
    assert pay(setup, wallet.make(ISSUER, "minji-01", now=NOW, ttl_s=60)).approved


def test_expired_code_declined_with_skew(setup) -> None:  # type: ignore[no-untyped-def]
    _, _, clock, _ = setup
    text = wallet.make(ISSUER, "w1", now=NOW - 89, ttl_s=60)
    assert pay(setup, text).approved  # 29 s past expiry: inside the 30 s skew
    clock.now = NOW + 1
    late = wallet.make(ISSUER, "w2", now=NOW - 90, ttl_s=60)
    assert pay(setup, late).reason is Reason.QR_EXPIRED


def test_future_code_is_invalid(setup) -> None:  # type: ignore[no-untyped-def]
    text = wallet.make(ISSUER, "w", now=NOW + 31, ttl_s=60)
    assert pay(setup, text).reason is Reason.QR_INVALID


def test_wrong_issuer_declined_and_nothing_recorded(setup) -> None:  # type: ignore[no-untyped-def]
    _, ledger, _, _ = setup
    text = wallet.make(demo_issuer_key(), "w", now=NOW)
    decision = pay(setup, text)
    assert decision.reason is Reason.QR_INVALID and "signature" in decision.detail
    assert ledger.count() == 0


def test_allowance_caps_the_payment(setup) -> None:  # type: ignore[no-untyped-def]
    text = wallet.make(ISSUER, "w", now=NOW, allowance=2000)
    assert pay(setup, text, 2500).reason is Reason.INSUFFICIENT_BALANCE
    ok = pay(setup, wallet.make(ISSUER, "w", now=NOW, allowance=2000), 2000)
    assert ok.approved and ok.card is not None and ok.card.allowance == 2000


def test_no_issuer_key_provisioned(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.sqlite", key=Ed25519PrivateKey.generate(), terminal_id="T") as led:
        cfg = DEFAULT.replace("terminal", role="till", id="T", place="M")
        terminal = Terminal(cfg, led, DEMO_TOKEN_KEY, clock=lambda: float(NOW))
        p = Presentation(kind="qr", reader="t", payload=wallet.make(ISSUER, "w", now=NOW))
        assert terminal.pay(p, 1000).reason is Reason.UNSUPPORTED


def test_merchant_code_scanned_at_a_till_is_unsupported(setup) -> None:  # type: ignore[no-untyped-def]
    from terminal.qr import mpm

    code = mpm.build_dynamic(1000, merchant_name="A", city="B", reference="R", merchant_id="M")
    assert pay(setup, code).reason is Reason.UNSUPPORTED
    assert pay(setup, "hello").reason is Reason.QR_INVALID


def test_validator_charges_the_fare(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.sqlite", key=Ed25519PrivateKey.generate(), terminal_id="B") as led:
        cfg = DEFAULT.replace("terminal", role="validator", id="B", place="85")
        bus = Terminal(cfg, led, DEMO_TOKEN_KEY, clock=lambda: float(NOW),
                       read_options={"wallet_issuer_keys": [ISSUER.public_key()]})
        p = Presentation(kind="qr", reader="t", payload=wallet.make(ISSUER, "rider", now=NOW))
        decision = bus.tap(p)
        assert decision.approved and decision.amount == cfg.fares.adult


# -- the command line -----------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "localpay", *args], capture_output=True,
                          text=True, timeout=60, check=False)


def test_cli_wallet_then_parse(tmp_path: Path) -> None:
    made = _cli("qr", "wallet", "--wallet-id", "minji-01", "--allowance", "5000",
                "--now", str(NOW), "--ttl", "60")
    assert made.returncode == 0, made.stderr
    text = made.stdout.strip()
    code = wallet.verify(text, [demo_issuer_key().public_key()])
    assert code.allowance == 5000 and code.issued_at == NOW
    shown = _cli("qr", "parse", text, "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["format"] == "wallet" and data["objects"]["wallet_id"] == "minji-01"


def test_cli_make_and_parse_mpm_and_cpm(tmp_path: Path) -> None:
    from terminal.qr import cpm

    png = tmp_path / "till.png"
    made = _cli("--home", str(tmp_path), "qr", "make", "--amount", "12000", "--reference",
                "R-1", "--png", str(png))
    assert made.returncode == 0, made.stderr
    payload = made.stdout.strip()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shown = json.loads(_cli("qr", "parse", payload, "--json").stdout)
    assert shown["format"] == "mpm" and shown["objects"]["54"] == "12000"
    assert shown["objects"]["62"]["05"] == "R-1"
    pan = "9410123456789012"
    out = _cli("qr", "parse", cpm.build(bytes.fromhex("D4100000030001"), pan), "--json")
    assert pan not in out.stdout
    assert json.loads(out.stdout)["objects"]["61"]["5A"] == "941012******9012"
    wrong = "1" if payload[-1] == "0" else "0"
    bad = _cli("qr", "parse", payload[:-1] + wrong)
    assert bad.returncode != 0 and "CRC mismatch" in bad.stderr


def test_one_code_has_one_text() -> None:
    """Base32's last character carries spare bits the decoder ignores: another spelling of
    the same bytes must be refused, not taken as a fresh code."""
    from terminal.qr import wallet

    text = wallet.make(demo_issuer_key(), "W-12", now=1_790_000_000)
    head, last = text[:-1], text[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    body = text[len(wallet.PREFIX):]
    raw = base64.b32decode(body + "=" * (-len(body) % 8))
    variants = [head + c for c in alphabet if c != last and base64.b32decode(
        (head + c)[len(wallet.PREFIX):] + "=" * (-len(body) % 8)) == raw]
    assert variants, "this length leaves no spare bits; pick another wallet id"
    for variant in variants:
        with pytest.raises(QRFormatError, match="canonical"):
            wallet.decode(variant)
    assert wallet.verify(text, [demo_issuer_key().public_key()]).wallet_id == "W-12"


def test_qr_parse_knows_campaign_codes() -> None:
    from click.testing import CliRunner

    from localpay.cli import cli
    from terminal.qr import campaign

    code = campaign.make(demo_issuer_key(), "EARTHDAY", "W-1", 500)
    result = CliRunner().invoke(cli, ["qr", "parse", "--json", code])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["format"] == "campaign"
    assert doc["objects"]["campaign_id"] == "EARTHDAY" and doc["objects"]["points"] == 500


def test_longest_code_round_trips() -> None:
    """Regression: a 32-character wallet id with an allowance made a code that decode()
    refused as too long (found by the round-trip property)."""
    from terminal.qr import wallet

    for wid in ("0" * 31, "0" * 32):
        text = wallet.make(demo_issuer_key(), wid, now=0, ttl_s=1, allowance=0)
        assert len(text) <= wallet.MAX_TEXT
        assert wallet.decode(text).code.wallet_id == wid
