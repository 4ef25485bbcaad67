"""Fixtures for the protocol engine's loopback tests: a running responder, clients, raw peers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from oftp2_provider.protocol import codec, framing
from oftp2_provider.protocol._compat import timeout as _timeout
from oftp2_provider.protocol.api import (
    OutboundItem,
    PartnerConfig,
    SessionConfig,
    SessionContext,
    SessionHandlerBase,
    SessionOutcome,
    Timeouts,
)
from oftp2_provider.protocol.commands import SSID, Command, ProtocolLevel
from oftp2_provider.protocol.transport import OFTPServer

CLIENT = "O0013CLIENT"
SERVER = "O0013SERVER"
CLIENT_PW = "CPW"
SERVER_PW = "SPW"

FAST = Timeouts(connect=5, read=5, idle=5)


def client_config(**kw: object) -> SessionConfig:
    base: dict[str, object] = dict(odette_id=CLIENT, password=CLIENT_PW, timeouts=FAST)
    base.update(kw)
    return SessionConfig(**base)  # type: ignore[arg-type]


def server_config(**kw: object) -> SessionConfig:
    base: dict[str, object] = dict(odette_id=SERVER, password=SERVER_PW, timeouts=FAST)
    base.update(kw)
    return SessionConfig(**base)  # type: ignore[arg-type]


SERVER_PARTNER = PartnerConfig(SERVER, SERVER_PW)
PARTNERS = {CLIENT: PartnerConfig(CLIENT, CLIENT_PW)}


class RecordingHandler(SessionHandlerBase):
    """Inbox handler that also keeps a queue of items to send when it holds the turn."""

    def __init__(self, inbox: Path, *, auto_eerp: bool = True, own_id: str = SERVER) -> None:
        super().__init__(inbox, auto_eerp=auto_eerp, own_id=own_id)
        self.contexts: list[SessionContext] = []

    async def session_ended(self, ctx: SessionContext, outcome: SessionOutcome) -> None:
        await super().session_ended(ctx, outcome)
        self.contexts.append(ctx)


@dataclass
class Responder:
    """A running OFTPServer plus the handlers it created."""

    server: OFTPServer
    inbox: Path
    handlers: list[RecordingHandler] = field(default_factory=list)
    queue: list[OutboundItem] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.server.port


@pytest.fixture
async def responder_factory(tmp_path: Path) -> AsyncIterator[Callable[..., object]]:
    servers: list[OFTPServer] = []

    async def make(
        config: SessionConfig | None = None, *, ssl: object = None, auto_eerp: bool = True, **kw: object
    ) -> Responder:
        inbox = tmp_path / f"server-inbox-{len(servers)}"
        resp: Responder

        def factory(ctx: SessionContext) -> RecordingHandler:
            h = RecordingHandler(inbox, auto_eerp=auto_eerp)
            h.pending.extend(resp.queue)
            resp.queue.clear()
            resp.handlers.append(h)
            return h

        server = OFTPServer(config or server_config(), factory, partners=kw.pop("partners", PARTNERS), **kw)  # type: ignore[arg-type]
        resp = Responder(server, inbox)
        await server.start("127.0.0.1", 0, ssl=ssl)  # type: ignore[arg-type]
        servers.append(server)
        return resp

    yield make
    for s in servers:
        await s.close()


@pytest.fixture
async def responder(responder_factory: Callable[..., object]) -> Responder:
    return await responder_factory()  # type: ignore[misc, no-any-return]


@pytest.fixture
def payload(tmp_path: Path) -> Callable[[int, str], Path]:
    def make(size: int, name: str = "payload.bin") -> Path:
        p = tmp_path / "out" / name
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(os.urandom(size))
        return p

    return make


class RawPeer:
    """A hand-driven peer on a real socket, for sending what a correct engine never would."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = framing.StreamDecoder()
        self.level = ProtocolLevel.V2_0

    @classmethod
    async def connect(cls, port: int) -> RawPeer:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, command: Command) -> None:
        self.send_raw(framing.frame(codec.encode(command, self.level)))
        await self.writer.drain()

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def recv(self, timeout: float = 5.0) -> Command | None:
        """The next command, or None when the peer closed the connection."""
        async with _timeout(timeout):
            while True:
                buf = self.decoder.next_buffer()
                if buf is not None:
                    return codec.decode(buf, self.level)
                data = await self.reader.read(65536)
                if not data:
                    return None
                self.decoder.feed(data)

    async def login(self, code: str = CLIENT, password: str = CLIENT_PW, **ssid: object) -> Command | None:
        first = await self.recv()
        assert first is not None and type(first).__name__ == "SSRM"
        fields: dict[str, object] = dict(
            level=ProtocolLevel.V2_0, code=code, password=password, sdeb=99999, credit=999
        )
        fields.update(ssid)
        await self.send(SSID(**fields))  # type: ignore[arg-type]
        answer = await self.recv()
        if isinstance(answer, SSID):
            self.level = answer.level
        return answer

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass
