"""Fixtures for gateway integration tests: gateway configurations on loopback with real ledgers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from oftp2_provider.gateway.config import GatewayConfig, parse_config
from oftp2_provider.gateway.daemon import Gateway

A_ID = "O0013000000GWA"
B_ID = "O0013000000GWB"


def gateway_config(
    base: Path,
    own_id: str,
    *,
    partners: dict[str, dict[str, Any]] | None = None,
    password: str = "OWNPW",
    **extra: Any,
) -> GatewayConfig:
    """A configuration with one TCP listener on a free port and state under ``base``."""
    data: dict[str, Any] = {
        "identity": {"odette_id": own_id, "password": password},
        "state_dir": str(base),
        "listeners": [{"type": "tcp", "host": "127.0.0.1", "port": 0}],
        "partners": partners or {},
        "limits": {"idle_timeout": 20, "shutdown_grace": 2},
    }
    data.update(extra)
    return parse_config(data, base_dir=base)


GatewayFactory = Callable[..., Gateway]


@pytest.fixture
async def gateways() -> AsyncIterator[list[Gateway]]:
    """A list the test appends started gateways to; all are stopped afterwards."""
    started: list[Gateway] = []
    yield started
    for gw in reversed(started):
        await gw.stop(grace=0)


@pytest.fixture
def start_gateway(gateways: list[Gateway]) -> Callable[..., Any]:
    """``await start_gateway(config)`` → a started :class:`Gateway` (stopped at teardown)."""

    async def start(config: GatewayConfig, **kwargs: Any) -> Gateway:
        gw = Gateway(config, **kwargs)
        await gw.start()
        gateways.append(gw)
        return gw

    return start
