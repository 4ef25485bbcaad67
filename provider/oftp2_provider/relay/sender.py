"""The sender side of a Hybrid Connection: WebSocket connections and HTTP requests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from websockets.datastructures import Headers

from oftp2_provider.relay._http import (
    BodyTooLarge,
    ResponseHead,
    read_body,
    read_response_head,
    serialize_head,
)
from oftp2_provider.relay.address import HybridConnectionAddress
from oftp2_provider.relay.errors import (
    RelayBodyTooLargeError,
    RelayConnectionError,
    RelayProtocolError,
    RelayRejectedError,
    RelayTimeoutError,
)
from oftp2_provider.relay.listener import classify_handshake_error, get_token
from oftp2_provider.relay.sas import TokenSource
from oftp2_provider.relay.websocket import DEFAULT_MAX_SIZE, RelayWebSocket, connect, open_stream


@dataclass(frozen=True)
class RelayHttpResponse:
    """The answer to :meth:`HybridConnectionClient.request`."""

    status: int
    reason: str
    headers: Headers
    body: bytes

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (replacing invalid bytes)."""
        return self.body.decode("utf-8", "replace")


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes, max_body: int
) -> tuple[ResponseHead, bytes]:
    writer.write(request)
    await writer.drain()
    head = await read_response_head(reader)
    return head, await read_body(reader, head.headers, max_body, until_eof=True)


class HybridConnectionClient:
    """Connects to a Hybrid Connection as a sender (``Send`` right, or anonymous when allowed)."""

    def __init__(
        self,
        address: HybridConnectionAddress,
        token_provider: TokenSource | None = None,
        *,
        ssl: Any = None,
        max_message_size: int = DEFAULT_MAX_SIZE,
    ) -> None:
        self.address = address
        self.token_provider = token_provider
        self.ssl = ssl
        self.max_message_size = max_message_size

    def _auth_headers(self) -> list[tuple[str, str]]:
        if self.token_provider is None:
            return []
        return [("ServiceBusAuthorization", get_token(self.token_provider, self.address.resource).raw)]

    async def connect(
        self,
        suffix: str = "",
        query: Mapping[str, str] | None = None,
        *,
        subprotocols: Sequence[str] = (),
        headers: Sequence[tuple[str, str]] = (),
        timeout: float = 60.0,
    ) -> RelayWebSocket:
        """Open a WebSocket to the listener.

        Raises :class:`RelayRejectedError` (the listener's status/description),
        :class:`RelayAuthorizationError` (401) or :class:`RelayEndpointNotFoundError` (404: no such
        Hybrid Connection or no listener).
        """
        try:
            return await connect(
                self.address.connect_url(suffix, query),
                headers=[*self._auth_headers(), *headers],
                subprotocols=subprotocols,
                ssl=self.ssl,
                timeout=timeout,
                max_size=self.max_message_size,
            )
        except RelayConnectionError as exc:
            if exc.status is None or exc.status in (401, 404):
                raise classify_handshake_error(exc, f"connecting to {self.address.path!r}") from exc
            raise RelayRejectedError(
                f"connection to {self.address.path!r} rejected: {exc.status} {exc.description}",
                exc.status,
                exc.description,
            ) from exc

    async def request(
        self,
        method: str = "GET",
        suffix: str = "",
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes | str = b"",
        timeout: float = 75.0,
        max_response_body: int = DEFAULT_MAX_SIZE,
    ) -> RelayHttpResponse:
        """Send one HTTP request through the relay and return the listener's response.

        Any status (including the relay's own 401/404/502/504) is returned, not raised; network
        failures raise :class:`RelayConnectionError`, slowness :class:`RelayTimeoutError`.
        """
        url = self.address.http_url(suffix, query)
        payload = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        start = url.split("://", 1)[1]
        netloc, _, path = start.partition("/")
        request_headers = [
            ("Host", netloc),
            *self._auth_headers(),
            *((k, v) for k, v in (headers or {}).items() if k.lower() not in ("host", "content-length")),
            ("Content-Length", str(len(payload))),
            ("Connection", "close"),
        ]
        reader, writer = await open_stream(url, ssl=self.ssl, timeout=timeout)
        try:
            head, data = await asyncio.wait_for(
                _exchange(
                    reader,
                    writer,
                    serialize_head(f"{method.upper()} /{path} HTTP/1.1", request_headers) + payload,
                    max_response_body,
                ),
                timeout,
            )
        except asyncio.TimeoutError as exc:
            raise RelayTimeoutError(f"HTTP {method} {url} got no answer within {timeout} s") from exc
        except (EOFError, asyncio.IncompleteReadError, OSError) as exc:
            raise RelayConnectionError(f"HTTP {method} {url} failed: {exc}") from exc
        except BodyTooLarge as exc:
            raise RelayBodyTooLargeError(
                f"HTTP {method} {url}: response body above {max_response_body} bytes"
            ) from exc
        except RelayProtocolError as exc:
            raise RelayConnectionError(f"HTTP {method} {url}: malformed response: {exc}") from exc
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        return RelayHttpResponse(head.status, head.reason, head.headers, data)
