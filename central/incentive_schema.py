"""The incentive tables (:mod:`central.incentives`, :mod:`central.payouts`,
:mod:`central.profiles`) and their migration to one programme per municipality.

Each municipality has its own incentive programme: its rules versions, its cards' weeks
(caps, first rides), rider profiles, campaign claims, payouts and month runs, all keyed by
``municipality_id``. Credits and adjustments stay keyed by the ledger entry they come from
(a terminal belongs to one municipality) and name the municipality of that terminal, so a
month is paid per municipality without a join. The crediting cursor is one: crediting
follows the one central log, each entry under its terminal's municipality's programme.

A store from before this keeps every row, in ``default`` (the one programme it had): the
tables whose key gains the municipality are rebuilt (SQLite cannot change a primary key in
place) and the credit tables get the column with ``default`` in every row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the store imports this module for its tables
    from central.store import Tx

DEFAULT = "default"

#: tables whose primary key gains ``municipality_id``; ``{name}`` is the table's name
_REKEYED = {
    "incentive_rules": """
CREATE TABLE IF NOT EXISTS {name} (
    version BIGINT NOT NULL, sha256 TEXT NOT NULL, body TEXT NOT NULL,
    loaded_ms BIGINT NOT NULL, municipality_id TEXT NOT NULL DEFAULT 'default',
    PRIMARY KEY (municipality_id, version))""",
    "incentive_weeks": """
CREATE TABLE IF NOT EXISTS {name} (
    card_token TEXT NOT NULL, week_start TEXT NOT NULL, points BIGINT NOT NULL,
    days_mask INTEGER NOT NULL, version BIGINT NOT NULL, firsts TEXT NOT NULL DEFAULT '',
    municipality_id TEXT NOT NULL DEFAULT 'default',
    PRIMARY KEY (municipality_id, card_token, week_start))""",
    "incentive_profiles": """
CREATE TABLE IF NOT EXISTS {name} (
    card_token TEXT NOT NULL, rider TEXT NOT NULL, updated_ms BIGINT NOT NULL,
    version BIGINT NOT NULL DEFAULT 0, municipality_id TEXT NOT NULL DEFAULT 'default',
    PRIMARY KEY (municipality_id, card_token))""",
    "incentive_claims": """
CREATE TABLE IF NOT EXISTS {name} (
    campaign_id TEXT NOT NULL, card_token TEXT NOT NULL, holder TEXT NOT NULL,
    terminal_id TEXT NOT NULL, seq BIGINT NOT NULL,
    municipality_id TEXT NOT NULL DEFAULT 'default',
    PRIMARY KEY (municipality_id, campaign_id, card_token),
    UNIQUE (municipality_id, campaign_id, holder))""",
    "incentive_payouts": """
CREATE TABLE IF NOT EXISTS {name} (
    card_token TEXT NOT NULL, month TEXT NOT NULL, points BIGINT NOT NULL, paid BIGINT NOT NULL,
    carry BIGINT NOT NULL, status TEXT NOT NULL, balance_version BIGINT, paid_ms BIGINT NOT NULL,
    municipality_id TEXT NOT NULL DEFAULT 'default',
    PRIMARY KEY (municipality_id, card_token, month))""",
    "incentive_runs": """
CREATE TABLE IF NOT EXISTS {name} (
    month TEXT NOT NULL, cards BIGINT NOT NULL, points BIGINT NOT NULL,
    held_cards BIGINT NOT NULL, held_points BIGINT NOT NULL, balance_version BIGINT,
    ran_ms BIGINT NOT NULL, municipality_id TEXT NOT NULL DEFAULT 'default',
    PRIMARY KEY (municipality_id, month))""",
}

TABLES = ";".join([*(ddl.format(name=t) for t, ddl in _REKEYED.items()), """
CREATE TABLE IF NOT EXISTS incentive_credits (
    terminal_id TEXT NOT NULL, seq BIGINT NOT NULL, log_index BIGINT NOT NULL,
    card_token TEXT NOT NULL, rule TEXT NOT NULL, points BIGINT NOT NULL, base BIGINT NOT NULL,
    ref_seq BIGINT NOT NULL, rule_version BIGINT NOT NULL, day TEXT NOT NULL,
    payable_month TEXT NOT NULL, credited_ms BIGINT NOT NULL, note TEXT NOT NULL,
    municipality_id TEXT NOT NULL DEFAULT 'default', PRIMARY KEY (terminal_id, seq));
CREATE INDEX IF NOT EXISTS incentive_credits_card ON incentive_credits (card_token, day);
CREATE INDEX IF NOT EXISTS incentive_credits_month ON incentive_credits (payable_month);
CREATE INDEX IF NOT EXISTS incentive_credits_ref ON incentive_credits (terminal_id, ref_seq)
    WHERE ref_seq <> 0;
CREATE TABLE IF NOT EXISTS incentive_adjustments (
    terminal_id TEXT NOT NULL, seq BIGINT NOT NULL, cause TEXT NOT NULL,
    log_index BIGINT NOT NULL, card_token TEXT NOT NULL, rule TEXT NOT NULL,
    points BIGINT NOT NULL, rule_version BIGINT NOT NULL, day TEXT NOT NULL,
    payable_month TEXT NOT NULL, settled_month TEXT, credited_ms BIGINT NOT NULL,
    note TEXT NOT NULL, municipality_id TEXT NOT NULL DEFAULT 'default',
    PRIMARY KEY (terminal_id, seq, cause));
CREATE INDEX IF NOT EXISTS incentive_adjustments_card ON incentive_adjustments (card_token, day);
CREATE TABLE IF NOT EXISTS incentive_cursor (
    id INTEGER PRIMARY KEY CHECK (id = 1), next_index BIGINT NOT NULL)
"""])

#: made once every table has its municipality (after :func:`migrate`)
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS incentive_weeks_version ON incentive_weeks "
    "(municipality_id, week_start, version)",
    "CREATE INDEX IF NOT EXISTS incentive_weeks_card ON incentive_weeks (card_token)",
    "CREATE INDEX IF NOT EXISTS incentive_profiles_card ON incentive_profiles (card_token)",
    "CREATE INDEX IF NOT EXISTS incentive_credits_municipality ON incentive_credits "
    "(municipality_id, payable_month)",
)


def migrate(tx: Tx, columns: Callable[[Tx, str], set[str]]) -> None:
    """Give every incentive table its municipality; rows of an older store go to
    ``default``. ``columns(tx, table)``: the columns a table has (the store's backend)."""
    for table, ddl in _REKEYED.items():
        have = columns(tx, table)
        if "municipality_id" in have:
            continue
        # a new table under a name of its own, then renamed: PostgreSQL names the primary
        # key's index after the table, and the old one holds that name until dropped
        tx.run(f"DROP TABLE IF EXISTS {table}_new")
        tx.run(ddl.format(name=f"{table}_new"))
        cols = ", ".join(sorted(have))
        tx.run(f"INSERT INTO {table}_new ({cols}, municipality_id) SELECT {cols}, ? "
               f"FROM {table}", (DEFAULT,))
        tx.run(f"DROP TABLE {table}")
        tx.run(f"ALTER TABLE {table}_new RENAME TO {table}")
    for table in ("incentive_credits", "incentive_adjustments"):
        if "municipality_id" not in columns(tx, table):
            tx.run(f"ALTER TABLE {table} ADD COLUMN municipality_id TEXT NOT NULL "
                   "DEFAULT 'default'")
    for statement in _INDEXES:
        tx.run(statement)
