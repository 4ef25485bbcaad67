"""Fixtures: a loopback relay emulator and an ``azure_relay`` Airflow connection pointing at it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import pytest

from oftp2_provider.relay import RelayEmulator


@pytest.fixture
async def emulator() -> AsyncIterator[RelayEmulator]:
    """A started emulator with Hybrid Connections ``hooks`` and ``other`` on a free port."""
    emu = RelayEmulator(hybrid_connections=["hooks", "other"], accept_timeout=5, request_timeout=20)
    await emu.start()
    try:
        yield emu
    finally:
        await emu.stop()


@pytest.fixture
def relay_conn(emulator: RelayEmulator, monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """Define an ``azure_relay`` connection to the emulator (env var); returns its id."""

    def make(conn_id: str = "relay_test", *, key: str | None = None, **extra: object) -> str:
        name, secret = next(iter(emulator.keys.items()))
        body = {
            "conn_type": "azure_relay",
            "host": emulator.namespace,
            "login": name,
            "password": key or secret,
            "extra": {"hybrid_connection": "hooks", "endpoint": emulator.url, **extra},
        }
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(body))
        return conn_id

    return make
