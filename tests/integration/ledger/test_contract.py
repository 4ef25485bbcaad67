"""The ledger contract on both backends: the backend-neutral unit suites, re-run here with the
``ledger`` fixture parametrised over SQLite and the embedded PostgreSQL, plus PostgreSQL specifics."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from oftp2_provider.ledger import Ledger, TransferStatus, VirtualFileKey
from oftp2_provider.ledger.backend import LedgerSqliteHook
from oftp2_provider.ledger.schema import LATEST_VERSION
from tests.unit.ledger import test_ledger, test_transitions

# Backend-specific tests that do not use the ``ledger`` fixture stay in the unit suite only.
_SQLITE_ONLY = {"test_async_ledger_does_not_block_the_loop"}
for _module in (test_ledger, test_transitions):
    for _name in dir(_module):
        if _name.startswith("test_") and _name not in _SQLITE_ONLY:
            globals()[_name] = getattr(_module, _name)

SHA = "0" * 64


def test_backend_identity(ledger: Ledger) -> None:
    assert ledger.schema_version() == LATEST_VERSION
    assert ledger.migrate() == LATEST_VERSION
    if ledger.dialect == "postgresql":
        assert type(ledger.hook).__name__ == "PostgresHook"
    else:
        assert isinstance(ledger.hook, LedgerSqliteHook)


def test_binary_receipt_and_unicode_text_round_trip(
    ledger: Ledger, make_key: Callable[..., VirtualFileKey]
) -> None:
    key = make_key()
    t = ledger.enqueue_outbound("P", key, "/out/ä ø/100%.dat", 5, SHA, description="Rechnung für März")
    ledger.claim_outbound("P", "w")
    ledger.mark_sent(t.id)
    raw = bytes(range(256)) * 3 + b"\x00"
    done = ledger.record_receipt(key, "NERP", raw, "signed by CN=Zoë", 31, "Signatur ungültig ✗")
    assert done is not None and done.status is TransferStatus.REFUSED
    (receipt,) = ledger.receipts(t.id)
    assert receipt.raw == raw and receipt.verification == "signed by CN=Zoë"
    assert (done.nerp_text, done.local_path, done.description) == (
        "Signatur ungültig ✗",
        "/out/ä ø/100%.dat",
        "Rechnung für März",
    )


def test_large_sizes_fit(ledger: Ledger, make_key: Callable[..., VirtualFileKey]) -> None:
    big = 9_999_999 * 1024 * 1024  # far beyond 32-bit, OFTP2's 13-digit sizes
    t = ledger.enqueue_outbound("P", make_key(), "/out/big", big, SHA)
    assert ledger.get(t.id).size == big


def test_postgres_uri_with_socket_host(postgres_uri: str, make_key: Callable[..., VirtualFileKey]) -> None:
    """The fixture URI carries the unix-socket directory as ``?host=``; PostgresHook takes it as an extra."""
    assert "host=" in postgres_uri
    led = Ledger.from_uri(postgres_uri)
    assert led.dialect == "postgresql"
    assert led.hook.connection.extra_dejson["host"].startswith("/")
    t = led.enqueue_outbound("P", make_key(), "/out/a", 1, SHA)
    assert led.get(t.id).status is TransferStatus.QUEUED
    led.close()


def test_postgres_from_conn_id(
    postgres_uri: str, monkeypatch: pytest.MonkeyPatch, make_key: Callable[..., VirtualFileKey]
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_OFTP2_LEDGER_PG", postgres_uri)
    led = Ledger.from_conn_id("oftp2_ledger_pg")
    assert type(led.hook).__name__ == "PostgresHook"
    key = make_key()
    led.enqueue_outbound("P", key, "/out/a", 1, SHA)
    # a second, independent ledger object (another worker) sees the same row
    other = Ledger.from_uri(postgres_uri)
    found = other.find(key)
    assert found is not None and found.status is TransferStatus.QUEUED
    led.close()
    other.close()


def test_postgres_connection_lost_then_reconnects(
    postgres_uri: str, make_key: Callable[..., VirtualFileKey]
) -> None:
    """The server ends our session (restart, failover, idle kill): the call in flight fails with the
    driver's error, the broken connection is dropped, and the next call works on a new one."""
    import psycopg2

    led = Ledger.from_uri(postgres_uri)
    t = led.enqueue_outbound("P", make_key(), "/out/a", 1, SHA)
    with led._backend.transaction() as cur:
        row = cur.row("SELECT pg_backend_pid() AS pid")
    assert row is not None
    admin = psycopg2.connect(postgres_uri)
    admin.autocommit = True
    with admin.cursor() as c:
        c.execute("SELECT pg_terminate_backend(%s)", (row["pid"],))
    admin.close()
    driver_errors: tuple[type[BaseException], ...] = (psycopg2.OperationalError, psycopg2.InterfaceError)
    try:
        import psycopg

        driver_errors += (psycopg.OperationalError, psycopg.InterfaceError)
    except ImportError:  # psycopg2-only installation
        pass
    with pytest.raises(driver_errors, match=r"(?i)terminat|closed|connection"):
        led.get(t.id)
    assert led.get(t.id).status is TransferStatus.QUEUED
    claimed = led.claim_outbound("P", "w")
    assert claimed is not None and claimed.id == t.id
    led.close()


@pytest.mark.parametrize("cursor", ["dictcursor", "namedtuplecursor"])
def test_postgres_cursor_extra(
    postgres_uri: str, cursor: str, make_key: Callable[..., VirtualFileKey]
) -> None:
    """A PostgreSQL connection configured for dict or named-tuple rows works the same."""
    led = Ledger.from_uri(f"{postgres_uri}&cursor={cursor}")
    assert led.hook.connection.extra_dejson["cursor"] == cursor
    key = make_key()
    t = led.enqueue_outbound("P", key, "/out/a", 1, SHA)
    claimed = led.claim_outbound("P", "w")
    assert claimed is not None and claimed.id == t.id
    led.mark_sent(t.id)
    done = led.record_receipt(key, "EERP", b"E", "unsigned")
    assert done is not None and done.status is TransferStatus.DELIVERED
    assert [e.kind for e in led.events(t.id)] == ["enqueued", "claimed", "sent", "delivered"]
    led.close()
