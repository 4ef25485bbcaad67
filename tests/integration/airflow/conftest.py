"""A real OFTP partner on loopback (the engine's OFTPServer in its own thread) and an oftp2 connection."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from oftp2_provider.protocol.api import (
    FileDecision,
    OutboundFile,
    OutboundItem,
    PartnerConfig,
    SessionConfig,
    SessionContext,
    SessionHandlerBase,
    Timeouts,
)
from oftp2_provider.protocol.commands import SFID
from oftp2_provider.protocol.transport import OFTPServer

OURS = "O0013OURS"
OUR_PASSWORD = "OURPW"
PARTNER = "O0013PARTNER"
PARTNER_PASSWORD = "THEIRPW"


@dataclass
class PartnerBehaviour:
    """What the loopback partner does: refuse some DSNs, answer EERPs or not, files to deliver."""

    refuse: dict[str, tuple[int, bool]] = field(default_factory=dict)
    auto_eerp: bool = True
    deliver: list[OutboundFile] = field(default_factory=list)


class PartnerHandler(SessionHandlerBase):
    """The partner's per-session handler."""

    def __init__(self, inbox: Path, behaviour: PartnerBehaviour) -> None:
        super().__init__(inbox, auto_eerp=behaviour.auto_eerp, own_id=PARTNER)
        self.behaviour = behaviour

    async def accept_file(self, sfid: SFID, ctx: SessionContext) -> FileDecision:
        if sfid.dsn in self.behaviour.refuse:
            code, retry = self.behaviour.refuse[sfid.dsn]
            return FileDecision.refuse(code, retry=retry, text="refused by test partner")
        return await super().accept_file(sfid, ctx)

    async def outbound(self, ctx: SessionContext) -> list[OutboundItem]:
        items = list(await super().outbound(ctx))
        items += self.behaviour.deliver
        self.behaviour.deliver = []
        return items


class LoopbackPartner:
    """An OFTPServer running on its own event loop thread (so sync hook calls can reach it)."""

    def __init__(self, inbox: Path, ssl: Any = None) -> None:
        self.inbox = inbox
        self.behaviour = PartnerBehaviour()
        self.handlers: list[PartnerHandler] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        config = SessionConfig(
            odette_id=PARTNER, password=PARTNER_PASSWORD, timeouts=Timeouts(connect=10, read=10, idle=10)
        )

        def factory(ctx: SessionContext) -> PartnerHandler:
            handler = PartnerHandler(inbox, self.behaviour)
            self.handlers.append(handler)
            return handler

        self.server = OFTPServer(config, factory, partners={OURS: PartnerConfig(OURS, OUR_PASSWORD)})
        self.call(self.server.start("127.0.0.1", 0, ssl=ssl))
        self.port = self.server.port

    def call(self, coro: Any) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(30)

    @property
    def received(self) -> list[Any]:
        return [r for h in self.handlers for r in h.received]

    @property
    def eerps(self) -> list[Any]:
        return [e for h in self.handlers for e in h.eerps]

    def close(self) -> None:
        self.call(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def partner(tmp_path: Path) -> Iterator[LoopbackPartner]:
    """A running loopback partner."""
    server = LoopbackPartner(tmp_path / "partner-inbox")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def oftp2_conn(
    partner: LoopbackPartner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., str]:
    """Define an ``oftp2`` connection to the partner (env var); returns its id. Keyword args go to extras."""

    def make(
        conn_id: str = "oftp2_test", *, password: str = OUR_PASSWORD, port: int | None = None, **extra: Any
    ) -> str:
        extras = {
            "partner_id": PARTNER,
            "partner_password": PARTNER_PASSWORD,
            "ledger_path": str(tmp_path / "ledger.sqlite"),
            "inbox": str(tmp_path / "our-inbox"),
            "connect_timeout": 5,
            "response_timeout": 10,
            **extra,
        }
        body = {
            "conn_type": "oftp2",
            "host": "127.0.0.1",
            "port": port or partner.port,
            "login": OURS,
            "password": password,
            "extra": extras,
        }
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(body))
        return conn_id

    return make
