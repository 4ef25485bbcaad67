"""Open the transfer ledger an ``oftp2`` connection (or a trigger's kwargs) points at.

Ledgers are cached per process by their reference, so the many triggers of one triggerer share one
ledger object (and its connection pool) instead of opening a database per trigger.
"""

from __future__ import annotations

import threading
from pathlib import Path

from oftp2_provider.connection import default_home
from oftp2_provider.ledger import AsyncLedger, Ledger

_CACHE: dict[tuple[str, str], Ledger] = {}
_LOCK = threading.Lock()


def ledger_ref(ledger_conn_id: str | None, ledger_path: str | None) -> tuple[str, str]:
    """A stable, JSON-friendly reference: ``("conn", id)`` or ``("sqlite", absolute path)``."""
    if ledger_conn_id:
        return ("conn", ledger_conn_id)
    path = Path(ledger_path) if ledger_path else default_home() / "oftp2" / "ledger.sqlite"
    return ("sqlite", str(path.expanduser().resolve()))


def open_ledger(ledger_conn_id: str | None = None, ledger_path: str | None = None) -> Ledger:
    """The (cached) :class:`~oftp2_provider.ledger.Ledger` for a connection id or an SQLite path."""
    ref = ledger_ref(ledger_conn_id, ledger_path)
    with _LOCK:
        ledger = _CACHE.get(ref)
        if ledger is None:
            if ref[0] == "conn":
                ledger = Ledger.from_conn_id(ref[1])
            else:
                Path(ref[1]).parent.mkdir(parents=True, exist_ok=True)
                ledger = Ledger.from_sqlite(ref[1])
            _CACHE[ref] = ledger
        return ledger


def open_async_ledger(ledger_conn_id: str | None = None, ledger_path: str | None = None) -> AsyncLedger:
    """An :class:`~oftp2_provider.ledger.AsyncLedger` (every call runs off the event loop).

    Building the ledger may touch the database (schema check), so call this from a thread or
    accept a one-time cost; :func:`open_async_ledger_nb` does it off the loop.
    """
    return AsyncLedger(open_ledger(ledger_conn_id, ledger_path))


async def open_async_ledger_nb(ledger_conn_id: str | None, ledger_path: str | None) -> AsyncLedger:
    """Like :func:`open_async_ledger` but opens the database in a worker thread."""
    import asyncio

    ledger = await asyncio.to_thread(open_ledger, ledger_conn_id, ledger_path)
    return AsyncLedger(ledger)
