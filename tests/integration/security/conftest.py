"""Fixtures for cross-checks against the ``openssl`` command line (tests only; the product never calls it)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

OPENSSL = shutil.which("openssl")


def _run(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    assert OPENSSL is not None
    return subprocess.run([OPENSSL, *map(str, args)], capture_output=True, check=check, timeout=120)


@pytest.fixture(scope="session")
def openssl() -> Callable[..., subprocess.CompletedProcess[bytes]]:
    """Run ``openssl <args>``; skips the test when the command is not installed."""
    if OPENSSL is None:
        pytest.skip("the openssl command line is not installed")
    return _run


@pytest.fixture(scope="session")
def openssl_has_zlib(
    openssl: Callable[..., subprocess.CompletedProcess[bytes]], tmp_path_factory: pytest.TempPathFactory
) -> bool:
    """True when this openssl build can (un)compress CMS (built with zlib)."""
    d = tmp_path_factory.mktemp("zlib-probe")
    (d / "in").write_bytes(b"probe")
    return (
        openssl(
            "cms", "-compress", "-in", d / "in", "-outform", "DER", "-out", d / "out", check=False
        ).returncode
        == 0
    )


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    """A 700 kB file: text, binary and all 256 octet values (no canonicalisation may touch it)."""
    path = tmp_path / "sample.bin"
    path.write_bytes(b"line one\r\nline two\n" * 20_000 + bytes(range(256)) * 1000 + b"\x00" * 1000)
    return path
