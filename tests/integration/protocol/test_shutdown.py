"""Graceful responder shutdown: stop accepting, a grace period, then ESID 05 for what still runs."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from oftp2_provider.protocol.api import OutboundFile, ReceivedFile, SessionContext, SessionHandlerBase
from oftp2_provider.protocol.errors import EsidReason, SessionRejected
from oftp2_provider.protocol.transport import OFTPClient, OFTPServer

from .conftest import CLIENT, PARTNERS, SERVER, Responder, client_config, server_config


class _Gate:
    """A byte source that stops after ``block_after`` octets until released (a transfer in flight)."""

    def __init__(self, path: Path, block_after: int) -> None:
        self.content = path.read_bytes()
        self.block_after = block_after
        self.blocked = asyncio.Event()
        self.release = asyncio.Event()

    async def source(self, offset: int) -> AsyncIterator[bytes]:
        sent = 0
        for start in range(offset, len(self.content), 65536):
            chunk = self.content[start : start + 65536]
            yield chunk
            sent += len(chunk)
            if sent >= self.block_after and not self.release.is_set():
                self.blocked.set()
                await self.release.wait()

    def item(self, dsn: str, like: OutboundFile) -> OutboundFile:
        return OutboundFile(
            dsn=dsn,
            originator=CLIENT,
            destination=SERVER,
            source=self.source,
            size=len(self.content),
            date=like.date,
            time=like.time,
        )


def _outbound(path: Path, dsn: str) -> OutboundFile:
    return OutboundFile(dsn=dsn, originator=CLIENT, destination=SERVER, path=path)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_close_ends_a_running_transfer_with_esid_05_and_keeps_the_partial(
    responder: Responder, payload: Callable[..., Path]
) -> None:
    src = payload(3_000_000)
    whole = _outbound(src, "BIG.FILE")
    gate = _Gate(src, 1_500_000)
    client = OFTPClient(client_config(), "127.0.0.1", responder.port)
    await client.connect()
    sending = asyncio.create_task(client.send_file(gate.item("BIG.FILE", whole)))
    await asyncio.wait_for(gate.blocked.wait(), 10)
    closing = asyncio.create_task(responder.server.close(grace=0.3))
    await asyncio.sleep(0.8)  # past the grace: the responder has ended the session
    gate.release.set()
    with pytest.raises(SessionRejected) as info:
        await asyncio.wait_for(sending, 10)
    assert info.value.reason == EsidReason.LOCAL_SITE_EMERGENCY_CLOSE_DOWN
    await client.close()
    await asyncio.wait_for(closing, 15)
    outcome = responder.server.outcomes[-1]
    assert outcome.reason == 5 and not outcome.by_peer
    assert responder.handlers[0].received == []
    partial = responder.inbox / ".partial" / "BIG.FILE"
    kept = partial.stat().st_size
    assert 1024 <= kept <= 1_500_000 + 65536
    assert partial.read_bytes() == src.read_bytes()[:kept]  # flushed, and only what was received
    assert not (responder.inbox / "BIG.FILE").exists()

    # a restarted responder on the same inbox resumes the file
    def factory(ctx: SessionContext) -> SessionHandlerBase:
        return SessionHandlerBase(responder.inbox)

    async with (
        OFTPServer(server_config(), factory, partners=PARTNERS) as again,
        OFTPClient(client_config(), "127.0.0.1", again.port) as client2,
    ):
        result = await client2.send_file(whole)
    assert result.ok and result.restart_offset == kept // 1024 * 1024
    assert result.sha256 == _sha(src.read_bytes())
    assert (responder.inbox / "BIG.FILE").read_bytes() == src.read_bytes()


async def test_close_with_grace_lets_running_sessions_finish(
    responder: Responder, payload: Callable[..., Path]
) -> None:
    src = payload(1_000_000)
    gate = _Gate(src, 300_000)
    port = responder.port
    client = OFTPClient(client_config(), "127.0.0.1", port)
    await client.connect()
    sending = asyncio.create_task(client.send_file(gate.item("SLOW.FILE", _outbound(src, "X"))))
    await asyncio.wait_for(gate.blocked.wait(), 10)
    loop = asyncio.get_running_loop()
    started = loop.time()
    closing = asyncio.create_task(responder.server.close(grace=30))
    await asyncio.sleep(0.1)
    assert not responder.server.accepting
    with pytest.raises(OSError):  # the listening socket is gone
        await asyncio.open_connection("127.0.0.1", port)
    gate.release.set()
    result = await asyncio.wait_for(sending, 10)
    assert result.ok
    await client.close()
    await asyncio.wait_for(closing, 10)
    assert loop.time() - started < 10  # returned when the last session ended, not after the grace
    assert responder.server.outcomes[-1].ok
    assert (responder.inbox / "SLOW.FILE").read_bytes() == src.read_bytes()


async def test_stop_accepting_refuses_late_connections_with_esid_05(tmp_path: Path) -> None:
    oftp = OFTPServer(server_config(), lambda ctx: SessionHandlerBase(tmp_path / "in"))

    async def bridge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await oftp.handle_connection(reader, writer)  # e.g. a relay that still delivers a connection

    tunnel = await asyncio.start_server(bridge, "127.0.0.1", 0)
    port = tunnel.sockets[0].getsockname()[1]
    async with tunnel:
        oftp.stop_accepting()
        late = OFTPClient(client_config(), "127.0.0.1", port)
        with pytest.raises(SessionRejected) as info:
            await late.connect()
        assert info.value.reason == 5
        await oftp.close()
    assert oftp.outcomes and oftp.outcomes[0].reason == 5


async def test_close_ends_an_idle_session_and_a_receiving_client_sees_esid(
    responder: Responder, payload: Callable[..., Path]
) -> None:
    """The responder is the speaker (sending a queued file) when it is told to close."""
    big = payload(2_000_000, "queued.bin")
    gate = _Gate(big, 500_000)
    responder.queue.append(gate.item("QUEUED", _outbound(big, "X")))
    inbox = big.parent.parent / "client-inbox"
    client = OFTPClient(client_config(), "127.0.0.1", responder.port, handler=SessionHandlerBase(inbox))
    await client.connect()
    receiving = asyncio.create_task(client.receive())
    await asyncio.wait_for(gate.blocked.wait(), 10)
    closing = asyncio.create_task(responder.server.close(EsidReason.UNSPECIFIED, "maintenance", grace=0))
    assert await asyncio.wait_for(receiving, 10) is False  # the partner ended the session
    gate.release.set()
    outcome = await client.close()
    await asyncio.wait_for(closing, 10)
    assert outcome.reason == EsidReason.UNSPECIFIED and outcome.by_peer and outcome.text == "maintenance"
    assert not (inbox / "QUEUED").exists()
    assert (inbox / ".partial" / "QUEUED").stat().st_size > 0  # kept for the restart


class _SlowRecorder(SessionHandlerBase):
    """Records received files slowly (a ledger update), so a shutdown can land in the middle."""

    def __init__(self, inbox: Path, entered: asyncio.Event) -> None:
        super().__init__(inbox, auto_eerp=False)
        self.entered = entered
        self.recorded: list[str] = []

    async def file_received(self, received: ReceivedFile, ctx: SessionContext) -> None:
        self.entered.set()
        await asyncio.sleep(0.5)
        self.recorded.append(received.sfid.dsn)


async def test_shutdown_waits_for_the_record_of_a_delivered_file(
    tmp_path: Path, payload: Callable[..., Path]
) -> None:
    entered = asyncio.Event()
    handlers: list[_SlowRecorder] = []

    def factory(ctx: SessionContext) -> SessionHandlerBase:
        handlers.append(_SlowRecorder(tmp_path / "in", entered))
        return handlers[-1]

    src = payload(100_000)
    async with OFTPServer(server_config(), factory, partners=PARTNERS) as server:
        client = OFTPClient(client_config(), "127.0.0.1", server.port)
        await client.connect()
        sending = asyncio.create_task(client.send_file(_outbound(src, "RECORDED")))
        await asyncio.wait_for(entered.wait(), 10)
        await server.close(grace=0)  # lands while file_received is running
        assert handlers[0].recorded == ["RECORDED"]  # the record was completed, not cut
        assert (await asyncio.wait_for(sending, 10)).ok  # EFPA went out before the ESID
        outcome = await client.close()
    assert outcome.reason == 5 and outcome.by_peer
    assert server.outcomes[0].reason == 5
    assert (tmp_path / "in" / "RECORDED").read_bytes() == src.read_bytes()
