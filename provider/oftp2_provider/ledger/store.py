"""The transfer ledger: durable state of every virtual file sent or received, in SQL.

Every status change is a compare-and-set (``UPDATE … WHERE id = ? AND status IN (…)`` and a check
of the row count) written in the same transaction as its audit event, so several gateways and
Airflow workers can share one database without lost updates or double sends.  Claiming queued
outbound files uses ``FOR UPDATE SKIP LOCKED`` on PostgreSQL and ``BEGIN IMMEDIATE`` on SQLite.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from .backend import Backend, Cursor, hook_from_conn_id, hook_from_uri, sqlite_hook
from .models import (
    Direction,
    InvalidTransition,
    KeyConflict,
    LedgerError,
    LedgerEvent,
    Receipt,
    ReceiptKind,
    ReceiptState,
    SchemaError,
    Transfer,
    TransferNotFound,
    TransferStatus,
    VirtualFileKey,
)
from .schema import LATEST_VERSION, MIGRATIONS, SCHEMA_VERSION_DDL

if TYPE_CHECKING:
    from airflow.providers.common.sql.hooks.sql import DbApiHook

log = logging.getLogger(__name__)

S = TransferStatus
_TransferList = list[Transfer]
_EventList = list[LedgerEvent]
_ReceiptList = list[Receipt]

#: NERP reason used when a held receipt is released as "not ok" without a code (34: processing failed).
DEFAULT_NERP_CODE = 34

_TRANSFER_COLUMNS = (
    "id, direction, partner, dsn, file_date, file_time, originator, destination, status, local_path, "
    "size, sha256, transmitted_size, transmitted_digest, security_level, cipher_suite, compression, "
    "envelope, signed_eerp, record_format, max_record_length, user_data, description, receipt_state, "
    "nerp_code, nerp_text, attempts, restart_offset, worker, session_id, dispatched, dispatched_at, "
    "last_error, created_at, updated_at"
)
_KEY_WHERE = "dsn = ? AND file_date = ? AND file_time = ? AND originator = ? AND destination = ?"

#: Which statuses each outbound/inbound action may start from (the transition table).
TRANSITIONS: dict[str, tuple[TransferStatus, ...]] = {
    "claim": (S.QUEUED,),
    "mark_sent": (S.SENDING,),
    "mark_delivered": (S.SENDING, S.SENT, S.FAILED),
    "mark_refused": (S.SENDING, S.SENT, S.FAILED),
    "mark_failed": (S.SENDING, S.SENT),
    "requeue": (S.FAILED,),
    "requeue_stale": (S.SENDING,),
    "restart_inbound": (S.RECEIVING, S.FAILED),
    "complete_inbound": (S.RECEIVING,),
    "fail_inbound": (S.RECEIVING,),
    "set_restart_offset": (S.RECEIVING, S.SENDING, S.FAILED, S.QUEUED),
    "release_receipt": (S.RECEIVED,),
    "mark_receipt_sent": (S.RECEIVED, S.RELEASED),
    "resend_receipt": (S.RECEIVED, S.RELEASED),
    "claim_receipt": (S.RECEIVED, S.RELEASED),
    # a received EERP/NERP settles the transfer also while it waits in the queue for a re-send
    # (the partner has the file: e.g. our session broke after its EFPA was sent, then it called us)
    "apply_eerp": (S.QUEUED, S.SENDING, S.SENT, S.FAILED),
    "apply_nerp": (S.QUEUED, S.SENDING, S.SENT, S.FAILED),
}
#: Inbound statuses meaning "this virtual file was received already" (a new SFID is a duplicate).
RECEIVED_STATUSES = (S.RECEIVED, S.RELEASED)


def utcnow() -> str:
    """Current UTC time as ISO-8601 with microseconds (sortable as text)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class _Expr:
    """A raw SQL expression used as a SET value (for ``attempts + 1``)."""

    sql: str


def _placeholders(n: int) -> str:
    return ", ".join("?" * n)


def _key_params(key: VirtualFileKey) -> tuple[str, str, str, str, str]:
    return (key.dsn, key.date, key.time, key.originator, key.destination)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _to_transfer(row: Mapping[str, Any]) -> Transfer:
    return Transfer(
        id=int(row["id"]),
        direction=Direction(row["direction"]),
        partner=row["partner"],
        key=VirtualFileKey(
            row["dsn"], row["file_date"], row["file_time"], row["originator"], row["destination"]
        ),
        status=TransferStatus(row["status"]),
        local_path=row["local_path"],
        size=_opt_int(row["size"]),
        sha256=row["sha256"],
        transmitted_size=_opt_int(row["transmitted_size"]),
        transmitted_digest=row["transmitted_digest"],
        security_level=int(row["security_level"]),
        cipher_suite=int(row["cipher_suite"]),
        compression=int(row["compression"]),
        envelope=int(row["envelope"]),
        signed_eerp=bool(row["signed_eerp"]),
        record_format=row["record_format"],
        max_record_length=int(row["max_record_length"]),
        user_data=row["user_data"],
        description=row["description"],
        receipt_state=ReceiptState(row["receipt_state"]),
        nerp_code=_opt_int(row["nerp_code"]),
        nerp_text=row["nerp_text"],
        attempts=int(row["attempts"]),
        restart_offset=int(row["restart_offset"]),
        worker=row["worker"],
        session_id=row["session_id"],
        dispatched=bool(row["dispatched"]),
        dispatched_at=row["dispatched_at"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _to_receipt(row: Mapping[str, Any]) -> Receipt:
    return Receipt(
        id=int(row["id"]),
        transfer_id=_opt_int(row["transfer_id"]),
        key=VirtualFileKey(
            row["dsn"], row["file_date"], row["file_time"], row["originator"], row["destination"]
        ),
        kind=ReceiptKind(row["kind"]),
        raw=bytes(row["raw"]),
        verification=row["verification"],
        reason=_opt_int(row["reason"]),
        reason_text=row["reason_text"],
        received_at=row["received_at"],
    )


def _to_event(row: Mapping[str, Any]) -> LedgerEvent:
    detail = json.loads(row["detail"] or "{}")
    return LedgerEvent(
        id=int(row["id"]),
        transfer_id=_opt_int(row["transfer_id"]),
        session_id=row["session_id"],
        kind=row["kind"],
        detail=detail if isinstance(detail, dict) else {"value": detail},
        at=row["at"],
    )


def _worker_guard(worker: str | None) -> dict[str, Any]:
    """Extra compare-and-set condition: the row is still claimed by ``worker``."""
    if worker is None:
        return {}
    return {"extra_where": "worker = ?", "extra_params": (worker,)}


def _session_guard(guard: bool, session_id: str | None) -> dict[str, Any]:
    """Extra compare-and-set condition: the row still belongs to ``session_id``."""
    if not guard:
        return {}
    if session_id is None:
        raise ValueError("guard_session needs the session_id the row should belong to")
    return {"extra_where": "session_id = ?", "extra_params": (session_id,)}


def _check_sha256(value: str | None, what: str) -> None:
    if value is None:
        return
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"{what} must be a lower-case hex SHA-256 digest (64 characters), got {value!r}")


def _check_size(value: int | None, what: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {value!r}")


class Ledger:
    """Durable record of OFTP2 transfers, receipts and audit events in any common-sql database.

    Build one with :meth:`from_sqlite` (embedded default), :meth:`from_uri` or
    :meth:`from_conn_id` (any Airflow SQL connection), or pass a ``DbApiHook`` directly.
    The schema is created or migrated on first use.  A ``Ledger`` may be shared by threads; each
    thread gets its own database connection.  Methods that change a status raise
    :class:`~oftp2_provider.ledger.models.InvalidTransition` when the row is not in an allowed
    status (including when another worker changed it first) and
    :class:`~oftp2_provider.ledger.models.TransferNotFound` for an unknown id.
    """

    def __init__(self, hook: DbApiHook) -> None:
        self._backend = Backend(hook)
        self._ready_pid: int | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_conn_id(cls, conn_id: str) -> Ledger:
        """A ledger on a stored Airflow SQL connection (SQLite, PostgreSQL, …) via ``BaseHook.get_hook``."""
        return cls(hook_from_conn_id(conn_id))

    @classmethod
    def from_sqlite(cls, path: str | os.PathLike[str]) -> Ledger:
        """A ledger in a SQLite file (WAL journal, busy timeout); no Airflow connection needed."""
        return cls(sqlite_hook(path))

    @classmethod
    def from_uri(cls, uri: str) -> Ledger:
        """A ledger from ``sqlite:////abs/path`` or ``postgresql://user:pw@host:port/db`` (``?host=/socket/dir`` works)."""
        return cls(hook_from_uri(uri))

    @property
    def hook(self) -> DbApiHook:
        """The common-sql hook underneath."""
        return self._backend.hook

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._backend.dialect

    def close(self) -> None:
        """Close this process's database connections (the ledger reconnects if used again)."""
        self._backend.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ schema

    def migrate(self) -> int:
        """Create or upgrade the schema to the latest version; safe to run again and concurrently.

        Returns the schema version reached.  Raises :class:`SchemaError` when the database is at a
        newer version than this code knows.
        """
        backend = self._backend
        if self.schema_version() == LATEST_VERSION:
            # the common case: no DDL at all, so a database user without CREATE rights works
            self._ready_pid = os.getpid()
            return LATEST_VERSION
        while True:
            with backend.transaction() as cur:
                if backend.dialect == "postgresql":
                    # serialise concurrent migrations from several processes (key: "OFTP2LDG")
                    cur.execute("SELECT pg_advisory_xact_lock(?)", (0x4F465450324C4447,))
                cur.execute(SCHEMA_VERSION_DDL)
                current = self._version(cur)
                self._check_known(current)
                pending = [m for m in MIGRATIONS if m.version > current]
                if not pending:
                    self._ready_pid = os.getpid()
                    return current
                step = pending[0]
                for statement in step.render(backend.dialect):
                    cur.execute(statement)
                cur.execute(
                    "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                    (step.version, step.description, utcnow()),
                )
                log.info("ledger schema migrated to version %d (%s)", step.version, step.description)

    @staticmethod
    def _check_known(version: int) -> None:
        if version > LATEST_VERSION:
            raise SchemaError(
                f"ledger schema is at version {version}, newer than this code's {LATEST_VERSION}; "
                "upgrade airflow-provider-oftp2"
            )

    @staticmethod
    def _version(cur: Cursor) -> int:
        row = cur.row("SELECT MAX(version) AS v FROM schema_version")
        return int(row["v"]) if row and row["v"] is not None else 0

    def schema_version(self) -> int:
        """The schema version in the database (0 for an empty database)."""
        with self._backend.transaction(write=False) as cur:
            if self.dialect == "sqlite":
                exists = cur.row(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
                )
            else:
                exists = cur.row("SELECT to_regclass('schema_version') AS name")
                exists = exists if exists and exists["name"] else None
            version = self._version(cur) if exists else 0
        self._check_known(version)
        return version

    def _tx(self, *, write: bool = True) -> AbstractContextManager[Cursor]:
        """A transaction on a migrated schema (migrates on the first use in this process)."""
        if self._ready_pid != os.getpid():
            self.migrate()
        return self._backend.transaction(write=write)

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _event(
        cur: Cursor,
        kind: str,
        transfer_id: int | None,
        session_id: str | None,
        detail: Mapping[str, Any] | None,
        at: str,
    ) -> int:
        row = cur.row(
            "INSERT INTO events (transfer_id, session_id, kind, detail, at) VALUES (?, ?, ?, ?, ?) RETURNING id",
            (transfer_id, session_id, kind, json.dumps(dict(detail or {}), sort_keys=True, default=str), at),
        )
        assert row is not None
        return int(row["id"])

    @staticmethod
    def _get(cur: Cursor, transfer_id: int) -> Transfer:
        row = cur.row(f"SELECT {_TRANSFER_COLUMNS} FROM transfers WHERE id = ?", (transfer_id,))
        if row is None:
            raise TransferNotFound(transfer_id)
        return _to_transfer(row)

    def _find(
        self, cur: Cursor, direction: Direction, key: VirtualFileKey, *, lock: bool = False
    ) -> Transfer | None:
        """The row of a key; with ``lock`` it stays locked until commit so the status read is the
        one the following update sees (PostgreSQL ``FOR UPDATE``; SQLite's write transaction is
        already exclusive)."""
        suffix = " FOR UPDATE" if lock and self.dialect == "postgresql" else ""
        row = cur.row(
            f"SELECT {_TRANSFER_COLUMNS} FROM transfers WHERE direction = ? AND {_KEY_WHERE}{suffix}",
            (direction.value, *_key_params(key)),
        )
        return _to_transfer(row) if row else None

    def _transition(
        self,
        cur: Cursor,
        transfer_id: int,
        action: str,
        sets: Mapping[str, Any],
        *,
        event: str,
        session_id: str | None,
        detail: Mapping[str, Any] | None = None,
        direction: Direction | None = None,
        extra_where: str = "",
        extra_params: Sequence[Any] = (),
        allowed: Sequence[TransferStatus] | None = None,
    ) -> Transfer:
        """Compare-and-set one row from an allowed status; write the event; return the new row."""
        allowed = tuple(allowed if allowed is not None else TRANSITIONS[action])
        now = utcnow()
        assignments: list[str] = []
        params: list[Any] = []
        for column, value in {**sets, "updated_at": now}.items():
            if isinstance(value, _Expr):
                assignments.append(f"{column} = {value.sql}")
            else:
                assignments.append(f"{column} = ?")
                params.append(value.value if isinstance(value, TransferStatus | ReceiptState) else value)
        where = f"id = ? AND status IN ({_placeholders(len(allowed))})"
        params += [transfer_id, *(s.value for s in allowed)]
        if direction is not None:
            where += " AND direction = ?"
            params.append(direction.value)
        if extra_where:
            where += f" AND {extra_where}"
            params += list(extra_params)
        if cur.execute(f"UPDATE transfers SET {', '.join(assignments)} WHERE {where}", params) != 1:
            current = self._get(cur, transfer_id)  # raises TransferNotFound
            if direction is not None and current.direction is not direction:
                raise InvalidTransition(
                    transfer_id, f"{action} ({direction.value}bound only)", current.status.value, ()
                )
            actual = current.status.value
            if extra_where and current.status in allowed:
                if "worker = ?" in extra_where:
                    actual += f" (claimed by {current.worker!r})"
                elif "session_id = ?" in extra_where:
                    actual += f" (taken over by session {current.session_id!r})"
                else:
                    actual += f" (receipt {current.receipt_state.value})"
            raise InvalidTransition(transfer_id, action, actual, tuple(s.value for s in allowed))
        self._event(cur, event, transfer_id, session_id, detail, now)
        return self._get(cur, transfer_id)

    # ------------------------------------------------------------------ outbound

    def enqueue_outbound(
        self,
        partner: str,
        key: VirtualFileKey,
        path: str | os.PathLike[str],
        size: int,
        sha256: str,
        *,
        security_level: int = 0,
        cipher_suite: int = 0,
        compression: int = 0,
        envelope: int = 0,
        signed_eerp: bool = False,
        record_format: str = "U",
        max_record_length: int = 0,
        user_data: str = "",
        description: str = "",
        session_id: str | None = None,
    ) -> Transfer:
        """Queue a file for ``partner`` (status ``queued``); idempotent on the virtual-file key.

        Enqueuing the same key again returns the existing row unchanged.  The same key with a
        different size or SHA-256 raises :class:`KeyConflict` (a new file needs a new DSN/date/time).
        ``size`` is the plain file's length in octets, ``sha256`` its lower-case hex digest; the
        flags mirror SFIDSEC, SFIDCIPH, SFIDCOMP, SFIDENV and SFIDSIGN.
        """
        if not partner:
            raise ValueError("partner must not be empty")
        _check_size(size, "size")
        _check_sha256(sha256, "sha256")
        if record_format not in ("F", "V", "U", "T"):
            raise ValueError(f"record_format must be one of F, V, U, T, got {record_format!r}")
        now = utcnow()
        with self._tx() as cur:
            inserted = cur.execute(
                "INSERT INTO transfers (direction, partner, dsn, file_date, file_time, originator, "
                "destination, status, local_path, size, sha256, security_level, cipher_suite, compression, "
                "envelope, signed_eerp, record_format, max_record_length, user_data, description, "
                "receipt_state, created_at, updated_at) "
                f"VALUES ({_placeholders(23)}) "
                "ON CONFLICT (direction, dsn, file_date, file_time, originator, destination) DO NOTHING",
                (
                    Direction.OUTBOUND.value,
                    partner,
                    *_key_params(key),
                    S.QUEUED.value,
                    os.fspath(path),
                    size,
                    sha256,
                    int(security_level),
                    int(cipher_suite),
                    int(compression),
                    int(envelope),
                    int(bool(signed_eerp)),
                    record_format,
                    int(max_record_length),
                    user_data,
                    description,
                    ReceiptState.NONE.value,
                    now,
                    now,
                ),
            )
            existing = self._find(cur, Direction.OUTBOUND, key)
            assert existing is not None
            if inserted:
                self._event(
                    cur,
                    "enqueued",
                    existing.id,
                    session_id,
                    {"partner": partner, "key": str(key), "size": size, "path": os.fspath(path)},
                    now,
                )
                return existing
            for name, new in (("size", size), ("sha256", sha256), ("partner", partner)):
                if getattr(existing, name) != new:
                    raise KeyConflict(key, name, getattr(existing, name), new)
            return existing

    def claim_outbound(self, partner: str, worker: str, *, session_id: str | None = None) -> Transfer | None:
        """Take the oldest ``queued`` file for ``partner`` (→ ``sending``, attempts + 1), or ``None``.

        At most one caller ever gets a given transfer: SQLite serialises writers with
        ``BEGIN IMMEDIATE``, PostgreSQL picks with ``FOR UPDATE SKIP LOCKED``, and the update is a
        compare-and-set on ``queued`` in both.
        """
        with self._tx() as cur:
            lock = " FOR UPDATE SKIP LOCKED" if self.dialect == "postgresql" else ""
            for _ in range(5):
                row = cur.row(
                    "SELECT id FROM transfers WHERE direction = ? AND partner = ? AND status = ? "
                    f"ORDER BY id LIMIT 1{lock}",
                    (Direction.OUTBOUND.value, partner, S.QUEUED.value),
                )
                if row is None:
                    return None
                try:
                    return self._transition(
                        cur,
                        int(row["id"]),
                        "claim",
                        {
                            "status": S.SENDING,
                            "worker": worker,
                            "session_id": session_id,
                            "attempts": _Expr("attempts + 1"),
                        },
                        event="claimed",
                        session_id=session_id,
                        detail={"worker": worker},
                        direction=Direction.OUTBOUND,
                    )
                except InvalidTransition:
                    continue  # another worker won this row between our SELECT and UPDATE
            return None

    def mark_sent(
        self,
        transfer_id: int,
        *,
        transmitted_size: int | None = None,
        transmitted_digest: str | None = None,
        worker: str | None = None,
        session_id: str | None = None,
    ) -> Transfer:
        """``sending`` → ``sent``: the partner accepted the file (EFPA); the EERP is awaited.

        ``transmitted_size``/``transmitted_digest`` describe the octets as sent (the EERP hash
        input); ``transmitted_digest`` is hex, computed with the cipher suite's hash.  With
        ``worker``, the change only happens while that worker still holds the claim (after
        :meth:`requeue_stale` handed the file to another worker, the late one gets
        :class:`InvalidTransition`).
        """
        _check_size(transmitted_size, "transmitted_size")
        return self._change(
            transfer_id,
            "mark_sent",
            {
                "status": S.SENT,
                "transmitted_size": transmitted_size,
                "transmitted_digest": transmitted_digest,
                "restart_offset": 0,
                "last_error": None,
            },
            event="sent",
            session_id=session_id,
            detail={"transmitted_size": transmitted_size},
            direction=Direction.OUTBOUND,
            **_worker_guard(worker),
        )

    def mark_delivered(self, transfer_id: int, *, session_id: str | None = None) -> Transfer:
        """→ ``delivered``: the EERP arrived (normally called through :meth:`record_receipt`)."""
        return self._change(
            transfer_id,
            "mark_delivered",
            {"status": S.DELIVERED, "last_error": None},
            event="delivered",
            session_id=session_id,
            direction=Direction.OUTBOUND,
        )

    def mark_refused(
        self, transfer_id: int, reason: int, text: str = "", *, session_id: str | None = None
    ) -> Transfer:
        """→ ``refused``: SFNA/EFNA without retry, or a NERP (``reason`` is that code). Final."""
        return self._change(
            transfer_id,
            "mark_refused",
            {
                "status": S.REFUSED,
                "nerp_code": int(reason),
                "nerp_text": text or None,
                "last_error": text or None,
            },
            event="refused",
            session_id=session_id,
            detail={"reason": int(reason), "text": text},
            direction=Direction.OUTBOUND,
        )

    def mark_failed(
        self,
        transfer_id: int,
        error: str,
        *,
        retry: bool = False,
        restart_offset: int | None = None,
        worker: str | None = None,
        session_id: str | None = None,
    ) -> Transfer:
        """``sending``/``sent`` → ``failed`` (or straight back to ``queued`` when ``retry``).

        Use for a broken session or an SFNA/EFNA with the retry flag.  ``restart_offset`` keeps
        the position a later restart may resume from (records for F/V, 1 KiB blocks for U/T).
        ``worker`` guards the change as in :meth:`mark_sent`.
        """
        _check_size(restart_offset, "restart_offset")
        sets: dict[str, Any] = {
            "status": S.QUEUED if retry else S.FAILED,
            "last_error": error,
            "worker": None,
        }
        if restart_offset is not None:
            sets["restart_offset"] = restart_offset
        return self._change(
            transfer_id,
            "mark_failed",
            sets,
            event="requeued" if retry else "failed",
            session_id=session_id,
            detail={"error": error, "retry": retry, "restart_offset": restart_offset},
            direction=Direction.OUTBOUND,
            **_worker_guard(worker),
        )

    def requeue(self, transfer_id: int, *, session_id: str | None = None) -> Transfer:
        """``failed`` → ``queued``: try a failed outbound file again."""
        return self._change(
            transfer_id,
            "requeue",
            {"status": S.QUEUED, "worker": None},
            event="requeued",
            session_id=session_id,
            direction=Direction.OUTBOUND,
        )

    def requeue_stale(self, older_than: timedelta, *, partner: str | None = None) -> _TransferList:
        """Put ``sending`` rows untouched for longer than ``older_than`` back to ``queued``.

        For recovery after a gateway crashed mid-send; returns the requeued transfers.
        """
        cutoff = (datetime.now(timezone.utc) - older_than).isoformat(timespec="microseconds")
        done: _TransferList = []
        with self._tx() as cur:
            sql = "SELECT id FROM transfers WHERE direction = ? AND status = ? AND updated_at < ?"
            params: list[Any] = [Direction.OUTBOUND.value, S.SENDING.value, cutoff]
            if partner is not None:
                sql += " AND partner = ?"
                params.append(partner)
            for row in cur.rows(sql + " ORDER BY id", params):
                try:
                    done.append(
                        self._transition(
                            cur,
                            int(row["id"]),
                            "requeue_stale",
                            {"status": S.QUEUED, "worker": None, "last_error": "requeued: stale sending"},
                            event="requeued",
                            session_id=None,
                            detail={"reason": "stale", "older_than_s": older_than.total_seconds()},
                            extra_where="updated_at < ?",
                            extra_params=(cutoff,),
                        )
                    )
                except InvalidTransition:
                    continue
        return done

    def set_restart_offset(self, transfer_id: int, offset: int, *, session_id: str | None = None) -> Transfer:
        """Record how far a transfer got (restart position; records for F/V, 1 KiB blocks for U/T)."""
        _check_size(offset, "offset")
        return self._change(
            transfer_id,
            "set_restart_offset",
            {"restart_offset": offset},
            event="restart_offset",
            session_id=session_id,
            detail={"offset": offset},
        )

    # ------------------------------------------------------------------ inbound

    def begin_inbound(
        self,
        partner: str,
        key: VirtualFileKey,
        *,
        security_level: int = 0,
        cipher_suite: int = 0,
        compression: int = 0,
        envelope: int = 0,
        signed_eerp: bool = False,
        record_format: str = "U",
        max_record_length: int = 0,
        user_data: str = "",
        description: str = "",
        announced_size: int | None = None,
        session_id: str | None = None,
    ) -> tuple[Transfer, bool]:
        """Record an SFID from ``partner``: returns ``(transfer, is_duplicate)``.

        * new key → a ``receiving`` row (attempts 1);
        * key already ``received``/``released`` → the existing row and ``True``: answer SFNA 13
          (duplicate file) or re-send its receipt (:meth:`resend_receipt`) per policy;
        * key ``receiving``/``failed`` (an interrupted earlier attempt) → the same row back in
          ``receiving`` (attempts + 1); its ``restart_offset`` says what is kept.

        ``announced_size`` is SFIDOSIZ/SFIDFSIZ converted to octets when known.
        """
        if not partner:
            raise ValueError("partner must not be empty")
        _check_size(announced_size, "announced_size")
        now = utcnow()
        with self._tx() as cur:
            inserted = cur.execute(
                "INSERT INTO transfers (direction, partner, dsn, file_date, file_time, originator, "
                "destination, status, size, security_level, cipher_suite, compression, envelope, "
                "signed_eerp, record_format, max_record_length, user_data, description, receipt_state, "
                "attempts, session_id, created_at, updated_at) "
                f"VALUES ({_placeholders(23)}) "
                "ON CONFLICT (direction, dsn, file_date, file_time, originator, destination) DO NOTHING",
                (
                    Direction.INBOUND.value,
                    partner,
                    *_key_params(key),
                    S.RECEIVING.value,
                    announced_size,
                    int(security_level),
                    int(cipher_suite),
                    int(compression),
                    int(envelope),
                    int(bool(signed_eerp)),
                    record_format,
                    int(max_record_length),
                    user_data,
                    description,
                    ReceiptState.NONE.value,
                    1,
                    session_id,
                    now,
                    now,
                ),
            )
            existing = self._find(cur, Direction.INBOUND, key, lock=True)
            assert existing is not None
            if inserted:
                self._event(
                    cur, "receiving", existing.id, session_id, {"partner": partner, "key": str(key)}, now
                )
                return existing, False
            if existing.status in RECEIVED_STATUSES:
                self._event(
                    cur,
                    "duplicate_inbound",
                    existing.id,
                    session_id,
                    {"partner": partner, "key": str(key), "status": existing.status.value},
                    now,
                )
                return existing, True
            restarted = self._transition(
                cur,
                existing.id,
                "restart_inbound",
                {
                    "status": S.RECEIVING,
                    "partner": partner,
                    "attempts": _Expr("attempts + 1"),
                    "session_id": session_id,
                },
                event="receiving",
                session_id=session_id,
                detail={"partner": partner, "key": str(key), "restart": True},
                direction=Direction.INBOUND,
            )
            return restarted, False

    def complete_inbound(
        self,
        transfer_id: int,
        path: str | os.PathLike[str],
        size: int,
        sha256: str,
        *,
        hold_receipt: bool = False,
        transmitted_size: int | None = None,
        transmitted_digest: str | None = None,
        session_id: str | None = None,
        guard_session: bool = False,
    ) -> Transfer:
        """``receiving`` → ``received``: the file is complete and in place at ``path``.

        The receipt becomes ``due`` (send the EERP at the next chance) or, with ``hold_receipt``,
        ``held`` until :meth:`release_receipt`.  ``size``/``sha256`` describe the delivered file.
        With ``guard_session``, the change only happens while the row still belongs to
        ``session_id`` (the session whose :meth:`begin_inbound` last took it).
        """
        _check_size(size, "size")
        _check_sha256(sha256, "sha256")
        _check_size(transmitted_size, "transmitted_size")
        state = ReceiptState.HELD if hold_receipt else ReceiptState.DUE
        return self._change(
            transfer_id,
            "complete_inbound",
            {
                "status": S.RECEIVED,
                "local_path": os.fspath(path),
                "size": size,
                "sha256": sha256,
                "transmitted_size": transmitted_size,
                "transmitted_digest": transmitted_digest,
                "receipt_state": state,
                "last_error": None,
                "restart_offset": 0,
            },
            event="received",
            session_id=session_id,
            detail={"path": os.fspath(path), "size": size, "receipt": state.value},
            direction=Direction.INBOUND,
            **_session_guard(guard_session, session_id),
        )

    def fail_inbound(
        self,
        transfer_id: int,
        error: str,
        *,
        restart_offset: int = 0,
        refusal_code: int | None = None,
        session_id: str | None = None,
        guard_session: bool = False,
    ) -> Transfer:
        """``receiving`` → ``failed``: the reception broke or was refused (EFNA ``refusal_code``).

        ``restart_offset`` is what the partial file keeps for a restart (0 = nothing).  A later
        :meth:`begin_inbound` of the same key resumes this row.  With ``guard_session``, a session
        that lost the row to a newer session of the same file (the partner reconnected while the
        old connection hung) gets :class:`InvalidTransition` instead of failing the new reception.
        """
        _check_size(restart_offset, "restart_offset")
        return self._change(
            transfer_id,
            "fail_inbound",
            {"status": S.FAILED, "last_error": error, "restart_offset": restart_offset},
            event="failed",
            session_id=session_id,
            detail={"error": error, "restart_offset": restart_offset, "refusal_code": refusal_code},
            direction=Direction.INBOUND,
            **_session_guard(guard_session, session_id),
        )

    def release_receipt(
        self,
        transfer_id: int,
        ok: bool = True,
        *,
        nerp_code: int | None = None,
        text: str | None = None,
        session_id: str | None = None,
    ) -> Transfer:
        """Release a held receipt: ``received`` (held) → ``released`` (due).

        ``ok=True`` sends an EERP; ``ok=False`` sends a NERP with ``nerp_code`` (default 34,
        file processing failed) and optional ``text``.  Giving a ``nerp_code`` implies ``ok=False``.
        """
        if nerp_code is not None:
            ok = False
            if not 1 <= int(nerp_code) <= 99:
                raise ValueError(f"nerp_code must be between 01 and 99, got {nerp_code!r}")
        code = None if ok else int(nerp_code if nerp_code is not None else DEFAULT_NERP_CODE)
        return self._change(
            transfer_id,
            "release_receipt",
            {
                "status": S.RELEASED,
                "receipt_state": ReceiptState.DUE,
                "nerp_code": code,
                "nerp_text": None if ok else (text or None),
            },
            event="receipt_released",
            session_id=session_id,
            detail={"ok": ok, "nerp_code": code, "text": text},
            direction=Direction.INBOUND,
            extra_where="receipt_state = ?",
            extra_params=(ReceiptState.HELD.value,),
        )

    def receipts_to_send(self, partner: str) -> _TransferList:
        """Inbound transfers from ``partner`` whose EERP (``nerp_code`` None) or NERP is due, oldest first."""
        with self._tx(write=False) as cur:
            rows = cur.rows(
                f"SELECT {_TRANSFER_COLUMNS} FROM transfers WHERE direction = ? AND partner = ? "
                "AND receipt_state = ? ORDER BY id",
                (Direction.INBOUND.value, partner, ReceiptState.DUE.value),
            )
        return [_to_transfer(r) for r in rows]

    def mark_receipt_sent(self, transfer_id: int, *, session_id: str | None = None) -> Transfer:
        """Receipt ``due`` → ``sent`` (the partner answered RTR)."""
        return self._change(
            transfer_id,
            "mark_receipt_sent",
            {"receipt_state": ReceiptState.SENT, "worker": None},
            event="receipt_sent",
            session_id=session_id,
            direction=Direction.INBOUND,
            extra_where="receipt_state = ?",
            extra_params=(ReceiptState.DUE.value,),
        )

    def resend_receipt(self, transfer_id: int, *, session_id: str | None = None) -> Transfer:
        """Receipt ``sent`` → ``due`` again (a duplicate SFID showed the originator lacks it)."""
        return self._change(
            transfer_id,
            "resend_receipt",
            {"receipt_state": ReceiptState.DUE, "worker": None},
            event="receipt_resend",
            session_id=session_id,
            direction=Direction.INBOUND,
            extra_where="receipt_state = ?",
            extra_params=(ReceiptState.SENT.value,),
        )

    def claim_receipts(
        self,
        partner: str,
        worker: str,
        *,
        limit: int = 100,
        stale_after: timedelta = timedelta(minutes=10),
        session_id: str | None = None,
    ) -> _TransferList:
        """Due receipts for ``partner``, each claimed for ``worker`` so that two gateways sharing
        the ledger never send the same EERP/NERP at the same time.

        A receipt is claimable when nobody holds it, when ``worker`` itself holds it, or when its
        claim is older than ``stale_after`` (a gateway that died).  :meth:`mark_receipt_sent`
        ends the claim; :meth:`unclaim_receipt` gives it back (e.g. the session ended first).
        The claim is kept in the inbound row's ``worker`` column.
        """
        cutoff = (datetime.now(timezone.utc) - stale_after).isoformat(timespec="microseconds")
        lock = " FOR UPDATE SKIP LOCKED" if self.dialect == "postgresql" else ""
        free = "(worker IS NULL OR worker = ? OR updated_at < ?)"
        claimed: _TransferList = []
        with self._tx() as cur:
            rows = cur.rows(
                f"SELECT id FROM transfers WHERE direction = ? AND partner = ? AND receipt_state = ? AND {free} "
                f"ORDER BY id LIMIT ?{lock}",
                (Direction.INBOUND.value, partner, ReceiptState.DUE.value, worker, cutoff, int(limit)),
            )
            for row in rows:
                try:
                    claimed.append(
                        self._transition(
                            cur,
                            int(row["id"]),
                            "claim_receipt",
                            {"worker": worker},
                            event="receipt_claimed",
                            session_id=session_id,
                            detail={"worker": worker},
                            direction=Direction.INBOUND,
                            extra_where=f"receipt_state = ? AND {free}",
                            extra_params=(ReceiptState.DUE.value, worker, cutoff),
                        )
                    )
                except InvalidTransition:
                    continue  # claimed or sent by someone else since the SELECT
        return claimed

    def unclaim_receipt(self, transfer_id: int, worker: str, *, session_id: str | None = None) -> Transfer:
        """Give back a receipt claimed with :meth:`claim_receipts` and not sent (it stays due)."""
        return self._change(
            transfer_id,
            "claim_receipt",
            {"worker": None},
            event="receipt_unclaimed",
            session_id=session_id,
            direction=Direction.INBOUND,
            extra_where="receipt_state = ? AND worker = ?",
            extra_params=(ReceiptState.DUE.value, worker),
        )

    def undispatched_inbound(self, limit: int = 100, *, partner: str | None = None) -> _TransferList:
        """Received inbound files not yet handed to Airflow, oldest first (for the inbound trigger)."""
        sql = (
            f"SELECT {_TRANSFER_COLUMNS} FROM transfers WHERE direction = ? AND dispatched = 0 "
            "AND status IN (?, ?)"
        )
        params: list[Any] = [Direction.INBOUND.value, S.RECEIVED.value, S.RELEASED.value]
        if partner is not None:
            sql += " AND partner = ?"
            params.append(partner)
        with self._tx(write=False) as cur:
            rows = cur.rows(sql + " ORDER BY id LIMIT ?", [*params, int(limit)])
        return [_to_transfer(r) for r in rows]

    def mark_dispatched(self, transfer_ids: Iterable[int], *, session_id: str | None = None) -> int:
        """Mark inbound transfers as handed to Airflow; idempotent. Returns how many changed now."""
        ids = sorted({int(i) for i in transfer_ids})
        if not ids:
            return 0
        changed = 0
        now = utcnow()
        with self._tx() as cur:
            for tid in ids:
                n = cur.execute(
                    "UPDATE transfers SET dispatched = 1, dispatched_at = ?, updated_at = ? "
                    "WHERE id = ? AND direction = ? AND dispatched = 0",
                    (now, now, tid, Direction.INBOUND.value),
                )
                if n:
                    changed += 1
                    self._event(cur, "dispatched", tid, session_id, None, now)
        return changed

    # ------------------------------------------------------------------ receipts

    def record_receipt(
        self,
        key: VirtualFileKey,
        kind: ReceiptKind | str,
        raw: bytes,
        verification: str,
        reason: int | None = None,
        text: str | None = None,
        *,
        accepted: bool = True,
        session_id: str | None = None,
    ) -> Transfer | None:
        """Store a received EERP/NERP for an outbound file and apply it.

        EERP → ``delivered``; NERP → ``refused`` with ``reason`` as NERP code (from ``queued``,
        ``sending``, ``sent`` or ``failed``).  The receipt is
        always kept verbatim (``raw``) with its ``verification`` outcome.  With ``accepted=False``
        (e.g. a bad signature) nothing changes but the audit trail.  A repeated receipt for a
        finished transfer changes nothing.  Returns the transfer, or ``None`` for an unknown key
        (the receipt is still stored, without a transfer).
        """
        kind = ReceiptKind(kind)
        if not isinstance(raw, bytes | bytearray | memoryview):
            raise TypeError(f"raw must be the receipt's command bytes, got {type(raw).__name__}")
        if kind is ReceiptKind.NERP and reason is None:
            raise ValueError("a NERP needs its reason code")
        now = utcnow()
        with self._tx() as cur:
            transfer = self._find(cur, Direction.OUTBOUND, key, lock=True)
            tid = transfer.id if transfer else None
            cur.execute(
                "INSERT INTO receipts (transfer_id, kind, dsn, file_date, file_time, originator, destination, "
                f"raw, verification, reason, reason_text, received_at) VALUES ({_placeholders(12)})",
                (tid, kind.value, *_key_params(key), bytes(raw), verification, reason, text, now),
            )
            detail = {"kind": kind.value, "verification": verification, "reason": reason, "key": str(key)}
            if transfer is None:
                self._event(cur, "receipt_unknown", None, session_id, detail, now)
                log.warning("%s for unknown outbound file %s recorded without a transfer", kind.value, key)
                return None
            if not accepted:
                self._event(cur, "receipt_rejected", transfer.id, session_id, detail, now)
                return transfer
            target = "apply_eerp" if kind is ReceiptKind.EERP else "apply_nerp"
            if transfer.status not in TRANSITIONS[target]:
                self._event(
                    cur,
                    "receipt_ignored",
                    transfer.id,
                    session_id,
                    {**detail, "status": transfer.status.value},
                    now,
                )
                return transfer
            if kind is ReceiptKind.EERP:
                sets: dict[str, Any] = {"status": S.DELIVERED, "last_error": None}
                event = "delivered"
            else:
                sets = {"status": S.REFUSED, "nerp_code": reason, "nerp_text": text, "last_error": text}
                event = "refused"
            return self._transition(
                cur, transfer.id, target, sets, event=event, session_id=session_id, detail=detail
            )

    def receipts(self, transfer_id: int) -> _ReceiptList:
        """The EERP/NERPs stored for a transfer, oldest first."""
        with self._tx(write=False) as cur:
            rows = cur.rows("SELECT * FROM receipts WHERE transfer_id = ? ORDER BY id", (transfer_id,))
        return [_to_receipt(r) for r in rows]

    # ------------------------------------------------------------------ queries and audit

    def get(self, transfer_id: int) -> Transfer:
        """The transfer with this id (raises :class:`TransferNotFound`)."""
        with self._tx(write=False) as cur:
            return self._get(cur, transfer_id)

    def find(self, key: VirtualFileKey, direction: Direction | str = Direction.OUTBOUND) -> Transfer | None:
        """The transfer of a virtual file in one direction (outbound by default), or ``None``."""
        with self._tx(write=False) as cur:
            return self._find(cur, Direction(direction), key)

    def list_transfers(
        self,
        *,
        partner: str | None = None,
        status: TransferStatus | str | Iterable[TransferStatus | str] | None = None,
        direction: Direction | str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> _TransferList:
        """Transfers matching the filters, newest first (also available as :meth:`list`)."""
        where: list[str] = []
        params: list[Any] = []
        if partner is not None:
            where.append("partner = ?")
            params.append(partner)
        if status is not None:
            statuses = (
                [TransferStatus(status)] if isinstance(status, str) else [TransferStatus(s) for s in status]
            )
            if not statuses:
                return []
            where.append(f"status IN ({_placeholders(len(statuses))})")
            params += [s.value for s in statuses]
        if direction is not None:
            where.append("direction = ?")
            params.append(Direction(direction).value)
        sql = f"SELECT {_TRANSFER_COLUMNS} FROM transfers"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ? OFFSET ?"
        with self._tx(write=False) as cur:
            rows = cur.rows(sql, [*params, int(limit), int(offset)])
        return [_to_transfer(r) for r in rows]

    def events(
        self,
        transfer_id: int | None = None,
        *,
        session_id: str | None = None,
        kind: str | None = None,
        limit: int = 1000,
    ) -> _EventList:
        """Audit events, oldest first, filtered by transfer, session and/or kind."""
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("transfer_id", transfer_id), ("session_id", session_id), ("kind", kind)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = "SELECT id, transfer_id, session_id, kind, detail, at FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._tx(write=False) as cur:
            rows = cur.rows(sql + " ORDER BY id LIMIT ?", [*params, int(limit)])
        return [_to_event(r) for r in rows]

    def add_event(
        self,
        kind: str,
        *,
        transfer_id: int | None = None,
        session_id: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> LedgerEvent:
        """Append an audit event (session start/end, refusals without a transfer, operator actions…)."""
        if not kind:
            raise ValueError("event kind must not be empty")
        now = utcnow()
        with self._tx() as cur:
            if transfer_id is not None:
                self._get(cur, transfer_id)
            event_id = self._event(cur, kind, transfer_id, session_id, detail, now)
            row = cur.row(
                "SELECT id, transfer_id, session_id, kind, detail, at FROM events WHERE id = ?", (event_id,)
            )
        assert row is not None
        return _to_event(row)

    def purge_finished(self, older_than: timedelta, *, limit: int = 10_000) -> int:
        """Delete finished transfers (with their receipts and events) untouched for ``older_than``.

        Finished means: outbound ``delivered``/``refused``; inbound ``received``/``released``
        with the receipt sent and the file dispatched.  A purged inbound key is no longer
        recognised as a duplicate, so keep ``older_than`` longer than any partner would re-send a
        file.  Returns the number of transfers deleted (at most ``limit`` per call).
        """
        if older_than < timedelta(0):
            raise ValueError(f"older_than must not be negative, got {older_than}")
        cutoff = (datetime.now(timezone.utc) - older_than).isoformat(timespec="microseconds")
        with self._tx() as cur:
            rows = cur.rows(
                "SELECT id FROM transfers WHERE updated_at < ? AND ("
                " (direction = ? AND status IN (?, ?))"
                " OR (direction = ? AND status IN (?, ?) AND receipt_state = ? AND dispatched = 1)"
                ") ORDER BY id LIMIT ?",
                (
                    cutoff,
                    Direction.OUTBOUND.value,
                    S.DELIVERED.value,
                    S.REFUSED.value,
                    Direction.INBOUND.value,
                    S.RECEIVED.value,
                    S.RELEASED.value,
                    ReceiptState.SENT.value,
                    int(limit),
                ),
            )
            ids = [int(r["id"]) for r in rows]
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = _placeholders(len(chunk))
                cur.execute(f"DELETE FROM events WHERE transfer_id IN ({marks})", chunk)
                cur.execute(f"DELETE FROM receipts WHERE transfer_id IN ({marks})", chunk)
                cur.execute(f"DELETE FROM transfers WHERE id IN ({marks})", chunk)
            if ids:
                self._event(cur, "purged", None, None, {"count": len(ids), "cutoff": cutoff}, utcnow())
        return len(ids)

    # ------------------------------------------------------------------ internals

    def _change(
        self,
        transfer_id: int,
        action: str,
        sets: Mapping[str, Any],
        *,
        event: str,
        session_id: str | None,
        detail: Mapping[str, Any] | None = None,
        direction: Direction | None = None,
        extra_where: str = "",
        extra_params: Sequence[Any] = (),
    ) -> Transfer:
        with self._tx() as cur:
            return self._transition(
                cur,
                int(transfer_id),
                action,
                sets,
                event=event,
                session_id=session_id,
                detail=detail,
                direction=direction,
                extra_where=extra_where,
                extra_params=extra_params,
            )

    list = list_transfers


__all__ = ["DEFAULT_NERP_CODE", "RECEIVED_STATUSES", "TRANSITIONS", "Ledger", "LedgerError", "utcnow"]
