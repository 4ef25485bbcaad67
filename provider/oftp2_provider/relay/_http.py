"""A deliberately small HTTP/1.1 reader and writer over asyncio streams.

Only what the relay needs: request/response heads, bodies framed by ``Content-Length`` or chunked
transfer coding, and serialization.  Used by the emulator (server side), the sender (client side) and
the WebSocket handshake.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from websockets.datastructures import Headers

from oftp2_provider.relay.errors import RelayProtocolError

MAX_HEAD_SIZE = 64 * 1024

REASONS: dict[int, str] = {
    101: "Switching Protocols",
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    410: "Gone",
    413: "Payload Too Large",
    426: "Upgrade Required",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def header(headers: Headers, name: str, default: str = "") -> str:
    """A header's value; repeated headers are joined with ``", "`` (never raises)."""
    values = headers.get_all(name)
    return ", ".join(values) if values else default


def reason_phrase(status: int) -> str:
    """The standard reason phrase of ``status`` (``"Unknown"`` when not listed)."""
    return REASONS.get(status, "Unknown")


@dataclass
class RequestHead:
    """The request line and headers of an HTTP/1.1 request."""

    method: str
    target: str
    headers: Headers


@dataclass
class ResponseHead:
    """The status line and headers of an HTTP/1.1 response."""

    status: int
    reason: str
    headers: Headers


async def _read_head_lines(reader: asyncio.StreamReader) -> list[str]:
    try:
        data = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as exc:
        raise RelayProtocolError("HTTP head larger than the stream limit") from exc
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise EOFError("connection closed before an HTTP head") from exc
        raise RelayProtocolError("connection closed in the middle of an HTTP head") from exc
    if len(data) > MAX_HEAD_SIZE:
        raise RelayProtocolError(f"HTTP head of {len(data)} bytes exceeds {MAX_HEAD_SIZE}")
    return data[:-4].decode("latin-1").split("\r\n")


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")


def _parse_headers(lines: list[str]) -> Headers:
    headers = Headers()
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name) or not _VALUE.fullmatch(value):
            raise RelayProtocolError(f"malformed HTTP header line {line[:80]!r}")
        headers[name] = value.strip()
    return headers


async def read_request_head(reader: asyncio.StreamReader) -> RequestHead:
    """Read one request head; ``EOFError`` when the peer closed before sending anything."""
    lines = await _read_head_lines(reader)
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise RelayProtocolError(f"malformed HTTP request line {lines[0][:80]!r}")
    return RequestHead(parts[0], parts[1], _parse_headers(lines[1:]))


async def read_response_head(reader: asyncio.StreamReader) -> ResponseHead:
    """Read one response head."""
    lines = await _read_head_lines(reader)
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise RelayProtocolError(f"malformed HTTP status line {lines[0][:80]!r}")
    return ResponseHead(int(code), reason, _parse_headers(lines[1:]))


class BodyTooLarge(RelayProtocolError):
    """An HTTP body is larger than the configured maximum."""


async def read_body(
    reader: asyncio.StreamReader, headers: Headers, max_size: int, *, until_eof: bool = False
) -> bytes:
    """Read a body framed by ``Content-Length`` or chunked coding (or EOF when ``until_eof``)."""
    if "chunked" in header(headers, "Transfer-Encoding").lower():
        chunks = bytearray()
        while True:
            line = await reader.readuntil(b"\r\n")
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError as exc:
                raise RelayProtocolError(f"malformed chunk size {size_text[:20]!r}") from exc
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers are ignored
                return bytes(chunks)
            if len(chunks) + size > max_size:
                raise BodyTooLarge(f"HTTP body exceeds the limit of {max_size} bytes")
            chunks += await reader.readexactly(size)
            if await reader.readexactly(2) != b"\r\n":
                raise RelayProtocolError("chunk not terminated by CRLF")
    length_text = header(headers, "Content-Length") or None
    if length_text is not None:
        if not length_text.strip().isdigit():
            raise RelayProtocolError(f"malformed Content-Length {length_text[:20]!r}")
        length = int(length_text)
        if length > max_size:
            raise BodyTooLarge(f"HTTP body of {length} bytes exceeds the limit of {max_size} bytes")
        return await reader.readexactly(length)
    if until_eof:
        data = await reader.read(max_size + 1)
        body = bytearray(data)
        while data:
            if len(body) > max_size:
                raise BodyTooLarge(f"HTTP body exceeds the limit of {max_size} bytes")
            data = await reader.read(max_size + 1)
            body += data
        return bytes(body)
    return b""


def serialize_head(start_line: str, headers: Headers | list[tuple[str, str]]) -> bytes:
    """Serialize a start line and headers, ending with the blank line."""
    items = headers.raw_items() if isinstance(headers, Headers) else headers
    lines = [start_line, *(f"{name}: {value}" for name, value in items), "", ""]
    return "\r\n".join(lines).encode("latin-1")


def simple_response(status: int, text: str = "", headers: list[tuple[str, str]] | None = None) -> bytes:
    """A complete ``Connection: close`` response with a short text body."""
    body = text.encode("utf-8")
    all_headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
        *(headers or []),
    ]
    return serialize_head(f"HTTP/1.1 {status} {reason_phrase(status)}", all_headers) + body
