"""Ingest hooks: card balances with overdrafts, and the fraud rules.

Each is a named hook run inside the ingest transaction (see
:class:`central.service.IngestHook`). Fraud rules flag entries in ``flags`` and, when
configured to, put the card on the deny list. Offline approvals are never refused here: the
money was already given, so an overspent card becomes an *overdraft* on record.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from central.service import HookContext, Ingested, IngestHook
from central.store import Tx
from localpay.errors import ConfigError

SPEND = ("payment", "tap")
GIVE_BACK = ("refund", "void")


class BalanceHook:
    """Keeps central balances of known cards; records overdrafts and deny-lists the card."""

    name = "balances"

    def __call__(self, tx: Tx, batch: Sequence[Ingested], ctx: HookContext) -> None:
        moves = [i for i in batch if i.entry.card_token and i.entry.kind in SPEND + GIVE_BACK]
        if not moves:
            return
        tokens = sorted({i.entry.card_token for i in moves})
        balances: dict[str, int] = {}
        for chunk in _chunks(tokens, 500):
            marks, params = tx.in_list(chunk)
            for token, balance in tx.all(
                f"SELECT card_token, balance FROM balances WHERE card_token IN {marks}", params
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
            marks, params = tx.in_list(chunk)
            rows = tx.all(
                "SELECT e.card_token, e.wall_ms, e.terminal_id, t.lat, t.lon FROM entries e "
                "JOIN terminals t ON t.terminal_id = e.terminal_id "
                f"WHERE e.card_token IN {marks} AND e.wall_ms >= ? AND e.terminal_id <> ? "
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
