"""Fixtures of the Airflow-layer tests: a real SQLite ledger and helpers that populate it."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from oftp2_provider.ledger import Ledger, Transfer, VirtualFileKey

OURS = "O0013OURS"
PARTNER = "O0013PARTNER"
_COUNTER = itertools.count(1)


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    """Path of a fresh SQLite ledger for one test."""
    return tmp_path / "ledger.sqlite"


@pytest.fixture
def ledger(ledger_path: Path) -> Ledger:
    """A real SQLite ledger (the same object the hook/trigger cache opens for this path)."""
    from oftp2_provider.hooks.ledger import open_ledger

    return open_ledger(None, str(ledger_path))


def new_key(dsn: str = "DOC", *, originator: str = OURS, destination: str = PARTNER) -> VirtualFileKey:
    """A unique virtual-file key."""
    n = next(_COUNTER)
    return VirtualFileKey(dsn, "20260101", f"{120000 + n % 60:06d}{n % 10000:04d}", originator, destination)


@pytest.fixture
def sent_transfer(ledger: Ledger, tmp_path: Path) -> Callable[..., Transfer]:
    """Create an outbound transfer in status ``sent`` (waiting for its EERP)."""

    def make(dsn: str = "DOC") -> Transfer:
        data = f"payload {dsn}".encode()
        path = tmp_path / f"{dsn}.out"
        path.write_bytes(data)
        key = new_key(dsn)
        t = ledger.enqueue_outbound(PARTNER, key, path, len(data), hashlib.sha256(data).hexdigest())
        claimed = ledger.claim_outbound(PARTNER, "test")
        assert claimed is not None and claimed.id == t.id
        return ledger.mark_sent(t.id)

    return make


@pytest.fixture
def received_transfer(ledger: Ledger, tmp_path: Path) -> Callable[..., Transfer]:
    """Create an inbound transfer in status ``received`` (not yet dispatched to Airflow)."""

    def make(dsn: str = "IN", partner: str = PARTNER, *, hold: bool = True) -> Transfer:
        key = new_key(dsn, originator=partner, destination=OURS)
        data = f"inbound {dsn}".encode()
        path = tmp_path / f"{dsn}.{key.time}.in"
        path.write_bytes(data)
        t, dup = ledger.begin_inbound(partner, key)
        assert not dup
        return ledger.complete_inbound(
            t.id, path, len(data), hashlib.sha256(data).hexdigest(), hold_receipt=hold
        )

    return make
