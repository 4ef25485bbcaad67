"""Schema creation and migration, backend construction and SQLite settings."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest

from oftp2_provider.ledger import Ledger, LedgerError, SchemaError, VirtualFileKey
from oftp2_provider.ledger.backend import LedgerSqliteHook, convert_placeholders
from oftp2_provider.ledger.schema import LATEST_VERSION, MIGRATIONS

from .conftest import digest

SHA = digest(b"x")


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_migrate_from_empty_and_rerun(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    led = Ledger.from_sqlite(path)
    assert led.schema_version() == 0
    assert led.migrate() == LATEST_VERSION
    assert {"schema_version", "transfers", "receipts", "events"} <= _tables(path)
    assert led.migrate() == LATEST_VERSION
    led.close()
    again = Ledger.from_sqlite(path)
    assert again.migrate() == LATEST_VERSION
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT version, description FROM schema_version ORDER BY version").fetchall()
    assert rows == [(m.version, m.description) for m in MIGRATIONS]
    again.close()


def test_first_use_migrates(tmp_path: Path, make_key: Callable[..., VirtualFileKey]) -> None:
    led = Ledger.from_sqlite(tmp_path / "lazy.db")
    t = led.enqueue_outbound("P", make_key(), "/out/a", 1, SHA)
    assert t.id >= 1 and led.schema_version() == LATEST_VERSION
    led.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    Ledger.from_sqlite(path).migrate()
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO schema_version VALUES (?, 'from the future', '2099-01-01T00:00:00+00:00')", (999,)
        )
    with pytest.raises(SchemaError, match="version 999, newer than this code's"):
        Ledger.from_sqlite(path).migrate()


def test_concurrent_first_use_migrates_once(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    results: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        led = Ledger.from_sqlite(path)
        try:
            barrier.wait()
            results.append(led.migrate())
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            led.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert errors == []
    assert results == [LATEST_VERSION] * 4
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM schema_version").fetchone() == (len(MIGRATIONS),)


def test_failed_step_leaves_previous_version(tmp_path: Path) -> None:
    """A step that breaks half-way is rolled back with its version row (DDL is transactional)."""
    path = tmp_path / "broken.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE events (x INTEGER)")  # clashes with step 1's CREATE TABLE events
    led = Ledger.from_sqlite(path)
    with pytest.raises(sqlite3.OperationalError, match="events already exists"):
        led.migrate()
    assert led.schema_version() == 0
    assert "transfers" not in _tables(path)
    led.close()


def test_sqlite_settings_and_unique_key(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    led = Ledger.from_sqlite(path)
    led.migrate()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        row = ("out", "P", "D", "20260101", "1200000001", "A", "B", "queued", "t", "t")
        sql = (
            "INSERT INTO transfers (direction, partner, dsn, file_date, file_time, originator, destination, "
            "status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        db.execute(sql, row)
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            db.execute(sql, row)
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            db.execute(sql, ("out", "P", "D2", "20260101", "1200000001", "A", "B", "lost", "t", "t"))
    assert isinstance(led.hook, LedgerSqliteHook)
    assert led.dialect == "sqlite"
    led.close()


def test_uri_and_path_forms(tmp_path: Path, make_key: Callable[..., VirtualFileKey]) -> None:
    odd = tmp_path / "dir with space?and#hash"
    odd.mkdir()
    db = odd / "ledger.db"
    led = Ledger.from_sqlite(db)
    led.enqueue_outbound("P", make_key(), "/out/a", 1, SHA)
    led.close()
    assert db.exists()
    assert len(Ledger.from_sqlite(str(db)).list()) == 1
    assert len(Ledger.from_uri("sqlite:///" + quote(str(db))).list()) == 1
    with pytest.raises(LedgerError, match="percent-encode"):
        Ledger.from_uri(f"sqlite:///{db}")
    relative = Ledger.from_uri("sqlite:///" + quote(os.path.relpath(db)))
    assert len(relative.list()) == 1


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Ledger.from_uri("mysql://u@h/db"), "unsupported ledger URI scheme 'mysql'"),
        (lambda: Ledger.from_uri("sqlite://"), "names no database file"),
        (lambda: Ledger.from_sqlite(":memory:"), "needs a file path"),
    ],
)
def test_bad_locations_are_named(make: Callable[[], Ledger], message: str) -> None:
    with pytest.raises(LedgerError, match=message):
        make()


def test_from_conn_id_uses_airflow_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_key: Callable[..., VirtualFileKey]
) -> None:
    path = tmp_path / "conn.db"
    monkeypatch.setenv("AIRFLOW_CONN_OFTP2_LEDGER_UNIT", f'{{"conn_type": "sqlite", "host": "{path}"}}')
    led = Ledger.from_conn_id("oftp2_ledger_unit")
    assert isinstance(led.hook, LedgerSqliteHook)
    led.enqueue_outbound("P", make_key(), "/out/a", 1, SHA)
    led.close()
    assert "transfers" in _tables(path)


def test_from_conn_id_refuses_non_sql(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_OFTP2_NOT_SQL", '{"conn_type": "smtp", "host": "mail.example"}')
    with pytest.raises(LedgerError, match="not a SQL"):
        Ledger.from_conn_id("oftp2_not_sql")


def test_placeholder_conversion() -> None:
    sql = "UPDATE t SET a = ? WHERE b = ? AND c LIKE 'x%'"
    assert convert_placeholders(sql, "?") == sql
    assert convert_placeholders(sql, "%s") == "UPDATE t SET a = %s WHERE b = %s AND c LIKE 'x%%'"
    with pytest.raises(LedgerError, match="unsupported SQL placeholder ':1'"):
        convert_placeholders(sql, ":1")


def test_migrations_render_for_both_dialects() -> None:
    for m in MIGRATIONS:
        for dialect, marker in (("sqlite", "AUTOINCREMENT"), ("postgresql", "BIGSERIAL")):
            text = "\n".join(m.render(dialect))
            assert "{" not in text.replace("'{}'", "")
            if m.version == 1:
                assert marker in text
    assert [m.version for m in MIGRATIONS] == list(range(1, LATEST_VERSION + 1))
