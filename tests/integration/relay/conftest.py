"""Fixtures: a loopback Azure Relay emulator and clients bound to it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from oftp2_provider.relay import HybridConnectionClient, HybridConnectionListener, RelayEmulator


@pytest.fixture
async def emulator() -> AsyncIterator[RelayEmulator]:
    """A started emulator with hybrid connections ``hc1`` and ``tunnel`` on a free port."""
    emu = RelayEmulator(hybrid_connections=["hc1", "tunnel"], accept_timeout=5, request_timeout=10)
    await emu.start()
    try:
        yield emu
    finally:
        await emu.stop()


@pytest.fixture
async def listener(emulator: RelayEmulator) -> AsyncIterator[HybridConnectionListener]:
    """Our listener, online on ``hc1``."""
    async with HybridConnectionListener(emulator.address("hc1"), emulator.token_provider()) as lst:
        yield lst


@pytest.fixture
def sender(emulator: RelayEmulator) -> HybridConnectionClient:
    """A sender for ``hc1`` with a valid Send token."""
    return HybridConnectionClient(emulator.address("hc1"), emulator.token_provider())
