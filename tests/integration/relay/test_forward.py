"""azbridge-compatible TCP forwarding across the emulator: plain TCP, TLS end to end, half-close."""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
from collections.abc import AsyncIterator, Callable

import pytest
from cryptography.x509.oid import NameOID

from oftp2_provider.pki import PKIBundle
from oftp2_provider.relay import (
    HybridConnectionClient,
    RelayEmulator,
    relay_forward_listener,
    relay_forward_sender,
)
from oftp2_provider.relay.forward import PREAMBLE_BAD_VERSION, PREAMBLE_OK, encode_preamble


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()


async def test_tcp_echo_through_the_tunnel(emulator: RelayEmulator, echo_port: int) -> None:
    address, tokens = emulator.address("tunnel"), emulator.token_provider()
    async with (
        relay_forward_listener(address, tokens, {"echo": ("127.0.0.1", echo_port)}) as fwd,
        relay_forward_sender(address, tokens, "echo") as local_port,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", local_port)
        payload = os.urandom(1_000_000)
        writer.write(payload)
        await writer.drain()
        echoed = await reader.readexactly(len(payload))
        assert echoed == payload
        writer.close()
        assert fwd.connections == 1


async def test_half_close_keeps_the_other_direction_open(emulator: RelayEmulator) -> None:
    """Client sends, shuts down its write side; the server answers after seeing EOF (like azbridge)."""

    async def digest_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until EOF: the client's half-close must arrive as FIN
        await asyncio.sleep(0.2)
        writer.write(hashlib.sha256(data).hexdigest().encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(digest_after_eof, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    address, tokens = emulator.address("tunnel"), emulator.token_provider()
    try:
        async with (
            relay_forward_listener(address, tokens, {"sha": ("127.0.0.1", port)}),
            relay_forward_sender(address, tokens, "sha") as local_port,
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", local_port)
            payload = os.urandom(300_000)
            writer.write(payload)
            writer.write_eof()
            answer = await asyncio.wait_for(reader.read(), 10)
            assert answer == hashlib.sha256(payload).hexdigest().encode()
            writer.close()
    finally:
        server.close()


async def test_tls_end_to_end_inside_the_tunnel(emulator: RelayEmulator, test_pki: PKIBundle) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(test_pki.server.cert_path, test_pki.server.key_path)
    server_ctx.load_verify_locations(test_pki.ca.cert_path)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    peer_names: list[str] = []

    async def tls_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cert = writer.get_extra_info("peercert")
        peer_names.append(dict(x[0] for x in cert["subject"])["commonName"])
        await _echo(reader, writer)

    server = await asyncio.start_server(tls_echo, "127.0.0.1", 0, ssl=server_ctx)
    port = int(server.sockets[0].getsockname()[1])
    client_ctx = ssl.create_default_context(cafile=str(test_pki.ca.cert_path))
    client_ctx.load_cert_chain(test_pki.client.cert_path, test_pki.client.key_path)
    address, tokens = emulator.address("tunnel"), emulator.token_provider()
    try:
        async with (
            relay_forward_listener(address, tokens, {"oftp-tls": ("127.0.0.1", port)}),
            relay_forward_sender(address, tokens, "oftp-tls") as local_port,
        ):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", local_port, ssl=client_ctx, server_hostname="localhost"
            )
            for size in (1, 16_384, 200_000):
                blob = os.urandom(size)
                writer.write(blob)
                await writer.drain()
                assert await reader.readexactly(size) == blob
            writer.close()
    finally:
        server.close()
    expected = test_pki.client.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert peer_names == [expected]


async def test_concurrent_tunnels(emulator: RelayEmulator, echo_port: int) -> None:
    address, tokens = emulator.address("tunnel"), emulator.token_provider()
    async with (
        relay_forward_listener(address, tokens, {"echo": ("127.0.0.1", echo_port)}) as fwd,
        relay_forward_sender(address, tokens, "echo") as local_port,
    ):

        async def one(i: int) -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", local_port)
            blob = os.urandom(50_000 + i)
            writer.write(blob)
            await writer.drain()
            assert await reader.readexactly(len(blob)) == blob
            writer.close()

        await asyncio.gather(*(one(i) for i in range(8)))
        assert fwd.connections == 8


async def test_preamble_on_the_wire(emulator: RelayEmulator, echo_port: int) -> None:
    """Speak the preamble by hand, as azbridge's local forwarder does; also the refusal paths."""
    address, tokens = emulator.address("tunnel"), emulator.token_provider()
    client = HybridConnectionClient(address, tokens)
    async with relay_forward_listener(address, tokens, {"echo": ("127.0.0.1", echo_port)}):
        ws = await client.connect()
        preamble = encode_preamble("echo")
        assert preamble == b"\x01\x00\x00\x04echo"
        await ws.send(preamble[:4])
        await ws.send(preamble[4:])
        assert await ws.recv() == PREAMBLE_OK
        await ws.send(b"ping")
        assert await ws.recv() == b"ping"
        await ws.close()

        # numeric port name with a single target selects it (azbridge -L host:port:relay)
        ws = await client.connect()
        await ws.send(encode_preamble("3305"))
        assert await ws.recv() == PREAMBLE_OK
        await ws.close()

        # unsupported version → [0, 0, 0] and close
        ws = await client.connect()
        await ws.send(b"\x02\x00\x00\x04echo")
        assert await ws.recv() == PREAMBLE_BAD_VERSION
        await ws.close()


async def test_unknown_port_name_and_dead_target_close_the_tunnel(
    emulator: RelayEmulator, free_port: Callable[[], int]
) -> None:
    address, tokens = emulator.address("tunnel"), emulator.token_provider()
    dead = free_port()
    async with (
        relay_forward_listener(address, tokens, {"a": ("127.0.0.1", dead), "b": ("127.0.0.1", dead)}),
        relay_forward_sender(address, tokens, "unknown") as local_port,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", local_port)
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
    async with (
        relay_forward_listener(address, tokens, {"a": ("127.0.0.1", dead)}),
        relay_forward_sender(address, tokens, "a") as local_port,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", local_port)
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
