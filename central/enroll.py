"""Enrolment, the central service's side: single-use codes and ``POST /v1/enroll``.

The protocol is described in :mod:`firmware_cfg.provision` (shared by both sides). Here:

- :func:`issue_codes` makes codes (``localpay central enroll``). A code is issued for one
  municipality (``default`` unless named), whose terminal it enrols, and may bind the
  terminal id, the role, the place (route or merchant, of that municipality) and a config
  template; what it does not bind, the technician's request chooses. Only two hashes of
  each code are stored (``code_id`` to find it, ``code_key`` to check the request's HMAC),
  with its expiry.
- :class:`Enroller` answers ``POST /v1/enroll``. The request is not signed by a registered
  terminal (there is none yet): the code is the credential. In one store transaction the
  code is marked used, the terminal is registered with its public key, and the answer is
  made: the first config bundle (version 1, signed by the operator key), the log's
  verifier key, the operator key and the scheme's token key sealed to the terminal. Any
  refusal rolls all of it back: nothing is stored and the code stays usable. The same key
  asking again with a used code while it is valid gets the same answer (terminal id, the
  stored first bundle; the token key sealed to its new box): a terminal that refused the
  answer (a wrong ``--central-key``) retries with its code; any other key is refused.
- The operator key (``operator.key``, Ed25519 PEM) and the scheme's card-token key
  (``token.key``, hex) live in the service's data folder beside the log key, mode 0600,
  made on first use. The operator key signs config bundles; in a larger deployment it would
  sign on an offline machine, but enrolment needs the first bundle signed at once, so here
  it is online, as the log key is.
- Failed attempts are counted per client address and per code, in the store (table
  ``enroll_failures``: every worker sees the same count, a restart forgets nothing), and
  refused with 429 beyond :attr:`RateLimiter.limit` in :attr:`RateLimiter.window_s`; with
  80-bit codes this is against noise more than guessing. The client address is the peer's;
  ``X-Forwarded-For`` is believed only from the reverse proxies the operator names
  (``central serve --trusted-proxy``), never from anyone else.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from central import municipalities
from central.http_limits import kind_of
from central.keys import private_folder
from central.merchants import Registry
from central.service import CentralLog
from central.store import Store
from firmware_cfg import bundle as bundles
from firmware_cfg import keys as keyfiles
from firmware_cfg import provision as proto
from firmware_cfg.config import DEFAULT, dumps, loads
from localpay.errors import (
    ConfigError,
    LocalpayError,
    SyncAuthError,
    SyncProtocolError,
    SyncUnavailableError,
)
from sync.protocol import ZERO_HASH, check_nonce

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 24 * 3600
_PREFIX = {"validator": "BUS", "till": "TILL"}
#: a terminal id a code may bind, at most as long as a config's ``terminal.id`` may be
#: (:func:`firmware_cfg.config.validate`); letters, digits and hyphens
MAX_TERMINAL_ID = proto.MAX_TERMINAL_ID


# -- key files beside the log key -----------------------------------------------------------------


def load_operator_key(data_dir: Path, *, create: bool = True) -> Ed25519PrivateKey:
    """The operator's bundle-signing key, ``operator.key`` in ``data_dir`` (0600)."""
    path = data_dir / "operator.key"
    if create:
        private_folder(data_dir)
    return keyfiles.signing_key(path, "operator key", create=create)


def load_scheme_token_key(data_dir: Path, *, create: bool = True) -> bytes:
    """The scheme's card-token key, ``token.key`` in ``data_dir`` (0600, hex)."""
    path = data_dir / "token.key"
    if not path.exists() and create:
        private_folder(data_dir)
        log.warning("made a new scheme token key at %s", path)
        return keyfiles.generate_token_key(path)
    return keyfiles.load_token_key(path)


# -- codes ----------------------------------------------------------------------------------------


def issue_codes(service: CentralLog, *, count: int = 1, terminal_id: str = "", role: str = "",
                place: str = "", template: str = "", ttl_s: int = DEFAULT_TTL_S,
                municipality: str = municipalities.DEFAULT) -> list[str]:
    """Make ``count`` single-use codes for terminals of ``municipality`` (a registered one);
    return them (the only time they exist in clear)."""
    if count < 1 or count > 1000:
        raise ConfigError(f"count: expected 1 to 1000, found {count}")
    if terminal_id and count != 1:
        raise ConfigError("a code that names a terminal id can only be issued one at a time")
    if terminal_id:
        proto.check_terminal_id(terminal_id)
    if place:
        proto.check_place(place)
    if role and role not in _PREFIX:
        raise ConfigError(f"role: expected 'validator' or 'till', found {role!r}")
    if ttl_s < 60 or ttl_s > 30 * 86400:
        raise ConfigError(f"expiry: expected 1 minute to 30 days, found {ttl_s} s")
    if template:
        try:
            loads(template)
        except ConfigError as err:
            raise ConfigError(f"config template: {err}") from err
    now = _now()
    codes = [proto.new_code() for _ in range(count)]
    with service.store.tx() as tx:
        municipalities.require(tx, municipality)
        if terminal_id:
            municipalities.check_assignment(tx, terminal_id, municipality)
        tx.many("INSERT INTO enroll_codes (code_id, code_key, terminal_id, role, place, "
                "template, issued_ms, expires_ms, municipality_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(proto.code_id(c), proto.code_key(c), terminal_id, role, place, template,
                  now, now + ttl_s * 1000, municipality) for c in codes])
    log.info("issued %d enrolment code(s) for municipality %s, valid %d s", count,
             municipality, ttl_s)
    return codes


# -- the endpoint ---------------------------------------------------------------------------------


FAILURES = """
CREATE TABLE IF NOT EXISTS enroll_failures (
    scope TEXT NOT NULL, subject TEXT NOT NULL, failed_ms BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS enroll_failures_subject ON enroll_failures (scope, subject,
    failed_ms);
CREATE INDEX IF NOT EXISTS enroll_failures_time ON enroll_failures (failed_ms)
"""
_READY: set[Store] = set()


def ensure_schema(store: Store) -> None:
    """Make the failures table where missing (once per store in a process)."""
    if store in _READY:
        return
    with store.tx() as tx:
        tx.schema_lock("enroll")
        for statement in FAILURES.split(";"):
            if statement.strip():
                tx.run(statement)
    _READY.add(store)


class RateLimiter:
    """Failed attempts within a sliding window, per client address and per code, kept in
    the store: every worker of the service counts the same failures, and a restart forgets
    none of them."""

    def __init__(self, limit: int = 10, window_s: float = 600.0) -> None:
        self.limit = limit
        self.window_s = window_s

    def blocked_for(self, store: Store, subjects: Mapping[str, str]) -> tuple[float, str]:
        """Seconds until none of ``subjects`` (scope -> subject: ``address``, ``code``) is
        over the limit (0: now), and the scope that blocks."""
        now = _now()
        window = int(self.window_s * 1000)
        worst, which = 0.0, ""
        with store.tx(write=False) as tx:
            for scope, subject in subjects.items():
                # the limit-th latest failure in the window: once it leaves the window,
                # fewer than the limit are left in it
                row = tx.one("SELECT failed_ms FROM enroll_failures WHERE scope = ? AND "
                             "subject = ? AND failed_ms > ? ORDER BY failed_ms DESC "
                             "LIMIT 1 OFFSET ?", (scope, subject, now - window, self.limit - 1))
                if row is None:
                    continue
                wait = (int(row[0]) + window - now) / 1000
                if wait > worst:
                    worst, which = wait, scope
        return worst, which

    def failed(self, store: Store, subjects: Mapping[str, str]) -> None:
        now = _now()
        with store.tx() as tx:
            # what is out of every window is of no use to anyone
            tx.run("DELETE FROM enroll_failures WHERE failed_ms <= ?",
                   (now - int(self.window_s * 1000),))
            tx.many("INSERT INTO enroll_failures (scope, subject, failed_ms) VALUES (?, ?, ?)",
                    [(scope, subject, now) for scope, subject in subjects.items()])


def client_address(peer: str, forwarded_for: str, trusted: Sequence[Any]) -> str:
    """The address a request came from: the peer's, unless the peer is one of ``trusted``
    (the reverse proxies in front of the service, :func:`trusted_proxies`); then the
    nearest ``X-Forwarded-For`` address that is not a trusted proxy. A header from anyone
    else is ignored: it is the client's own words."""
    try:
        hops = [ipaddress.ip_address(peer)]
    except ValueError:
        return peer
    if not any(hops[0] in net for net in trusted):
        return peer
    for text in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        try:
            hop = ipaddress.ip_address(text)
        except ValueError:
            return peer  # not what a proxy of ours writes: count it against the proxy
        if not any(hop in net for net in trusted):
            return str(hop)
    return peer


def trusted_proxies(values: Sequence[str]) -> tuple[Any, ...]:
    """``--trusted-proxy`` values (an address or a network, ``10.0.0.0/8``) as networks."""
    nets = []
    for value in values:
        try:
            nets.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ConfigError(f"trusted proxy {value!r} is not an IP address or network"
                              ) from None
    return tuple(nets)


def _code_of(body: bytes) -> str:
    """The request's code id (32 hex digits) when it names one, for counting failures per
    code; empty otherwise."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return ""
    cid = doc.get("code_id") if isinstance(doc, dict) else None
    if isinstance(cid, str) and len(cid) == 32 and all(c in "0123456789abcdef" for c in cid):
        return cid
    return ""


@dataclass(frozen=True)
class _Request:
    code_id: str
    public_key: Ed25519PublicKey
    public_hex: str
    box_key: Any
    role: str
    place: str
    central_url: str
    reader: str
    scanner: str


class _Refused(LocalpayError):
    """Answered with a given HTTP status (429) that the error tree does not name."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _text(doc: dict[str, Any], name: str, *, limit: int = 200, required: bool = True) -> str:
    value = doc.get(name, "")
    if not isinstance(value, str) or len(value) > limit or \
            any(ord(c) < 0x20 for c in value) or (required and not value):
        raise SyncProtocolError(f"enrolment request: {name!r} must be text of 1 to {limit} "
                                f"characters")
    return value


def parse_request(body: bytes) -> _Request:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise SyncProtocolError(f"enrolment request is not JSON: {err}") from err
    if not isinstance(doc, dict) or doc.get("format") != proto.FORMAT:
        raise SyncProtocolError(f"enrolment request must be a {proto.FORMAT} object")
    cid = _text(doc, "code_id", limit=32)
    if len(cid) != 32 or any(c not in "0123456789abcdef" for c in cid):
        raise SyncProtocolError("enrolment request: code_id must be 32 hex digits")
    public_hex = _text(doc, "public_key", limit=64).lower()
    try:
        public_key = keyfiles.public_from_hex(public_hex, "public_key")
        box = proto.x25519_from_hex(doc.get("box_key"), "box_key")
    except ConfigError as err:
        raise SyncProtocolError(f"enrolment request: {err}") from err
    role = _text(doc, "role", limit=16)
    if role not in _PREFIX:
        raise SyncProtocolError(f"enrolment request: role must be validator or till, "
                                f"not {role!r}")
    place = _text(doc, "place", limit=proto.MAX_PLACE)
    try:
        proto.check_place(place)
    except ConfigError as err:
        raise SyncProtocolError(f"enrolment request: {err}") from None
    return _Request(cid, public_key, public_hex, box, role, place,
                    _text(doc, "central_url"), _text(doc, "reader", required=False),
                    _text(doc, "scanner", required=False))


def compose_config(template: str, *, terminal_id: str, role: str, place: str,
                   central_url: str, reader: str, scanner: str, central_key: str,
                   operator_hex: str) -> str:
    """The terminal's first config: the template (or the defaults) with what enrolment fixes."""
    config = loads(template) if template else DEFAULT
    config = config.replace("terminal", id=terminal_id, role=role, place=place)
    config = config.replace("central", url=central_url)
    config = config.replace("keys", terminal_key=DEFAULT.keys.terminal_key,
                            token_key=DEFAULT.keys.token_key, central_public_key=central_key,
                            operator_public_key=operator_hex)
    changes = {k: v for k, v in (("card", reader), ("scanner", scanner)) if v}
    if changes:
        config = config.replace("readers", **changes)
    text = dumps(config)
    loads(text)  # the cross-field rules, before anything is signed
    return text


class Enroller:
    """``POST /v1/enroll`` over one :class:`CentralLog`, with the keys of ``data_dir``."""

    def __init__(self, service: CentralLog, data_dir: Path,
                 limiter: RateLimiter | None = None) -> None:
        self.service = service
        self.operator = load_operator_key(data_dir)
        self.operator_hex = keyfiles.public_hex(self.operator)
        self._token_key = load_scheme_token_key(data_dir)
        self.limiter = limiter or RateLimiter()
        ensure_schema(service.store)

    def handle(self, headers: Mapping[str, str], body: bytes,
               client: str) -> tuple[int, dict[str, Any], bytes | None]:
        """(HTTP status, answer, the code key to authenticate the answer with or None).
        ``client`` is the caller's address as :func:`client_address` finds it."""
        subjects = {"address": client}
        code = _code_of(body)
        if code:
            subjects["code"] = code
        try:
            wait, scope = self.limiter.blocked_for(self.service.store, subjects)
        except LocalpayError as err:
            return self._refusal(err)
        if wait > 0:
            who = f"from {client}" if scope == "address" else "with this code"
            return self._refusal(_Refused(429, f"too many failed enrolment attempts {who}; "
                                               f"try again in {max(1, round(wait))} s"))
        try:
            ckey, payload = self._enroll(headers, body)
        except LocalpayError as err:
            status, _ = self._status(err)
            if status in (400, 401):
                try:
                    self.limiter.failed(self.service.store, subjects)
                except LocalpayError as down:
                    log.warning("enrolment failure not counted: %s", down)
            log.info("enrolment refused (%d): %s", status, err)
            return self._refusal(err)
        return 200, payload, ckey

    @staticmethod
    def _status(err: LocalpayError) -> tuple[int, str]:
        if isinstance(err, _Refused):
            return err.status, "rate_limited"
        if isinstance(err, SyncAuthError):
            return 401, "refused"
        if isinstance(err, SyncProtocolError | ConfigError):
            return 400, "malformed"
        if isinstance(err, SyncUnavailableError):
            return 503, "unavailable"
        return 500, "error"

    def _refusal(self, err: LocalpayError) -> tuple[int, dict[str, Any], None]:
        status, code = self._status(err)
        # ``kind`` is a stable code, never the class's name (central.http_limits)
        return status, {"error": code, "kind": kind_of(type(err).__name__), "message": str(err),
                        "seq": None}, None

    def _enroll(self, headers: Mapping[str, str], body: bytes) -> tuple[bytes, dict[str, Any]]:
        # ``headers`` is HTTP headers: a case-insensitive mapping
        nonce = headers.get(proto.H_NONCE, "")
        check_nonce(nonce)
        try:
            time_ms = int(headers.get(proto.H_TIME, ""))
        except ValueError:
            raise SyncProtocolError(f"enrolment request lacks {proto.H_TIME}") from None
        given_mac = headers.get(proto.H_ENROLL, "")
        sig_b64 = headers.get(proto.H_SIGNATURE, "")
        req = parse_request(body)
        message = proto.request_message(time_ms, nonce, body)
        with self.service.store.tx(write=False) as tx:
            row = tx.one("SELECT code_key, terminal_id, role, place, template, expires_ms, "
                         "used_ms, municipality_id, used_by FROM enroll_codes WHERE code_id = ?",
                         (req.code_id,))
        if row is None or not proto.mac_ok(bytes(row[0]), message, given_mac):
            raise SyncAuthError("unknown or mistyped enrolment code")
        ckey, bound_id, bound_role, bound_place, template, municipality = (
            bytes(row[0]), str(row[1]), str(row[2]), str(row[3]), str(row[4]), str(row[7]))
        if int(row[5]) <= _now():
            raise SyncAuthError("this enrolment code has expired; ask for a new one")
        try:
            req.public_key.verify(base64.b64decode(sig_b64, validate=True), message)
        except (InvalidSignature, binascii.Error, ValueError):
            raise SyncAuthError("the request is not signed by the key it enrols") from None
        if row[6] is not None:
            # The terminal refuses an answer only after the code is spent here (a wrong
            # --central-key): the same key may ask again while the code is valid.
            return ckey, self._answer_again(req, str(row[8] or ""), ckey)
        if bound_role and bound_role != req.role:
            raise SyncProtocolError(f"this code is for a {bound_role}, not a {req.role}")
        if bound_place and bound_place != req.place:
            raise SyncProtocolError(f"this code is for place {bound_place!r}, not "
                                    f"{req.place!r}")
        central_key = self.service.signer.verifier.text()
        now = _now()
        with self.service.store.tx() as tx:
            tx.lock_log()  # orders terminal-id assignment between concurrent enrolments
            terminal_id = self._terminal_id(tx, req, bound_id, municipality)
            used = tx.run("UPDATE enroll_codes SET used_ms = ?, used_by = ? WHERE code_id = ? "
                          "AND used_ms IS NULL AND expires_ms > ?",
                          (now, terminal_id, req.code_id, now))
            if used != 1:
                raise SyncAuthError("this enrolment code was used already; ask for a new one")
            text = compose_config(template, terminal_id=terminal_id, role=req.role,
                                  place=req.place, central_url=req.central_url,
                                  reader=req.reader, scanner=req.scanner,
                                  central_key=central_key, operator_hex=self.operator_hex)
            # the till's first bundle already names its merchant (from the registry of the
            # code's municipality)
            text = Registry(self.service.store, municipality).enrolment_config(
                tx, terminal_id, text)
            bundle = bundles.make(self.operator, terminal_id, 1, text).decode("utf-8")
            # filed like any published bundle, so later ones continue its version numbers
            tx.run("INSERT INTO configs VALUES (?, ?, ?, ?) "
                   "ON CONFLICT (terminal_id, version) DO NOTHING", (terminal_id, 1, bundle, now))
            sealed = proto.seal_token_key(self._token_key, req.box_key, ckey, terminal_id,
                                          req.public_hex)
        log.warning("enrolled terminal %s (%s %s) of municipality %s, key %s…", terminal_id,
                    req.role, req.place, municipality, req.public_hex[:16])
        return ckey, {"terminal_id": terminal_id, "bundle": bundle, "central_key": central_key,
                      "operator_key": self.operator_hex, "token_key": sealed}

    def _answer_again(self, req: _Request, used_by: str, ckey: bytes) -> dict[str, Any]:
        """The answer of the enrolment that used this code, for the key it registered: the
        same terminal id and first bundle (the very bytes signed then), the token key sealed
        to this request's one-time box. Any other key is refused as before."""
        with self.service.store.tx(write=False) as tx:
            known = tx.one("SELECT terminal_id FROM terminals WHERE public_key = ?",
                           (bytes.fromhex(req.public_hex),))
            first = tx.one("SELECT body FROM configs WHERE terminal_id = ? AND version = 1",
                           (used_by,))
        if known is None or str(known[0]) != used_by or first is None:
            raise SyncAuthError("this enrolment code was used already; ask for a new one")
        bundle = str(first[0])
        enrolled = loads(bundles.peek_config(bundle.encode("utf-8"))).terminal
        if (enrolled.role, enrolled.place) != (req.role, req.place):
            raise SyncProtocolError(f"this code enrolled {used_by} as a {enrolled.role} at "
                                    f"{enrolled.place!r}; ask again with that role and place")
        sealed = proto.seal_token_key(self._token_key, req.box_key, ckey, used_by,
                                      req.public_hex)
        log.warning("enrolment of %s answered again (same key, code still valid)", used_by)
        return {"terminal_id": used_by, "bundle": bundle,
                "central_key": self.service.signer.verifier.text(),
                "operator_key": self.operator_hex, "token_key": sealed}

    @staticmethod
    def _terminal_id(tx: Any, req: _Request, bound_id: str, municipality: str) -> str:
        raw = bytes.fromhex(req.public_hex)
        known = tx.one("SELECT terminal_id, municipality_id FROM terminals WHERE "
                       "public_key = ?", (raw,))
        if known is not None:
            # the same key enrolling again (an earlier attempt failed on the terminal's side)
            if bound_id and bound_id != known[0]:
                raise SyncAuthError(f"this key is registered as {known[0]!r}, not {bound_id!r}")
            if str(known[1]) != municipality:
                raise SyncAuthError(f"this key is registered in municipality {known[1]!r}, "
                                    f"not {municipality!r}")
            return str(known[0])
        if bound_id:
            if tx.one("SELECT 1 FROM terminals WHERE terminal_id = ?", (bound_id,)):
                raise SyncAuthError(f"terminal {bound_id!r} is registered with another key")
            terminal_id = bound_id
        else:
            prefix = f"{_PREFIX[req.role]}-{req.place}-"
            taken = tx.all("SELECT terminal_id FROM terminals WHERE substr(terminal_id, 1, ?) "
                           "= ?", (len(prefix), prefix))
            numbers = [int(t[len(prefix):]) for (t,) in taken if t[len(prefix):].isdigit()]
            terminal_id = f"{prefix}{max(numbers, default=0) + 1:04d}"
        if len(terminal_id) > MAX_TERMINAL_ID:
            raise SyncProtocolError(f"terminal id {terminal_id[:20]!r}… is longer than "
                                    f"{MAX_TERMINAL_ID}")
        try:
            municipalities.check_assignment(tx, terminal_id, municipality)
        except municipalities.CrossMunicipalityError as err:
            raise SyncAuthError(str(err)) from None
        tx.run("INSERT INTO terminals (terminal_id, public_key, lat, lon, last_seq, last_hash, "
               "added_ms, municipality_id) VALUES (?, ?, NULL, NULL, 0, ?, ?, ?)",
               (terminal_id, raw, ZERO_HASH, _now(), municipality))
        return terminal_id


def answer_mac(ckey: bytes, nonce: str, status: int, body: bytes) -> str:
    return proto.mac(ckey, proto.answer_message(nonce, status, body))


def _now() -> int:
    return int(time.time() * 1000)
