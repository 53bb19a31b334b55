"""Who may use the operator's console, and what they did: operators, sessions, lockout and
the console's audit log, all in the store.

- **Operators** (``console_operators``) have a name, a role and an Argon2id password hash
  (``argon2-cffi``'s defaults, RFC 9106); a disabled operator keeps its row (the audit log
  names it) and opens nothing. Each belongs to one municipality and acts in it.
- **Roles** are ordered, each able to do what the ones below it do: ``viewer`` reads,
  ``callcentre`` also looks cards up by PAN and denies or undenies them, ``operator`` also
  confirms or dismisses fraud flags, issues enrolment codes and publishes config, ``admin``
  also manages operators.
- **Sessions** (``console_sessions``): a random id (256 bits) lives only in the operator's
  cookie; the store keeps its SHA-256, so a copy of the store opens no session. A session
  ends at logout, after :data:`IDLE_S` without a request, and :data:`SESSION_S` after login
  whatever happens. Its CSRF token is an HMAC of the session id: bound to the session,
  nothing more to store, and useless to anyone who does not hold the cookie.
- **Lockout** (``console_login_failures``): failed logins are counted per operator name and
  per client address, in the store (every worker counts the same, a restart forgets
  nothing); :attr:`Lockout.limit` failures within :attr:`Lockout.window_s` refuse every
  login of that name or from that address for :attr:`Lockout.lock_s`, right password or
  not. A name that does not exist is counted like one that does, and costs the same Argon2
  work, so the answer tells nobody which names exist.
- **Audit** (``console_audit``): one row per change made through the console or the
  ``operator`` commands: who, when (Unix ms), what action on which object, the state before
  and after (JSON) and the reason given. :func:`record` writes one; :func:`audit_rows`
  reads them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
import weakref
from dataclasses import asdict, dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from central.store import Store, Tx
from localpay.errors import ConfigError, LocalpayError

ROLES = ("viewer", "callcentre", "operator", "admin")
#: an operator's name: what it logs in with and what the audit log shows
NAME_RE = re.compile(r"[a-z][a-z0-9._-]{1,39}")
MIN_PASSWORD = 12
MAX_PASSWORD = 256
#: seconds a session lives after login, and without a request
SESSION_S = 12 * 3600
IDLE_S = 30 * 60
#: a session's last-use time is written at most this often (a page polling every few
#: seconds would otherwise write the store on every poll)
TOUCH_S = 30
MAX_REASON = 500

TABLES = """
CREATE TABLE IF NOT EXISTS console_operators (
    name TEXT PRIMARY KEY, municipality_id TEXT NOT NULL DEFAULT 'default',
    role TEXT NOT NULL, password_hash TEXT NOT NULL, created_ms BIGINT NOT NULL,
    disabled_ms BIGINT);
CREATE TABLE IF NOT EXISTS console_sessions (
    session_hash TEXT PRIMARY KEY, municipality_id TEXT NOT NULL, operator TEXT NOT NULL,
    created_ms BIGINT NOT NULL, last_ms BIGINT NOT NULL, expires_ms BIGINT NOT NULL,
    address TEXT NOT NULL DEFAULT '', ended_ms BIGINT);
CREATE INDEX IF NOT EXISTS console_sessions_expiry ON console_sessions (expires_ms);
CREATE TABLE IF NOT EXISTS console_login_failures (
    scope TEXT NOT NULL, subject TEXT NOT NULL, failed_ms BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS console_login_failures_subject ON console_login_failures (
    scope, subject, failed_ms);
CREATE TABLE IF NOT EXISTS console_audit (
    municipality_id TEXT NOT NULL, id TEXT NOT NULL, at_ms BIGINT NOT NULL,
    operator TEXT NOT NULL, action TEXT NOT NULL, object TEXT NOT NULL,
    before_json TEXT NOT NULL, after_json TEXT NOT NULL, reason TEXT NOT NULL,
    PRIMARY KEY (municipality_id, id));
CREATE INDEX IF NOT EXISTS console_audit_time ON console_audit (municipality_id, at_ms);
CREATE INDEX IF NOT EXISTS console_audit_at ON console_audit (at_ms)
"""

_READY: weakref.WeakSet[Store] = weakref.WeakSet()
_HASHER = PasswordHasher()
#: verified against when the name is unknown, so that an unknown name costs what a known
#: one does
_DUMMY_HASH = _HASHER.hash(secrets.token_hex(16))


class ConsoleError(ConfigError):
    """An operator command or console form was given something invalid (a name, a role, a
    password, a reason), or names an operator that does not exist."""


class ConsoleAuthError(LocalpayError, PermissionError):
    """A login was refused: wrong name or password, a disabled operator, or locked out."""


class LockedOutError(ConsoleAuthError):
    """Too many failed logins of this name or from this address: refused for a while."""

    def __init__(self, message: str, wait_s: float) -> None:
        super().__init__(message)
        self.wait_s = wait_s


def ensure_schema(store: Store) -> None:
    """Make the console's tables where missing (once per store in a process)."""
    if store in _READY:
        return
    with store.tx() as tx:
        tx.schema_lock("console")
        for statement in TABLES.split(";"):
            if statement.strip():
                tx.run(statement)
    _READY.add(store)


def now_ms() -> int:
    return int(time.time() * 1000)


def role_at_least(role: str, needed: str) -> bool:
    """Whether ``role`` may do what ``needed`` may (roles are ordered, see :data:`ROLES`)."""
    if needed not in ROLES:
        raise ConsoleError(f"unknown role {needed!r} (roles: {', '.join(ROLES)})")
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ConsoleError(f"operator name {name[:40]!r}: 2 to 40 of a-z 0-9 . _ -, starting "
                           "with a letter")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ConsoleError(f"role {role!r}: one of {', '.join(ROLES)}")
    return role


def check_password(password: str) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ConsoleError(f"a password is {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return password


def check_reason(reason: str, *, required: bool = True) -> str:
    """A reason as stored: one line, spaces collapsed, at most :data:`MAX_REASON`."""
    text = " ".join(str(reason).split())
    if required and not text:
        raise ConsoleError("a reason is required")
    if len(text) > MAX_REASON:
        raise ConsoleError(f"a reason is at most {MAX_REASON} characters")
    return text


# -- operators ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operator:
    """An operator as the console and ``central operator list`` see it (never its hash)."""

    name: str
    role: str
    municipality: str
    created_ms: int
    disabled_ms: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def may(self, needed: str) -> bool:
        return self.disabled_ms is None and role_at_least(self.role, needed)


def add_operator(store: Store, name: str, role: str, password: str, *,
                 municipality: str = "default", by: str = "cli") -> Operator:
    """Create operator ``name`` with ``role``; recorded in the audit log as done ``by``."""
    from central import municipalities

    ensure_schema(store)
    check_name(name)
    check_role(role)
    check_password(password)
    hashed = _HASHER.hash(password)
    at = now_ms()
    with store.tx() as tx:
        municipalities.require(tx, municipality)
        if tx.one("SELECT 1 FROM console_operators WHERE name = ?", (name,)) is not None:
            raise ConsoleError(f"operator {name!r} exists already")
        tx.run("INSERT INTO console_operators (name, municipality_id, role, password_hash, "
               "created_ms) VALUES (?, ?, ?, ?, ?)", (name, municipality, role, hashed, at))
        op = Operator(name, role, municipality, at, None)
        record(tx, by, "operator.add", f"operator:{name}", None,
               {"role": role, "municipality": municipality}, "", municipality=municipality,
               at_ms=at)
    return op


def operators(store: Store) -> list[Operator]:
    """Every operator, by name."""
    ensure_schema(store)
    with store.tx(write=False) as tx:
        rows = tx.all("SELECT name, role, municipality_id, created_ms, disabled_ms FROM "
                      "console_operators ORDER BY name")
    return [Operator(str(n), str(r), str(m), int(c), None if d is None else int(d))
            for n, r, m, c, d in rows]


def get_operator(where: Store | Tx, name: str) -> Operator | None:
    if isinstance(where, Store):
        ensure_schema(where)
        with where.tx(write=False) as tx:
            return get_operator(tx, name)
    row = where.one("SELECT name, role, municipality_id, created_ms, disabled_ms FROM "
                    "console_operators WHERE name = ?", (name,))
    if row is None:
        return None
    return Operator(str(row[0]), str(row[1]), str(row[2]), int(row[3]),
                    None if row[4] is None else int(row[4]))


def disable_operator(store: Store, name: str, *, by: str = "cli", reason: str = "") -> Operator:
    """Disable ``name``: its sessions end now and it can log in no more."""
    ensure_schema(store)
    at = now_ms()
    with store.tx() as tx:
        op = get_operator(tx, name)
        if op is None:
            raise ConsoleError(f"no operator {name!r}")
        if op.disabled_ms is not None:
            raise ConsoleError(f"operator {name!r} is disabled already")
        tx.run("UPDATE console_operators SET disabled_ms = ? WHERE name = ?", (at, name))
        tx.run("UPDATE console_sessions SET ended_ms = ? WHERE operator = ? AND ended_ms IS "
               "NULL", (at, name))
        record(tx, by, "operator.disable", f"operator:{name}", {"disabled": False},
               {"disabled": True}, check_reason(reason, required=False),
               municipality=op.municipality, at_ms=at)
    return Operator(op.name, op.role, op.municipality, op.created_ms, at)


# -- login, lockout and sessions ------------------------------------------------------------------


@dataclass(frozen=True)
class Lockout:
    """``limit`` failures within ``window_s`` lock the name (or address) for ``lock_s``."""

    limit: int = 5
    window_s: float = 15 * 60
    lock_s: float = 15 * 60

    def blocked_for(self, tx: Tx, scope: str, subject: str, at_ms: int) -> float:
        """Seconds ``subject`` stays locked (0: not locked)."""
        span = int((self.window_s + self.lock_s) * 1000)
        rows = [int(r[0]) for r in tx.all(
            "SELECT failed_ms FROM console_login_failures WHERE scope = ? AND subject = ? "
            "AND failed_ms > ? ORDER BY failed_ms DESC LIMIT ?",
            (scope, subject, at_ms - span, self.limit))]
        if len(rows) < self.limit or rows[0] - rows[-1] > self.window_s * 1000:
            return 0.0
        return max(0.0, (rows[0] + self.lock_s * 1000 - at_ms) / 1000)


@dataclass(frozen=True)
class Session:
    """An open console session: its operator and the CSRF token its forms carry."""

    operator: Operator
    csrf: str
    expires_ms: int


def csrf_token(session_id: str) -> str:
    """The CSRF token of a session: an HMAC of its id, so it is bound to that session and
    needs nothing stored."""
    return hmac.new(session_id.encode(), b"localpay console csrf", hashlib.sha256).hexdigest()


def csrf_ok(session_id: str, token: str) -> bool:
    return bool(token) and hmac.compare_digest(csrf_token(session_id), token)


def _session_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def login(store: Store, name: str, password: str, address: str, *,
          lockout: Lockout | None = None) -> tuple[str, Session]:
    """Check ``name`` and ``password`` from client ``address``; a new session id (for the
    cookie only) and its session, or :class:`ConsoleAuthError` (:class:`LockedOutError`)."""
    ensure_schema(store)
    lockout = lockout or Lockout()
    at = now_ms()
    name = str(name).strip()[:64]
    subjects = {"name": name, "address": address}
    with store.tx(write=False) as tx:
        wait = max(lockout.blocked_for(tx, scope, subject, at)
                   for scope, subject in subjects.items())
        row = tx.one("SELECT password_hash, disabled_ms FROM console_operators WHERE name = ?",
                     (name,))
    if wait > 0:
        raise LockedOutError(f"too many failed logins: try again in {int(wait // 60) + 1} "
                             "min", wait)
    stored = str(row[0]) if row is not None else _DUMMY_HASH
    try:
        good = _HASHER.verify(stored, password) and row is not None and row[1] is None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        good = False
    if not good:
        with store.tx() as tx:
            # what is out of every window is of no use to anyone
            tx.run("DELETE FROM console_login_failures WHERE failed_ms <= ?",
                   (at - int((lockout.window_s + lockout.lock_s) * 1000),))
            tx.many("INSERT INTO console_login_failures (scope, subject, failed_ms) "
                    "VALUES (?, ?, ?)", [(s, v, at) for s, v in subjects.items()])
        raise ConsoleAuthError("wrong name or password")
    session_id = secrets.token_urlsafe(32)
    with store.tx() as tx:
        if _HASHER.check_needs_rehash(stored):
            tx.run("UPDATE console_operators SET password_hash = ? WHERE name = ?",
                   (_HASHER.hash(password), name))
        tx.run("DELETE FROM console_login_failures WHERE scope = 'name' AND subject = ?",
               (name,))
        # sessions long over are of no use to anyone either
        tx.run("DELETE FROM console_sessions WHERE expires_ms < ?", (at - SESSION_S * 1000,))
        op = get_operator(tx, name)
        assert op is not None
        tx.run("INSERT INTO console_sessions (session_hash, municipality_id, operator, "
               "created_ms, last_ms, expires_ms, address) VALUES (?, ?, ?, ?, ?, ?, ?)",
               (_session_hash(session_id), op.municipality, name, at, at,
                at + SESSION_S * 1000, address[:100]))
        record(tx, name, "login", f"operator:{name}", None, None, "",
               municipality=op.municipality, at_ms=at)
    return session_id, Session(op, csrf_token(session_id), at + SESSION_S * 1000)


def session(store: Store, session_id: str, *, idle_s: float = IDLE_S) -> Session | None:
    """The open session of ``session_id`` (None when unknown, ended, expired, idle too long
    or its operator disabled); notes its use."""
    if not session_id or len(session_id) > 100:
        return None
    ensure_schema(store)
    at = now_ms()
    key = _session_hash(session_id)
    with store.tx(write=False) as tx:
        row = tx.one("SELECT s.operator, s.last_ms, s.expires_ms, s.ended_ms FROM "
                     "console_sessions s WHERE s.session_hash = ?", (key,))
        if row is None or row[3] is not None or at >= int(row[2]) \
                or at - int(row[1]) >= idle_s * 1000:
            return None
        op = get_operator(tx, str(row[0]))
    if op is None or op.disabled_ms is not None:
        return None
    if at - int(row[1]) >= TOUCH_S * 1000:
        with store.tx() as tx:
            tx.run("UPDATE console_sessions SET last_ms = ? WHERE session_hash = ? AND "
                   "last_ms < ?", (at, key, at))
    return Session(op, csrf_token(session_id), int(row[2]))


def logout(store: Store, session_id: str) -> None:
    """End the session (its cookie opens nothing any more)."""
    ensure_schema(store)
    at = now_ms()
    with store.tx() as tx:
        row = tx.one("SELECT operator, municipality_id FROM console_sessions WHERE "
                     "session_hash = ? AND ended_ms IS NULL", (_session_hash(session_id),))
        if row is None:
            return
        tx.run("UPDATE console_sessions SET ended_ms = ? WHERE session_hash = ?",
               (at, _session_hash(session_id)))
        record(tx, str(row[0]), "logout", f"operator:{row[0]}", None, None, "",
               municipality=str(row[1]), at_ms=at)


# -- the audit log --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditRow:
    """One change: who (``operator``), when, what ``action`` on which ``object``, the
    state ``before`` and ``after`` (decoded JSON; None when there was none) and why."""

    municipality: str
    id: str
    at_ms: int
    operator: str
    action: str
    object: str
    before: Any
    after: Any
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def record(tx: Tx, operator: str, action: str, obj: str, before: Any, after: Any,
           reason: str, *, municipality: str = "default", at_ms: int | None = None) -> str:
    """Write one audit row in ``tx`` (the transaction of the change where there is one);
    returns its id. ``before`` and ``after`` are anything JSON encodes."""
    row_id = secrets.token_hex(8)
    tx.run("INSERT INTO console_audit (municipality_id, id, at_ms, operator, action, object, "
           "before_json, after_json, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
           (municipality, row_id, now_ms() if at_ms is None else at_ms, operator, action, obj,
            json.dumps(before, ensure_ascii=False, sort_keys=True),
            json.dumps(after, ensure_ascii=False, sort_keys=True), reason))
    return row_id


def record_change(store: Store, operator: str, action: str, obj: str, before: Any, after: Any,
                  reason: str, *, municipality: str = "default") -> str:
    """:func:`record` in a transaction of its own (after a change a service function made
    in its own transaction)."""
    ensure_schema(store)
    with store.tx() as tx:
        return record(tx, operator, action, obj, before, after, reason,
                      municipality=municipality)


def audit_rows(store: Store, *, municipality: str | None = None, since_ms: int = 0,
               operator: str | None = None, obj: str | None = None,
               limit: int = 500) -> list[AuditRow]:
    """Audit rows at or after ``since_ms``, newest first (of one municipality, operator or
    object when given)."""
    ensure_schema(store)
    where: list[str] = ["at_ms >= ?"]
    params: list[Any] = [since_ms]
    for column, value in (("municipality_id", municipality), ("operator", operator),
                          ("object", obj)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    with store.tx(write=False) as tx:
        rows = tx.all("SELECT municipality_id, id, at_ms, operator, action, object, "
                      "before_json, after_json, reason FROM console_audit WHERE "
                      + " AND ".join(where) + " ORDER BY at_ms DESC, id DESC LIMIT ?",
                      (*params, limit))
    return [AuditRow(str(m), str(i), int(a), str(o), str(act), str(ob), json.loads(b),
                     json.loads(af), str(r)) for m, i, a, o, act, ob, b, af, r in rows]
