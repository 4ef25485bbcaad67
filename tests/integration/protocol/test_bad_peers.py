"""Hand-driven peers on real sockets: garbage, oversize buffers, bad levels, silence."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from oftp2_provider.protocol import codec, framing
from oftp2_provider.protocol.api import OutboundFile, Timeouts
from oftp2_provider.protocol.commands import DATA, ESID, SFID, SFPA, SSID, SSRM, ProtocolLevel
from oftp2_provider.protocol.errors import EsidReason
from oftp2_provider.protocol.transport import OFTPClient, SessionAborted

from .conftest import CLIENT, SERVER, RawPeer, Responder, client_config, server_config


async def expect_esid(peer: RawPeer, reason: int) -> None:
    cmd = await peer.recv()
    assert isinstance(cmd, ESID), cmd
    assert cmd.reason == reason, cmd
    await peer.close()  # the receiver of ESID closes the connection


async def still_serving(responder: Responder, payload: Callable[..., Path]) -> None:
    src = payload(1000, "after.bin")
    async with OFTPClient(client_config(), "127.0.0.1", responder.port) as client:
        ok = await client.send_file(
            OutboundFile(dsn="AFTER", originator=CLIENT, destination=SERVER, path=src)
        )
    assert ok.ok


async def test_garbage_bytes(responder: Responder, payload: Callable[..., Path]) -> None:
    peer = await RawPeer.connect(responder.port)
    assert isinstance(await peer.recv(), SSRM)
    peer.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await expect_esid(peer, EsidReason.EXCHANGE_BUFFER_SIZE_ERROR)
    await peer.close()
    await still_serving(responder, payload)


async def test_unknown_command_after_login(responder: Responder) -> None:
    peer = await RawPeer.connect(responder.port)
    assert isinstance(await peer.login(), SSID)
    peer.send_raw(framing.frame(b"Zzz"))
    await expect_esid(peer, EsidReason.COMMAND_NOT_RECOGNISED)


async def test_oversize_data_buffer(responder_factory: Callable[..., object]) -> None:
    responder: Responder = await responder_factory(server_config(sdeb=1024))  # type: ignore[misc]
    peer = await RawPeer.connect(responder.port)
    answer = await peer.login(sdeb=1024)
    assert isinstance(answer, SSID) and answer.sdeb == 1024
    await peer.send(SFID("BIG", "20240101", "1200000001", SERVER, CLIENT))
    assert isinstance(await peer.recv(), SFPA)
    payload = b"".join(b"\x3f" + b"x" * 63 for _ in range(40))  # 2560 octets > SDEB 1024
    await peer.send(DATA(payload))
    await expect_esid(peer, EsidReason.EXCHANGE_BUFFER_SIZE_ERROR)
    await responder.server.wait_sessions(1, timeout=5)
    assert not (responder.inbox / "BIG").exists()


async def test_data_while_idle_is_protocol_violation(responder: Responder) -> None:
    peer = await RawPeer.connect(responder.port)
    await peer.login()
    await peer.send(DATA(b"\x80"))
    await expect_esid(peer, EsidReason.PROTOCOL_VIOLATION)


async def test_unsupported_level_is_esid_10(responder: Responder) -> None:
    peer = await RawPeer.connect(responder.port)
    assert isinstance(await peer.recv(), SSRM)
    ssid = codec.encode(SSID(ProtocolLevel.V2_0, CLIENT, "CPW", 99999), ProtocolLevel.V2_0)
    peer.send_raw(framing.frame(ssid[:1] + b"3" + ssid[2:]))  # SSIDLEV 3 does not exist
    await expect_esid(peer, EsidReason.MODE_OR_CAPABILITIES_INCOMPATIBLE)


async def test_idle_timeout_is_esid_09(responder_factory: Callable[..., object]) -> None:
    responder: Responder = await responder_factory(
        server_config(timeouts=Timeouts(connect=5, read=5, idle=0.5))
    )  # type: ignore[misc]
    peer = await RawPeer.connect(responder.port)
    assert isinstance(await peer.login(), SSID)
    # we are the Speaker and say nothing
    await expect_esid(peer, EsidReason.TIME_OUT)


async def test_silent_initiator_times_out(responder_factory: Callable[..., object]) -> None:
    responder: Responder = await responder_factory(
        server_config(timeouts=Timeouts(connect=0.5, read=5, idle=5))
    )  # type: ignore[misc]
    peer = await RawPeer.connect(responder.port)
    assert isinstance(await peer.recv(), SSRM)
    await expect_esid(peer, EsidReason.TIME_OUT)


# --- the client against misbehaving responders --------------------------------------------------------


async def fake_responder(script: Callable[[RawPeer], object]) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = RawPeer(reader, writer)
        try:
            await script(peer)  # type: ignore[misc]
        finally:
            await peer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1])


async def test_client_rejects_higher_level_answer() -> None:
    seen: list[object] = []

    async def script(peer: RawPeer) -> None:
        await peer.send(SSRM())
        assert isinstance(await peer.recv(), SSID)
        await peer.send(SSID(ProtocolLevel.V2_0, SERVER, "SPW", 99999))  # above the client's 1.4
        seen.append(await peer.recv())

    server, port = await fake_responder(script)
    async with server:
        with pytest.raises(SessionAborted) as info:
            await OFTPClient(client_config(level=ProtocolLevel.V1_4), "127.0.0.1", port).connect()
        await asyncio.sleep(0.1)
    assert info.value.reason == EsidReason.MODE_OR_CAPABILITIES_INCOMPATIBLE
    assert isinstance(seen[0], ESID) and seen[0].reason == 10


async def test_client_read_timeout(payload: Callable[..., Path]) -> None:
    async def script(peer: RawPeer) -> None:
        await peer.send(SSRM())
        await peer.recv()
        await peer.send(SSID(ProtocolLevel.V2_0, SERVER, "SPW", 99999))
        await peer.recv()  # SFID, never answered
        await asyncio.sleep(3)

    server, port = await fake_responder(script)
    async with server:
        client = OFTPClient(client_config(timeouts=Timeouts(connect=2, read=0.5, idle=2)), "127.0.0.1", port)
        await client.connect()
        with pytest.raises(SessionAborted) as info:
            await client.send_file(
                OutboundFile(dsn="X", originator=CLIENT, destination=SERVER, path=payload(10))
            )
        assert info.value.reason == EsidReason.TIME_OUT
        await client.close()


async def test_client_when_responder_vanishes() -> None:
    async def script(peer: RawPeer) -> None:
        await peer.send(SSRM())
        await peer.recv()

    server, port = await fake_responder(script)
    async with server:
        with pytest.raises(SessionAborted) as info:
            await OFTPClient(client_config(), "127.0.0.1", port).connect()
    assert info.value.connection_lost
