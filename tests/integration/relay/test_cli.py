"""``oftp2 relay-emulator`` and ``oftp2 relay-forward`` as real processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from oftp2_provider.relay import HybridConnectionAddress, HybridConnectionClient, HybridConnectionListener
from oftp2_provider.relay.sas import SasTokenProvider

OFTP2 = str(Path(sys.executable).parent / "oftp2")


@asynccontextmanager
async def _process(*args: str, expect: bytes) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        OFTP2, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert expect in line, line
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), 10)
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_emulator_and_forwarders_as_processes(free_port: Callable[[], int]) -> None:
    port, local = free_port(), free_port()
    endpoint = f"ws://127.0.0.1:{port}"

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    echo_port = server.sockets[0].getsockname()[1]
    cs = "Endpoint=sb://ns.example/;SharedAccessKeyName=rule;SharedAccessKey=s3cret;EntityPath=tunnel"
    try:
        async with (
            _process(
                "relay-emulator",
                "--port",
                str(port),
                "--namespace",
                "ns.example",
                "--key-name",
                "rule",
                "--key",
                "s3cret",
                "--hybrid-connection",
                "hc1",
                "--hybrid-connection",
                "tunnel",
                expect=b"relay emulator on",
            ),
        ):
            # our listener with the key given on the command line
            address = HybridConnectionAddress("ns.example", "hc1", endpoint)
            tokens = SasTokenProvider("rule", "s3cret")
            async with HybridConnectionListener(address, tokens) as listener:
                call = asyncio.create_task(HybridConnectionClient(address, tokens).request("GET"))
                event = await listener.next_event(timeout=10)
                await event.respond(200, body="via cli")  # type: ignore[union-attr]
                assert (await call).text == "via cli"
            async with (
                _process(
                    "relay-forward",
                    "-x",
                    cs,
                    "--endpoint",
                    endpoint,
                    "-T",
                    f"echo:127.0.0.1:{echo_port}",
                    expect=b"forwarding tunnel",
                ),
                _process(
                    "relay-forward",
                    "-x",
                    cs,
                    "--endpoint",
                    endpoint,
                    "-L",
                    f"127.0.0.1:{local}:echo",
                    expect=b"forwarding 127.0.0.1",
                ),
            ):
                reader, writer = await asyncio.open_connection("127.0.0.1", local)
                blob = os.urandom(100_000)
                writer.write(blob)
                await writer.drain()
                assert await asyncio.wait_for(reader.readexactly(len(blob)), 20) == blob
                writer.close()
    finally:
        server.close()


async def test_forward_configuration_errors_are_clear() -> None:
    proc = await asyncio.create_subprocess_exec(
        OFTP2,
        "relay-forward",
        "--namespace",
        "ns",
        "-L",
        "5000:x",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert b"missing: --path, --key-name, --key" in err
    proc = await asyncio.create_subprocess_exec(
        OFTP2,
        "relay-forward",
        "-x",
        "Endpoint=sb://ns/;SharedAccessKeyName=a;SharedAccessKey=b",
        "--path",
        "hc1",
        "--endpoint",
        "ws://127.0.0.1:1",
        "-T",
        "broken",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2 and b"PORTNAME:HOST:PORT" in err
