"""Fixtures for the ledger unit tests: a fresh SQLite ledger per test and key/digest factories."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from oftp2_provider.ledger import Ledger, VirtualFileKey

_counter = itertools.count(1)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    """A migrated ledger in a fresh SQLite file."""
    led = Ledger.from_sqlite(tmp_path / "ledger.db")
    led.migrate()
    try:
        yield led
    finally:
        led.close()


@pytest.fixture
def make_key() -> Callable[..., VirtualFileKey]:
    """Return a factory of distinct virtual-file keys (``make_key(dsn=...)`` overrides a field)."""

    def factory(**fields: str) -> VirtualFileKey:
        n = next(_counter)
        values = {
            "dsn": f"FILE{n:06d}",
            "date": "20261124",
            "time": f"1530{n % 100:02d}{n % 10000:04d}",
            "originator": "O0013000000ME",
            "destination": "O0013000000PARTNER",
        }
        values.update(fields)
        return VirtualFileKey(**values)

    return factory


def digest(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()
