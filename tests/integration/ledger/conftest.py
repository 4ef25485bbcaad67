"""Fixtures for the ledger integration tests: the same ``ledger`` fixture on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from oftp2_provider.ledger import Ledger
from tests.unit.ledger.conftest import ledger_dir, make_key  # noqa: F401  (re-exported fixtures)

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="module")
def pg_ledger_uri(postgres_server: object) -> str:
    """One PostgreSQL database per test module (tests truncate it instead of creating a new one)."""
    import psycopg2

    name = "ledger_" + uuid.uuid4().hex[:12]
    conn = psycopg2.connect(postgres_server.get_uri())  # type: ignore[attr-defined]
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return str(postgres_server.get_uri(name))  # type: ignore[attr-defined]


def _truncate(led: Ledger) -> None:
    with led._backend.transaction() as cur:
        cur.execute("TRUNCATE events, receipts, transfers RESTART IDENTITY CASCADE")


@pytest.fixture(scope="module")
def pg_ledger(pg_ledger_uri: str) -> Iterator[Ledger]:
    """One migrated PostgreSQL ledger object per module (connections reused between tests)."""
    led = Ledger.from_uri(pg_ledger_uri)
    led.migrate()
    try:
        yield led
    finally:
        led.close()


@pytest.fixture(params=BACKENDS)
def ledger(request: pytest.FixtureRequest, ledger_dir: Path) -> Iterator[Ledger]:  # noqa: F811
    """A migrated, empty ledger, once on SQLite and once on the embedded PostgreSQL."""
    if request.param == "sqlite":
        led = Ledger.from_sqlite(ledger_dir / "ledger.db")
        led.migrate()
        try:
            yield led
        finally:
            led.close()
    else:
        led = request.getfixturevalue("pg_ledger")
        _truncate(led)
        yield led
