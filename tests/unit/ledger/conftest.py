"""Fixtures for the ledger unit tests: a fresh SQLite ledger per test and key/digest factories."""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from oftp2_provider.ledger import Ledger, VirtualFileKey

_counter = itertools.count(1)


_SHM = Path("/dev/shm")


@pytest.fixture
def ledger_dir(tmp_path: Path) -> Iterator[Path]:
    """A fresh directory for SQLite ledger files: in RAM (``/dev/shm``) when the host has it.

    Every ledger commit fsyncs; on a busy shared disk that dominates the test time, while the
    behaviour under test (locking, WAL, transactions) is the same on tmpfs.
    """
    if _SHM.is_dir() and os.access(_SHM, os.W_OK):
        path = Path(tempfile.mkdtemp(prefix="oftp2-ledger-", dir=_SHM))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
    else:
        yield tmp_path


@pytest.fixture
def ledger(ledger_dir: Path) -> Iterator[Ledger]:
    """A migrated ledger in a fresh SQLite file."""
    led = Ledger.from_sqlite(ledger_dir / "ledger.db")
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
