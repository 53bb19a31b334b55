"""Provisioning: a new terminal enrols with the central service and receives its config.

The enrolment code (``7KQ2-M9XD-4HTR-PW3C``: 16 Crockford base32 characters, 80 bits) is
issued by ``localpay central enroll`` and typed by the technician. It is single-use (the
terminal key that used it may ask again while it is valid and gets the same answer: a
terminal that refused an answer, as with a wrong ``--central-key``, retries), expires, and
is never sent over the network: both sides derive from it

- ``code_id = SHA-256("localpay-enroll-id\\n" || code)[:16]``: how the service finds it;
- ``code_key = SHA-256("localpay-enroll-key\\n" || code)``: the secret that authenticates
  both directions (HMAC-SHA-256) and salts the key derivation below.

The service stores only these two hashes. ``POST /v1/enroll``::

    headers  X-LP-Nonce (32 hex), X-LP-Time (ms),
             X-LP-Enroll     base64 HMAC(code_key, request message)
             X-LP-Signature  base64 Ed25519 signature by the new terminal key over the same
                             message (proof that the enrolling party holds that key)
    body     {"format": "localpay-enroll/1", "code_id", "public_key" (hex Ed25519),
              "box_key" (hex X25519, one-time), "role", "place", "central_url",
              "reader", "scanner"}

The answer (HTTP 200) carries ``X-LP-Signature`` (the service's answer key, as every
answer, see ``sync.protocol``) and ``X-LP-Enroll``: HMAC(code_key, answer message). Its body::

    {"terminal_id", "bundle" (the signed config bundle, version 1, see firmware_cfg.bundle),
     "central_key" (log verifier key), "operator_key" (hex Ed25519, signs bundles),
     "answer_key_note" (the log key's signed note naming the answer key),
     "token_key": {"alg": ALG, "epk": hex X25519, "nonce": hex, "ct": base64}}

The scheme's card-token key is a secret shared by every terminal, so it never travels in the
clear: it is sealed with ChaCha20-Poly1305 under
``HKDF-SHA-256(X25519(box, epk), salt=code_key, info=terminal id and key)``, the one-time
X25519 ``box_key`` being made for this enrolment and dropped after it. What that buys, said
plainly: an eavesdropper on the wire, a TLS-terminating proxy's log or a captured request
learns neither the code nor the token key; an active attacker who does not know the code can
neither enrol nor pass for the service (the HMACs), nor read the token key (the salt). A
thief of the service's store can enrol with unused, unexpired codes (the stored ``code_key``
is what proves knowledge): codes therefore expire within hours and are single-use. Pinning
the log key (``--central-key``) and HTTPS in production add to this; they are not replaced
by it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from firmware_cfg import bundle as bundles
from firmware_cfg import keys
from firmware_cfg.config import DEFAULT, Config
from localpay.errors import ConfigError, KeyFileError

log = logging.getLogger(__name__)

FORMAT = "localpay-enroll/1"
ALG = "X25519-HKDF-SHA256-ChaCha20Poly1305"
PATH = "/v1/enroll"
H_ENROLL = "X-LP-Enroll"
H_NONCE = "X-LP-Nonce"
H_TIME = "X-LP-Time"
H_SIGNATURE = "X-LP-Signature"
#: Crockford's base32: no I, L, O, U, so nothing is misread on a handwritten slip
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 16
_READ_AS = {"O": "0", "I": "1", "L": "1"}
#: a terminal id, and the route or merchant id that an enrolled terminal's id is made of:
#: letters, digits and hyphens (ids reach file names, logs, reports and SQL parameters)
MAX_TERMINAL_ID = 64
MAX_PLACE = 32
_ID_CHAR = re.compile(r"[A-Za-z0-9-]")


def check_terminal_id(text: str) -> str:
    """``text`` when it may be a terminal id (1 to 64 letters, digits and hyphens); else
    ConfigError saying why."""
    if not text:
        raise ConfigError("a terminal id is 1 to 64 letters, digits and hyphens; found none")
    if len(text) > MAX_TERMINAL_ID:
        raise ConfigError(f"terminal id {text[:20] + '…'!r} is {len(text)} characters long; "
                          f"a terminal id is at most {MAX_TERMINAL_ID}")
    odd = [c for c in text if not _ID_CHAR.fullmatch(c)]
    if odd:
        raise ConfigError(f"terminal id {text!r} holds {odd[0]!r}: a terminal id is letters, "
                          "digits and hyphens")
    return text


def check_place(text: str) -> str:
    """``text`` when it may be a route or merchant id, the place an enrolled terminal's id
    is made of (1 to 32 letters, digits and hyphens); else ConfigError saying why."""
    if not text or len(text) > MAX_PLACE:
        raise ConfigError(f"place {text[:40]!r}: a route or merchant id is 1 to {MAX_PLACE} "
                          "letters, digits and hyphens")
    odd = [c for c in text if not _ID_CHAR.fullmatch(c)]
    if odd:
        raise ConfigError(f"place {text!r} holds {odd[0]!r}: a route or merchant id is "
                          "letters, digits and hyphens")
    return text


# -- the code and what both sides derive from it -------------------------------------------------


def new_code() -> str:
    """A fresh enrolment code, ``XXXX-XXXX-XXXX-XXXX`` (80 random bits)."""
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
    return "-".join(raw[i:i + 4] for i in range(0, CODE_LENGTH, 4))


def normalize_code(code: str) -> str:
    """The code as derived from: upper case, no dashes or spaces, O/I/L read as 0/1."""
    text = "".join(_READ_AS.get(c, c) for c in code.upper() if c not in "- \t")
    if len(text) != CODE_LENGTH or any(c not in ALPHABET for c in text):
        raise ConfigError(f"an enrolment code is {CODE_LENGTH} characters of "
                          "0-9 and A-Z (such as 7KQ2-M9XD-4HTR-PW3C); this one is not")
    return text


def code_id(code: str) -> str:
    return hashlib.sha256(b"localpay-enroll-id\n" + normalize_code(code).encode()).hexdigest()[:32]


def code_key(code: str) -> bytes:
    return hashlib.sha256(b"localpay-enroll-key\n" + normalize_code(code).encode()).digest()


def request_message(time_ms: int, nonce: str, body: bytes) -> bytes:
    """What the enrolment request's HMAC and signature cover."""
    return (f"LPENR1\nPOST\n{PATH}\n{time_ms}\n{nonce}\n"
            f"{hashlib.sha256(body).hexdigest()}\n").encode()


def answer_message(nonce: str, status: int, body: bytes) -> bytes:
    """What the answer's HMAC covers (a different label from the log key's signature)."""
    return f"LPENA1\n{nonce}\n{status}\n{hashlib.sha256(body).hexdigest()}\n".encode()


def central_answer_message(nonce: str, status: int, body: bytes) -> bytes:
    """The answer key's signature input of every answer (``sync.protocol.
    response_message``, restated because firmware_cfg imports nothing of sync's; a test keeps
    the two equal)."""
    return f"LPRES1\n{nonce}\n{status}\n{hashlib.sha256(body).hexdigest()}\n".encode()


def mac(key: bytes, message: bytes) -> str:
    return base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode("ascii")


def mac_ok(key: bytes, message: bytes, given: str) -> bool:
    return hmac.compare_digest(mac(key, message), given)


def _seal_key(shared: bytes, ckey: bytes, terminal_id: str, public_key_hex: str) -> bytes:
    info = f"{FORMAT} token-key\n{terminal_id}\n{public_key_hex}".encode()
    return HKDF(hashes.SHA256(), 32, ckey, info).derive(shared)


def seal_token_key(token_key: bytes, box_key: X25519PublicKey, ckey: bytes, terminal_id: str,
                   public_key_hex: str) -> dict[str, str]:
    """The service's side: the token key sealed to the terminal's one-time X25519 key."""
    eph = X25519PrivateKey.generate()
    key = _seal_key(eph.exchange(box_key), ckey, terminal_id, public_key_hex)
    nonce = secrets.token_bytes(12)
    ct = ChaCha20Poly1305(key).encrypt(nonce, token_key, terminal_id.encode())
    return {"alg": ALG, "epk": _x_hex(eph.public_key()), "nonce": nonce.hex(),
            "ct": base64.b64encode(ct).decode("ascii")}


def open_token_key(sealed: Any, box: X25519PrivateKey, ckey: bytes, terminal_id: str,
                   public_key_hex: str) -> bytes:
    """The terminal's side; :class:`ConfigError` when the box does not open."""
    if not isinstance(sealed, dict) or sealed.get("alg") != ALG:
        raise ConfigError(f"enrolment answer: token_key must be sealed with {ALG}")
    try:
        epk = X25519PublicKey.from_public_bytes(bytes.fromhex(str(sealed["epk"])))
        nonce = bytes.fromhex(str(sealed["nonce"]))
        ct = base64.b64decode(str(sealed["ct"]), validate=True)
        key = _seal_key(box.exchange(epk), ckey, terminal_id, public_key_hex)
        token = ChaCha20Poly1305(key).decrypt(nonce, ct, terminal_id.encode())
    except (KeyError, ValueError, binascii.Error) as err:
        raise ConfigError(f"enrolment answer: token_key is malformed: {err}") from err
    except InvalidTag:
        raise ConfigError("enrolment answer: the sealed token key does not open") from None
    if len(token) < 16:
        raise ConfigError(f"enrolment answer: token key of {len(token)} bytes is too short")
    return token


def _x_hex(key: X25519PublicKey) -> str:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def x25519_from_hex(text: Any, what: str) -> X25519PublicKey:
    try:
        return X25519PublicKey.from_public_bytes(bytes.fromhex(str(text)))
    except ValueError as err:
        raise ConfigError(f"{what} is not 32 bytes of hex") from err


# -- the terminal's side -------------------------------------------------------------------------


@dataclass(frozen=True)
class Provisioned:
    """What enrolment left in the home folder (no secrets here, only where they are)."""

    terminal_id: str
    public_key: str
    config: Config
    version: int
    config_sha256: str
    central_key: str
    operator_key: str


def enroll(
    home: Path,
    central_url: str,
    code: str,
    *,
    role: str,
    place: str,
    reader: str = "",
    scanner: str = "",
    central_key: str | None = None,
    start_check: Callable[[Config], None] | None = None,
    timeout_s: float = 30.0,
    transport: httpx.BaseTransport | None = None,
) -> Provisioned:
    """Enrol the terminal whose home is ``home`` and install what the service sends.

    Makes the terminal key (or reuses one left by an attempt that failed before it was
    registered), sends the request, checks the answer (HMAC with the code, the log key's
    signature, pinned to ``central_key`` when given, the bundle's operator signature), then
    writes the token key (0600) and applies the config bundle atomically through
    :func:`firmware_cfg.bundle.apply` with ``start_check``. Nothing is written to the config
    before everything has checked out. Raises :class:`ConfigError` saying what failed.
    """
    if role not in ("validator", "till"):
        raise ConfigError(f"role: expected 'validator' or 'till', found {role!r}")
    if not place:
        raise ConfigError("a validator needs its route and a till its merchant id")
    check_place(place)
    if not central_url.startswith(("http://", "https://")):
        raise ConfigError(f"central URL: expected http:// or https://, found {central_url!r}")
    ckey = code_key(code)
    config_path = home / "terminal.toml"
    if config_path.exists():
        raise ConfigError(f"{config_path} exists: this terminal is provisioned already; "
                          "provision a fresh home folder (--home) instead")
    key_path = home / DEFAULT.keys.terminal_key
    if key_path.exists():
        # a previous attempt made the key and then failed; the same key may enrol again
        tkey = keys.load_terminal_key(key_path)
        log.info("reusing the terminal key at %s", key_path)
    else:
        tkey = keys.generate_terminal_key(key_path)
    public_hex = keys.public_hex(tkey)
    box = X25519PrivateKey.generate()
    body = json.dumps({
        "format": FORMAT, "code_id": code_id(code), "public_key": public_hex,
        "box_key": _x_hex(box.public_key()), "role": role, "place": place,
        "central_url": central_url.rstrip("/"), "reader": reader, "scanner": scanner,
    }, separators=(",", ":")).encode()
    nonce = secrets.token_hex(16)
    time_ms = _now_ms()
    message = request_message(time_ms, nonce, body)
    headers = {H_NONCE: nonce, H_TIME: str(time_ms), H_ENROLL: mac(ckey, message),
               H_SIGNATURE: base64.b64encode(tkey.sign(message)).decode("ascii"),
               "Content-Type": "application/json"}
    url = central_url.rstrip("/")
    try:
        with httpx.Client(base_url=url, timeout=timeout_s, transport=transport) as http:
            resp = http.post(PATH, content=body, headers=headers)
    except httpx.HTTPError as err:
        raise ConfigError(f"cannot reach the central service at {url}: "
                          f"{type(err).__name__}: {err}") from err
    doc = _answer(resp, nonce, ckey)
    terminal_id = _str(doc, "terminal_id")
    log_key = _str(doc, "central_key")
    if central_key and log_key.strip() != central_key.strip():
        raise ConfigError("the service's log key is not the one given with --central-key: "
                          "refusing this enrolment (with the right key, the same code works "
                          "again from this home while it is valid)")
    _check_answer_signature(resp, nonce, log_key, doc.get("answer_key_note"))
    operator_hex = _str(doc, "operator_key")
    operator = keys.public_from_hex(operator_hex, "the operator key of the enrolment answer")
    bundle = bundles.verify(_str(doc, "bundle").encode(), operator, terminal_id,
                            bundles.current_version(home))
    cfg = bundle.config
    if cfg.keys.operator_public_key.lower() != operator_hex.lower():
        raise ConfigError("the config names another operator key than the one that signed it; "
                          "this terminal would refuse every later bundle")
    if cfg.keys.central_public_key.strip() != log_key.strip():
        raise ConfigError("the config names another central log key than the one answering")
    if cfg.keys.terminal_key != DEFAULT.keys.terminal_key:
        raise ConfigError(f"the config moves the terminal key to {cfg.keys.terminal_key!r}; "
                          f"it was made at {DEFAULT.keys.terminal_key!r}")
    token = open_token_key(doc.get("token_key"), box, ckey, terminal_id, public_hex)
    keys.write_secret(home / cfg.keys.token_key, token.hex().encode() + b"\n")
    keys.load_token_key(home / cfg.keys.token_key)  # read back: mode and contents
    bundles.apply(home, bundle, start_check or (lambda _c: None))
    log.info("enrolled as %s (config version %d)", terminal_id, bundle.version)
    return Provisioned(terminal_id, public_hex, cfg, bundle.version, bundle.sha256, log_key,
                       operator_hex)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _str(doc: dict[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"enrolment answer lacks {name!r}")
    return value


def _answer(resp: httpx.Response, nonce: str, ckey: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(resp.content)
    except ValueError:
        doc = None
    if resp.status_code != 200:
        message = doc.get("message") if isinstance(doc, dict) else None
        raise ConfigError(f"the central service refused the enrolment (HTTP "
                          f"{resp.status_code}): {message or resp.text[:200]}")
    if not mac_ok(ckey, answer_message(nonce, resp.status_code, resp.content),
                  resp.headers.get(H_ENROLL, "")):
        raise ConfigError("the enrolment answer is not authenticated with this code: "
                          "whoever answered is not the service that issued it")
    if not isinstance(doc, dict):
        raise ConfigError("the enrolment answer is not a JSON object")
    return doc


#: the first line of the log key's statement of the answer key (``sync.protocol``)
ANSWER_KEY_LINE = "localpay answer key"


def _note_key(text: str) -> tuple[str, bytes, Ed25519PublicKey]:
    """Name, key ID and key of a verifier key ``name+hexid+base64(0x01||key)``, its ID
    checked (c2sp.org/signed-note; ``sync.checkpoint.NoteVerifier``, restated)."""
    name, hexid, encoded = text.strip().split("+", 2)
    raw = base64.b64decode(encoded, validate=True)
    if len(raw) != 33 or raw[0] != 0x01:
        raise ValueError("not an Ed25519 note key")
    if not name or any(c.isspace() for c in name):
        raise ValueError(f"note key name {name!r}")
    kid = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    if kid != bytes.fromhex(hexid):
        raise ValueError(f"the key ID of {name!r} does not match its key")
    return name, kid, Ed25519PublicKey.from_public_bytes(raw[1:])


def _answer_key_of(note: str, log_key: str) -> Ed25519PublicKey:
    """The answer key the log key's statement names (``sync.protocol.open_answer_key``,
    restated because firmware_cfg imports nothing of sync's; a test keeps the two in step)."""
    log_name, log_id, log_pub = _note_key(log_key)
    text, _, sigs = note.rpartition("\n\n")
    text += "\n"
    lines = text.split("\n")
    if len(lines) != 3 or lines[0] != ANSWER_KEY_LINE or not sigs.endswith("\n"):
        raise ValueError("the note is not a statement of the answer key")
    signed = False
    for line in sigs.splitlines():
        dash, name, blob = line.split(" ")
        sig = base64.b64decode(blob, validate=True)
        if dash == "\u2014" and name == log_name and sig[:4] == log_id:
            log_pub.verify(sig[4:], text.encode())
            signed = True
    if not signed:
        raise ValueError(f"the answer key statement is not signed by {log_name}")
    name, _, pub = _note_key(lines[1])
    if name != f"{log_name}/answers":
        raise ValueError(f"the statement names {name!r}, not {log_name + '/answers'!r}")
    return pub


def _check_answer_signature(resp: httpx.Response, nonce: str, log_key: str,
                            note: Any) -> None:
    """The answer must carry the signature of the answer key that the log key's statement
    names: the log key (every later checkpoint's) vouches for the answer."""
    if not isinstance(note, str):
        raise ConfigError("enrolment answer lacks 'answer_key_note' (a central from before "
                          "answer keys: update it first)")
    try:
        pub = _answer_key_of(note, log_key)
    except (ValueError, binascii.Error) as err:
        raise ConfigError(f"enrolment answer: the answer key statement is refused: "
                          f"{err}") from err
    except InvalidSignature:
        raise ConfigError("enrolment answer: the answer key statement is not signed by the "
                          "central log key it names") from None
    try:
        sig = base64.b64decode(resp.headers.get(H_SIGNATURE, ""), validate=True)
        pub.verify(sig, central_answer_message(nonce, resp.status_code, resp.content))
    except (ValueError, binascii.Error, InvalidSignature):
        raise ConfigError("the enrolment answer is not signed by the answer key that the "
                          "central log key names") from None


def public_key_of(home: Path) -> str | None:
    """The home's terminal public key (hex), or None when there is no key yet."""
    path = home / DEFAULT.keys.terminal_key
    if not path.exists():
        return None
    try:
        return keys.public_hex(keys.load_terminal_key(path))
    except KeyFileError:
        return None


__all__ = ["Provisioned", "enroll", "new_code", "normalize_code"]
