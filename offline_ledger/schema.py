"""Named migrations of the ledger schema, applied in order and recorded in ``migrations``.

A migration is never edited once released: add a new one instead.
"""

from __future__ import annotations

import sqlite3
import time

from offline_ledger.pockets import MIGRATION as POCKETS_MIGRATION

MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_entries",
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE entries (
            seq         INTEGER PRIMARY KEY,
            kind        TEXT    NOT NULL,
            terminal_id TEXT    NOT NULL,
            card_token  TEXT    NOT NULL,
            amount      INTEGER NOT NULL,
            ref_seq     INTEGER NOT NULL,
            place       TEXT    NOT NULL,
            wall_ms     INTEGER NOT NULL,
            mono        INTEGER NOT NULL,
            detail      TEXT    NOT NULL,
            prev_hash   BLOB    NOT NULL,
            entry_hash  BLOB    NOT NULL,
            signature   BLOB    NOT NULL
        );
        CREATE INDEX entries_ref ON entries (ref_seq) WHERE ref_seq != 0;
        -- Pruning is the only way an entry may leave, and only up to a recorded prune.
        CREATE TABLE prunes (
            id          INTEGER PRIMARY KEY,
            upto_seq    INTEGER NOT NULL,
            anchor_hash BLOB    NOT NULL,
            anchor_mono INTEGER NOT NULL,
            checkpoint  TEXT    NOT NULL,
            pruned_at   INTEGER NOT NULL
        );
        CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries
        BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only: UPDATE refused'); END;
        CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries
        WHEN OLD.seq > COALESCE((SELECT MAX(upto_seq) FROM prunes), 0)
        BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only: DELETE refused'); END;
        CREATE TRIGGER prunes_no_update BEFORE UPDATE ON prunes
        BEGIN SELECT RAISE(ABORT, 'prune records are append-only'); END;
        CREATE TRIGGER prunes_no_delete BEFORE DELETE ON prunes
        BEGIN SELECT RAISE(ABORT, 'prune records are append-only'); END;
        """,
    ),
    (
        "0002_side_tables",
        """
        CREATE TABLE deny_list (
            card_token TEXT PRIMARY KEY,
            version    INTEGER NOT NULL,
            reason     TEXT    NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE balances (
            card_token TEXT PRIMARY KEY,
            balance    INTEGER NOT NULL,
            as_of_seq  INTEGER NOT NULL,
            synced_at  INTEGER NOT NULL
        ) WITHOUT ROWID;
        -- Offline exposure per card since the last sync, and the last tap for the
        -- validator's duplicate-tap window. Derived from entries, kept for speed.
        -- WITHOUT ROWID: one b-tree instead of two, one page fewer per commit.
        CREATE TABLE card_counters (
            card_token     TEXT PRIMARY KEY,
            offline_amount INTEGER NOT NULL DEFAULT 0,
            offline_count  INTEGER NOT NULL DEFAULT 0,
            last_tap_mono  INTEGER NOT NULL DEFAULT 0,
            last_tap_seq   INTEGER NOT NULL DEFAULT 0,
            -- the card's last payment or fare, for EMV's floor-limit check (Book 3 §10.6.1)
            last_amount    INTEGER
        ) WITHOUT ROWID;
        CREATE TABLE qr_nonces (
            nonce     TEXT PRIMARY KEY,
            seq       INTEGER NOT NULL,
            expires_ms INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE sync_state (
            id           INTEGER PRIMARY KEY CHECK (id = 1),
            synced_upto  INTEGER NOT NULL,
            checkpoint   TEXT    NOT NULL,
            deny_version INTEGER NOT NULL
        );
        INSERT INTO sync_state VALUES (1, 0, '', 0);
        """,
    ),
    (
        "0003_points",
        """
        -- This week's bus points per card as the central service last told us, so the
        -- validator can show points offline. days_mask: bit n = weekday n (Monday 0) had
        -- its first ride credited; rider: the card's central profile category, if any.
        CREATE TABLE points_snapshot (
            card_token  TEXT PRIMARY KEY,
            week_start  TEXT    NOT NULL,
            points_week INTEGER NOT NULL,
            days_mask   INTEGER NOT NULL,
            rider       TEXT    NOT NULL,
            synced_at   INTEGER NOT NULL
        ) WITHOUT ROWID;
        -- The rules' summary (JSON) the snapshot came with, and the snapshot's version.
        CREATE TABLE points_state (
            id          INTEGER PRIMARY KEY CHECK (id = 1),
            version     INTEGER NOT NULL,
            rules       TEXT    NOT NULL
        );
        INSERT INTO points_state VALUES (1, 0, '');
        """,
    ),
    (
        "0004_riders",
        """
        -- Rider categories from the cards' central profiles (the "riders" of GET /v1/points),
        -- so the validator charges a youth or child fare offline. A card with no row pays the
        -- config's default category; a removed profile deletes its row. version: the
        -- profile change that set the row.
        CREATE TABLE rider_categories (
            card_token TEXT PRIMARY KEY,
            rider      TEXT    NOT NULL,
            version    INTEGER NOT NULL
        ) WITHOUT ROWID;
        -- The last profile version the central service sent (changes after it come next).
        CREATE TABLE riders_state (
            id      INTEGER PRIMARY KEY CHECK (id = 1),
            version INTEGER NOT NULL
        );
        INSERT INTO riders_state VALUES (1, 0);
        """,
    ),
    (
        "0005_clock_anchor",
        """
        -- The last time the central service signed (its answer's time_ms plus half the round
        -- trip) and this terminal's references when it arrived: its wall clock, the kernel's
        -- boot id and the time since boot (CLOCK_BOOTTIME), so the anchor can be carried
        -- forward on the boot clock by any process of the same boot. No row: no anchor yet.
        CREATE TABLE clock_anchor (
            id         INTEGER PRIMARY KEY CHECK (id = 1),
            central_ms INTEGER NOT NULL,
            local_ms   INTEGER NOT NULL,
            boot_id    TEXT    NOT NULL,
            boot_ms    INTEGER NOT NULL,
            rtt_ms     INTEGER NOT NULL
        );
        """,
    ),
    POCKETS_MIGRATION,
    (
        "0007_pruned_sums",
        """
        -- What pruning removed, summed by quarter hour of the entries' wall time and by kind:
        -- every UTC offset in use is whole quarter hours, so a day's totals, which the
        -- terminal reports to central, stay whole after some of its entries are pruned.
        CREATE TABLE pruned_sums (
            quarter INTEGER NOT NULL,
            kind    TEXT    NOT NULL,
            count   INTEGER NOT NULL,
            amount  INTEGER NOT NULL,
            PRIMARY KEY (quarter, kind)
        ) WITHOUT ROWID;
        """,
    ),
]


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply every migration not yet recorded; return the names applied now."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)"
    )
    done = {row[0] for row in conn.execute("SELECT name FROM migrations")}
    applied = []
    for name, sql in MIGRATIONS:
        if name in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO migrations VALUES (?, ?)", (name, int(time.time() * 1000))
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(name)
    return applied


def _statements(sql: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies whole."""
    out: list[str] = []
    buf = ""
    for line in sql.strip().splitlines():
        if line.strip().startswith("--"):
            continue
        buf += line + "\n"
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out
