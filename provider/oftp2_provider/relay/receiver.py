"""An event-style receiver, shaped like the IPWorks ``AzureRelayReceiver`` component.

For code that prefers callbacks to ``async for``: connection requests (accept/reject), data in,
send bytes/text/file, HTTP request → response, disconnect, and optional forwarding of every accepted
connection to a local TCP service.  Callbacks may be plain functions or coroutines.

::

    receiver = AzureRelayReceiver(address, tokens,
                                  on_connection_request=lambda req: req.query.get("k") == "v",
                                  on_data_in=lambda conn_id, data: print(conn_id, data))
    await receiver.start_listening()
    await receiver.send_text(conn_id, "hello")
    await receiver.disconnect(conn_id)
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from oftp2_provider.relay.address import HybridConnectionAddress
from oftp2_provider.relay.errors import RelayConnectionClosed, RelayError
from oftp2_provider.relay.forward import pump
from oftp2_provider.relay.listener import (
    HybridConnectionListener,
    RelayedConnectionRequest,
    RelayedHttpRequest,
)
from oftp2_provider.relay.sas import TokenSource
from oftp2_provider.relay.websocket import RelayWebSocket

log = logging.getLogger(__name__)

Callback = Callable[..., Any]


async def _call(callback: Callback | None, *args: Any) -> Any:
    if callback is None:
        return None
    result = callback(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


@dataclass
class RelayConnection:
    """One accepted WebSocket connection, keyed by the relay's connection id."""

    id: str
    target: str
    remote_endpoint: dict[str, Any]
    ws: RelayWebSocket = field(repr=False)
    bytes_in: int = 0
    bytes_out: int = 0


class AzureRelayReceiver:
    """Callback facade over :class:`HybridConnectionListener`.

    * ``on_connection_request(request)`` → ``True``/``None`` accept, ``False`` reject 403, or a
      ``(status, description)`` tuple to reject with;
    * ``on_connected(connection)``, ``on_data_in(connection_id, data)``,
      ``on_disconnected(connection_id, code, reason)``;
    * ``on_http_request(request)`` → ``(status, headers, body)`` to answer now, or ``None`` to answer
      later with ``request.respond(...)``; without a handler HTTP requests get 501;
    * ``forward_to=(host, port)``: pipe every accepted connection to that TCP service instead of
      raising ``on_data_in`` (bytes only, no azbridge preamble — see :mod:`~oftp2_provider.relay.forward`).
    """

    def __init__(
        self,
        address: HybridConnectionAddress,
        token_provider: TokenSource,
        *,
        on_connection_request: Callback | None = None,
        on_connected: Callback | None = None,
        on_data_in: Callback | None = None,
        on_disconnected: Callback | None = None,
        on_http_request: Callback | None = None,
        forward_to: tuple[str, int] | None = None,
        **listener_options: Any,
    ) -> None:
        self.listener = HybridConnectionListener(address, token_provider, **listener_options)
        self.on_connection_request = on_connection_request
        self.on_connected = on_connected
        self.on_data_in = on_data_in
        self.on_disconnected = on_disconnected
        self.on_http_request = on_http_request
        self.forward_to = forward_to
        self.connections: dict[str, RelayConnection] = {}
        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def listening(self) -> bool:
        """True while the control channel is online."""
        return self.listener.is_online

    async def start_listening(self) -> None:
        """Connect and start dispatching events to the callbacks."""
        await self.listener.open()
        self._runner = asyncio.create_task(self._dispatch())

    async def stop_listening(self) -> None:
        """Disconnect every connection and close the listener."""
        for connection_id in list(self.connections):
            await self.disconnect(connection_id, 1001, "receiver stopping")
        await self.listener.close()
        for task in [self._runner, *self._tasks]:
            if task is not None:
                task.cancel()
        await asyncio.gather(*[t for t in [self._runner, *self._tasks] if t], return_exceptions=True)
        self._runner = None

    async def __aenter__(self) -> AzureRelayReceiver:
        await self.start_listening()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop_listening()

    def _connection(self, connection_id: str) -> RelayConnection:
        try:
            return self.connections[connection_id]
        except KeyError:
            raise RelayError(f"no open relay connection with id {connection_id!r}") from None

    async def send_bytes(self, connection_id: str, data: bytes) -> None:
        """Send a binary message on a connection."""
        connection = self._connection(connection_id)
        await connection.ws.send_bytes(data)
        connection.bytes_out += len(data)

    async def send_text(self, connection_id: str, text: str) -> None:
        """Send a text message on a connection."""
        connection = self._connection(connection_id)
        await connection.ws.send_text(text)
        connection.bytes_out += len(text.encode("utf-8"))

    async def send_file(self, connection_id: str, path: str | os.PathLike[str]) -> int:
        """Send a file as binary messages; returns its size."""
        connection = self._connection(connection_id)
        size = await connection.ws.send_file(path)
        connection.bytes_out += size
        return size

    async def disconnect(self, connection_id: str, code: int = 1000, reason: str = "") -> None:
        """Close a connection (the reader task reports ``on_disconnected``)."""
        connection = self.connections.get(connection_id)
        if connection is not None:
            await connection.ws.shutdown(code, reason)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dispatch(self) -> None:
        async for event in self.listener:
            if isinstance(event, RelayedHttpRequest):
                self._spawn(self._http(event))
            else:
                self._spawn(self._connect(event))

    async def _http(self, request: RelayedHttpRequest) -> None:
        if self.on_http_request is None:
            await request.respond(501, {}, b"no HTTP handler")
            return
        try:
            answer = await _call(self.on_http_request, request)
        except Exception:
            log.exception("on_http_request failed")
            answer = (500, {}, b"handler error")
        if answer is not None and not request.responded:
            status, headers, body = answer
            await request.respond(status, headers, body)

    async def _connect(self, request: RelayedConnectionRequest) -> None:
        decision = await _call(self.on_connection_request, request)
        if decision is False or isinstance(decision, tuple):
            status, description = decision if isinstance(decision, tuple) else (403, "Rejected")
            with contextlib.suppress(RelayError):
                await request.reject(status, description)
            return
        try:
            ws = await request.accept()
        except RelayError as exc:
            log.warning("accepting %s failed: %s", request.id, exc)
            return
        connection = RelayConnection(request.id, request.target, request.remote_endpoint, ws)
        self.connections[request.id] = connection
        await _call(self.on_connected, connection)
        code, reason = 1000, ""
        try:
            if self.forward_to is not None:
                reader, writer = await asyncio.open_connection(*self.forward_to)
                connection.bytes_out, connection.bytes_in = await pump(ws, reader, writer)
            else:
                while True:
                    data = await ws.recv()
                    connection.bytes_in += len(data)
                    await _call(self.on_data_in, request.id, data)
        except RelayConnectionClosed as exc:
            code, reason = exc.code, exc.reason
        except (OSError, RelayError) as exc:
            code, reason = 1011, str(exc)
        finally:
            self.connections.pop(request.id, None)
            await ws.close()
            await _call(self.on_disconnected, request.id, code, reason)
