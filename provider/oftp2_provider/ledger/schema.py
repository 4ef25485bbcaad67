"""The ledger's versioned schema: ordered migration steps that run on SQLite and PostgreSQL.

Each step is a list of SQL statements written once, with three dialect tokens filled in per
backend: ``{pk}`` (auto-increment primary key), ``{blob}`` (binary column) and ``{bigint}``.
A step runs in one transaction together with its ``schema_version`` row, so a crash half-way
leaves the previous version intact and the next start simply runs the step again.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Dialect tokens: the only places where the SQL differs between backends.
DIALECT_TOKENS: dict[str, dict[str, str]] = {
    "sqlite": {"pk": "INTEGER PRIMARY KEY AUTOINCREMENT", "blob": "BLOB", "bigint": "INTEGER"},
    "postgresql": {"pk": "BIGSERIAL PRIMARY KEY", "blob": "BYTEA", "bigint": "BIGINT"},
}


@dataclass(frozen=True)
class Migration:
    """One schema step: ``version`` is reached after running ``statements`` in order."""

    version: int
    description: str
    statements: tuple[str, ...]

    def render(self, dialect: str) -> list[str]:
        """The statements with the dialect tokens filled in."""
        tokens = DIALECT_TOKENS[dialect]
        return [s.format(**tokens) for s in self.statements]


SCHEMA_VERSION_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_version ("
    " version INTEGER NOT NULL PRIMARY KEY,"
    " description TEXT NOT NULL,"
    " applied_at TEXT NOT NULL)"
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "transfers, receipts and events",
        (
            """
            CREATE TABLE transfers (
                id {pk},
                direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
                partner TEXT NOT NULL,
                dsn TEXT NOT NULL,
                file_date TEXT NOT NULL,
                file_time TEXT NOT NULL,
                originator TEXT NOT NULL,
                destination TEXT NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('queued', 'sending', 'sent', 'delivered',
                    'refused', 'failed', 'receiving', 'received', 'released')),
                local_path TEXT,
                size {bigint},
                sha256 TEXT,
                transmitted_size {bigint},
                transmitted_digest TEXT,
                security_level INTEGER NOT NULL DEFAULT 0,
                cipher_suite INTEGER NOT NULL DEFAULT 0,
                compression INTEGER NOT NULL DEFAULT 0,
                envelope INTEGER NOT NULL DEFAULT 0,
                signed_eerp INTEGER NOT NULL DEFAULT 0,
                record_format TEXT NOT NULL DEFAULT 'U',
                max_record_length INTEGER NOT NULL DEFAULT 0,
                user_data TEXT NOT NULL DEFAULT '',
                description TEXT NOT NULL DEFAULT '',
                receipt_state TEXT NOT NULL DEFAULT 'none'
                    CHECK (receipt_state IN ('none', 'held', 'due', 'sent')),
                nerp_code INTEGER,
                nerp_text TEXT,
                attempts INTEGER NOT NULL DEFAULT 0,
                restart_offset {bigint} NOT NULL DEFAULT 0,
                worker TEXT,
                session_id TEXT,
                dispatched INTEGER NOT NULL DEFAULT 0,
                dispatched_at TEXT,
                last_error TEXT,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                CONSTRAINT uq_transfers_key
                    UNIQUE (direction, dsn, file_date, file_time, originator, destination)
            )
            """,
            "CREATE INDEX ix_transfers_claim ON transfers (direction, partner, status, id)",
            "CREATE INDEX ix_transfers_receipts ON transfers (direction, partner, receipt_state)",
            "CREATE INDEX ix_transfers_dispatch ON transfers (direction, dispatched, status, id)",
            """
            CREATE TABLE receipts (
                id {pk},
                transfer_id INTEGER REFERENCES transfers (id),
                kind TEXT NOT NULL CHECK (kind IN ('EERP', 'NERP')),
                dsn TEXT NOT NULL,
                file_date TEXT NOT NULL,
                file_time TEXT NOT NULL,
                originator TEXT NOT NULL,
                destination TEXT NOT NULL,
                raw {blob} NOT NULL,
                verification TEXT NOT NULL,
                reason INTEGER,
                reason_text TEXT,
                received_at TEXT NOT NULL
            )
            """,
            "CREATE INDEX ix_receipts_transfer ON receipts (transfer_id)",
            """
            CREATE TABLE events (
                id {pk},
                transfer_id INTEGER REFERENCES transfers (id),
                session_id TEXT,
                kind TEXT NOT NULL,
                detail TEXT NOT NULL DEFAULT '{{}}',
                at TEXT NOT NULL
            )
            """,
            "CREATE INDEX ix_events_transfer ON events (transfer_id, id)",
            "CREATE INDEX ix_events_session ON events (session_id, id)",
        ),
    ),
)

#: The version a fully migrated database is at.
LATEST_VERSION = MIGRATIONS[-1].version
