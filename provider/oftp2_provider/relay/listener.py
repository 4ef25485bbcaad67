"""The Hybrid Connections listener: control channel, keep-alive, token renewal, reconnect, and the
incoming HTTP requests and WebSocket connection requests as objects.

Typical use (the Airflow trigger wraps exactly this)::

    async with HybridConnectionListener(address, SasTokenProvider(key_name, key)) as listener:
        async for event in listener:
            if isinstance(event, RelayedHttpRequest):
                ...  # persist, then later:
                await event.respond(200, {"content-type": "text/plain"}, b"stored")
            else:
                ws = await event.accept()   # or: await event.reject(403, "not today")
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from oftp2_provider.relay._http import reason_phrase
from oftp2_provider.relay.address import HybridConnectionAddress
from oftp2_provider.relay.errors import (
    RelayAuthorizationError,
    RelayConfigurationError,
    RelayConnectionClosed,
    RelayConnectionError,
    RelayEndpointNotFoundError,
    RelayError,
    RelayProtocolError,
    RelayTimeoutError,
)
from oftp2_provider.relay.sas import SasToken, TokenSource
from oftp2_provider.relay.websocket import DEFAULT_MAX_SIZE, RelayWebSocket, connect

log = logging.getLogger(__name__)

CONTROL_CHANNEL_LIMIT = 64 * 1024
RECONNECT_DELAYS: tuple[float, ...] = (0, 1, 2, 5, 10, 30)


def get_token(source: TokenSource, resource: str) -> SasToken:
    """A token for ``resource`` from a provider object or a plain callable."""
    getter = getattr(source, "get_token", None)
    return getter(resource) if getter is not None else source(resource)  # type: ignore[operator]


def classify_handshake_error(exc: RelayConnectionError, what: str) -> RelayConnectionError:
    """Map a refused handshake to the typed error a caller can act on."""
    if exc.status in (401, 403):
        return RelayAuthorizationError(
            f"{what}: the relay refused the token ({exc.status} {exc.description}); check the key name, "
            "the key, the rule's rights (Listen/Send) and the namespace/path",
            exc.status,
            exc.description,
        )
    if exc.status == 404:
        return RelayEndpointNotFoundError(
            f"{what}: Hybrid Connection not found ({exc.description})", exc.status, exc.description
        )
    return exc


def _as_dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty dict (bad input from the network)."""
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else {}


def _strip_relay_params(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not k.startswith("sb-hc-")]
    target = parts.path
    if query:
        target += "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query)
    return target, dict(query)


@dataclass
class RelayedHttpRequest:
    """An HTTP request that a sender made through the relay.

    Answer it with :meth:`respond` — immediately or later (the relay waits up to 60 s).
    ``target`` is the request target as the sender wrote it (``/{path}/suffix?query``).
    """

    id: str
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    remote_endpoint: dict[str, Any]
    address: str
    _listener: HybridConnectionListener = field(repr=False)
    _channel: RelayWebSocket | None = field(default=None, repr=False)
    _rendezvous: RelayWebSocket | None = field(default=None, repr=False)
    responded: bool = False

    async def respond(
        self,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        body: bytes | str = b"",
        description: str | None = None,
    ) -> None:
        """Send the response: on the control channel when it fits in 64 kB, else by rendezvous."""
        if self.responded:
            raise RelayProtocolError(f"request {self.id} was already answered")
        if not 100 <= int(status) <= 599:
            raise RelayConfigurationError(f"HTTP status must be 100..599, got {status}")
        self.responded = True
        payload = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        message = json.dumps(
            {
                "response": {
                    "requestId": self.id,
                    "statusCode": int(status),
                    "statusDescription": description or reason_phrase(status),
                    "responseHeaders": dict(headers or {}),
                    "body": bool(payload),
                }
            }
        )
        small = len(message) + len(payload) <= CONTROL_CHANNEL_LIMIT
        if self._rendezvous is None and small and self._listener._channel_is(self._channel):
            try:
                await self._listener._send_on_control(message, payload)
                return
            except RelayConnectionClosed:
                log.info("control channel gone; answering request %s by rendezvous", self.id)
        ws = self._rendezvous
        try:
            if ws is None:
                ws = await self._listener._open_rendezvous(self.address)
            await ws.send(message)
            if payload:
                await ws.send(payload)
        finally:
            if ws is not None:
                await ws.close(1000, "")

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (replacing invalid bytes)."""
        return self.body.decode("utf-8", "replace")

    def get_header(self, name: str, default: str | None = None) -> str | None:
        """A request header by case-insensitive name."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return default


@dataclass
class RelayedConnectionRequest:
    """A sender wants a WebSocket: :meth:`accept` it (get a :class:`RelayWebSocket`) or :meth:`reject` it."""

    id: str
    address: str
    target: str
    query: dict[str, str]
    headers: dict[str, str]
    remote_endpoint: dict[str, Any]
    _listener: HybridConnectionListener = field(repr=False)

    @property
    def subprotocols(self) -> list[str]:
        """The subprotocols the sender offered (``Sec-WebSocket-Protocol``)."""
        for name, value in self.headers.items():
            if name.lower() == "sec-websocket-protocol":
                return [p.strip() for p in str(value).split(",") if p.strip()]
        return []

    async def accept(self, subprotocol: str | None = None) -> RelayWebSocket:
        """Accept: open the rendezvous WebSocket; the returned socket talks to the sender."""
        if subprotocol is not None and subprotocol not in self.subprotocols:
            raise RelayConfigurationError(
                f"subprotocol {subprotocol!r} was not offered by the sender ({self.subprotocols})"
            )
        url = self._listener.address.rewrite(self.address)
        try:
            return await connect(
                url,
                subprotocols=[subprotocol] if subprotocol else [],
                ssl=self._listener.ssl,
                timeout=self._listener.connect_timeout,
                max_size=self._listener.max_message_size,
            )
        except RelayConnectionError as exc:
            raise classify_handshake_error(exc, f"accepting connection {self.id}") from exc

    async def reject(self, status: int = 403, description: str = "Rejected") -> None:
        """Reject with an HTTP status and description; the relay's ``410 Gone`` means success."""
        if not 400 <= status <= 599:
            raise RelayConfigurationError(f"reject status must be 4xx/5xx, got {status}")
        url = self._listener.address.rewrite(self.address)
        url += f"&sb-hc-statusCode={status}&sb-hc-statusDescription={quote(description, safe='')}"
        try:
            ws = await connect(url, ssl=self._listener.ssl, timeout=self._listener.connect_timeout)
        except RelayConnectionError as exc:
            if exc.status == 410:
                return
            raise classify_handshake_error(exc, f"rejecting connection {self.id}") from exc
        ws.abort()
        raise RelayProtocolError(f"the relay accepted a rejection of connection {self.id} as a WebSocket")


RelayEvent = RelayedHttpRequest | RelayedConnectionRequest


class _Terminal:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class HybridConnectionListener:
    """Listen on a Hybrid Connection and yield :data:`RelayEvent` objects.

    * keep-alive: a ping every ``keepalive_interval`` s; no pong within ``keepalive_timeout`` → reconnect;
    * token renewal: ``renewToken`` sent ``renew_margin`` s (at most half the lifetime) before expiry;
    * reconnect after a lost control channel with ``reconnect_delays`` (0/1/2/5/10/30 s, last repeats);
      404 is terminal (:class:`RelayEndpointNotFoundError`), 401/403 too
      (:class:`RelayAuthorizationError`: a configuration error).
    * HTTP request bodies above ``max_request_body`` close the rendezvous with 1009 (too big).
    """

    def __init__(
        self,
        address: HybridConnectionAddress,
        token_provider: TokenSource,
        *,
        ssl: Any = None,
        keepalive_interval: float = 30.0,
        keepalive_timeout: float = 20.0,
        renew_margin: float = 300.0,
        reconnect_delays: Sequence[float] = RECONNECT_DELAYS,
        connect_timeout: float = 30.0,
        max_request_body: int = DEFAULT_MAX_SIZE,
        max_message_size: int = DEFAULT_MAX_SIZE,
        queue_size: int = 1000,
    ) -> None:
        self.address = address
        self.token_provider = token_provider
        self.ssl = ssl
        self.keepalive_interval = keepalive_interval
        self.keepalive_timeout = keepalive_timeout
        self.renew_margin = renew_margin
        self.reconnect_delays = tuple(reconnect_delays) or (1.0,)
        self.connect_timeout = connect_timeout
        self.max_request_body = max_request_body
        self.max_message_size = max_message_size
        self.connects = 0
        self.renewals = 0
        self._queue: asyncio.Queue[RelayEvent | _Terminal] = asyncio.Queue(queue_size)
        self._channel: RelayWebSocket | None = None
        self._send_lock = asyncio.Lock()
        self._token: SasToken | None = None
        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._online = asyncio.Event()

    # -- public ----------------------------------------------------------------------------------------
    @property
    def is_online(self) -> bool:
        """True while a control channel is connected."""
        return self._online.is_set()

    async def wait_online(self, timeout: float | None = None) -> None:
        """Wait until a control channel is connected (raises :class:`RelayTimeoutError`)."""
        try:
            await asyncio.wait_for(self._online.wait(), timeout)
        except asyncio.TimeoutError as exc:
            raise RelayTimeoutError(f"listener not online within {timeout} s") from exc

    async def open(self) -> None:
        """Connect the control channel; raises the typed error when the first attempt fails."""
        if self._runner is not None:
            raise RelayConfigurationError("listener already open")
        self._closing = False
        if any(isinstance(item, _Terminal) for item in list(self._queue._queue)):  # type: ignore[attr-defined]
            self._queue = asyncio.Queue(self._queue.maxsize)  # reopened after close(): start afresh
        channel = await self._connect_control()
        self._runner = asyncio.create_task(self._run(channel), name=f"relay-listener-{self.address.path}")

    async def close(self) -> None:
        """Close the control channel (1000) and stop; events already queued stay readable."""
        self._closing = True
        if self._channel is not None:
            await self._channel.shutdown(1000, "Normal Closure")
        runner, self._runner = self._runner, None
        if runner is not None:
            try:  # the read loop sees the relay's answering close frame and ends
                await asyncio.wait_for(asyncio.shield(runner), 2.0)
            except (asyncio.TimeoutError, RelayError):
                pass
            runner.cancel()
            with contextlib.suppress(BaseException):
                await runner
        if self._channel is not None:
            self._channel.abort()
        for task in list(self._tasks):
            task.cancel()
        self._online.clear()
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(_Terminal(None))

    async def __aenter__(self) -> HybridConnectionListener:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __aiter__(self) -> HybridConnectionListener:
        return self

    async def __anext__(self) -> RelayEvent:
        item = await self._queue.get()
        if isinstance(item, _Terminal):
            self._queue.put_nowait(item)  # every later call ends the same way
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration
        return item

    async def next_event(self, timeout: float | None = None) -> RelayEvent:
        """The next event; :class:`RelayTimeoutError` after ``timeout`` s; ``StopAsyncIteration`` when closed."""
        try:
            return await asyncio.wait_for(self.__anext__(), timeout)
        except asyncio.TimeoutError as exc:
            raise RelayTimeoutError(f"no relay event within {timeout} s") from exc

    # -- control channel -------------------------------------------------------------------------------
    async def _connect_control(self) -> RelayWebSocket:
        token = get_token(self.token_provider, self.address.resource)
        url = self.address.listen_url(str(uuid.uuid4()))
        try:
            channel = await connect(
                url,
                headers=[("ServiceBusAuthorization", token.raw)],
                ssl=self.ssl,
                timeout=self.connect_timeout,
                max_size=self.max_message_size,
            )
        except RelayConnectionError as exc:
            raise classify_handshake_error(exc, f"listening on {self.address.path!r}") from exc
        self._token = token
        self._channel = channel
        self.connects += 1
        self._online.set()
        log.info("relay listener online: %s (connection %d)", self.address.path, self.connects)
        return channel

    def _channel_is(self, channel: RelayWebSocket | None) -> bool:
        return channel is not None and channel is self._channel and not channel.closed

    async def _send_on_control(self, message: str, body: bytes = b"") -> None:
        channel = self._channel
        if channel is None or channel.closed:
            raise RelayConnectionClosed(1006, "no control channel")
        async with self._send_lock:
            await channel.send(message)
            if body:
                await channel.send(body)

    async def _open_rendezvous(self, address: str) -> RelayWebSocket:
        try:
            return await connect(
                self.address.rewrite(address),
                ssl=self.ssl,
                timeout=self.connect_timeout,
                max_size=self.max_request_body,
            )
        except RelayConnectionError as exc:
            raise classify_handshake_error(exc, "opening a rendezvous") from exc

    async def _run(self, channel: RelayWebSocket) -> None:
        attempt = 0
        try:
            while not self._closing:
                await self._serve(channel)
                self._online.clear()
                if self._closing:
                    break
                while True:
                    delay = self.reconnect_delays[min(attempt, len(self.reconnect_delays) - 1)]
                    attempt += 1
                    log.info("relay listener offline; reconnecting in %s s (attempt %d)", delay, attempt)
                    await asyncio.sleep(delay)
                    try:
                        channel = await self._connect_control()
                    except (RelayAuthorizationError, RelayEndpointNotFoundError):
                        raise
                    except RelayError as exc:
                        log.warning("relay reconnect failed: %s", exc)
                        continue
                    attempt = 0
                    break
        except asyncio.CancelledError:
            raise
        except RelayError as exc:
            log.error("relay listener stopped: %s", exc)
            self._online.clear()
            await self._queue.put(_Terminal(exc))
        except Exception as exc:  # a bug must not leave a silently dead listener behind
            log.exception("relay listener failed")
            self._online.clear()
            await self._queue.put(_Terminal(RelayProtocolError(f"relay listener failed: {exc!r}")))

    async def _serve(self, channel: RelayWebSocket) -> None:
        helpers = [
            asyncio.create_task(self._keepalive(channel)),
            asyncio.create_task(self._renew(channel)),
        ]
        try:
            await self._read_control(channel)
        finally:
            for task in helpers:
                task.cancel()
            channel.abort()

    async def _keepalive(self, channel: RelayWebSocket) -> None:
        while True:
            await asyncio.sleep(self.keepalive_interval)
            try:
                waiter = await channel.ping()
                await asyncio.wait_for(waiter, self.keepalive_timeout)
            except (asyncio.TimeoutError, RelayConnectionClosed):
                if not channel.closed:
                    log.warning("relay control channel keep-alive failed; dropping it")
                channel.abort()
                return

    async def _renew(self, channel: RelayWebSocket) -> None:
        while True:
            token = self._token
            if token is None:
                return
            lifetime = max(token.expiry - time.time(), 0.0)
            margin = min(self.renew_margin, lifetime / 2)
            await asyncio.sleep(max(token.remaining() - margin, 0.0))
            fresh = get_token(self.token_provider, self.address.resource)
            if fresh.raw == token.raw:
                log.warning(
                    "relay token cannot be renewed (fixed token); it expires in %.0f s", token.remaining()
                )
                return
            try:
                await self._send_on_control(json.dumps({"renewToken": {"token": fresh.raw}}))
            except RelayConnectionClosed:
                return
            self._token = fresh
            self.renewals += 1
            log.info("relay token renewed; new expiry in %.0f s", fresh.remaining())

    async def _read_control(self, channel: RelayWebSocket) -> None:
        while True:
            try:
                message = await channel.recv()
            except RelayConnectionClosed as exc:
                if not self._closing:
                    log.warning("relay control channel closed: %s %s", exc.code, exc.reason)
                return
            except RelayProtocolError as exc:
                log.warning("relay control channel protocol error: %s", exc)
                return
            if isinstance(message, bytes):
                log.debug("ignoring a stray binary message of %d bytes on the control channel", len(message))
                continue
            try:
                command = json.loads(message)
            except ValueError:
                log.warning("ignoring a control message that is not JSON: %.80r", message)
                continue
            if not isinstance(command, dict):
                continue
            if isinstance(command.get("request"), dict):
                request = command["request"]
                body = b""
                if "method" in request and request.get("body"):
                    try:
                        raw = await channel.recv()
                    except (RelayConnectionClosed, RelayProtocolError):
                        return
                    body = raw.encode("utf-8") if isinstance(raw, str) else raw
                try:
                    await self._on_request(request, body, channel)
                except Exception:
                    log.exception("ignoring a malformed request command: %.200r", message)
            elif isinstance(command.get("accept"), dict):
                try:
                    self._on_accept(command["accept"])
                except Exception:
                    log.exception("ignoring a malformed accept command: %.200r", message)
            else:
                log.debug("ignoring unknown control message keys %s", sorted(command))

    def _on_accept(self, accept: dict[str, Any]) -> None:
        address = str(accept.get("address", ""))
        if not address or not accept.get("id"):
            log.warning("ignoring an accept command without address/id")
            return
        try:
            target, query = _strip_relay_params(address)
        except ValueError as exc:  # e.g. "Invalid IPv6 URL" from urlsplit
            log.warning("ignoring an accept command with a malformed address %.200r: %s", address, exc)
            return
        headers = accept.get("connectHeaders") or {}
        event = RelayedConnectionRequest(
            id=str(accept["id"]),
            address=address,
            target=target,
            query=query,
            headers={str(k): str(v) for k, v in headers.items()} if isinstance(headers, dict) else {},
            remote_endpoint=_as_dict(accept.get("remoteEndpoint")),
            _listener=self,
        )
        self._enqueue(event)

    def _enqueue(self, event: RelayEvent) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            log.error("relay event queue full; dropping %s %s", type(event).__name__, event.id)
            if isinstance(event, RelayedHttpRequest):
                self._spawn(event.respond(503, {}, b"listener busy"))
            else:
                self._spawn(event.reject(503, "listener busy"))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("relay listener task failed: %s", task.exception())

    async def _on_request(self, request: dict[str, Any], body: bytes, channel: RelayWebSocket) -> None:
        if "method" in request:
            self._enqueue(self._make_request(request, body, channel, None))
            return
        self._spawn(
            self._fetch_rendezvous_request(str(request.get("address", "")), str(request.get("id", "")))
        )

    def _make_request(
        self, request: dict[str, Any], body: bytes, channel: RelayWebSocket | None, rdv: RelayWebSocket | None
    ) -> RelayedHttpRequest:
        headers = request.get("requestHeaders") or {}
        return RelayedHttpRequest(
            id=str(request.get("id", "")),
            method=str(request.get("method", "GET")),
            target=str(request.get("requestTarget", "/")),
            headers={str(k): str(v) for k, v in headers.items()} if isinstance(headers, dict) else {},
            body=body,
            remote_endpoint=_as_dict(request.get("remoteEndpoint")),
            address=str(request.get("address", "")),
            _listener=self,
            _channel=channel,
            _rendezvous=rdv,
        )

    async def _fetch_rendezvous_request(self, address: str, request_id: str) -> None:
        if not address:
            log.warning("ignoring a rendezvous request %s without address", request_id)
            return
        rdv = await self._open_rendezvous(address)
        try:
            message = await rdv.recv()
            command = json.loads(message) if isinstance(message, str) else None
            if not isinstance(command, dict) or not isinstance(command.get("request"), dict):
                raise RelayProtocolError("rendezvous did not start with a request message")
            request = command["request"]
            body = b""
            if request.get("body"):
                raw = await rdv.recv()
                body = raw.encode("utf-8") if isinstance(raw, str) else raw
            request.setdefault("address", address)
            request.setdefault("id", request_id)
        except (RelayProtocolError, ValueError, RelayConnectionClosed) as exc:
            log.warning("rendezvous request %s failed: %s", request_id, exc)
            rdv.abort()
            return
        self._enqueue(self._make_request(request, body, None, rdv))
