"""Database access for the ledger through common-sql's ``DbApiHook``.

This module is the only place that knows the backends apart:

* which hook to build for a path, a URI or an Airflow connection id;
* the placeholder style (the ledger writes every statement with ``?``; :meth:`Backend.sql`
  rewrites it to the hook's placeholder, e.g. ``%s`` for PostgreSQL);
* SQLite session settings (WAL journal, busy timeout, foreign keys) and ``BEGIN IMMEDIATE`` for
  write transactions, so two writers never deadlock on a lock upgrade;
* one DB-API connection per thread and process, opened lazily with ``hook.get_conn()``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from airflow.providers.common.sql.hooks.sql import DbApiHook
from airflow.providers.sqlite.hooks.sqlite import SqliteHook

from .models import LedgerError

log = logging.getLogger(__name__)

#: How long a SQLite writer waits for another writer's lock before giving up, in milliseconds.
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: Connection id given to the in-memory Airflow connections built for paths and URIs.
EMBEDDED_CONN_ID = "oftp2_ledger"


def _connection_class() -> Any:
    from airflow.sdk import Connection

    return Connection


class LedgerSqliteHook(SqliteHook):
    """``SqliteHook`` that works from an in-memory Airflow connection and sets ledger-friendly options.

    The stock hook re-reads its connection by id from Airflow (so it cannot run without a stored
    connection) and opens connections bound to the creating thread.  This subclass uses
    ``self.connection`` (given to the constructor, or looked up once by id), opens the file in URI
    mode with a busy timeout, allows closing from another thread and leaves transaction control to
    the ledger (``isolation_level=None``; the ledger issues ``BEGIN IMMEDIATE`` itself).
    """

    def get_uri(self) -> str:
        """SQLAlchemy URI of the database file (``sqlite:////abs/path``)."""
        host = self.connection.host or ""
        if not host:
            raise LedgerError(
                f"SQLite connection {self.get_conn_id()!r} has no host (the database file path)"
            )
        return "sqlite:///" + quote(str(Path(host).expanduser().absolute()))

    def get_conn(self) -> sqlite3.Connection:
        """Open the database file (created if missing)."""
        uri = self.get_uri().replace("sqlite:///", "file:", 1)
        return sqlite3.connect(
            uri,
            uri=True,
            timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
            check_same_thread=False,
            isolation_level=None,
        )


def _ledger_sqlite_hook(connection: Any) -> LedgerSqliteHook:
    factory: Any = LedgerSqliteHook  # the hook's constructor is untyped upstream
    hook: LedgerSqliteHook = factory(connection=connection)
    return hook


def sqlite_hook(path: str | os.PathLike[str]) -> LedgerSqliteHook:
    """A common-sql SQLite hook for a database file, with no stored Airflow connection needed."""
    text = os.fspath(path)
    if not text or text == ":memory:":
        raise LedgerError("the SQLite ledger needs a file path (an in-memory database is per-connection)")
    conn = _connection_class()(conn_id=EMBEDDED_CONN_ID, conn_type="sqlite", host=text)
    return _ledger_sqlite_hook(conn)


def hook_from_uri(uri: str) -> DbApiHook:
    """A common-sql hook for ``sqlite:////abs/path`` or ``postgresql://user:pw@host:port/db?…``.

    PostgreSQL URIs may name a unix-socket directory as ``?host=/dir`` (libpq style); the Airflow
    connection keeps it as the ``host`` extra, which ``PostgresHook`` passes on to the driver.
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        if parts.query or parts.fragment or uri.endswith(("?", "#")):
            raise LedgerError(
                f"SQLite URI {uri!r} has a query or fragment; percent-encode '?' and '#' in the file path"
            )
        # sqlite:////abs/path -> netloc "" and path "//abs/path"; sqlite:///rel/path -> "/rel/path"
        path = unquote(parts.path)
        if path.startswith("//"):
            path = path[1:]
        elif path.startswith("/"):
            path = path[1:]
        if not path:
            raise LedgerError(f"SQLite URI {uri!r} names no database file")
        return sqlite_hook(path)
    if scheme.split("+", 1)[0] in ("postgres", "postgresql"):
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        plain = "postgresql" + uri[len(parts.scheme) :]
        conn = _connection_class().from_uri(plain, conn_id=EMBEDDED_CONN_ID)
        return PostgresHook(connection=conn)
    raise LedgerError(f"unsupported ledger URI scheme {parts.scheme!r} (use sqlite:// or postgresql://)")


def hook_from_conn_id(conn_id: str) -> DbApiHook:
    """The common-sql hook of a stored Airflow connection (``BaseHook.get_hook``)."""
    from airflow.sdk import BaseHook

    hook = BaseHook.get_hook(conn_id)
    if not isinstance(hook, DbApiHook):
        raise LedgerError(
            f"connection {conn_id!r} gives a {type(hook).__name__}, not a SQL (common-sql DbApiHook) hook"
        )
    if isinstance(hook, SqliteHook) and not isinstance(hook, LedgerSqliteHook):
        return _ledger_sqlite_hook(hook.connection)
    return hook


def convert_placeholders(statement: str, placeholder: str) -> str:
    """Rewrite a statement written with ``?`` placeholders for a driver using ``placeholder``.

    Only ``?`` (qmark) and ``%s`` (format) are supported; for ``%s`` literal ``%`` signs are doubled
    so the driver does not read them as placeholders.  Ledger statements never contain a literal
    ``?`` (values always travel as parameters).
    """
    if placeholder == "?":
        return statement
    if placeholder == "%s":
        return statement.replace("%", "%%").replace("?", "%s")
    raise LedgerError(f"unsupported SQL placeholder {placeholder!r} (the ledger supports '?' and '%s')")


def _dialect_of(raw: Any) -> str:
    module = type(raw).__module__
    if module.startswith("sqlite3"):
        return "sqlite"
    if module.startswith(("psycopg", "psycopg2")):
        return "postgresql"
    raise LedgerError(f"unsupported DB-API connection {type(raw).__module__}.{type(raw).__name__}")


class Cursor:
    """A thin cursor wrapper used inside one transaction: ``?`` placeholders, rows as dicts."""

    def __init__(self, backend: Backend, raw_cursor: Any) -> None:
        self._backend = backend
        self._cur = raw_cursor

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; returns the affected row count."""
        self._cur.execute(self._backend.sql(sql), tuple(params))
        return int(self._cur.rowcount)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Run a query; every row as a ``{column: value}`` dict."""
        self._cur.execute(self._backend.sql(sql), tuple(params))
        names = [d[0] for d in self._cur.description]
        # a connection may configure dict rows (PostgresHook's ``cursor`` extra); tuples otherwise
        return [
            {n: row[n] for n in names} if isinstance(row, Mapping) else dict(zip(names, row, strict=True))
            for row in self._cur.fetchall()
        ]

    def row(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        """Run a query; the first row or ``None``."""
        found = self.rows(sql, params)
        return found[0] if found else None


class Backend:
    """Connections and transactions on one ``DbApiHook``; safe to share between threads."""

    def __init__(self, hook: DbApiHook) -> None:
        self.hook = hook
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[tuple[int, Any]] = []
        self._dialect: str | None = None
        self._placeholder: str | None = None

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql`` (found from the driver of the first connection)."""
        if self._dialect is None:
            self._connection()
        assert self._dialect is not None
        return self._dialect

    def sql(self, statement: str) -> str:
        """Rewrite a statement written with ``?`` placeholders to the hook's placeholder style."""
        if self._placeholder is None:
            self._connection()
        return convert_placeholders(statement, self._placeholder or "?")

    def _connection(self) -> Any:
        cached = getattr(self._local, "conn", None)
        if cached is not None and self._local.pid == os.getpid():
            return cached
        raw = self.hook.get_conn()
        dialect = _dialect_of(raw)
        if dialect == "sqlite":
            raw.isolation_level = None
            raw.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            mode = _switch_to_wal(raw)
            if mode and str(mode[0]).lower() != "wal":
                log.warning("SQLite ledger could not switch to WAL (journal_mode=%s)", mode[0])
            raw.execute("PRAGMA foreign_keys = ON")
        self._dialect = dialect
        if self._placeholder is None:
            self._placeholder = "?" if dialect == "sqlite" else str(self.hook.placeholder)
        self._local.conn = raw
        self._local.pid = os.getpid()
        with self._lock:
            self._all.append((os.getpid(), raw))
        return raw

    def _discard(self) -> None:
        raw = getattr(self._local, "conn", None)
        self._local.conn = None
        if raw is None:
            return
        with self._lock:
            self._all = [(pid, c) for pid, c in self._all if c is not raw]
        try:
            raw.close()
        except Exception:  # the connection is already broken; nothing to save
            log.debug("closing a broken ledger connection failed", exc_info=True)

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Cursor]:
        """One database transaction; commits on success, rolls back on any exception.

        On SQLite a write transaction starts with ``BEGIN IMMEDIATE`` (takes the write lock up
        front, waiting up to the busy timeout); on PostgreSQL the driver opens the transaction
        implicitly at the first statement (READ COMMITTED).
        """
        raw = self._connection()
        sqlite = self._dialect == "sqlite"
        cur = raw.cursor()
        try:
            if sqlite:
                cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield Cursor(self, cur)
            if sqlite:
                cur.execute("COMMIT")
            else:
                raw.commit()
        except BaseException:
            try:
                if sqlite:
                    if raw.in_transaction:
                        raw.execute("ROLLBACK")
                else:
                    raw.rollback()
            except Exception:
                log.warning("ledger rollback failed; reconnecting", exc_info=True)
                self._discard()
            raise
        finally:
            try:
                cur.close()
            except Exception:
                log.debug("closing a ledger cursor failed", exc_info=True)

    def close(self) -> None:
        """Close every connection this backend opened in this process.

        Connections inherited from a parent process over ``fork`` are left alone: closing them here
        would end the parent's sessions.
        """
        me = os.getpid()
        with self._lock:
            conns = [c for pid, c in self._all if pid == me]
            self._all = []
        for raw in conns:
            try:
                raw.close()
            except Exception:
                log.debug("closing a ledger connection failed", exc_info=True)
        self._local = threading.local()


def _switch_to_wal(raw: sqlite3.Connection) -> Any:
    """Put the database in WAL mode; returns the ``PRAGMA journal_mode`` row.

    WAL is a property of the database file, so a file already in WAL needs no lock.  Switching takes
    an exclusive lock, and SQLite answers "database is locked" at once (without the busy handler)
    while another connection — e.g. a second gateway starting on the same fresh file — holds one, so
    the switch is retried until the busy timeout.
    """
    mode = raw.execute("PRAGMA journal_mode").fetchone()
    if mode and str(mode[0]).lower() == "wal":
        return mode
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            return raw.execute("PRAGMA journal_mode = WAL").fetchone()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc).lower() or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
