"""Fixtures for the ledger integration tests: the same ``ledger`` fixture on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from oftp2_provider.ledger import Ledger
from tests.unit.ledger.conftest import make_key  # noqa: F401  (re-exported fixture)

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


def _truncate(uri: str) -> None:
    import psycopg2

    conn = psycopg2.connect(uri)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("TRUNCATE events, receipts, transfers RESTART IDENTITY CASCADE")
    conn.close()


def open_ledger(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Ledger:
    """A migrated, empty ledger on ``backend`` (``sqlite`` or ``postgresql``)."""
    if backend == "sqlite":
        led = Ledger.from_sqlite(tmp_path / "ledger.db")
        led.migrate()
        return led
    uri = request.getfixturevalue("pg_ledger_uri")
    led = Ledger.from_uri(uri)
    led.migrate()
    _truncate(uri)
    return led


@pytest.fixture(params=BACKENDS)
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    """A migrated, empty ledger, once on SQLite and once on the embedded PostgreSQL."""
    led = open_ledger(request.param, request, tmp_path)
    try:
        yield led
    finally:
        led.close()
