"""The merchant registry: who may take the city's money, where, and paid to which account.

A merchant has an id (what a till's ``terminal.place`` names), a name, its business
registration number (사업자등록번호, check digit verified), a category with its scheme
(``ksic:47121``: Korean Standard Industrial Classification subclass, ``mcc:5411``: card
merchant category code), a region, programme memberships (``large-mart``: where bus points
are not spent), the bank account it is settled to, and whether it is active. Each change
raises its ``version``. A terminal belongs to exactly one merchant (``merchant_terminals``).

Every row carries ``municipality_id`` as the leading column of its key (SCALING.md: the
distribution key); a :class:`Registry` acts within one municipality.

The field checks shared with the terminal's ``[merchant]`` config section live in
:mod:`firmware_cfg.config`, so both refuse the same values; :func:`facts` is what a terminal
is given, and :meth:`Registry.config_for` puts it into a terminal's config text.

A CSV file (:meth:`Registry.load_csv`) is all or nothing: every bad line is reported with its
number and reason, and when there is one, nothing is written.
"""

from __future__ import annotations

import dataclasses
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from central import municipalities
from central.csvfiles import numbered_rows
from firmware_cfg.config import (
    check_category,
    check_memberships,
    check_merchant_id,
    check_text,
    dumps,
    loads,
    parse_brn,
)
from localpay.errors import ConfigError

if TYPE_CHECKING:  # the store imports this module for its tables
    from central.store import Store, Tx

TABLES = """
CREATE TABLE IF NOT EXISTS merchants (
    municipality_id TEXT NOT NULL DEFAULT 'default', merchant_id TEXT NOT NULL,
    name TEXT NOT NULL, brn TEXT NOT NULL, category TEXT NOT NULL,
    region TEXT NOT NULL DEFAULT '', memberships TEXT NOT NULL DEFAULT '',
    bank_code TEXT NOT NULL DEFAULT '', account_no TEXT NOT NULL DEFAULT '',
    account_holder TEXT NOT NULL DEFAULT '', active SMALLINT NOT NULL DEFAULT 1,
    version BIGINT NOT NULL, updated_ms BIGINT NOT NULL,
    PRIMARY KEY (municipality_id, merchant_id));
CREATE INDEX IF NOT EXISTS merchants_category ON merchants (municipality_id, category);
CREATE INDEX IF NOT EXISTS merchants_brn ON merchants (municipality_id, brn);
CREATE TABLE IF NOT EXISTS merchant_terminals (
    municipality_id TEXT NOT NULL DEFAULT 'default', terminal_id TEXT NOT NULL,
    merchant_id TEXT NOT NULL, assigned_ms BIGINT NOT NULL,
    PRIMARY KEY (municipality_id, terminal_id),
    FOREIGN KEY (municipality_id, merchant_id) REFERENCES merchants (municipality_id, merchant_id));
CREATE INDEX IF NOT EXISTS merchant_terminals_merchant
    ON merchant_terminals (municipality_id, merchant_id);
"""

_COLUMNS = ("municipality_id", "merchant_id", "name", "brn", "category", "region",
            "memberships", "bank_code", "account_no", "account_holder", "active", "version",
            "updated_ms")
#: what an update may change (the rest is identity or bookkeeping)
FIELDS = ("name", "brn", "category", "region", "memberships", "bank_code", "account_no",
          "account_holder", "active")
CSV_REQUIRED = ("merchant_id", "name", "brn", "category")
CSV_COLUMNS = (*CSV_REQUIRED, *FIELDS[3:])
_TRUE = {"1", "true", "yes", "y"}
_FALSE = {"0", "false", "no", "n"}
DEFAULT_MUNICIPALITY = "default"


#: stores whose registry tables this process has made or found: every terminal's round asks
#: (its pockets part), and making them again is a write transaction with the schema lock
_READY: weakref.WeakSet[Store] = weakref.WeakSet()


def ensure_schema(store: Store) -> None:
    """Make the registry's tables where they are missing (safe to run again; once per store
    in a process)."""
    if store in _READY:
        return
    with store.tx() as tx:
        tx.schema_lock("merchants")
        for statement in TABLES.split(";"):
            if statement.strip():
                tx.run(statement)
    _READY.add(store)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _check_bank_code(value: str) -> str:
    if value and not (len(value) == 3 and value.isascii() and value.isdigit()):
        raise ConfigError(f"bank_code: expected the bank's 3-digit code (such as 011), "
                          f"found {value!r}")
    return value


def _check_account_no(value: str) -> str:
    parts = value.split("-")
    digits = "".join(parts)
    if value and not (all(p.isascii() and p.isdigit() for p in parts)
                      and 6 <= len(digits) <= 20):
        raise ConfigError(f"account_no: expected 6 to 20 digits, groups joined by single "
                          f"hyphens (such as 301-0123-4567-81), found {value!r}")
    return value


def _split_memberships(value: str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v for v in value.replace(";", ",").replace("|", ",").split(",") if v.strip()]
    return check_memberships(value)


_CHECKS: tuple[tuple[str, Callable[[Any], Any]], ...] = (
    ("municipality_id", lambda v: check_merchant_id(v, "municipality id")),
    ("merchant_id", check_merchant_id),
    ("name", lambda v: check_text(v, "name", limit=100, required=True)),
    ("brn", parse_brn),
    ("category", check_category),
    ("region", lambda v: check_text(v, "region", limit=64)),
    ("memberships", _split_memberships),
    ("bank_code", lambda v: _check_bank_code(v.strip())),
    ("account_no", lambda v: _check_account_no(v.strip())),
    ("account_holder", lambda v: check_text(v, "account_holder", limit=100)),
    ("active", lambda v: v),
)


@dataclass(frozen=True)
class Merchant:
    """One merchant, checked and in its stored form on construction: ``brn`` as 10 digits,
    the category's scheme in lower case, memberships sorted without repeats (given as text,
    a list separated by ``,`` or ``;``)."""

    merchant_id: str
    name: str
    brn: str
    category: str
    region: str = ""
    memberships: tuple[str, ...] = ()
    bank_code: str = ""
    account_no: str = ""
    account_holder: str = ""
    active: bool = True
    version: int = 0
    updated_ms: int = 0
    municipality_id: str = DEFAULT_MUNICIPALITY

    def __post_init__(self) -> None:
        # every field's refusal at once: a CSV line or a command is fixed in one go
        problems: list[str] = []
        for name, check in _CHECKS:
            value = getattr(self, name)
            kind = (bool if name == "active" else (tuple, list, str) if name == "memberships"
                    else str)
            if not isinstance(value, kind):
                problems.append(f"{name}: expected {'true or false' if kind is bool else 'text'}"
                                f", found {value!r}")
                continue
            try:
                object.__setattr__(self, name, check(value))  # the stored form, once
            except ConfigError as err:
                problems.append(str(err))
        if not problems and bool(self.bank_code) != bool(self.account_no):
            problems.append("bank_code and account_no: a settlement account needs both, "
                            "or neither")
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def brn_display(self) -> str:
        """``123-45-67890``, as printed on the registration certificate."""
        return f"{self.brn[:3]}-{self.brn[3:5]}-{self.brn[5:]}"

    def same_facts(self, other: Merchant) -> bool:
        """Equal in everything a change would touch (not version or time)."""
        return all(getattr(self, f) == getattr(other, f) for f in FIELDS)

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["memberships"] = list(self.memberships)
        return out

    def _row(self) -> tuple[Any, ...]:
        return (self.municipality_id, self.merchant_id, self.name, self.brn, self.category,
                self.region, ",".join(self.memberships), self.bank_code, self.account_no,
                self.account_holder, int(self.active), self.version, self.updated_ms)


def _from_row(row: Sequence[Any]) -> Merchant:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["active"] = bool(values["active"])
    values["version"], values["updated_ms"] = int(values["version"]), int(values["updated_ms"])
    return Merchant(**values)


def facts(merchant: Merchant) -> dict[str, Any]:
    """What a terminal is told of its merchant: the keys of its ``[merchant]`` section.
    No bank account: settlement is central's business, not the till's."""
    return {"id": merchant.merchant_id, "name": merchant.name, "brn": merchant.brn,
            "category": merchant.category, "region": merchant.region,
            "memberships": list(merchant.memberships)}


def apply_facts(config_text: str, merchant: Merchant) -> str:
    """``config_text`` carrying ``merchant``'s facts (name shown at the till; a till's place
    its id), validated and ready to sign."""
    return dumps(loads(config_text).with_merchant(**facts(merchant)))


@dataclass(frozen=True)
class LoadResult:
    added: int
    updated: int
    unchanged: int

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class MerchantFileError(ConfigError):
    """A merchant CSV with bad lines: ``problems`` is every ``(line, reason)``, in order;
    nothing of the file was applied."""

    def __init__(self, source: str, problems: Sequence[tuple[int, str]]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__("\n".join(f"{source}:{n}: {why}" for n, why in self.problems))


@dataclass(frozen=True)
class _Line:
    number: int
    cells: dict[str, str]


def _parse_csv(text: str) -> tuple[list[_Line], list[tuple[int, str]]]:
    """The data lines as column -> cell, and every problem of form found."""
    problems: list[tuple[int, str]] = []
    lines: list[_Line] = []
    header: tuple[str, ...] = ()
    for number, cells in numbered_rows(text):
        if isinstance(cells, str):
            problems.append((number, cells))
            continue
        if not header:
            header = tuple(c.lower() for c in cells)
            problems.extend((number, why) for why in _header_problems(header))
            if problems:
                return [], problems
            continue
        if len(cells) != len(header):
            problems.append((number, f"expected {len(header)} fields as the header names, "
                                     f"found {len(cells)}"))
            continue
        lines.append(_Line(number, dict(zip(header, cells, strict=True))))
    if not header:
        problems.append((1, "expected a header line naming the columns, such as "
                            + ",".join(CSV_REQUIRED)))
    return lines, problems


def _header_problems(header: tuple[str, ...]) -> list[str]:
    out = []
    unknown = [c for c in header if c not in CSV_COLUMNS]
    if unknown:
        out.append(f"unknown column {unknown[0]!r}; the columns are {', '.join(CSV_COLUMNS)}")
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        out.append(f"column {repeated[0]!r} named twice")
    missing = [c for c in CSV_REQUIRED if c not in header]
    if missing:
        out.append(f"missing column {missing[0]!r}; required: {', '.join(CSV_REQUIRED)}")
    return out


def _active(cell: str) -> bool:
    value = cell.lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"active: expected 1/0, true/false or yes/no, found {cell!r}")


class Registry:
    """The merchants of one municipality in a central store."""

    def __init__(self, store: Store, municipality: str = DEFAULT_MUNICIPALITY) -> None:
        check_merchant_id(municipality, "municipality id")
        self.store = store
        self.municipality = municipality

    def _get(self, tx: Tx, merchant_id: str) -> Merchant | None:
        row = tx.one(f"SELECT {','.join(_COLUMNS)} FROM merchants WHERE municipality_id = ? "
                     "AND merchant_id = ?", (self.municipality, merchant_id))
        return _from_row(row) if row else None

    def _insert(self, tx: Tx, merchants: Sequence[Merchant]) -> None:
        tx.many(f"INSERT INTO merchants ({','.join(_COLUMNS)}) VALUES "
                f"({','.join('?' * len(_COLUMNS))})", [m._row() for m in merchants])

    def _rewrite(self, tx: Tx, merchants: Sequence[Merchant]) -> None:
        sets = ", ".join(f"{c} = ?" for c in _COLUMNS[2:])
        tx.many(f"UPDATE merchants SET {sets} WHERE municipality_id = ? AND merchant_id = ?",
                [(*m._row()[2:], m.municipality_id, m.merchant_id) for m in merchants])

    def add(self, merchant: Merchant) -> Merchant:
        """Register a new merchant (version 1); ConfigError when its id is taken."""
        new = dataclasses.replace(merchant, municipality_id=self.municipality, version=1,
                                  updated_ms=_now_ms())
        with self.store.tx() as tx:
            if self._get(tx, new.merchant_id) is not None:
                raise ConfigError(f"merchant {new.merchant_id!r} exists already; "
                                  "use update to change it")
            self._insert(tx, [new])
        return new

    def update(self, merchant_id: str, **changes: Any) -> Merchant:
        """Change only the fields given (of :data:`FIELDS`); the version rises when anything
        changed, and an update that changes nothing writes nothing."""
        unknown = sorted(set(changes) - set(FIELDS))
        if unknown:
            raise ConfigError(f"{unknown[0]}: not a field an update changes; those are "
                              f"{', '.join(FIELDS)}")
        with self.store.tx() as tx:
            current = self._get(tx, merchant_id)
            if current is None:
                raise ConfigError(f"no merchant {merchant_id!r}")
            new = dataclasses.replace(current, **changes)
            if new.same_facts(current):
                return current
            new = dataclasses.replace(new, version=current.version + 1, updated_ms=_now_ms())
            self._rewrite(tx, [new])
        return new

    def get(self, merchant_id: str) -> Merchant | None:
        with self.store.tx(write=False) as tx:
            return self._get(tx, merchant_id)

    def list(self, *, category: str | None = None, region: str | None = None,
             membership: str | None = None, active: bool | None = None
             ) -> tuple[Merchant, ...]:
        """Merchants by id. ``category`` is a whole code (``mcc:5411``) or, for KSIC, a code
        of 2 to 5 digits matching every code under it (``ksic:47``: all retail), as KSIC's
        divisions, groups, classes and subclasses nest by digits; MCCs do not nest."""
        where: list[str] = ["municipality_id = ?"]
        params: list[Any] = [self.municipality]
        if category is not None:
            scheme, _, code = category.strip().lower().partition(":")
            if scheme == "ksic" and code.isascii() and code.isdigit() and 2 <= len(code) < 5:
                where.append("category LIKE ?")
                params.append(f"ksic:{code}%")
            else:
                where.append("category = ?")
                params.append(check_category(category))
        if region is not None:
            where.append("region = ?")
            params.append(region.strip())
        if membership is not None:
            name = check_memberships([membership], "membership")[0]
            where.append("',' || memberships || ',' LIKE ?")
            params.append(f"%,{name},%")
        if active is not None:
            where.append("active = ?")
            params.append(int(active))
        with self.store.tx(write=False) as tx:
            rows = tx.all(f"SELECT {','.join(_COLUMNS)} FROM merchants WHERE "
                          f"{' AND '.join(where)} ORDER BY merchant_id", params)
        return tuple(_from_row(r) for r in rows)

    def assign_terminal(self, terminal_id: str, merchant_id: str) -> str | None:
        """Make ``terminal_id`` a terminal of ``merchant_id`` (an active merchant); return the
        merchant it belonged to before, if another."""
        if not terminal_id or len(terminal_id) > 64 or not terminal_id.isprintable():
            raise ConfigError(f"terminal id: expected 1 to 64 printable characters, found "
                              f"{terminal_id!r}")
        with self.store.tx() as tx:
            merchant = self._get(tx, merchant_id)
            if merchant is None:
                raise ConfigError(f"no merchant {merchant_id!r}")
            if not merchant.active:
                raise ConfigError(f"merchant {merchant_id!r} is not active")
            # a terminal of another municipality (or one's merchant) is never this one's
            municipalities.check_assignment(tx, terminal_id, self.municipality)
            before = tx.one("SELECT merchant_id FROM merchant_terminals WHERE "
                            "municipality_id = ? AND terminal_id = ?",
                            (self.municipality, terminal_id))
            tx.run("INSERT INTO merchant_terminals VALUES (?, ?, ?, ?) ON CONFLICT "
                   "(municipality_id, terminal_id) DO UPDATE SET merchant_id = "
                   "excluded.merchant_id, assigned_ms = excluded.assigned_ms",
                   (self.municipality, terminal_id, merchant_id, _now_ms()))
        previous = str(before[0]) if before else None
        return previous if previous != merchant_id else None

    def merchant_of(self, terminal_id: str, tx: Tx | None = None) -> Merchant | None:
        """The merchant ``terminal_id`` belongs to; in ``tx`` when given (a caller's
        transaction sees its own uncommitted rows)."""
        if tx is None:
            with self.store.tx(write=False) as own:
                return self.merchant_of(terminal_id, own)
        row = tx.one("SELECT merchant_id FROM merchant_terminals WHERE "
                     "municipality_id = ? AND terminal_id = ?", (self.municipality, terminal_id))
        return self._get(tx, str(row[0])) if row else None

    def terminals_of(self, merchant_id: str) -> tuple[str, ...]:
        with self.store.tx(write=False) as tx:
            rows = tx.all("SELECT terminal_id FROM merchant_terminals WHERE "
                          "municipality_id = ? AND merchant_id = ? ORDER BY terminal_id",
                          (self.municipality, merchant_id))
        return tuple(str(r[0]) for r in rows)

    def config_for(self, terminal_id: str, config_text: str, tx: Tx | None = None) -> str:
        """``config_text`` with the facts of the merchant ``terminal_id`` is assigned to;
        unchanged when it is assigned to none."""
        merchant = self.merchant_of(terminal_id, tx)
        return config_text if merchant is None else apply_facts(config_text, merchant)

    def enrolment_config(self, tx: Tx, terminal_id: str, config_text: str) -> str:
        """The first config of a terminal being enrolled, in the enrolment's transaction: with
        the facts of the merchant it is assigned to; a till assigned to none whose place names
        an active merchant is assigned to it here (rolled back with a refused enrolment)."""
        config = loads(config_text)
        merchant = self.merchant_of(terminal_id, tx)
        if merchant is None and config.terminal.role == "till":
            named = self._get(tx, config.terminal.place)
            if named is not None and named.active:
                tx.run("INSERT INTO merchant_terminals VALUES (?, ?, ?, ?)",
                       (self.municipality, terminal_id, named.merchant_id, _now_ms()))
                merchant = named
        return config_text if merchant is None else apply_facts(config_text, merchant)

    # -- CSV ----------------------------------------------------------------------------------

    def load_csv(self, path: str | Path) -> LoadResult:
        """Add the file's new merchants and update its known ones, all or nothing.

        A header line names the columns (:data:`CSV_COLUMNS`; the first four required). A
        column the file leaves out keeps its value in merchants already known; ``active``
        left empty does too. Raises :class:`MerchantFileError` with every bad line.
        """
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as err:
            raise ConfigError(f"{path}: {err}") from err
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            line = raw[:err.start].count(b"\n") + 1
            raise MerchantFileError(str(path), [(line, "not UTF-8 text (save the file as "
                                                       "CSV UTF-8)")]) from err
        return self.load_csv_text(text, str(path))

    def load_csv_text(self, text: str, source: str = "<csv>") -> LoadResult:
        # lines of bad form do not stop the others being checked: every bad line is told
        lines, problems = _parse_csv(text)
        first: dict[str, int] = {}
        for line in lines:
            mid = line.cells["merchant_id"]
            if mid in first:
                problems.append((line.number, f"merchant {mid!r} repeated (first on line "
                                              f"{first[mid]})"))
            else:
                first[mid] = line.number
        now = _now_ms()
        with self.store.tx() as tx:
            known = self._known(tx, list(first))
            added: list[Merchant] = []
            changed: list[Merchant] = []
            unchanged = 0
            for line in lines:
                if first.get(line.cells["merchant_id"]) != line.number:
                    continue
                try:
                    merchant = self._merge(line.cells, known.get(line.cells["merchant_id"]))
                except ConfigError as err:
                    problems.append((line.number, str(err)))
                    continue
                old = known.get(merchant.merchant_id)
                if old is None:
                    added.append(dataclasses.replace(merchant, version=1, updated_ms=now))
                elif old.same_facts(merchant):
                    unchanged += 1
                else:
                    changed.append(dataclasses.replace(merchant, version=old.version + 1,
                                                       updated_ms=now))
            if problems:
                # raised inside the transaction: it is rolled back, though nothing was written
                raise MerchantFileError(source, sorted(problems))
            self._insert(tx, added)
            self._rewrite(tx, changed)
        return LoadResult(len(added), len(changed), unchanged)

    def _known(self, tx: Tx, ids: Sequence[str]) -> dict[str, Merchant]:
        if not ids:
            return {}
        test, param = tx.any_of("merchant_id", ids)
        rows = tx.all(f"SELECT {','.join(_COLUMNS)} FROM merchants WHERE municipality_id = ? "
                      f"AND {test}", (self.municipality, param))
        return {m.merchant_id: m for m in map(_from_row, rows)}

    def _merge(self, cells: dict[str, str], old: Merchant | None) -> Merchant:
        values: dict[str, Any] = {k: v for k, v in cells.items() if k != "active"}
        if "memberships" in values:
            values["memberships"] = _split_memberships(values["memberships"])
        if cells.get("active"):
            values["active"] = _active(cells["active"])
        if old is None:
            return Merchant(municipality_id=self.municipality, **values)
        return dataclasses.replace(old, **values)


__all__ = ["CSV_COLUMNS", "FIELDS", "TABLES", "LoadResult", "Merchant", "MerchantFileError",
           "Registry", "apply_facts", "ensure_schema", "facts"]
