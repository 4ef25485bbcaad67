"""The WebSocket frame layer and the small HTTP reader, over a real loopback socket pair."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import pytest

from oftp2_provider.relay import RelayConnectionClosed, RelayProtocolError, RelayWebSocket
from oftp2_provider.relay._http import BodyTooLarge, read_body, read_request_head
from oftp2_provider.relay.websocket import OP_BINARY, OP_CONT, OP_TEXT, encode_frame


@pytest.fixture
async def pair() -> AsyncIterator[tuple[RelayWebSocket, RelayWebSocket, asyncio.StreamWriter]]:
    """(client ws, server ws, raw client writer) joined by a loopback TCP connection."""
    accepted: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
        asyncio.get_running_loop().create_future()
    )

    async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted.set_result((r, w))

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cr, cw = await asyncio.open_connection("127.0.0.1", port)
    sr, sw = await accepted
    client = RelayWebSocket(cr, cw, client=True, max_size=1000)
    srv = RelayWebSocket(sr, sw, client=False, max_size=1000)
    yield client, srv, cw
    client.abort()
    srv.abort()
    server.close()


async def test_fragmented_messages_are_reassembled(
    pair: tuple[RelayWebSocket, RelayWebSocket, asyncio.StreamWriter],
) -> None:
    client, srv, raw = pair
    raw.write(encode_frame(OP_TEXT, "hé".encode()[:2], fin=False, mask=True))
    raw.write(encode_frame(0x9, b"p", mask=True))  # a ping in the middle is answered
    raw.write(encode_frame(OP_CONT, "hé".encode()[2:], fin=True, mask=True))
    raw.write(encode_frame(OP_BINARY, b"", mask=True))
    assert await srv.recv() == "hé"
    assert await srv.recv() == b""
    waiter = await srv.ping(b"x")
    await srv.send(b"ok")
    assert await client.recv() == b"ok"  # skipped the pong for "p", answered the ping "x"
    assert not waiter.done()  # the server sees the pong only while it reads
    await client.send(b"after")
    assert await srv.recv() == b"after"
    assert waiter.done()


async def test_half_close_lets_the_other_side_keep_sending(
    pair: tuple[RelayWebSocket, RelayWebSocket, asyncio.StreamWriter],
) -> None:
    client, srv, _ = pair
    await client.shutdown()
    with pytest.raises(RelayConnectionClosed) as closed:
        await srv.recv()
    assert (closed.value.code, closed.value.reason) == (1000, "Shutdown")
    await srv.send(b"still talking")
    assert await client.recv() == b"still talking"
    await srv.shutdown(1000, "done")
    with pytest.raises(RelayConnectionClosed):
        await client.recv()
    assert client.closed


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (encode_frame(OP_BINARY, b"x" * 1001, mask=True), 1009),
        (encode_frame(OP_BINARY, b"unmasked", mask=False), 1002),
        (encode_frame(OP_CONT, b"orphan", mask=True), 1002),
        (encode_frame(OP_TEXT, b"\xff\xfe", mask=True), 1007),
        (bytes([0x80 | 0x40 | OP_BINARY, 0x80]) + b"\0\0\0\0", 1002),
        (struct.pack("!BB", 0x80 | 0x9, 0x80 | 126) + struct.pack("!H", 200) + b"\0" * 204, 1002),
    ],
)
async def test_bad_frames_fail_with_the_right_close_code(
    pair: tuple[RelayWebSocket, RelayWebSocket, asyncio.StreamWriter], frame: bytes, code: int
) -> None:
    client, srv, raw = pair
    raw.write(frame)
    with pytest.raises(RelayProtocolError):
        await srv.recv()
    with pytest.raises(RelayConnectionClosed) as closed:
        await client.recv()
    assert closed.value.code == code


async def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def test_http_request_head_and_bodies() -> None:
    reader = await _reader(
        b"POST /hc1/x?a=1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n"
    )
    head = await read_request_head(reader)
    assert (head.method, head.target, head.headers["Host"]) == ("POST", "/hc1/x?a=1", "h")
    assert await read_body(reader, head.headers, 100) == b"abcde"
    reader = await _reader(b"PUT / HTTP/1.1\r\nContent-Length: 5\r\n\r\n12345")
    head = await read_request_head(reader)
    with pytest.raises(BodyTooLarge):
        await read_body(reader, head.headers, 4)
    for bad in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", b"GET / HTTP/1.1\r\n"):
        with pytest.raises((RelayProtocolError, EOFError)):
            await read_request_head(await _reader(bad))
