"""The PostgreSQL schema, as numbered migrations. Pure data: `postgres.py` applies them.

Rules: a migration, once released, is never edited; a change is a new migration with the next number. Each
runs in the one transaction that `PostgresStore.open` holds under a fixed advisory lock (DDL is
transactional in PostgreSQL), and is recorded in `schema_version` in that same transaction, so a migration
is applied entirely, once, or not at all, however many processes open the database at the same moment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Migration:
    """One versioned PostgreSQL schema step: its version, its name and its SQL."""

    version: int
    name: str
    sql: str


SCHEMA_VERSION_TABLE: Final = """
CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""

MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        1,
        "ledger, pending markers, usage samples",
        """
CREATE TABLE applies (
    idempotency_key  TEXT PRIMARY KEY,
    account_id       TEXT NOT NULL,
    identity         TEXT NOT NULL,
    credit_id        TEXT,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'finished', 'failed')),
    outcome          TEXT,
    error            TEXT,
    started_at       BIGINT NOT NULL,
    finished_at      BIGINT,
    attempts         INTEGER NOT NULL DEFAULT 1,
    available_before BIGINT,
    available_after  BIGINT,
    response_json    TEXT,
    seq              BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX applies_newest ON applies (started_at DESC, seq DESC);
CREATE INDEX applies_by_account ON applies (account_id, started_at DESC, seq DESC);
CREATE INDEX applies_pending_by_identity ON applies (identity, started_at DESC, seq DESC)
    WHERE status = 'pending';

CREATE TABLE pending_markers (
    identity        TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL,
    account_id      TEXT NOT NULL,
    started_at      BIGINT NOT NULL
);
CREATE INDEX pending_markers_by_key ON pending_markers (idempotency_key);

CREATE TABLE usage_samples (
    account_id     TEXT NOT NULL,
    limit_id       TEXT NOT NULL,
    window_name    TEXT NOT NULL,
    taken_at       BIGINT NOT NULL,
    used_percent   INTEGER NOT NULL,
    window_minutes INTEGER,
    resets_at      BIGINT,
    PRIMARY KEY (account_id, limit_id, window_name, taken_at)
);
CREATE INDEX usage_samples_by_account ON usage_samples (account_id, taken_at);
CREATE INDEX usage_samples_by_time ON usage_samples (taken_at);
""",
    ),
    Migration(
        2,
        "pending markers become claims (one vocabulary with SQLite)",
        """
ALTER TABLE pending_markers RENAME TO claims;
ALTER INDEX pending_markers_pkey RENAME TO claims_pkey;
ALTER INDEX pending_markers_by_key RENAME TO claims_by_key;
""",
    ),
)

LATEST: Final = MIGRATIONS[-1].version
