"""Pockets: how one payment is split across a citizen's pockets (cash, points, allowances).

The terminal (offline) and the central service both call :func:`split`; what it decides is the
contract between them, so it is stated here once and both sides must agree to the won.

**Which pockets may pay.** A balance pays at a merchant only if all of these hold:

1. the programme's rules define its pocket (a balance for a pocket the rules do not know pays
   nothing: a terminal holding older rules than central must not guess);
2. the merchant id is not in ``exclude_merchants``, no ``exclude_categories`` entry matches the
   merchant's category, and the merchant has no membership in ``exclude_memberships``.
   Exclusions always win over allows;
3. if ``allow_merchants`` or ``allow_categories`` is non-empty, the merchant is in
   ``allow_merchants`` *or* an ``allow_categories`` entry matches its category (both empty:
   anywhere);
4. if ``regions`` is non-empty, the merchant's region is one of them (exact match);
5. it has not expired: ``day <= expiry``, the expiry day itself still pays. The expiry is the
   sooner of the rule's ``expires`` and the balance's own ``expires``; ``None`` never expires;
6. its balance is more than zero.

**Categories** are ``scheme:code`` strings and never match across schemes. KSIC (Korean
Standard Industrial Classification) is hierarchical, so a rule's ``ksic:`` code is a prefix of
2 to 5 digits (division, group, class, subclass) and matches every merchant code that starts
with it: ``ksic:471`` matches ``ksic:47121``. Card MCCs are a flat list (ISO 18245), so a
rule's ``mcc:`` code has exactly 4 digits and matches exactly. A merchant's category is always
a full code (``ksic:`` + 5 digits or ``mcc:`` + 4), so an exclusion can never miss a merchant
whose code was recorded only to its group. A programme that excludes by category should list
the category in both schemes if its merchants use both.

**How much.** A pocket that may pay contributes at most the least of its balance,
``per_payment``, and ``per_day - spent_today[pocket]`` (never below zero).

**In which order.** Restricted money first, so that it is not left stranded while the citizen's
own cash is spent: allowances, then points, then cash. Within a kind, the soonest expiry first
and no expiry last; ties by pocket id (string order). Each pocket in turn gives as much as it
can until the amount is covered; only the last pocket drawn may give less than it could.

**Outcome.** :class:`Split` approved, with parts ``(pocket, won)`` in that order, every part
above zero, summing exactly to the amount; or declined with a :class:`DeclineReason`:
``no_eligible_pocket`` when the pockets that may pay here can give nothing at all (none
eligible, all empty or expired, or their daily limits used up), ``insufficient_balance`` when
they can give something but less than the amount.

**Rules file.** TOML, one ``[[pocket]]`` table per pocket, keys as the :class:`PocketRule`
fields with ``id`` for ``pocket``. :func:`parse_rules` refuses the whole file with a
:class:`~localpay.errors.ConfigError` naming the source, the pocket (``pocket #N 'id'``,
counted from 1 in file order) and the fault, for:

- TOML syntax (the offending line is quoted); a key other than ``pocket`` at the top, or
  other than the fields in a table (the nearest known name is suggested);
- an id that is not 1-64 of ``A-Z a-z 0-9 . _ : -`` starting with a letter or digit; a
  duplicate id; a kind other than ``cash``, ``points``, ``allowance``;
- list entries the merchant registry could never hold: merchant ids not 1-40 of
  ``A-Z a-z 0-9 -``, memberships not 1-32 of ``a-z 0-9 -``, regions empty, over 64
  characters, with control characters or surrounding blanks; categories not ``ksic:`` and
  2-5 digits or ``mcc:`` and 4 digits;
- contradictions: a merchant both allowed and excluded; an allowed category that an excluded
  one matches (equal, or a KSIC prefix of it: the allow could never take effect);
- an expiry that is not a date ``YYYY-MM-DD`` (a date-time, a time or a week date is
  refused);
- amounts that are not whole numbers of won from 1 to 2**63-1 (booleans and floats
  refused); ``per_payment`` above ``per_day`` (it could never be reached);
- a programme without exactly one cash pocket (the citizen's own money has one home, and
  a split must always be able to fall back on it).

Calling :func:`split` with an amount that is not a positive ``int`` (or other arguments of the
wrong shape) raises plain :class:`ValueError`: that is a bug in the caller, not an outcome to
handle, so it has no place in the error tree.
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, get_args

from localpay.errors import ConfigError

PocketKind = Literal["cash", "points", "allowance"]
KINDS: tuple[str, ...] = get_args(PocketKind)

#: the order kinds are drawn in: restricted money before the citizen's own cash
_KIND_RANK = {"allowance": 0, "points": 1, "cash": 2}

#: won amounts are stored as signed 64-bit integers by the ledger and the central store
MAX_WON = 2**63 - 1

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_RULE_CATEGORY = re.compile(r"ksic:[0-9]{2,5}|mcc:[0-9]{4}")
# The merchant registry's forms (firmware_cfg.config, which this layer may not import; the
# tests hold the two in step): a rule naming a merchant or membership the registry could
# never hold is a typo, refused rather than silently matching nothing.
_MERCHANT_ID = re.compile(r"[A-Za-z0-9-]{1,40}")
_MEMBERSHIP = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_MERCHANT_CATEGORY = re.compile(r"ksic:[0-9]{5}|mcc:[0-9]{4}")
_REGION = re.compile(r"[^\x00-\x1f\x7f-\x9f]{1,64}")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def category_matches(rule_category: str, merchant_category: str) -> bool:
    """Whether a rule's category entry covers a merchant's category (see the module doc)."""
    scheme, _, code = rule_category.partition(":")
    m_scheme, _, m_code = merchant_category.partition(":")
    if scheme != m_scheme:
        return False
    if scheme == "ksic":
        return m_code.startswith(code)
    return m_code == code


@dataclass(frozen=True, slots=True)
class MerchantFacts:
    """What the pocket rules need to know about the merchant being paid.

    ``category`` is a full code with its scheme: ``"ksic:47121"`` or ``"mcc:5411"``.
    Raises :class:`ValueError` when a field has the wrong shape.
    """

    merchant_id: str
    category: str
    region: str
    memberships: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not isinstance(self.merchant_id, str) or not _MERCHANT_ID.fullmatch(self.merchant_id):
            raise ValueError(f"merchant_id must be 1-40 of A-Z a-z 0-9 -, not "
                             f"{self.merchant_id!r}")
        if not isinstance(self.category, str) or not _MERCHANT_CATEGORY.fullmatch(self.category):
            raise ValueError(f"merchant category must be 'ksic:' and 5 digits or 'mcc:' and "
                             f"4 digits, not {self.category!r}")
        if not isinstance(self.region, str):
            raise ValueError(f"region must be a string, not {self.region!r}")
        if not isinstance(self.memberships, frozenset) or not all(
                isinstance(m, str) and _MEMBERSHIP.fullmatch(m) for m in self.memberships):
            raise ValueError("memberships must be a frozenset of names of a-z 0-9 -")


@dataclass(frozen=True, slots=True)
class PocketRule:
    """Where and how much one pocket of a programme may pay. Empty sets mean no restriction
    (``allow_*`` empty: anywhere; ``regions`` empty: any region)."""

    pocket: str
    kind: PocketKind
    allow_merchants: frozenset[str] = frozenset()
    allow_categories: frozenset[str] = frozenset()
    exclude_merchants: frozenset[str] = frozenset()
    exclude_categories: frozenset[str] = frozenset()
    exclude_memberships: frozenset[str] = frozenset()
    regions: frozenset[str] = frozenset()
    expires: date | None = None
    per_payment: int | None = None
    per_day: int | None = None

    def pays_at(self, merchant: MerchantFacts) -> bool:
        """Whether this pocket may pay at ``merchant`` at all (rules 2-4 of the module doc;
        expiry and balance are not looked at)."""
        if merchant.merchant_id in self.exclude_merchants:
            return False
        if any(category_matches(c, merchant.category) for c in self.exclude_categories):
            return False
        if not self.exclude_memberships.isdisjoint(merchant.memberships):
            return False
        if (self.allow_merchants or self.allow_categories) and not (
                merchant.merchant_id in self.allow_merchants
                or any(category_matches(c, merchant.category) for c in self.allow_categories)):
            return False
        return not self.regions or merchant.region in self.regions


_SETS = ("allow_merchants", "allow_categories", "exclude_merchants", "exclude_categories",
         "exclude_memberships", "regions")
_AMOUNTS = ("per_payment", "per_day")
_KEYS = ("id", "kind", *_SETS, "expires", *_AMOUNTS)


def _is_won(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_WON


#: what each list's entries must look like, and how the message says so
_ENTRY_FORMS: dict[str, tuple[re.Pattern[str], str]] = {
    "allow_merchants": (_MERCHANT_ID, "a merchant id is 1-40 of A-Z a-z 0-9 -"),
    "exclude_merchants": (_MERCHANT_ID, "a merchant id is 1-40 of A-Z a-z 0-9 -"),
    "allow_categories": (_RULE_CATEGORY, "a category is 'ksic:' and 2-5 digits (matched as "
                                         "a prefix) or 'mcc:' and 4 digits"),
    "exclude_categories": (_RULE_CATEGORY, "a category is 'ksic:' and 2-5 digits (matched "
                                           "as a prefix) or 'mcc:' and 4 digits"),
    "exclude_memberships": (_MEMBERSHIP, "a membership is 1-32 of a-z 0-9 - (such as "
                                         "large-mart)"),
    "regions": (_REGION, "a region is 1-64 characters, no control characters and no "
                         "surrounding blanks"),
}


def _problem(rule: PocketRule) -> str | None:
    """What is wrong with one rule on its own, or None. Shared by the parser and direct
    construction, so a :class:`PocketRules` is consistent however it was made."""
    if not isinstance(rule.pocket, str) or not _ID.fullmatch(rule.pocket):
        return (f"id {rule.pocket!r} must be 1-64 characters of A-Z a-z 0-9 . _ : - "
                "starting with a letter or digit")
    if rule.kind not in KINDS:
        return f"kind {rule.kind!r} is unknown: it must be one of {', '.join(KINDS)}"
    for name in _SETS:
        values = getattr(rule, name)
        if not isinstance(values, frozenset) or not all(isinstance(v, str) for v in values):
            return f"{name} must be a list of strings"
        form, says = _ENTRY_FORMS[name]
        bad = sorted(v for v in values if not form.fullmatch(v) or v != v.strip())
        if bad:
            return f"{name} has {bad[0]!r}: {says}"
    both = sorted(rule.allow_merchants & rule.exclude_merchants)
    if both:
        return f"merchant {both[0]!r} is both allowed and excluded"
    for allowed in sorted(rule.allow_categories):
        for excluded in sorted(rule.exclude_categories):
            # every merchant code the allowed entry matches starts with the allowed code
            # itself, so an exclusion matching that code matches them all
            if category_matches(excluded, allowed):
                what = ("both allowed and excluded" if allowed == excluded
                        else f"allowed but excluded by {excluded!r}")
                return f"category {allowed!r} is {what}: the allow could never take effect"
    if rule.expires is not None and (isinstance(rule.expires, datetime)
                                     or not isinstance(rule.expires, date)):
        return f"expires must be a date YYYY-MM-DD, not {rule.expires!r}"
    for name in _AMOUNTS:
        value = getattr(rule, name)
        if value is not None and not _is_won(value):
            return f"{name} must be a whole number of won from 1 to 2**63-1, not {value!r}"
    if (rule.per_payment is not None and rule.per_day is not None
            and rule.per_payment > rule.per_day):
        return (f"per_payment {rule.per_payment} is more than per_day {rule.per_day}: "
                "the per-payment limit could never be reached")
    return None


def _where(source: str, index: int, pocket: object) -> str:
    named = f" {pocket!r}" if isinstance(pocket, str) else ""
    return f"{source}: pocket #{index}{named}"


@dataclass(frozen=True)
class PocketRules:
    """The pocket rules of one programme, checked as a whole on construction (raises
    :class:`ConfigError`). ``source`` names where they came from, for messages."""

    pockets: tuple[PocketRule, ...]
    source: str = field(default="<rules>", compare=False)
    _by_id: dict[str, PocketRule] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pockets", tuple(self.pockets))
        first: dict[str, int] = {}
        cash: list[int] = []
        for index, rule in enumerate(self.pockets, 1):
            if not isinstance(rule, PocketRule):
                raise ConfigError(f"{_where(self.source, index, None)}: not a PocketRule")
            problem = _problem(rule)
            if problem:
                raise ConfigError(f"{_where(self.source, index, rule.pocket)}: {problem}")
            if rule.pocket in first:
                raise ConfigError(f"{_where(self.source, index, rule.pocket)}: duplicate id, "
                                  f"pocket #{first[rule.pocket]} has it already")
            first[rule.pocket] = index
            if rule.kind == "cash":
                if cash:
                    raise ConfigError(
                        f"{_where(self.source, index, rule.pocket)}: a second cash pocket "
                        f"(pocket #{cash[0]} is one): a programme has exactly one")
                cash.append(index)
        if not cash:
            raise ConfigError(f"{self.source}: no cash pocket: a programme needs exactly one "
                              "[[pocket]] with kind = \"cash\"")
        object.__setattr__(self, "_by_id", {rule.pocket: rule for rule in self.pockets})

    def __iter__(self) -> Iterator[PocketRule]:
        return iter(self.pockets)

    def __len__(self) -> int:
        return len(self.pockets)

    def __contains__(self, pocket: object) -> bool:
        return pocket in self._by_id

    def __getitem__(self, pocket: str) -> PocketRule:
        return self._by_id[pocket]

    def get(self, pocket: str) -> PocketRule | None:
        return self._by_id.get(pocket)

    @property
    def cash(self) -> PocketRule:
        """The programme's one cash pocket."""
        return next(rule for rule in self.pockets if rule.kind == "cash")


# -- the rules file ---------------------------------------------------------------------------


def parse_rules(text: str, source: str = "<rules>") -> PocketRules:
    """Parse and check a pocket rules file; any fault raises :class:`ConfigError` (see the
    module doc for what is refused)."""
    if not isinstance(text, str):
        raise ConfigError(f"{source}: pocket rules must be text, not {type(text).__name__}")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        # tomllib names only a line and column: quote the line, so the operator sees which
        # setting it was.
        at = re.search(r"at line (\d+)", str(err))
        lines = text.split("\n")
        shown = (f": {lines[int(at[1]) - 1].strip()[:80]!r}"
                 if at and 0 < int(at[1]) <= len(lines) else "")
        raise ConfigError(f"{source}: not valid TOML: {err}{shown}") from err
    except RecursionError as err:
        # tomllib recurses into nested arrays and inline tables
        raise ConfigError(f"{source}: not valid TOML: nested too deeply") from err
    extra = sorted(set(doc) - {"pocket"})
    if extra:
        raise ConfigError(f"{source}: unknown top-level setting {extra[0]!r}: the file holds "
                          "only [[pocket]] tables")
    tables = doc.get("pocket", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{source}: 'pocket' must be [[pocket]] tables")
    return PocketRules(tuple(_rule(t, source, i) for i, t in enumerate(tables, 1)), source)


def load_rules(path: str | Path) -> PocketRules:
    """:func:`parse_rules` on a UTF-8 file; an unreadable file is a :class:`ConfigError`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read pocket rules: {err}") from err
    return parse_rules(text, str(path))


def _rule(table: dict[str, Any], source: str, index: int) -> PocketRule:
    pocket = table.get("id")
    where = _where(source, index, pocket)
    for key in sorted(table):
        if key not in _KEYS:
            near = difflib.get_close_matches(key, _KEYS, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(f"{where}: unknown setting {key!r}{hint}")
    if not isinstance(pocket, str) or not _ID.fullmatch(pocket):
        what = "has no id" if pocket is None else f"id {pocket!r} is not valid"
        raise ConfigError(f"{where}: {what}: an id is 1-64 characters of A-Z a-z 0-9 . _ : - "
                          "starting with a letter or digit")
    kind = table.get("kind")
    if kind not in KINDS:
        what = "has no kind" if kind is None else f"kind {kind!r} is unknown"
        raise ConfigError(f"{where}: {what}: it must be one of {', '.join(KINDS)}")
    sets: dict[str, frozenset[str]] = {}
    for name in _SETS:
        value = table.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: {name} must be a list of strings")
        sets[name] = frozenset(value)
    amounts: dict[str, int | None] = {}
    for name in _AMOUNTS:
        value = table.get(name)
        if value is not None and not _is_won(value):
            raise ConfigError(f"{where}: {name} must be a whole number of won from 1 to "
                              f"2**63-1, not {value!r}")
        amounts[name] = value
    return PocketRule(
        pocket=pocket, kind=kind, allow_merchants=sets["allow_merchants"],
        allow_categories=sets["allow_categories"], exclude_merchants=sets["exclude_merchants"],
        exclude_categories=sets["exclude_categories"],
        exclude_memberships=sets["exclude_memberships"], regions=sets["regions"],
        expires=_expiry(table.get("expires"), where), per_payment=amounts["per_payment"],
        per_day=amounts["per_day"])


def _expiry(value: object, where: str) -> date | None:
    if value is None or (isinstance(value, date) and not isinstance(value, datetime)):
        return value
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ConfigError(f"{where}: expires must be a date YYYY-MM-DD, not {value!r}")


DEFAULT_RULES = """\
# Goyang: the citizen's cash pays at every merchant of the programme; points (bus and
# local-food rewards) pay anywhere except large marts.

[[pocket]]
id = "cash"
kind = "cash"

[[pocket]]
id = "points"
kind = "points"
exclude_memberships = ["large-mart"]
"""

DEFAULT_POCKET_RULES = parse_rules(DEFAULT_RULES, "<default pocket rules>")


def terminal_split(detail: str) -> tuple[tuple[str, int], ...] | str | None:
    """The terminal's own split from an entry's detail: None when it carries none, the
    parts, or why they cannot be read."""
    try:
        doc = json.loads(detail) if detail else {}
    except ValueError:
        return None
    if not isinstance(doc, dict) or "split" not in doc:
        return None
    raw = doc["split"]
    if not isinstance(raw, list) or not raw:
        return "split is not a non-empty list of [pocket, won]"
    parts: list[tuple[str, int]] = []
    for part in raw:
        if not (isinstance(part, list) and len(part) == 2 and isinstance(part[0], str)
                and isinstance(part[1], int) and not isinstance(part[1], bool)
                and part[1] > 0):
            return f"split part {part!r} is not [pocket, won above zero]"
        parts.append((part[0], part[1]))
    if len({p for p, _ in parts}) != len(parts):
        return "split names a pocket twice"
    return tuple(parts)


# -- splitting a payment ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PocketBalance:
    """One pocket of one citizen: its balance in won (may be negative after an offline
    overdraw; it then pays nothing) and the balance's own expiry, if any."""

    pocket: str
    balance: int
    expires: date | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.pocket, str):
            raise ValueError(f"pocket must be a string, not {self.pocket!r}")
        if not isinstance(self.balance, int) or isinstance(self.balance, bool):
            raise ValueError(f"balance must be an int of won, not {self.balance!r}")
        if self.expires is not None and (isinstance(self.expires, datetime)
                                         or not isinstance(self.expires, date)):
            raise ValueError(f"expires must be a date, not {self.expires!r}")


class DeclineReason(StrEnum):
    """Why a split was declined. The value is the stable code (the same code as the
    terminal's ``insufficient_balance`` decline)."""

    NO_ELIGIBLE_POCKET = "no_eligible_pocket"
    INSUFFICIENT_BALANCE = "insufficient_balance"


@dataclass(frozen=True, slots=True)
class Split:
    """The outcome of :func:`split`. ``parts`` are ``(pocket, won)`` in drawing order, empty
    when declined; ``available`` is what the pockets that may pay here could give."""

    amount: int
    parts: tuple[tuple[str, int], ...] = ()
    reason: DeclineReason | None = None
    available: int = 0

    @property
    def approved(self) -> bool:
        return self.reason is None


def _expiry_of(rule: PocketRule, balance: PocketBalance) -> date | None:
    dates = [d for d in (rule.expires, balance.expires) if d is not None]
    return min(dates) if dates else None


def split(amount: int, balances: Iterable[PocketBalance], rules: PocketRules,
          merchant: MerchantFacts, day: date,
          spent_today: Mapping[str, int] | None = None) -> Split:
    """Split ``amount`` won across ``balances`` for a payment at ``merchant`` on ``day`` (the
    effective date), by the rules and in the order of the module doc. ``spent_today`` is what
    each pocket has already paid on ``day`` (missing: nothing). Raises :class:`ValueError` on
    arguments of the wrong shape: a non-positive amount, a date-time for ``day``, the same
    pocket twice in ``balances``, a negative or non-int amount spent."""
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise ValueError(f"amount must be a positive int of won, not {amount!r}")
    if isinstance(day, datetime) or not isinstance(day, date):
        raise ValueError(f"day must be a date, not {day!r}")
    spent = dict(spent_today or {})
    for pocket, won in spent.items():
        if not isinstance(won, int) or isinstance(won, bool) or won < 0:
            raise ValueError(f"spent_today[{pocket!r}] must be an int of won >= 0, not {won!r}")
    seen: set[str] = set()
    ranked: list[tuple[tuple[int, bool, date, str], int]] = []
    for bal in balances:
        if not isinstance(bal, PocketBalance):
            raise ValueError(f"balances must be PocketBalance, not {bal!r}")
        if bal.pocket in seen:
            raise ValueError(f"pocket {bal.pocket!r} is in balances twice")
        seen.add(bal.pocket)
        rule = rules.get(bal.pocket)
        if rule is None or bal.balance <= 0 or not rule.pays_at(merchant):
            continue
        expiry = _expiry_of(rule, bal)
        if expiry is not None and day > expiry:
            continue
        cap = bal.balance
        if rule.per_payment is not None:
            cap = min(cap, rule.per_payment)
        if rule.per_day is not None:
            cap = min(cap, rule.per_day - spent.get(bal.pocket, 0))
        if cap > 0:
            key = (_KIND_RANK[rule.kind], expiry is None, expiry or date.min, rule.pocket)
            ranked.append((key, cap))
    ranked.sort()
    available = sum(cap for _, cap in ranked)
    if available == 0:
        return Split(amount, reason=DeclineReason.NO_ELIGIBLE_POCKET)
    if available < amount:
        return Split(amount, reason=DeclineReason.INSUFFICIENT_BALANCE, available=available)
    parts: list[tuple[str, int]] = []
    left = amount
    for key, cap in ranked:
        take = min(cap, left)
        parts.append((key[3], take))
        left -= take
        if left == 0:
            break
    return Split(amount, tuple(parts), available=available)
