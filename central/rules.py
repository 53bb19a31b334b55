"""Ingest hooks: card balances with overdrafts, and the fraud rules; the operator's card
files and the deny list as it stands.

Each hook is a named hook run inside the ingest transaction (see
:class:`central.service.IngestHook`). Fraud rules flag entries in ``flags`` and, when
configured to, put the card on the deny list. Offline approvals are never refused here: the
money was already given, so an overspent card becomes an *overdraft* on record.

A card token is what terminals make of a card number, UID or wallet id
(``terminal.cards.card_token``): 32 hex digits. The operator's files of ``card_token,VALUE``
(:func:`read_card_file`: balances here, riders in :mod:`central.profiles`) are all or
nothing: UTF-8 with or without a BOM, CRLF or LF, an optional header line; a bad line (not
text, too few or too many columns, an empty or malformed token, a token twice, a bad value)
refuses the whole file, naming the first bad line and how many more there are.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from central.csvfiles import numbered_rows
from central.service import HookContext, Ingested, IngestHook
from central.store import Tx
from localpay.errors import ConfigError

SPEND = ("payment", "tap")
GIVE_BACK = ("refund", "void")

#: a card token as terminals make it (``terminal.cards.card_token``)
CARD_TOKEN = re.compile(r"[0-9a-f]{32}")
#: the largest balance snapshot: the largest whole number every JSON reader keeps exactly
#: (balances reach terminals in JSON), which leaves room in the store's 64-bit integers for
#: the refunds the balance hook adds to it
MAX_BALANCE = 2**53 - 1


def check_card_token(text: str) -> str:
    """``text`` as a card token (hex in lower case), or ConfigError."""
    token = text.strip().lower()
    if not token:
        raise ConfigError("empty card token")
    if not CARD_TOKEN.fullmatch(token):
        raise ConfigError(f"{text[:40]!r} is not a card token (32 hex digits)")
    return token


def read_card_file(path: Path, what: str,
                   value: Callable[[str], Any]) -> dict[str, Any]:
    """A file of ``card_token,WHAT`` lines as token -> ``value(cell)``; ``value`` raises
    ConfigError for a bad cell. Any bad line refuses the whole file (ConfigError)."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: {err.strerror or err}") from err
    problems: list[tuple[int, str]] = []
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        problems.append((line, "not UTF-8 text (save the file as CSV UTF-8)"))
        text = ""
    if "\0" in text:
        problems.append((text[:text.index("\0")].count("\n") + 1,
                         "holds a NUL byte: not a text file"))
        text = ""
    out: dict[str, Any] = {}
    first_line: dict[str, int] = {}
    seen_any = False
    for n, cells in numbered_rows(text):
        if isinstance(cells, str):
            problems.append((n, cells))
            break
        header, seen_any = not seen_any and cells[0].lower() == "card_token", True
        if len(cells) < 2:
            problems.append((n, f"expected card_token,{what}"))
        elif len(cells) > 2:
            problems.append((n, f"expected card_token,{what}, found {len(cells)} columns"))
        elif header:
            continue
        else:
            try:
                token = check_card_token(cells[0])
                if token in first_line:
                    raise ConfigError(f"card {token[:12]}… is also on line {first_line[token]}")
                out[token] = value(cells[1])
                first_line[token] = n
            except ConfigError as err:
                problems.append((n, str(err)))
    if problems:
        n, why = problems[0]
        more = len(problems) - 1
        raise ConfigError(f"{path}:{n}: {why}"
                          + (f" (and {more} more bad line{'s' if more > 1 else ''})"
                             if more else "") + "; nothing was loaded")
    return out


def balance_value(cell: str) -> int:
    """A balance snapshot's cell: whole won, 0 to :data:`MAX_BALANCE`."""
    if not re.fullmatch(r"-?[0-9]+", cell):
        raise ConfigError(f"expected card_token,balance: {cell[:40]!r} is not a whole number "
                          "of won")
    shown = cell if len(cell) <= 40 else cell[:40] + "…"
    if cell.startswith("-") and cell.strip("-0"):
        raise ConfigError(f"balance {shown} is negative (a snapshot is 0 to {MAX_BALANCE:,} "
                          "won)")
    # compared as text first: int() refuses a string of thousands of digits outright
    digits = cell.lstrip("-0") or "0"
    if len(digits) > len(str(MAX_BALANCE)) or int(digits) > MAX_BALANCE:
        raise ConfigError(f"balance {shown} is more than {MAX_BALANCE:,} won")
    return int(digits)


def read_balances(path: Path) -> dict[str, int]:
    """A balances file (``card_token,balance``), checked whole: see :func:`read_card_file`."""
    return read_card_file(path, "balance", balance_value)


def deny_list(tx: Tx, municipality: str) -> tuple[int, list[dict[str, Any]]]:
    """The deny list of ``municipality`` as it stands: its version and each card on it
    (``card_token``, ``reason``, ``at_ms``: when it was put on), by token."""
    top = tx.one("SELECT COALESCE(MAX(version), 0) FROM deny_changes WHERE municipality_id = ?",
                 (municipality,))
    rows = tx.all("SELECT d.card_token, d.reason, d.at_ms FROM deny_changes d WHERE "
                  "d.municipality_id = ? AND d.action = 'add' AND d.version = (SELECT "
                  "MAX(l.version) FROM deny_changes l WHERE l.municipality_id = d.municipality_id "
                  "AND l.card_token = d.card_token) ORDER BY d.card_token", (municipality,))
    return int(top[0]) if top else 0, [
        {"card_token": str(t), "reason": str(r), "at_ms": int(at)} for t, r, at in rows]


class BalanceHook:
    """Keeps central balances of known cards; records overdrafts and deny-lists the card.
    Only the snapshots of the terminal's own municipality move (a card's balance elsewhere
    is that municipality's, and its payment here is not posted there)."""

    name = "balances"

    def __call__(self, tx: Tx, batch: Sequence[Ingested], ctx: HookContext) -> None:
        moves = [i for i in batch if i.entry.card_token and i.entry.kind in SPEND + GIVE_BACK]
        if not moves:
            return
        tokens = sorted({i.entry.card_token for i in moves})
        balances: dict[str, int] = {}
        for chunk in _chunks(tokens, 500):
            cond, params = tx.among("card_token", chunk)
            for token, balance in tx.all(
                f"SELECT card_token, balance FROM balances WHERE {cond} "
                "AND municipality_id = ?", [*params, ctx.municipality]
            ):
                balances[str(token)] = int(balance)
        if not balances:
            return
        overdrafts = []
        overdrawn: set[str] = set()
        for item in moves:
            e = item.entry
            if e.card_token not in balances:
                continue
            before = balances[e.card_token]
            after = before - e.amount if e.kind in SPEND else before + e.amount
            balances[e.card_token] = after
            if after < 0 and e.kind in SPEND:
                overdrafts.append((item.log_index, e.card_token, e.terminal_id, e.seq, e.amount,
                                   after, item.day))
                overdrawn.add(e.card_token)
        version = ctx.service.next_balance_version(tx)
        tx.many("UPDATE balances SET balance = ?, version = ? WHERE card_token = ?",
                [(b, version, t) for t, b in balances.items()])
        tx.many("INSERT INTO overdrafts VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                overdrafts)
        for token in sorted(overdrawn):
            ctx.deny(tx, token, "overdraft")


@dataclass(frozen=True)
class TravelRule:
    """The same card at two terminals farther apart than ``max_kmh`` allows in the time."""

    enabled: bool = True
    max_kmh: float = 120.0
    min_km: float = 2.0
    deny: bool = True


@dataclass(frozen=True)
class RoundBurstRule:
    """Many round-amount payments at one merchant in a short time: cash-out of discounted
    local currency."""

    enabled: bool = True
    unit: int = 10_000
    count: int = 5
    window_s: int = 600
    deny: bool = False


@dataclass(frozen=True)
class BelowLimitRule:
    """Many amounts just under the per-transaction limit on one card (structuring)."""

    enabled: bool = True
    limit: int = 50_000
    margin_pct: int = 10
    count: int = 3
    window_s: int = 3600
    deny: bool = True


@dataclass(frozen=True)
class FraudConfig:
    travel: TravelRule = field(default_factory=TravelRule)
    round_burst: RoundBurstRule = field(default_factory=RoundBurstRule)
    below_limit: BelowLimitRule = field(default_factory=BelowLimitRule)

    @classmethod
    def load(cls, path: str | Path) -> FraudConfig:
        """Read ``[travel]``, ``[round_burst]``, ``[below_limit]`` tables from a TOML file."""
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"fraud rules {path}: {err}") from err
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FraudConfig:
        made: dict[str, Any] = {}
        for f in fields(cls):
            section = data.pop(f.name, {})
            rule_cls = type(getattr(cls(), f.name))
            if not isinstance(section, dict):
                raise ConfigError(f"fraud rule [{f.name}] must be a table")
            known = {x.name: x for x in fields(rule_cls)}
            for key, value in section.items():
                if key not in known:
                    raise ConfigError(f"fraud rule [{f.name}] has no setting {key!r}")
                want = type(getattr(rule_cls(), key))
                if want is float and type(value) is int:
                    value = float(value)
                if type(value) is not want:
                    raise ConfigError(f"fraud rule [{f.name}] {key} must be {want.__name__}")
            made[f.name] = rule_cls(**section)
        if data:
            raise ConfigError(f"unknown fraud rules: {sorted(data)}")
        return cls(**made)


def _chunks(items: Sequence[Any], n: int) -> list[Sequence[Any]]:
    return [items[i : i + n] for i in range(0, len(items), n)]


def _km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 12_742.0 * math.asin(min(1.0, math.sqrt(a)))


def _flag(rows: list[tuple[Any, ...]], item: Ingested, rule: str, detail: dict[str, Any]) -> None:
    e = item.entry
    rows.append((item.log_index, rule, e.card_token, e.terminal_id, e.seq, item.day,
                 json.dumps(detail, sort_keys=True)))


class FraudHook:
    """The three named fraud rules of :class:`FraudConfig`, run on ingest."""

    name = "fraud"

    def __init__(self, config: FraudConfig | None = None) -> None:
        self.config = config or FraudConfig()

    def __call__(self, tx: Tx, batch: Sequence[Ingested], ctx: HookContext) -> None:
        flags: list[tuple[Any, ...]] = []
        deny: dict[str, str] = {}
        cfg = self.config
        if cfg.travel.enabled and ctx.lat is not None and ctx.lon is not None:
            self._travel(tx, batch, ctx.terminal_id, (ctx.lat, ctx.lon), flags, deny)
        if cfg.round_burst.enabled:
            self._round_burst(tx, batch, flags, deny)
        if cfg.below_limit.enabled:
            self._below_limit(tx, batch, flags, deny)
        tx.many("INSERT INTO flags VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", flags)
        for token, reason in sorted(deny.items()):
            ctx.deny(tx, token, reason)

    def _travel(self, tx: Tx, batch: Sequence[Ingested], terminal_id: str,
                where: tuple[float, float], flags: list[tuple[Any, ...]],
                deny: dict[str, str]) -> None:
        rule = self.config.travel
        lat, lon = where
        seen: dict[str, int] = {}
        for item in batch:
            e = item.entry
            if e.card_token and e.kind in SPEND and e.card_token not in seen:
                seen[e.card_token] = e.wall_ms
        if not seen:
            return
        tokens = sorted(seen)
        window = 24 * 3_600_000
        lo = min(seen.values()) - window
        for chunk in _chunks(tokens, 500):
            cond, params = tx.among("e.card_token", chunk)
            rows = tx.all(
                "SELECT e.card_token, e.wall_ms, e.terminal_id, t.lat, t.lon FROM entries e "
                "JOIN terminals t ON t.terminal_id = e.terminal_id "
                f"WHERE {cond} AND e.wall_ms >= ? AND e.terminal_id <> ? "
                "AND t.lat IS NOT NULL", [*params, lo, terminal_id])
            other: dict[str, list[tuple[int, str, float, float]]] = defaultdict(list)
            for token, wall, tid, olat, olon in rows:
                other[str(token)].append((int(wall), str(tid), float(olat), float(olon)))
            for item in batch:
                e = item.entry
                for wall, tid, olat, olon in other.get(e.card_token, ()):
                    km = _km(lat, lon, olat, olon)
                    hours = max(abs(e.wall_ms - wall), 1000) / 3_600_000
                    if km >= rule.min_km and km / hours > rule.max_kmh:
                        _flag(flags, item, "travel", {"other_terminal": tid, "km": round(km, 1),
                                                      "minutes": round(hours * 60, 1)})
                        if rule.deny:
                            deny[e.card_token] = "fraud:travel"
                        break

    def _round_burst(self, tx: Tx, batch: Sequence[Ingested], flags: list[tuple[Any, ...]],
                     deny: dict[str, str]) -> None:
        rule = self.config.round_burst
        hits = [i for i in batch if i.entry.kind == "payment" and i.entry.amount > 0
                and i.entry.amount % rule.unit == 0]
        by_place: dict[str, list[Ingested]] = defaultdict(list)
        for item in hits:
            by_place[item.entry.place].append(item)
        window = rule.window_s * 1000
        for place, items in by_place.items():
            lo = min(i.entry.wall_ms for i in items) - window
            first_new = min(i.log_index for i in items)
            earlier = [int(r[0]) for r in tx.all(
                "SELECT wall_ms FROM entries WHERE place = ? AND wall_ms >= ? AND log_index < ? "
                "AND kind = 'payment' AND amount > 0 AND amount % ? = 0",
                (place, lo, first_new, rule.unit))]
            times = sorted(earlier + [i.entry.wall_ms for i in items])
            for item in items:
                t = item.entry.wall_ms
                n = sum(1 for x in times if t - window <= x <= t)
                if n >= rule.count:
                    _flag(flags, item, "round_burst", {"place": place, "count": n})
                    if rule.deny:
                        deny[item.entry.card_token] = "fraud:round_burst"

    def _below_limit(self, tx: Tx, batch: Sequence[Ingested], flags: list[tuple[Any, ...]],
                     deny: dict[str, str]) -> None:
        rule = self.config.below_limit
        floor = rule.limit * (100 - rule.margin_pct) // 100
        hits = [i for i in batch if i.entry.card_token and i.entry.kind in SPEND
                and floor <= i.entry.amount < rule.limit]
        by_card: dict[str, list[Ingested]] = defaultdict(list)
        for item in hits:
            by_card[item.entry.card_token].append(item)
        window = rule.window_s * 1000
        for token, items in by_card.items():
            lo = min(i.entry.wall_ms for i in items) - window
            first_new = min(i.log_index for i in items)
            earlier = [int(r[0]) for r in tx.all(
                "SELECT wall_ms FROM entries WHERE card_token = ? AND wall_ms >= ? "
                "AND log_index < ? AND kind IN ('payment', 'tap') AND amount >= ? AND amount < ?",
                (token, lo, first_new, floor, rule.limit))]
            times = sorted(earlier + [i.entry.wall_ms for i in items])
            for item in items:
                t = item.entry.wall_ms
                n = sum(1 for x in times if t - window <= x <= t)
                if n >= rule.count:
                    _flag(flags, item, "below_limit", {"count": n, "floor": floor})
                    if rule.deny:
                        deny[token] = "fraud:below_limit"


def default_hooks(config: FraudConfig | None = None) -> list[IngestHook]:
    return [BalanceHook(), FraudHook(config)]
