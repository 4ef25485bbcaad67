"""Fixtures for the security unit tests: sample files and protected copies made with the test PKI."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def make_file(tmp_path: Path) -> Callable[..., Path]:
    """Write a sample file: ``size`` octets of half text, half random data (seeded by ``name``)."""

    def _make(name: str = "original.dat", size: int = 300_000) -> Path:
        path = tmp_path / name
        text = (b"ODETTE FILE TRANSFER PROTOCOL 2 " * (size // 64 + 1))[: size // 2]
        path.write_bytes(text + os.urandom(size - len(text)))
        return path

    return _make
