"""A fleet for the console's benchmark: ``n`` terminals with the status a city's fleet has.

Registration, configs, last-seen times, status reports and merchants are written in bulk
straight into the product's tables (``terminals``, ``configs``, ``terminal_status``,
``terminal_reports``, ``merchants``, ``merchant_terminals``: the rows
:meth:`central.service.CentralLog.add_terminal`, :meth:`~central.service.CentralLog.
publish_config`, :func:`central.terminal_status.seen`, :func:`central.terminal_reports.
record` and the merchant registry write, without their one transaction per terminal),
which is why this lives with the benchmarks and not in ``central``: a product path never
writes those tables this way. Entries go through the real
:meth:`~central.service.CentralLog.ingest` (the chain, its checkpoints and the sync lag
stay true), for ``synced`` of the terminals.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from central import municipalities, terminal_reports, terminal_status
from central.service import CentralLog
from central.store import Store
from firmware_cfg import bundle as bundles
from firmware_cfg.config import DEFAULT, brn_check_digit, dumps
from offline_ledger.encoding import ZERO_HASH, EntryFields, encode, entry_hash
from sync.protocol import WireEntry, decode_entry

CLOCKS = ("ntp", "ntp", "ntp", "rtc", "unknown")
#: what the seeded terminals report running, the newest most often
SOFTWARE = ("localpay 0.1.0", "localpay 0.2.0", "localpay 0.2.0", "localpay 0.3.0",
            "localpay 0.3.0", "localpay 0.3.0")
#: the faults one terminal in twenty shows (the kiosk's out-of-service causes)
FAULTS = (("no_reader", "pcsc: no reader"), ("clock_unknown", "clock not set since boot"),
          ("home_read_only", "/home is read-only"), ("exposure_reached", "offline limit"))


@dataclass(frozen=True)
class SeededFleet:
    terminal_ids: tuple[str, ...]
    #: of those, the ones that sent a batch through ingest
    synced: tuple[str, ...]
    seconds: float


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _batch(key: Ed25519PrivateKey, terminal_id: str, role: str, place: str, clock: str,
           wall0: int, n: int) -> list[WireEntry]:
    out = []
    prev = ZERO_HASH
    kind, amount = ("tap", 1500) if role == "validator" else ("payment", 8_000)
    for i in range(n):
        detail = f'{{"clock":"{clock}"}}'
        wall = wall0 + i * 60_000
        f = EntryFields(i + 1, kind, terminal_id, f"{(i * 7919) % 10**6:032x}", amount, 0,
                        place, wall, wall, detail, prev)
        data = encode(f)
        prev = entry_hash(data)
        out.append(decode_entry(data, key.sign(data)))
    return out


def seed_fleet(service: CentralLog, n: int, *, municipality: str = municipalities.DEFAULT,
               prefix: str = "FLEET", synced: int | None = None, seed: int = 19,
               operator_key: Ed25519PrivateKey | None = None,
               progress: Callable[[str], None] | None = None) -> SeededFleet:
    """Register ``n`` terminals ``<prefix>-00001``...: tills and validators (one in four),
    config versions 1 to 3 signed by ``operator_key``, last seen from seconds to days ago (a
    few never, one in a hundred revoked); each seen one has reported a software version of
    :data:`SOFTWARE` (one in twenty with faults of :data:`FAULTS`); each till's place
    ``M0123`` names its merchant (``Shop 0123``), to which it is assigned; the first
    ``synced`` (default: 500 at most) send a batch of three entries, an hour to a day old,
    through ingest (some 10 to 40 ms each on PostgreSQL with crediting and posting
    following: 5,000 of them take minutes); their tills are assigned after it."""
    started = time.perf_counter()
    rnd = random.Random(seed)
    now = int(time.time() * 1000)
    op_key = operator_key or Ed25519PrivateKey.generate()
    ids, keys, rows, configs, status, reports = [], {}, [], [], [], []
    roles: dict[str, tuple[str, str]] = {}
    for i in range(1, n + 1):
        tid = f"{prefix}-{i:05d}"
        key = Ed25519PrivateKey.generate()
        role = "validator" if i % 4 == 0 else "till"
        place = f"R{100 + i % 97}" if role == "validator" else f"M{i % 1500:04d}"
        ids.append(tid)
        keys[tid] = key
        roles[tid] = (role, place)
        rows.append((tid, _raw(key), 37.6 + rnd.random() / 10, 126.8 + rnd.random() / 10, 0,
                     ZERO_HASH, now - rnd.randint(1, 400) * 86_400_000, municipality))
        text = dumps(DEFAULT.replace("terminal", id=tid, role=role, place=place))
        version = rnd.choice((1, 2, 2, 3, 3, 3))
        configs.append((tid, version, bundles.make(op_key, tid, version, text).decode("utf-8"),
                        now))
        if i % 50 != 7:  # a few never seen
            revoked = now if i % 100 == 3 else None
            seen = now - int(rnd.expovariate(1 / 600_000))
            status.append((tid, seen, revoked, "stolen" if revoked else ""))
            faults = rnd.sample(FAULTS, rnd.randint(1, 2)) if i % 20 == 11 else []
            reports.append((tid, municipality, rnd.choice(SOFTWARE), json.dumps(
                [{"cause": c, "detail": d} for c, d in faults]), seen))
    terminal_status.ensure_schema(service.store)
    terminal_reports.ensure_schema(service.store)
    with service.store.tx() as tx:
        municipalities.require(tx, municipality)
        tx.bulk("terminals", ("terminal_id", "public_key", "lat", "lon", "last_seq",
                              "last_hash", "added_ms", "municipality_id"), rows)
        tx.bulk("configs", ("terminal_id", "version", "body", "at_ms"), configs)
        tx.bulk("terminal_status", ("terminal_id", "last_seen_ms", "revoked_ms",
                                    "revoked_reason"), status)
        tx.bulk("terminal_reports", ("terminal_id", "municipality_id", "software", "faults",
                                     "reported_ms"), reports)
    if progress:
        progress(f"{n} terminals registered in {time.perf_counter() - started:.1f} s")
    sent = ids[:min(n, 500) if synced is None else synced]
    for k, tid in enumerate(sent, 1):
        role, place = roles[tid]
        wall0 = now - rnd.randint(3_600_000, 86_400_000)
        service.ingest(tid, _batch(keys[tid], tid, role, place, rnd.choice(CLOCKS), wall0, 3))
        if progress and k % 500 == 0:
            progress(f"{k} of {len(sent)} terminals synced")
    _assign_merchants(service.store, municipality, roles, now)
    return SeededFleet(tuple(ids), tuple(sent), time.perf_counter() - started)


def _assign_merchants(store: Store, municipality: str, roles: dict[str, tuple[str, str]],
                      now: int) -> None:
    """Each till to the merchant its place names, made where the municipality has none."""
    tills = {tid: place for tid, (role, place) in roles.items() if role == "till"}
    with store.tx() as tx:
        known = {str(m) for (m,) in tx.all("SELECT merchant_id FROM merchants WHERE "
                                           "municipality_id = ?", (municipality,))}
        new = sorted(set(tills.values()) - known)
        tx.bulk("merchants", ("municipality_id", "merchant_id", "name", "brn", "category",
                              "version", "updated_ms"),
                [(municipality, m, f"Shop {m[1:]}", _brn(k), "ksic:47211", 1, now)
                 for k, m in enumerate(new, len(known))])
        tx.bulk("merchant_terminals", ("municipality_id", "terminal_id", "merchant_id",
                                       "assigned_ms"),
                [(municipality, tid, place, now) for tid, place in sorted(tills.items())])


def _brn(n: int) -> str:
    """A business registration number with a right check digit, unique per ``n``."""
    first9 = f"{130_000_000 + n:09d}"
    return f"{first9}{brn_check_digit(first9)}"


def measure_fleet(store: Store, *, runs: int = 50, limit: int = 100,
                  filter_text: str | None = None, role: str | None = None,
                  sort: str = "last_seen_ms", desc: bool = True, offset: int = 0,
                  municipality: str | None = None, software: str | None = None,
                  faulty: bool = False) -> dict[str, float]:
    """Milliseconds of :func:`central.console_data.fleet` for one page (by default the
    newest seen first, as an operator looking for silent terminals asks it): p50, p99 and
    the slowest of ``runs``."""
    from central.console_data import fleet

    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fleet(store, filter_text, role, sort, desc, offset, limit, municipality=municipality,
              software=software, faulty=faulty)
        times.append((time.perf_counter() - start) * 1000)
    return percentiles(times)


def percentiles(times_ms: list[float]) -> dict[str, float]:
    """p50, p99 and the slowest of ``times_ms`` (the sorted times at n/2 and n*99/100),
    rounded to 0.1 ms."""
    times = sorted(times_ms)
    return {"p50_ms": round(times[len(times) // 2], 1),
            "p99_ms": round(times[min(len(times) - 1, (len(times) * 99) // 100)], 1),
            "max_ms": round(times[-1], 1), "runs": len(times)}
