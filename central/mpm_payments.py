"""Online payment of a till's dynamic QR code (issue #17): the citizen's app pays central,
the till hears of it and records its entry.

Flow::

    till ──signed POST /v1/mpm-open {reference, amount}──> central   (code shown)
    app  ──Bearer POST /v1/mpm-payments {reference, amount, payer, app_reference}──> central
    till ──signed GET /v1/mpm-payments/<reference>?wait=S──> central  (long-poll: paid?)
    till ──signed POST /v1/mpm-close {reference}──> central  (cancelled or timed out: paid?)
    till: ledger entry kind ``payment``, detail {"mpm_payment": id, "reference": ...}

**The reference** (MPM 62/05, ``ans`` up to 25) is 24 characters of base32 drawn by the till
(:func:`terminal.mpm_online.new_reference`): 120 random bits. Central learns which till and
which sale it names from the till's signed ``mpm-open``, never from the text, so a
reference like ``<terminal>:<counter>`` (guessable: the next counter of a known till) is
never what authorises a payment. An app can pay only a reference it has read off the
till's screen; guessing one of the open ones among 2^120 is hopeless, and an unopened
reference is refused. Registering costs one round trip when the code is shown; a till
that cannot make it has no network, and then the online payment could not be confirmed
anyway: the till says so and offers the wallet QR or a card.

**App partners** have their own registry (``mpm_partners``), not the top-up one of
:mod:`central.topups`: a top-up key is not in it (refused here) and an app key is not in
``partners`` (refused by ``POST /v1/topups``), so neither can do the other's work, with no
change to the top-up code. Keys are ``<name>.<secret>`` as there, SHA-256 kept. An
operator disables a partner (:func:`disable_app_partner`, ``central mpm partner-disable``):
its key is refused from then on (401), its payments stay, and the disabling is recorded
with its time and reason (``mpm_partner_changes``, shown by ``central mpm partner-list``).

**Expiry.** A sale may be paid for :data:`SALE_EXPIRY_S` (180 s) after the till opened it,
a minute more than the till's own wait (120 s): the till closes it itself when its wait
ends, and a till that crashed or lost its network leaves no code payable for ever. A later
payment is refused with MpmExpiredError (HTTP 410, ``expired``); the app's replay of a
payment it made before still answers that payment, and a second payment of a paid sale
still hears ``already_paid``.

**Money moves once, here.** The payment posts, in its own transaction, the citizen's
pockets -> the merchant's payable, split by :func:`localpay.pockets.split` through the very
posting code of :mod:`central.spending` (:func:`central.spending.post_payment`, given the
sale as an entry of the till with a negative sequence number no ledger uses, so its refs
``pay:<terminal>:<-n>:<pocket>`` and its ``pocket_postings`` row cannot meet a real
entry's). A payment the pockets cannot cover whole is refused (an online payment is
checked against the books, unlike an offline one). When the till's entry arrives in a
batch, the spending poster sees ``mpm_payment`` in its detail and posts nothing for it
(it marks the payment with the till's sequence number): the books show it once.

Every table leads with ``municipality_id`` (SCALING.md); an app partner pays only sales
of its municipality's tills.

Refusals, inside the one error tree::

    BooksError
    └── MpmPaymentError
        ├── MpmInvalidError (ValueError)        malformed reference, amount, payer
        ├── MpmUnknownError (LookupError)       reference not opened (or closed), payer unknown
        │   └── MpmExpiredError                 the sale is older than SALE_EXPIRY_S (410)
        ├── MpmAmountError                      amount differs from the sale's
        ├── MpmAlreadyPaidError                 the reference was paid (``payment``: the first)
        ├── MpmAppReferenceReusedError          app reference reused with other details
        ├── MpmFundsError                       the pockets cannot cover the payment
        └── MpmPartnerAuthError (PermissionError) not an app partner key
"""

from __future__ import annotations

import re
import secrets
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from central import accounts, books, municipalities, partner_keys, spending
from central.store import Store, Tx
from localpay.errors import BooksError, ConfigError

TABLES = """
CREATE TABLE IF NOT EXISTS mpm_partners (
    municipality_id TEXT NOT NULL, partner_id TEXT NOT NULL, key_hash TEXT NOT NULL,
    created_ms BIGINT NOT NULL, active INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (municipality_id, partner_id));
CREATE UNIQUE INDEX IF NOT EXISTS mpm_partners_name ON mpm_partners (partner_id);
CREATE TABLE IF NOT EXISTS mpm_partner_changes (
    municipality_id TEXT NOT NULL, partner_id TEXT NOT NULL, at_ms BIGINT NOT NULL,
    change TEXT NOT NULL, reason TEXT NOT NULL,
    PRIMARY KEY (municipality_id, partner_id, at_ms, change));
CREATE TABLE IF NOT EXISTS mpm_sales (
    municipality_id TEXT NOT NULL, reference TEXT NOT NULL, terminal_id TEXT NOT NULL,
    amount BIGINT NOT NULL, opened_ms BIGINT NOT NULL, payment_id TEXT, closed_ms BIGINT,
    PRIMARY KEY (municipality_id, reference));
CREATE TABLE IF NOT EXISTS mpm_payments (
    municipality_id TEXT NOT NULL, payment_id TEXT NOT NULL, partner TEXT NOT NULL,
    app_ref TEXT NOT NULL, reference TEXT NOT NULL, terminal_id TEXT NOT NULL,
    payer TEXT NOT NULL, account_id TEXT NOT NULL, amount BIGINT NOT NULL,
    post_seq BIGINT NOT NULL, at_ms BIGINT NOT NULL, till_seq BIGINT,
    PRIMARY KEY (municipality_id, payment_id));
CREATE UNIQUE INDEX IF NOT EXISTS mpm_payments_app ON mpm_payments (municipality_id, partner,
    app_ref);
CREATE UNIQUE INDEX IF NOT EXISTS mpm_payments_ref ON mpm_payments (municipality_id, reference)
"""

#: the reference as the till draws it (terminal.mpm_online): base32, 24 characters
REFERENCE_RE = re.compile(r"[A-Z2-7]{24}")
_APP_REF_RE = re.compile(r"[!-~]{1,128}")
_PARTNER_RE = partner_keys.NAME_RE
MAX_WON = 10**12
#: the longest long-poll a till may ask for: below the proxies' usual 60 s idle cut
MAX_WAIT_S = 30.0
#: how long after the till opened it a sale may be paid, in seconds: a little longer than
#: the till's own wait (terminal.mpm_online, 120 s), so that a till that crashed, or lost its
#: network, while showing a code does not leave it payable for ever. After it the app's
#: payment is refused (MpmExpiredError, HTTP 410 ``expired``); the till that times out
#: closes the sale itself before this.
SALE_EXPIRY_S = 180
#: how often a waiting long-poll looks at the store when no payment of this process wakes
#: it (another worker took the payment): API workers share nothing but the store (DESIGN.md)
POLL_S = 0.05


class MpmPaymentError(BooksError):
    """An online QR payment, or an app partner's key, refused."""


class MpmInvalidError(MpmPaymentError, ValueError):
    """A malformed reference, amount, payer or app reference."""


class MpmUnknownError(MpmPaymentError, LookupError):
    """No till opened this reference, or the payer names no account."""


class MpmExpiredError(MpmUnknownError):
    """The sale's code is older than its expiry (:data:`SALE_EXPIRY_S`): the till no
    longer waits for it; the customer asks for a new code."""


class MpmAmountError(MpmPaymentError):
    """The amount is not the sale's."""


class MpmAlreadyPaidError(MpmPaymentError):
    """The reference was paid already; ``payment`` is the first payment's id."""

    def __init__(self, message: str, payment: str) -> None:
        super().__init__(message)
        self.payment = payment


class MpmAppReferenceReusedError(MpmPaymentError):
    """The app's reference was used before with other details."""


class MpmFundsError(MpmPaymentError):
    """The payer's pockets cannot cover the payment here."""


class MpmPartnerAuthError(MpmPaymentError, PermissionError):
    """Not the key of an active app partner."""


#: stores whose tables are made, in this process (weak: a closed store's id may come back)
_READY: weakref.WeakSet[Store] = weakref.WeakSet()
# told of every payment this process takes (the API's long-polls; see listen)
_listeners: list[Callable[[], None]] = []


def ensure_schema(store: Store) -> None:
    if store in _READY:
        return
    with store.tx() as tx:
        tx.schema_lock("mpm_payments")
        for statement in TABLES.split(";"):
            if statement.strip():
                tx.run(statement)
    _READY.add(store)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _won(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_WON:
        raise MpmInvalidError(f"amount {value!r} is not a whole number of won from 1 to "
                              f"{MAX_WON:,}")
    return value


def check_reference(reference: object) -> str:
    if not isinstance(reference, str) or not REFERENCE_RE.fullmatch(reference):
        raise MpmInvalidError(f"reference {reference!r}: 24 characters A-Z, 2-7")
    return reference


# -- app partners ------------------------------------------------------------------------------

def add_app_partner(store: Store, name: str, *,
                    municipality: str = books.DEFAULT_MUNICIPALITY) -> str:
    """Register app partner ``name`` of ``municipality``; its key, shown this once."""
    if not isinstance(name, str) or not _PARTNER_RE.fullmatch(name):
        raise MpmInvalidError(f"partner {name!r}: 1 to 64 letters, digits, '_' and '-'")
    ensure_schema(store)
    return partner_keys.add(store, "mpm_partners", name, municipality,
                            MpmInvalidError(f"app partner {name} already has a key"))


def disable_app_partner(store: Store, name: str, *, reason: str = "operator",
                        municipality: str = books.DEFAULT_MUNICIPALITY) -> bool:
    """Refuse app partner ``name``'s key from now on (a leaked key, an app withdrawn); its
    payments stay. The change is recorded (``mpm_partner_changes``: when, why). False when
    it was disabled already (nothing recorded again)."""
    if not isinstance(reason, str) or not reason.strip() or len(reason) > 200:
        raise MpmInvalidError("the reason is 1 to 200 characters")
    ensure_schema(store)
    return partner_keys.disable(
        store, "mpm_partners", name, municipality,
        MpmUnknownError(f"no app partner {name} in municipality {municipality}"),
        changes="mpm_partner_changes", reason=reason.strip())


def app_partners(store: Store, *, municipality: str = books.DEFAULT_MUNICIPALITY
                 ) -> list[dict[str, Any]]:
    """``municipality``'s app partners by name: ``{"partner", "active", "created_ms",
    "disabled_ms", "reason"}`` (the last two: of its disabling, None while active)."""
    ensure_schema(store)
    with store.tx(write=False) as tx:
        rows = tx.all(
            "SELECT p.partner_id, p.active, p.created_ms, c.at_ms, c.reason FROM "
            "mpm_partners p LEFT JOIN mpm_partner_changes c ON c.municipality_id = "
            "p.municipality_id AND c.partner_id = p.partner_id AND c.change = 'disabled' "
            "WHERE p.municipality_id = ? ORDER BY p.partner_id, c.at_ms", (municipality,))
    out: dict[str, dict[str, Any]] = {}
    for name, active, created, at_ms, reason in rows:
        out[str(name)] = {"partner": str(name), "active": bool(int(active)),
                          "created_ms": int(created),
                          "disabled_ms": None if at_ms is None else int(at_ms),
                          "reason": None if reason is None else str(reason)}
    return list(out.values())


@dataclass(frozen=True)
class AppPartner:
    name: str
    municipality: str


def authenticate(store: Store, key: str) -> AppPartner:
    """The app partner whose key this is; MpmPartnerAuthError for anything else (a top-up
    partner's key included: it is not in this registry)."""
    ensure_schema(store)
    return AppPartner(*partner_keys.find(store, "mpm_partners", key, MpmPartnerAuthError,
                                         "app partner"))


# -- the till's side ---------------------------------------------------------------------------

def _municipality_of(tx: Tx, terminal_id: str) -> str:
    found = municipalities.of_terminal(tx, terminal_id)
    if found is None:
        raise MpmUnknownError(f"terminal {terminal_id} is not registered")
    return found


def open_sale(store: Store, terminal_id: str, reference: str, amount: int) -> dict[str, Any]:
    """Till ``terminal_id`` shows ``reference`` for ``amount`` won. Again with the same
    details: the same answer (a till that lost the answer asks again)."""
    check_reference(reference)
    _won(amount)
    ensure_schema(store)
    with store.tx() as tx:
        m = _municipality_of(tx, terminal_id)
        row = tx.one("SELECT terminal_id, amount, payment_id FROM mpm_sales WHERE "
                     "municipality_id = ? AND reference = ?", (m, reference))
        if row is None:
            tx.run("INSERT INTO mpm_sales VALUES (?, ?, ?, ?, ?, NULL, NULL)",
                   (m, reference, terminal_id, amount, _now_ms()))
        elif (str(row[0]), int(row[1])) != (terminal_id, amount):
            raise MpmInvalidError(f"reference {reference} is already open for another sale")
    return {"reference": reference, "amount": amount, "status": "open"}


def _expires_ms(opened_ms: int, expiry_s: float | None) -> int:
    return opened_ms + int((SALE_EXPIRY_S if expiry_s is None else expiry_s) * 1000)


def _status(tx: Tx, m: str, terminal_id: str, reference: str,
            expiry_s: float | None = None) -> dict[str, Any]:
    row = tx.one("SELECT s.terminal_id, s.amount, s.payment_id, s.closed_ms, s.opened_ms "
                 "FROM mpm_sales s WHERE s.municipality_id = ? AND s.reference = ?",
                 (m, reference))
    if row is None or str(row[0]) != terminal_id:
        raise MpmUnknownError(f"reference {reference} is not open at this terminal")
    paid = row[2] is not None
    expires_ms = _expires_ms(int(row[4]), expiry_s)
    status = ("paid" if paid else "closed" if row[3] is not None
              else "expired" if _now_ms() >= expires_ms else "open")
    return {"reference": reference, "amount": int(row[1]), "status": status,
            "payment": str(row[2]) if paid else None, "expires_ms": expires_ms}


def sale_status(store: Store, terminal_id: str, reference: str, *,
                expiry_s: float | None = None) -> dict[str, Any]:
    """``{"reference", "amount", "status", "payment", "expires_ms"}`` of a sale of
    ``terminal_id``; status ``open``, ``paid`` (``payment`` its id), ``closed`` (the till
    closed it unpaid) or ``expired`` (unpaid past ``expires_ms``, :data:`SALE_EXPIRY_S`
    after it was opened; no app may pay it). MpmUnknownError when it opened no such
    reference."""
    check_reference(reference)
    ensure_schema(store)
    with store.tx(write=False) as tx:
        return _status(tx, _municipality_of(tx, terminal_id), terminal_id, reference,
                       expiry_s)


def close_sale(store: Store, terminal_id: str, reference: str) -> dict[str, Any]:
    """The till stops showing ``reference`` (cancelled, timed out): no app may pay it from
    now on. Paid already (the app was quicker): the status says so, with the payment, and
    the till must record it as it would have."""
    check_reference(reference)
    ensure_schema(store)
    with store.tx() as tx:
        m = _municipality_of(tx, terminal_id)
        # the same row lock as a payment: a close and a payment of one sale are ordered
        row = tx.one_for_update("SELECT terminal_id FROM mpm_sales WHERE municipality_id = ? "
                                "AND reference = ?", (m, reference))
        if row is None or str(row[0]) != terminal_id:
            raise MpmUnknownError(f"reference {reference} is not open at this terminal")
        tx.run("UPDATE mpm_sales SET closed_ms = ? WHERE municipality_id = ? AND "
               "reference = ? AND payment_id IS NULL AND closed_ms IS NULL",
               (_now_ms(), m, reference))
        doc = _status(tx, m, terminal_id, reference)
    # an expired sale is closed too: the till's close is the last word on it
    return doc if doc["status"] == "paid" else {**doc, "status": "closed"}


def listen(callback: Callable[[], None]) -> None:
    """Call ``callback`` (from the paying thread) after every payment this process takes:
    the API wakes its waiting long-polls with it; another worker's payments are seen by
    their store poll every :data:`POLL_S`."""
    _listeners.append(callback)


# -- the app's side ----------------------------------------------------------------------------

@dataclass(frozen=True)
class MpmPayment:
    payment_id: str
    reference: str
    app_reference: str
    payer: str
    account: str
    amount: int
    terminal_id: str
    replayed: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"payment": self.payment_id, "reference": self.reference,
                "app_reference": self.app_reference, "amount": self.amount,
                "account": self.account, "replayed": self.replayed}


_COLUMNS = "payment_id, reference, app_ref, payer, account_id, amount, terminal_id"


def _first(tx: Tx, m: str, partner: str, app_ref: str) -> MpmPayment | None:
    row = tx.one(f"SELECT {_COLUMNS} FROM mpm_payments WHERE municipality_id = ? AND "
                 "partner = ? AND app_ref = ?", (m, partner, app_ref))
    if row is None:
        return None
    return MpmPayment(str(row[0]), str(row[1]), str(row[2]), str(row[3]), str(row[4]),
                      int(row[5]), str(row[6]), True)


def _replay(first: MpmPayment, reference: str, amount: int, payer: str) -> MpmPayment:
    if (first.reference, first.amount, first.payer) != (reference, amount, payer):
        raise MpmAppReferenceReusedError(
            f"app reference {first.app_reference} paid {first.reference} for "
            f"{first.amount:,} won by {first.payer}; it is now given for other details")
    return first


def pay(store: Store, partner: AppPartner, reference: str, amount: int, payer: str,
        app_reference: str, *, expiry_s: float | None = None) -> MpmPayment:
    """Pay the open sale ``reference`` of ``amount`` won from ``payer``'s pockets (an
    account id, or a card token or wallet linked to one) as ``partner``'s payment
    ``app_reference``. A sale opened more than ``expiry_s`` (default
    :data:`SALE_EXPIRY_S`) ago is refused (MpmExpiredError); the app's replay of a payment
    it made still answers that payment. See the module docstring for what is refused."""
    check_reference(reference)
    _won(amount)
    if not isinstance(app_reference, str) or not _APP_REF_RE.fullmatch(app_reference):
        raise MpmInvalidError(f"app_reference {app_reference!r}: 1 to 128 printable ASCII "
                              "characters, no spaces")
    if not isinstance(payer, str) or not payer:
        raise MpmInvalidError(f"payer {payer!r} is not an account, card or wallet")
    ensure_schema(store)
    spending.ensure_schema(store, partner.municipality)
    m = partner.municipality
    with store.tx() as tx:
        if tx.store.kind == "postgresql":
            # Two requests of one app reference for different sales meet here, the second
            # reading the first's payment once it is committed (and refused as a reference
            # reused), not at the unique key, which answered it with an error of the store.
            # SQLite's one write lock orders them already.
            tx.one("SELECT pg_advisory_xact_lock(hashtext(?))",
                   (f"localpay mpm {m} {partner.name} {app_reference}",))
        first = _first(tx, m, partner.name, app_reference)
        if first is not None:
            return _replay(first, reference, amount, payer)
        # the sale's row orders two payments of one reference (PostgreSQL row lock; SQLite's
        # one write lock): the second sees the first's payment_id
        sale = tx.one_for_update("SELECT terminal_id, amount, payment_id, closed_ms, "
                                 "opened_ms FROM mpm_sales WHERE municipality_id = ? AND "
                                 "reference = ?", (m, reference))
        if sale is None:
            raise MpmUnknownError(f"no till opened reference {reference}")
        first = _first(tx, m, partner.name, app_reference)
        if first is not None:
            return _replay(first, reference, amount, payer)
        if sale[2] is not None:
            raise MpmAlreadyPaidError(f"reference {reference} is paid already "
                                      f"(payment {sale[2]})", str(sale[2]))
        if sale[3] is not None:
            raise MpmUnknownError(f"the till no longer shows reference {reference}")
        if _now_ms() >= _expires_ms(int(sale[4]), expiry_s):
            raise MpmExpiredError(f"reference {reference} expired: it was opened more than "
                                  f"{SALE_EXPIRY_S if expiry_s is None else expiry_s} s "
                                  "ago; ask the till for a new code")
        if int(sale[1]) != amount:
            raise MpmAmountError(f"the sale is {int(sale[1]):,} won; {amount:,} won was given")
        done = _post(tx, m, partner.name, app_reference, reference, str(sale[0]), amount,
                     payer)
    for callback in _listeners:
        callback()
    return done


def _post(tx: Tx, m: str, partner: str, app_ref: str, reference: str, terminal_id: str,
          amount: int, payer: str) -> MpmPayment:
    try:
        account = accounts.resolve(tx, payer, municipality=m)
    except ConfigError as err:
        raise MpmUnknownError(f"payer {payer} names no account here") from err
    # the poster finds the account through a card or wallet linked to it
    holder = payer if payer != account else next(iter(accounts.holders(tx, account,
                                                                       municipality=m)), "")
    if not holder:
        raise MpmUnknownError(f"account {account} has no card or wallet to pay with")
    payment_id = f"mpm_{secrets.token_hex(10)}"
    # a sequence number no till uses (theirs start at 1): the refs and the pocket_postings
    # row of this payment cannot meet a real entry's
    post_seq = -(secrets.randbits(62) + 1)
    at_ms = _now_ms()
    entry = spending.SpendEntry(-1, terminal_id, post_seq, "payment", holder, amount, 0, "",
                                at_ms, at_ms)
    posted = spending.post_payment(tx, entry, municipality=m)
    if posted.refused:
        raise MpmUnknownError(f"the payment cannot be posted: {posted.refused}")
    if posted.result.owed:
        # raising rolls back what the posting wrote in this transaction
        raise MpmFundsError(f"the pockets of {account} hold {amount - posted.result.owed:,} "
                            f"won usable here; the sale is {amount:,} won")
    tx.run("INSERT INTO mpm_payments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
           (m, payment_id, partner, app_ref, reference, terminal_id, payer, account, amount,
            post_seq, at_ms))
    tx.run("UPDATE mpm_sales SET payment_id = ? WHERE municipality_id = ? AND reference = ?",
           (payment_id, m, reference))
    return MpmPayment(payment_id, reference, app_ref, payer, account, amount, terminal_id)


__all__ = ["SALE_EXPIRY_S", "TABLES", "AppPartner", "MpmAlreadyPaidError", "MpmAmountError",
           "MpmAppReferenceReusedError", "MpmExpiredError", "MpmFundsError", "MpmInvalidError",
           "MpmPartnerAuthError", "MpmPayment", "MpmPaymentError", "MpmUnknownError",
           "add_app_partner", "app_partners", "authenticate", "check_reference", "close_sale",
           "disable_app_partner", "ensure_schema", "listen", "open_sale", "pay", "sale_status"]
