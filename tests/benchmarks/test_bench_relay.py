"""Benchmarks of the relay: HTTP requests/s through the listener, and tunnel vs direct TCP throughput.

Run with ``make bench`` (or ``pytest -s tests/benchmarks/test_bench_relay.py``).  Each figure is
reported as a ratio against a baseline measured in the same run on the same machine (a plain HTTP
server / a direct TCP connection on loopback); no absolute timing is asserted, only correctness.
Sizes: ``OFTP2_BENCH_RELAY_REQUESTS`` (default 2000) and ``OFTP2_BENCH_RELAY_MB`` (default 256).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time

from oftp2_provider.relay import (
    HybridConnectionClient,
    HybridConnectionListener,
    RelayedHttpRequest,
    RelayEmulator,
    relay_forward_listener,
    relay_forward_sender,
)
from oftp2_provider.relay._http import read_body, read_request_head, serialize_head

REQUESTS = int(os.environ.get("OFTP2_BENCH_RELAY_REQUESTS", "2000"))
SIZE_MB = int(os.environ.get("OFTP2_BENCH_RELAY_MB", "256"))
CONCURRENCY = 16
CHUNK = 1024 * 1024


async def _plain_http_server() -> asyncio.Server:
    """The baseline: answers every request directly, same HTTP code path, no relay."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_request_head(reader)
        body = await read_body(reader, head.headers, 1 << 20)
        writer.write(
            serialize_head("HTTP/1.1 200 OK", [("Content-Length", str(len(body))), ("Connection", "close")])
        )
        writer.write(body)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def _drive(client: HybridConnectionClient) -> float:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(REQUESTS):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            body = f"request {i}".encode()
            response = await client.request("POST", "bench", body=body)
            assert response.status == 200 and response.body == body

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return REQUESTS / (time.perf_counter() - start)


async def test_http_requests_per_second_through_the_listener() -> None:
    async with (
        RelayEmulator() as emu,
        HybridConnectionListener(emu.address("hc1"), emu.token_provider()) as lst,
    ):

        async def answer() -> None:
            async for event in lst:
                assert isinstance(event, RelayedHttpRequest)
                await event.respond(200, {}, event.body)

        responder = asyncio.create_task(answer())
        relayed = await _drive(HybridConnectionClient(emu.address("hc1"), emu.token_provider()))
        responder.cancel()

    server = await _plain_http_server()
    port = server.sockets[0].getsockname()[1]
    from oftp2_provider.relay import HybridConnectionAddress

    direct_address = HybridConnectionAddress("bench.local", "hc1", endpoint=f"ws://127.0.0.1:{port}")
    direct = await _drive(HybridConnectionClient(direct_address))
    server.close()
    print(
        f"\nrelay HTTP: {relayed:.0f} req/s through emulator+listener, {direct:.0f} req/s direct "
        f"({CONCURRENCY} concurrent, {REQUESTS} requests); ratio relay/direct = {relayed / direct:.2f}"
    )
    assert relayed > 0 and direct > 0


async def _sink() -> tuple[asyncio.Server, asyncio.Future[str]]:
    digest: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        h = hashlib.sha256()
        while data := await reader.read(CHUNK):
            h.update(data)
        writer.write(h.hexdigest().encode())
        await writer.drain()
        writer.close()
        if not digest.done():
            digest.set_result(h.hexdigest())

    return await asyncio.start_server(handle, "127.0.0.1", 0), digest


async def _push(port: int) -> float:
    block = os.urandom(CHUNK)
    expected = hashlib.sha256()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.perf_counter()
    for _ in range(SIZE_MB):
        writer.write(block)
        expected.update(block)
        await writer.drain()
    writer.write_eof()
    answer = await reader.read()
    elapsed = time.perf_counter() - start
    writer.close()
    assert answer.decode() == expected.hexdigest()
    return SIZE_MB / elapsed


async def test_tunnel_vs_direct_tcp_throughput() -> None:
    server, _ = await _sink()
    direct = await _push(server.sockets[0].getsockname()[1])
    server.close()

    server, _ = await _sink()
    port = server.sockets[0].getsockname()[1]
    async with RelayEmulator(hybrid_connections=["tunnel"]) as emu:
        address, tokens = emu.address("tunnel"), emu.token_provider()
        async with (
            relay_forward_listener(address, tokens, {"sink": ("127.0.0.1", port)}),
            relay_forward_sender(address, tokens, "sink") as local_port,
        ):
            tunnelled = await _push(local_port)
    server.close()
    print(
        f"\nrelay tunnel: {tunnelled:.0f} MiB/s through sender→emulator→listener, {direct:.0f} MiB/s direct TCP "
        f"({SIZE_MB} MiB, one process, 2 extra WebSocket hops); ratio tunnel/direct = {tunnelled / direct:.3f}"
    )
    assert tunnelled > 0
