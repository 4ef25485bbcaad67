"""Bad input from the network: random frames, heads and tokens only ever raise the typed errors."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oftp2_provider.relay import RelayConnectionClosed, RelayProtocolError, RelayTokenError, SasToken
from oftp2_provider.relay._http import read_body, read_request_head
from oftp2_provider.relay.websocket import RelayWebSocket


class _NullWriter:
    """Collects what the socket would send (pongs, close frames)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        return None

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> None:
        return None


async def _consume(data: bytes, client: bool) -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    ws = RelayWebSocket(reader, _NullWriter(), client=client, max_size=4096)  # type: ignore[arg-type]
    for _ in range(50):
        try:
            await ws.recv()
        except (RelayConnectionClosed, RelayProtocolError):
            return


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.booleans())
def test_random_frames_raise_only_typed_errors(data: bytes, client: bool) -> None:
    asyncio.run(_consume(data, client))


async def _http(data: bytes) -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    try:
        head = await read_request_head(reader)
        await read_body(reader, head.headers, 1000)
    except (RelayProtocolError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda line, rest: line + b"\r\n" + rest + b"\r\n\r\n" + rest,
            st.sampled_from([b"GET / HTTP/1.1", b"POST /hc1 HTTP/1.1", b"X"]),
            st.binary(max_size=120),
        ),
        st.builds(
            lambda size, body: (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + size + b"\r\n" + body
            ),
            st.binary(max_size=8),
            st.binary(max_size=40),
        ),
    )
)
def test_random_http_raises_only_typed_errors(data: bytes) -> None:
    asyncio.run(_http(data))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_random_tokens_raise_only_token_errors(text: str) -> None:
    for candidate in (text, "SharedAccessSignature " + text):
        try:
            token = SasToken.parse(candidate)
        except RelayTokenError:
            continue
        try:
            token.validate({"k": "v"}, "ns", "hc1")
        except RelayTokenError:
            pass
