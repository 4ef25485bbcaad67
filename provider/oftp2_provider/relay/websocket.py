"""RelayWebSocket: a small RFC 6455 WebSocket connection over asyncio streams, with TCP-style half-close.

Why not ``websockets.asyncio``: Microsoft's azbridge uses the WebSocket close frame as a *half*
close (``CloseOutputAsync``: "I have no more data, keep sending yours"), and the relay forwards it
as such.  The ``websockets`` connection objects answer a close frame at once and stop sending, which
would cut the other direction of a tunnel short.  This module therefore drives the frames itself,
using ``websockets`` for the masking and handshake-key primitives, and lets the caller decide when
to answer a close frame.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import ssl as ssl_module
import struct
from collections.abc import Sequence
from urllib.parse import urlsplit

from websockets.datastructures import Headers
from websockets.utils import accept_key

try:  # the C implementation (about 100x faster than the pure-Python fallback in websockets.utils)
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension
    from websockets.utils import apply_mask

from oftp2_provider.relay._http import ResponseHead, header, read_body, read_response_head, serialize_head
from oftp2_provider.relay.errors import RelayConnectionClosed, RelayConnectionError, RelayProtocolError

log = logging.getLogger(__name__)

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
DEFAULT_MAX_SIZE = 64 * 1024 * 1024
STREAM_LIMIT = 2**20


def encode_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool) -> bytes:
    """Serialize one frame (clients mask, servers do not)."""
    first = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if mask else 0
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", first, mask_bit | size)
    elif size < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, size)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, size)
    if mask:
        key = os.urandom(4)
        return header + key + apply_mask(payload, key)
    return header + payload


def encode_close(code: int, reason: str) -> bytes:
    """The payload of a close frame (empty for code 1005, "no status")."""
    if code == 1005:
        return b""
    return struct.pack("!H", code) + reason.encode("utf-8")[:123]


class RelayWebSocket:
    """One WebSocket connection.

    ``recv()`` returns whole messages (``str`` for text, ``bytes`` for binary) and raises
    :class:`RelayConnectionClosed` once the peer's close frame arrived (its half is finished).
    ``shutdown()`` sends our close frame but keeps receiving; ``close()`` finishes both halves and
    the TCP connection.  Pings are answered while ``recv()`` runs.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        client: bool,
        subprotocol: str | None = None,
        max_size: int = DEFAULT_MAX_SIZE,
        response_headers: Headers | None = None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._client = client
        self.subprotocol = subprotocol
        self.max_size = max_size
        self.response_headers = response_headers if response_headers is not None else Headers()
        self.close_sent = False
        self.close_received: tuple[int, str] | None = None
        self._transport_closed = False
        self._pong_waiters: list[asyncio.Future[None]] = []

    # -- sending ---------------------------------------------------------------------------------------
    async def _write(self, data: bytes) -> None:
        if self._transport_closed or self._writer.is_closing():
            raise RelayConnectionClosed(1006, "connection lost")
        self._writer.write(data)
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            raise RelayConnectionClosed(1006, f"connection lost: {exc}") from exc

    async def send(self, message: str | bytes, *, fin: bool = True, continuation: bool = False) -> None:
        """Send a text (``str``) or binary (``bytes``) message, or one fragment of it."""
        if self.close_sent:
            raise RelayConnectionClosed(1000, "close frame already sent")
        if isinstance(message, str):
            opcode, payload = OP_TEXT, message.encode("utf-8")
        else:
            opcode, payload = OP_BINARY, bytes(message)
        if continuation:
            opcode = OP_CONT
        await self._write(encode_frame(opcode, payload, fin=fin, mask=self._client))

    async def ping(self, payload: bytes = b"") -> asyncio.Future[None]:
        """Send a ping; the returned future completes when a pong arrives (during ``recv()``)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pong_waiters.append(waiter)
        await self._write(encode_frame(OP_PING, payload, mask=self._client))
        return waiter

    async def shutdown(self, code: int = 1000, reason: str = "Shutdown") -> None:
        """Send our close frame (half-close); keep receiving until the peer's close frame."""
        if self.close_sent:
            return
        self.close_sent = True
        with contextlib.suppress(RelayConnectionClosed):
            await self._write(encode_frame(OP_CLOSE, encode_close(code, reason), mask=self._client))

    async def close(self, code: int = 1000, reason: str = "", timeout: float = 5.0) -> None:
        """Close both halves: send close (if not yet), wait briefly for the peer's, drop TCP.

        It reads until the peer's close frame, so do not call it while another task is inside
        :meth:`recv`; use :meth:`shutdown` there and let that task see the peer's close.
        """
        await self.shutdown(code, reason)
        if self.close_received is None and not self._transport_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._drain_until_close(), timeout)
        self.abort()

    async def _drain_until_close(self) -> None:
        while True:
            await self.recv()

    def abort(self) -> None:
        """Drop the TCP connection without a closing handshake."""
        if not self._transport_closed:
            self._transport_closed = True
            self._writer.close()
        for waiter in self._pong_waiters:
            if not waiter.done():
                waiter.cancel()
        self._pong_waiters.clear()

    async def wait_closed(self) -> None:
        """Wait until the transport is closed."""
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()

    @property
    def closed(self) -> bool:
        """True once both close frames were exchanged or the transport was dropped."""
        return self._transport_closed or (self.close_sent and self.close_received is not None)

    @property
    def remote_address(self) -> tuple[str, int]:
        """The peer's (host, port)."""
        peer = self._writer.get_extra_info("peername")
        return (str(peer[0]), int(peer[1])) if peer else ("", 0)

    async def send_bytes(self, data: bytes) -> None:
        """Send one binary message."""
        await self.send(bytes(data))

    async def send_text(self, text: str) -> None:
        """Send one text message."""
        await self.send(str(text))

    async def send_file(self, path: str | os.PathLike[str], chunk_size: int = 64 * 1024) -> int:
        """Send a file as binary messages of ``chunk_size`` bytes (read off the event loop); return its size."""
        total = 0
        handle = await asyncio.to_thread(open, path, "rb")
        try:
            while chunk := await asyncio.to_thread(handle.read, chunk_size):
                await self.send(chunk)
                total += len(chunk)
        finally:
            handle.close()
        return total

    async def receive(self) -> str | bytes:
        """Alias of :meth:`recv`."""
        return await self.recv()

    def __aiter__(self) -> RelayWebSocket:
        return self

    async def __anext__(self) -> str | bytes:
        try:
            return await self.recv()
        except RelayConnectionClosed:
            raise StopAsyncIteration from None

    # -- receiving -------------------------------------------------------------------------------------
    async def _read_frame(self, budget: int) -> tuple[int, bool, bytes]:
        head = await self._reader.readexactly(2)
        fin = bool(head[0] & 0x80)
        if head[0] & 0x70:
            raise RelayProtocolError("reserved bits set (no extension was negotiated)")
        opcode = head[0] & 0x0F
        masked = bool(head[1] & 0x80)
        size = head[1] & 0x7F
        if size == 126:
            size = struct.unpack("!H", await self._reader.readexactly(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", await self._reader.readexactly(8))[0]
        if masked == self._client:
            raise RelayProtocolError("frame masking is wrong for this side of the connection")
        if opcode >= 0x8 and (size > 125 or not fin):
            raise RelayProtocolError("control frame too long or fragmented")
        if opcode < 0x8 and size > budget:
            raise _TooBig(f"message larger than {self.max_size} bytes")
        key = await self._reader.readexactly(4) if masked else b""
        payload = await self._reader.readexactly(size)
        if masked:
            payload = apply_mask(payload, key)
        return opcode, fin, payload

    async def recv(self) -> str | bytes:
        """Return the next message; raise :class:`RelayConnectionClosed` when the peer closed."""
        if self.close_received is not None:
            raise RelayConnectionClosed(*self.close_received)
        if self._transport_closed:
            raise RelayConnectionClosed(1006, "connection dropped")
        parts: list[bytes] = []
        size = 0
        first_opcode: int | None = None
        try:
            while True:
                opcode, fin, payload = await self._read_frame(self.max_size - size)
                if opcode == OP_PING:
                    if not self._transport_closed:
                        with contextlib.suppress(RelayConnectionClosed):
                            await self._write(encode_frame(OP_PONG, payload, mask=self._client))
                    continue
                if opcode == OP_PONG:
                    for waiter in self._pong_waiters:
                        if not waiter.done():
                            waiter.set_result(None)
                    self._pong_waiters.clear()
                    continue
                if opcode == OP_CLOSE:
                    code, reason = 1005, ""
                    if len(payload) >= 2:
                        code = struct.unpack("!H", payload[:2])[0]
                        reason = payload[2:].decode("utf-8", "replace")
                    self.close_received = (code, reason)
                    if self.close_sent and not self._client:
                        self.abort()
                    raise RelayConnectionClosed(code, reason)
                if opcode == OP_CONT:
                    if first_opcode is None:
                        raise RelayProtocolError("continuation frame without a message")
                elif opcode in (OP_TEXT, OP_BINARY):
                    if first_opcode is not None:
                        raise RelayProtocolError("new message before the previous one ended")
                    first_opcode = opcode
                else:
                    raise RelayProtocolError(f"unknown opcode {opcode:#x}")
                parts.append(payload)
                size += len(payload)
                if fin:
                    data = b"".join(parts)
                    if first_opcode == OP_TEXT:
                        try:
                            return data.decode("utf-8")
                        except UnicodeDecodeError as exc:
                            await self._fail(1007, "invalid UTF-8 in a text message")
                            raise RelayProtocolError("invalid UTF-8 in a text message") from exc
                    return data
        except _TooBig as exc:
            await self._fail(1009, str(exc))
            raise
        except RelayProtocolError as exc:
            await self._fail(1002, str(exc))
            raise
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            self.close_received = (1006, "connection dropped")
            self.abort()
            raise RelayConnectionClosed(1006, "connection dropped") from exc

    async def _fail(self, code: int, reason: str) -> None:
        log.warning("WebSocket protocol failure (%s): %s", code, reason)
        await self.shutdown(code, reason)
        self.abort()


class _TooBig(RelayProtocolError):
    """A message exceeds ``max_size``."""


def _client_ssl(scheme: str, ssl: ssl_module.SSLContext | None) -> ssl_module.SSLContext | None:
    if scheme in ("wss", "https"):
        return ssl if ssl is not None else ssl_module.create_default_context()
    return None


async def open_stream(
    url: str,
    *,
    ssl: ssl_module.SSLContext | None = None,
    timeout: float = 30.0,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open the TCP (or TLS) connection for an ``ws``/``wss``/``http``/``https`` URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
        raise RelayConnectionError(f"unsupported URL {url!r}: need ws://, wss://, http:// or https://")
    default_port = 443 if parts.scheme in ("wss", "https") else 80
    context = _client_ssl(parts.scheme, ssl)
    try:
        return await asyncio.wait_for(
            asyncio.open_connection(
                parts.hostname,
                parts.port or default_port,
                ssl=context,
                server_hostname=parts.hostname if context else None,
                limit=STREAM_LIMIT,
            ),
            timeout,
        )
    except asyncio.TimeoutError as exc:
        raise RelayConnectionError(f"timed out connecting to {parts.netloc}") from exc
    except OSError as exc:
        raise RelayConnectionError(f"cannot connect to {parts.netloc}: {exc}") from exc


def _target(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return parts.netloc, target


async def _handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    target: str,
    request_headers: list[tuple[str, str]],
    netloc: str,
) -> ResponseHead:
    writer.write(serialize_head(f"GET {target} HTTP/1.1", request_headers))
    await writer.drain()
    head = await read_response_head(reader)
    if head.status != 101:
        body = b""
        with contextlib.suppress(Exception):
            body = await read_body(reader, head.headers, 64 * 1024)
        description = body.decode("utf-8", "replace").strip() or head.reason
        raise RelayConnectionError(
            f"WebSocket handshake with {netloc} refused: {head.status} {description}",
            status=head.status,
            description=description,
        )
    return head


async def connect(
    url: str,
    *,
    headers: Sequence[tuple[str, str]] = (),
    subprotocols: Sequence[str] = (),
    ssl: ssl_module.SSLContext | None = None,
    timeout: float = 30.0,
    max_size: int = DEFAULT_MAX_SIZE,
) -> RelayWebSocket:
    """Open a client WebSocket.

    A refused handshake raises :class:`RelayConnectionError` whose ``status`` is the HTTP status and
    ``description`` the response body (or reason phrase).
    """
    reader, writer = await open_stream(url, ssl=ssl, timeout=timeout)
    netloc, target = _target(url)
    key = base64.b64encode(os.urandom(16)).decode()
    request_headers: list[tuple[str, str]] = [
        ("Host", netloc),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13"),
    ]
    if subprotocols:
        request_headers.append(("Sec-WebSocket-Protocol", ", ".join(subprotocols)))
    request_headers.extend(headers)
    try:
        head = await asyncio.wait_for(_handshake(reader, writer, target, request_headers, netloc), timeout)
    except RelayConnectionError:
        writer.close()
        raise
    except asyncio.TimeoutError as exc:
        writer.close()
        raise RelayConnectionError(f"WebSocket handshake with {netloc} timed out") from exc
    except (EOFError, OSError, asyncio.IncompleteReadError, RelayProtocolError) as exc:
        writer.close()
        raise RelayConnectionError(f"WebSocket handshake with {netloc} failed: {exc}") from exc
    if header(head.headers, "Sec-WebSocket-Accept") != accept_key(key):
        writer.close()
        raise RelayConnectionError(f"WebSocket handshake with {netloc}: wrong Sec-WebSocket-Accept")
    return RelayWebSocket(
        reader,
        writer,
        client=True,
        subprotocol=header(head.headers, "Sec-WebSocket-Protocol") or None,
        max_size=max_size,
        response_headers=head.headers,
    )


def server_handshake_response(
    request_headers: Headers, subprotocol: str | None = None, extra: Sequence[tuple[str, str]] = ()
) -> bytes:
    """The ``101 Switching Protocols`` answer to a client's upgrade request (no extensions)."""
    key = header(request_headers, "Sec-WebSocket-Key")
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(key)),
        *extra,
    ]
    if subprotocol:
        headers.append(("Sec-WebSocket-Protocol", subprotocol))
    return serialize_head("HTTP/1.1 101 Switching Protocols", headers)


def is_upgrade_request(headers: Headers) -> bool:
    """True when the headers ask for a WebSocket upgrade with a usable key."""
    return (
        "websocket" in header(headers, "Upgrade").lower()
        and "upgrade" in header(headers, "Connection").lower()
        and bool(header(headers, "Sec-WebSocket-Key"))
    )
