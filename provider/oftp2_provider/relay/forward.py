"""TCP forwarding over a Hybrid Connection, wire-compatible with Microsoft's ``azbridge``.

* :func:`relay_forward_listener` — the remote side (``azbridge -R/-T``): accepts relayed WebSockets
  and connects each to a local ``host:port`` chosen by the port name in the preamble;
* :func:`relay_forward_sender` — the local side (``azbridge -L``): listens on a local TCP port and
  opens one relayed WebSocket per accepted connection.

Each relayed connection starts with azbridge's preamble: the sender writes ``[1, 0, 0, len]`` and the
UTF-8 port name (mode 0 = stream), the listener answers ``[1, 0, 0]`` (``[0, 0, 0]``: version not
supported; ``[0, 0, 255]``: mode mismatch).  Then bytes flow as binary messages both ways; a close
frame is a half-close (TCP FIN) of that direction, as in azbridge.  Whatever runs inside (plain
OFTP, or TLS end to end) is opaque to the relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from oftp2_provider.relay.address import HybridConnectionAddress
from oftp2_provider.relay.errors import RelayConfigurationError, RelayConnectionClosed, RelayError
from oftp2_provider.relay.listener import HybridConnectionListener, RelayedConnectionRequest
from oftp2_provider.relay.sas import TokenSource
from oftp2_provider.relay.sender import HybridConnectionClient
from oftp2_provider.relay.websocket import RelayWebSocket

log = logging.getLogger(__name__)

PREAMBLE_OK = bytes([1, 0, 0])
PREAMBLE_BAD_VERSION = bytes([0, 0, 0])
PREAMBLE_MODE_MISMATCH = bytes([0, 0, 255])
CHUNK = 64 * 1024


def encode_preamble(port_name: str) -> bytes:
    """The sender's preamble: version 1.0, stream mode, length-prefixed UTF-8 port name."""
    name = port_name.encode("utf-8")
    if not 0 < len(name) < 256:
        raise RelayConfigurationError(f"port name must be 1..255 UTF-8 bytes, got {len(name)}")
    return bytes([1, 0, 0, len(name)]) + name


class _MessageBuffer:
    """Reads exact byte counts from a WebSocket's binary messages, keeping any excess."""

    def __init__(self, ws: RelayWebSocket) -> None:
        self.ws = ws
        self.buffer = bytearray()

    async def read_exactly(self, count: int) -> bytes | None:
        while len(self.buffer) < count:
            try:
                message = await self.ws.recv()
            except RelayConnectionClosed:
                return None
            self.buffer += message.encode("utf-8") if isinstance(message, str) else message
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data


async def pump(
    ws: RelayWebSocket, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, leftover: bytes = b""
) -> tuple[int, int]:
    """Copy bytes TCP⇄WebSocket until both directions ended; half-closes travel as close frames.

    Returns (bytes to the relay, bytes from the relay).
    """
    sent = received = 0

    async def tcp_to_ws() -> None:
        nonlocal sent
        try:
            while data := await reader.read(CHUNK):
                await ws.send(data)
                sent += len(data)
        except (ConnectionError, OSError, RelayConnectionClosed):
            ws.abort()
            return
        await ws.shutdown(1000, "Shutdown")

    async def ws_to_tcp() -> None:
        nonlocal received
        try:
            if leftover:
                writer.write(leftover)
                received += len(leftover)
            while True:
                message = await ws.recv()
                data = message.encode("utf-8") if isinstance(message, str) else message
                writer.write(data)
                received += len(data)
                await writer.drain()
        except RelayConnectionClosed as exc:
            if exc.code in (1000, 1005):
                with contextlib.suppress(OSError, RuntimeError):
                    if writer.can_write_eof():
                        writer.write_eof()
                return
            log.info("relay tunnel closed abnormally (%s %s); resetting the TCP side", exc.code, exc.reason)
        except (ConnectionError, OSError, RelayError):
            pass
        writer.transport.abort()
        ws.abort()

    try:
        await asyncio.gather(tcp_to_ws(), ws_to_tcp())
    finally:
        ws.abort()
        writer.close()
    return sent, received


class RelayForwardListener:
    """Remote forwarder: relayed connections → local TCP targets by port name.

    ``targets`` maps port names to ``(host, port)``.  With a single target, a numeric port name (what
    ``azbridge -L host:port:relay`` sends) selects it, as azbridge does.  HTTP requests are answered
    501.  ``connections`` counts bridged connections.
    """

    def __init__(
        self,
        address: HybridConnectionAddress,
        token_provider: TokenSource,
        targets: Mapping[str, tuple[str, int]],
        **listener_options: Any,
    ) -> None:
        if not targets:
            raise RelayConfigurationError("relay forwarder needs at least one target")
        self.targets = dict(targets)
        self.listener = HybridConnectionListener(address, token_provider, **listener_options)
        self.connections = 0
        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Connect the listener and start accepting."""
        await self.listener.open()
        self._runner = asyncio.create_task(self._accept_loop())

    async def stop(self) -> None:
        """Stop accepting and drop live tunnels."""
        await self.listener.close()
        for task in [self._runner, *self._tasks]:
            if task is not None:
                task.cancel()
        await asyncio.gather(*[t for t in [self._runner, *self._tasks] if t], return_exceptions=True)
        self._runner = None

    async def wait(self) -> None:
        """Wait until the forwarder stops; raises the listener's terminal error (e.g. 401/404)."""
        if self._runner is not None:
            await asyncio.shield(self._runner)

    async def _accept_loop(self) -> None:
        async for event in self.listener:
            if isinstance(event, RelayedConnectionRequest):
                task = asyncio.create_task(self._serve(event))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                await event.respond(501, {}, b"this listener forwards TCP (azbridge) only")

    def _target(self, port_name: str) -> tuple[str, int] | None:
        if port_name in self.targets:
            return self.targets[port_name]
        if len(self.targets) == 1 and port_name.isdigit():
            return next(iter(self.targets.values()))
        return None

    async def _serve(self, request: RelayedConnectionRequest) -> None:
        try:
            ws = await request.accept()
        except RelayError as exc:
            log.warning("relay forward: accepting %s failed: %s", request.id, exc)
            return
        buffer = _MessageBuffer(ws)
        head = await buffer.read_exactly(3)
        if head is None:
            await ws.close()
            return
        if head[:2] != b"\x01\x00":
            log.warning("relay forward: unsupported preamble version %s", list(head[:2]))
            with contextlib.suppress(RelayError):
                await ws.send(PREAMBLE_BAD_VERSION)
            await ws.close()
            return
        length = await buffer.read_exactly(1)
        name_bytes = await buffer.read_exactly(length[0]) if length else None
        if name_bytes is None:
            await ws.close()
            return
        port_name = name_bytes.decode("utf-8", "replace")
        if head[2] != 0:
            log.warning(
                "relay forward: datagram mode requested for %r; only streams are supported", port_name
            )
            with contextlib.suppress(RelayError):
                await ws.send(PREAMBLE_MODE_MISMATCH)
            await ws.close()
            return
        target = self._target(port_name)
        if target is None:
            log.warning("relay forward: unknown port name %r", port_name)
            await ws.close()
            return
        try:
            reader, writer = await asyncio.open_connection(*target)
        except OSError as exc:
            log.warning("relay forward: cannot reach %s:%s for %r: %s", *target, port_name, exc)
            await ws.close(1011, "target unreachable")
            return
        await ws.send(PREAMBLE_OK)
        self.connections += 1
        sent, received = await pump(ws, reader, writer, bytes(buffer.buffer))
        log.info("relay forward %r closed: %d bytes in, %d bytes out", port_name, received, sent)


@asynccontextmanager
async def relay_forward_listener(
    address: HybridConnectionAddress,
    token_provider: TokenSource,
    targets: Mapping[str, tuple[str, int]],
    **listener_options: Any,
) -> AsyncIterator[RelayForwardListener]:
    """``async with relay_forward_listener(addr, tokens, {"oftp": ("127.0.0.1", 3305)}) as fwd:``"""
    forwarder = RelayForwardListener(address, token_provider, targets, **listener_options)
    await forwarder.start()
    try:
        yield forwarder
    finally:
        await forwarder.stop()


class RelayForwardSender:
    """Local forwarder: a local TCP port whose connections are tunnelled to ``port_name``."""

    def __init__(
        self,
        address: HybridConnectionAddress,
        token_provider: TokenSource | None,
        port_name: str,
        *,
        bind_host: str = "127.0.0.1",
        bind_port: int = 0,
        ssl: Any = None,
    ) -> None:
        self.preamble = encode_preamble(port_name)
        self.port_name = port_name
        self.client = HybridConnectionClient(address, token_provider, ssl=ssl)
        self.bind_host = bind_host
        self.port = bind_port
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> int:
        """Bind the local port; returns it."""
        self._server = await asyncio.start_server(self._handle, self.bind_host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        """Close the local port and drop live tunnels."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            try:
                ws = await self.client.connect()
            except RelayError as exc:
                log.warning("relay forward sender: cannot open the tunnel: %s", exc)
                return
            await ws.send(self.preamble[:4])
            await ws.send(self.preamble[4:])
            buffer = _MessageBuffer(ws)
            reply = await buffer.read_exactly(3)
            if reply != PREAMBLE_OK:
                log.warning("relay forward sender: remote refused port %r (reply %s)", self.port_name, reply)
                await ws.close()
                return
            self.connections += 1
            await pump(ws, reader, writer, bytes(buffer.buffer))
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()
            if task is not None:
                self._tasks.discard(task)


@asynccontextmanager
async def relay_forward_sender(
    address: HybridConnectionAddress,
    token_provider: TokenSource | None,
    port_name: str,
    *,
    bind_host: str = "127.0.0.1",
    bind_port: int = 0,
    ssl: Any = None,
) -> AsyncIterator[int]:
    """``async with relay_forward_sender(addr, tokens, "oftp") as local_port:`` — connect to it locally."""
    sender = RelayForwardSender(
        address, token_provider, port_name, bind_host=bind_host, bind_port=bind_port, ssl=ssl
    )
    port = await sender.start()
    try:
        yield port
    finally:
        await sender.stop()
