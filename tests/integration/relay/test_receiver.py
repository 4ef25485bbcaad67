"""The IPWorks-shaped callback receiver against the emulator."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from oftp2_provider.relay import (
    AzureRelayReceiver,
    HybridConnectionClient,
    RelayConnection,
    RelayConnectionClosed,
    RelayedConnectionRequest,
    RelayedHttpRequest,
    RelayEmulator,
    RelayRejectedError,
)


async def test_callbacks_accept_data_send_disconnect(emulator: RelayEmulator, tmp_path: Path) -> None:
    events: list[tuple[Any, ...]] = []
    connected: asyncio.Queue[RelayConnection] = asyncio.Queue()
    data_in: asyncio.Queue[bytes | str] = asyncio.Queue()
    gone: asyncio.Queue[tuple[str, int]] = asyncio.Queue()

    def decide(request: RelayedConnectionRequest) -> bool | tuple[int, str]:
        events.append(("request", request.query.get("who")))
        return (451, "not you") if request.query.get("who") == "mallory" else True

    async def on_data(connection_id: str, data: bytes | str) -> None:
        await data_in.put(data)

    receiver = AzureRelayReceiver(
        emulator.address("hc1"),
        emulator.token_provider(),
        on_connection_request=decide,
        on_connected=connected.put_nowait,
        on_data_in=on_data,
        on_disconnected=lambda cid, code, reason: gone.put_nowait((cid, code)),
    )
    client = HybridConnectionClient(emulator.address("hc1"), emulator.token_provider())
    async with receiver:
        assert receiver.listening
        with pytest.raises(RelayRejectedError) as rejected:
            await client.connect(query={"who": "mallory"})
        assert (rejected.value.status, rejected.value.description) == (451, "not you")

        ws = await client.connect(query={"who": "alice"})
        connection = await asyncio.wait_for(connected.get(), 5)
        assert connection.id in receiver.connections
        await ws.send_text("hi")
        await ws.send_bytes(b"\x00\x01")
        assert await asyncio.wait_for(data_in.get(), 5) == "hi"
        assert await asyncio.wait_for(data_in.get(), 5) == b"\x00\x01"
        await receiver.send_text(connection.id, "hello alice")
        await receiver.send_bytes(connection.id, b"bin")
        file = tmp_path / "f.bin"
        file.write_bytes(b"F" * 100_000)
        assert await receiver.send_file(connection.id, file) == 100_000
        assert await ws.recv() == "hello alice"
        assert await ws.recv() == b"bin"
        assert await ws.recv() == b"F" * 65536
        assert await ws.recv() == b"F" * (100_000 - 65536)
        await receiver.disconnect(connection.id, 1000, "bye")
        with pytest.raises(RelayConnectionClosed) as closed:
            await ws.recv()
        assert (closed.value.code, closed.value.reason) == (1000, "bye")
        await ws.close()
        assert await asyncio.wait_for(gone.get(), 5) == (connection.id, 1000)
        assert connection.id not in receiver.connections
    assert events == [("request", "mallory"), ("request", "alice")]


async def test_http_handler_now_later_and_missing(emulator: RelayEmulator) -> None:
    later: asyncio.Queue[RelayedHttpRequest] = asyncio.Queue()

    def handle(request: RelayedHttpRequest) -> tuple[int, dict[str, str], bytes] | None:
        if request.target.endswith("/later"):
            later.put_nowait(request)
            return None
        return 200, {"X-Handled": "now"}, request.body.upper()

    client = HybridConnectionClient(emulator.address("hc1"), emulator.token_provider())
    async with AzureRelayReceiver(emulator.address("hc1"), emulator.token_provider(), on_http_request=handle):
        now = await client.request("POST", "now", body=b"abc")
        assert (now.status, now.body, now.headers["X-Handled"]) == (200, b"ABC", "now")
        call = asyncio.create_task(client.request("GET", "later"))
        request = await asyncio.wait_for(later.get(), 5)
        await request.respond(202, body="done later")
        assert (await call).text == "done later"
    async with AzureRelayReceiver(emulator.address("hc1"), emulator.token_provider()):
        assert (await client.request("GET")).status == 501


async def test_forward_to_a_local_service(emulator: RelayEmulator) -> None:
    async def upper(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data.upper())
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(upper, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = HybridConnectionClient(emulator.address("hc1"), emulator.token_provider())
    try:
        async with AzureRelayReceiver(
            emulator.address("hc1"), emulator.token_provider(), forward_to=("127.0.0.1", port)
        ):
            ws = await client.connect()
            await ws.send(b"forward me")
            assert await ws.recv() == b"FORWARD ME"
            await ws.close()
    finally:
        server.close()
