"""``AzureRelayTrigger``: HTTP requests and WebSocket messages arriving through an Azure Relay Hybrid
Connection become Airflow asset events — and the sender hears "accepted" only once the event is stored.

The trigger listens (outbound WebSockets only: no inbound port) with
:class:`~oftp2_provider.relay.HybridConnectionListener` and runs in the Airflow 3.3 shared-stream
**ack mode**: one listener per (connection, Hybrid Connection) feeds every watcher, and each HTTP
request is answered in the producer's ``advance`` — that is, after Airflow confirmed that the
derived trigger event was persisted in the metadata database.  A request whose event failed (not
persisted in time, triggerer stopping, no watcher online) or was rejected gets ``error_status``
instead, so the sender knows to retry.  Delivery is therefore at least once, seen from the sender.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import AsyncIterator, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from airflow.triggers.base import BaseEventTrigger, TriggerEvent
from airflow.triggers.shared_stream import AdvanceItem, AdvanceOutcome, SharedStreamProducer

from oftp2_provider.hooks.azure_relay import AzureRelayHook
from oftp2_provider.relay import (
    HybridConnectionListener,
    RelayAuthorizationError,
    RelayConnectionClosed,
    RelayedConnectionRequest,
    RelayedHttpRequest,
    RelayEndpointNotFoundError,
    RelayError,
    RelayWebSocket,
)
from oftp2_provider.relay.listener import RECONNECT_DELAYS

log = logging.getLogger(__name__)

BodyEncoding = Literal["auto", "text", "base64"]
_CLEAN = AdvanceOutcome(acked=1, failed=0)


def encode_body(body: bytes, encoding: str) -> tuple[str, str]:
    """``(text, "text")`` or ``(base64, "base64")``: ``auto`` keeps valid UTF-8 as text."""
    if encoding == "base64":
        return base64.b64encode(body).decode("ascii"), "base64"
    if encoding == "text":
        return body.decode("utf-8", "replace"), "text"
    try:
        return body.decode("utf-8"), "text"
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), "base64"


def decode_body(payload: dict[str, Any]) -> bytes:
    """The body bytes of an event payload built by this trigger (inverse of :func:`encode_body`)."""
    body = str(payload.get("body", ""))
    if payload.get("body_encoding") == "base64":
        return base64.b64decode(body)
    return body.encode("utf-8")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _query(target: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(target).query, keep_blank_values=True))


@dataclass
class _Pending:
    """The broker payload of one raw event: what to answer once it is resolved."""

    id: str
    request: RelayedHttpRequest | None = None
    websocket: RelayWebSocket | None = None
    answered: bool = False


@dataclass
class _Settings:
    azure_relay_conn_id: str
    hybrid_connection: str | None
    response_status: int
    response_body: str
    response_content_type: str
    error_status: int
    max_body: int
    body_encoding: str
    accept_websockets: bool
    websocket_timeout: float
    reconnect_delays: Sequence[float] = field(default=RECONNECT_DELAYS)

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> _Settings:
        return cls(
            azure_relay_conn_id=str(kwargs.get("azure_relay_conn_id", AzureRelayHook.default_conn_name)),
            hybrid_connection=kwargs.get("hybrid_connection"),
            response_status=int(kwargs.get("response_status", 202)),
            response_body=str(kwargs.get("response_body", "accepted")),
            response_content_type=str(kwargs.get("response_content_type", "text/plain; charset=utf-8")),
            error_status=int(kwargs.get("error_status", 503)),
            max_body=int(kwargs.get("max_body", 1024 * 1024)),
            body_encoding=str(kwargs.get("body_encoding", "auto")),
            accept_websockets=bool(kwargs.get("accept_websockets", True)),
            websocket_timeout=float(kwargs.get("websocket_timeout", 60.0)),
        )


class AzureRelayProducer(SharedStreamProducer):
    """Ack-mode producer: one listener; yields raw events; answers senders in :meth:`advance`.

    ``broker_payload`` is an in-memory handle on the pending request/WebSocket; nothing is
    serialized.  Public counters (``answered``, ``failed``) make the behaviour observable in tests.
    """

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.settings = _Settings.from_kwargs(kwargs)
        self.listener: HybridConnectionListener | None = None
        self.answered = 0
        self.failed = 0
        self._queue: asyncio.Queue[tuple[dict[str, Any], _Pending] | BaseException] = asyncio.Queue()
        self._outstanding: dict[str, _Pending] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    # -- the stream --------------------------------------------------------------------------------------
    async def open_stream(self) -> AsyncIterator[tuple[Any, Any]]:
        """Open the listener, then yield ``(event payload, pending handle)`` forever (or raise)."""
        self.listener = await self._open_listener()
        self._reader = asyncio.create_task(self._read(self.listener), name="azure-relay-trigger-reader")
        while True:
            item = await self._queue.get()
            if isinstance(item, BaseException):
                raise item
            raw, pending = item
            self._outstanding[pending.id] = pending
            yield raw, pending

    async def _open_listener(self) -> HybridConnectionListener:
        s = self.settings
        hook = AzureRelayHook(s.azure_relay_conn_id, s.hybrid_connection)
        attempt = 0
        while True:
            listener = await hook.aget_listener(max_request_body=s.max_body + 64 * 1024)
            try:
                await listener.open()
                return listener
            except (RelayAuthorizationError, RelayEndpointNotFoundError):
                raise  # configuration errors: fail the trigger with the typed, explanatory error
            except RelayError as exc:
                delay = s.reconnect_delays[min(attempt, len(s.reconnect_delays) - 1)]
                attempt += 1
                log.warning("azure relay trigger: cannot listen yet (%s); retrying in %s s", exc, delay)
                await asyncio.sleep(delay)

    async def _read(self, listener: HybridConnectionListener) -> None:
        try:
            async for event in listener:
                if isinstance(event, RelayedHttpRequest):
                    self._on_http(event, listener.address.path)
                else:
                    self._on_connection(event, listener.address.path)
            error: BaseException = RelayConnectionClosed(1000, "the listener was closed")
        except RelayError as exc:
            error = exc
        except Exception as exc:  # a bug must end the stream loudly, not leave it silent
            log.exception("azure relay trigger reader failed")
            error = exc
        if not self._closed:
            self._queue.put_nowait(error)

    def _on_http(self, request: RelayedHttpRequest, path: str) -> None:
        s = self.settings
        if len(request.body) > s.max_body:
            log.warning(
                "azure relay trigger: %s %s body of %d bytes is above max_body=%d; answered 413",
                request.method,
                request.target,
                len(request.body),
                s.max_body,
            )
            self._spawn(self._respond(request, 413, f"request body above {s.max_body} bytes"))
            return
        body, encoding = encode_body(request.body, s.body_encoding)
        raw = {
            "kind": "http_request",
            "id": request.id,
            "hybrid_connection": path,
            "method": request.method,
            "target": request.target,
            "path": urlsplit(request.target).path,
            "query": _query(request.target),
            "headers": dict(request.headers),
            "body": body,
            "body_encoding": encoding,
            "body_size": len(request.body),
            "remote_endpoint": dict(request.remote_endpoint),
            "received_at": _now(),
        }
        self._queue.put_nowait((raw, _Pending(request.id, request=request)))

    def _on_connection(self, request: RelayedConnectionRequest, path: str) -> None:
        if not self.settings.accept_websockets:
            self._spawn(request.reject(403, "WebSocket connections are not accepted here"))
            return
        self._spawn(self._collect(request, path))

    async def _collect(self, request: RelayedConnectionRequest, path: str) -> None:
        """Accept, read messages until the sender closes its half, then offer one event."""
        s = self.settings
        ws = await request.accept()
        chunks: list[bytes] = []
        size = 0
        binary = False

        async def read_all() -> bool:
            nonlocal size, binary
            while True:
                try:
                    message = await ws.recv()
                except RelayConnectionClosed:
                    return True
                data = message.encode("utf-8") if isinstance(message, str) else message
                binary = binary or isinstance(message, bytes)
                size += len(data)
                if size > s.max_body:
                    return False
                chunks.append(data)

        try:
            complete = await asyncio.wait_for(read_all(), s.websocket_timeout)
        except asyncio.TimeoutError:
            log.warning(
                "azure relay trigger: WebSocket %s not finished in %s s", request.id, s.websocket_timeout
            )
            await ws.close(1008, "timeout: close your side when done")
            return
        except RelayError as exc:
            log.warning("azure relay trigger: WebSocket %s failed: %s", request.id, exc)
            ws.abort()
            return
        if not complete:
            log.warning(
                "azure relay trigger: WebSocket %s sent more than max_body=%d", request.id, s.max_body
            )
            await ws.close(1009, f"more than {s.max_body} bytes")
            return
        data = b"".join(chunks)
        target = request.target.removeprefix("/$hc")  # the accept address names the $hc endpoint
        body, encoding = encode_body(
            data, "base64" if binary and s.body_encoding == "auto" else s.body_encoding
        )
        raw = {
            "kind": "websocket",
            "id": request.id,
            "hybrid_connection": path,
            "target": target,
            "path": urlsplit(target).path,
            "query": dict(request.query),
            "headers": dict(request.headers),
            "messages": len(chunks),
            "body": body,
            "body_encoding": encoding,
            "body_size": len(data),
            "remote_endpoint": dict(request.remote_endpoint),
            "received_at": _now(),
        }
        if self._closed:
            await ws.close(1001, "going away")
            return
        self._queue.put_nowait((raw, _Pending(request.id, websocket=ws)))

    # -- answers -----------------------------------------------------------------------------------------
    async def advance(self, batch: Sequence[AdvanceItem]) -> None:
        """Answer each resolved event: ``response_status`` when persisted, else ``error_status``."""
        for item in batch:
            pending: _Pending = item.broker_payload
            self._outstanding.pop(pending.id, None)
            ok = item.outcome.is_clean
            if not ok:
                log.warning(
                    "azure relay trigger: event %s not stored (acked=%d failed=%d rejected=%d); "
                    "the sender gets %d",
                    pending.id,
                    item.outcome.acked,
                    item.outcome.failed,
                    item.outcome.rejected,
                    self.settings.error_status,
                )
            self._spawn(self._finish(pending, ok))

    async def _finish(self, pending: _Pending, ok: bool) -> None:
        if pending.answered:
            return
        pending.answered = True
        s = self.settings
        if ok:
            self.answered += 1
        else:
            self.failed += 1
        if pending.request is not None:
            if ok:
                await self._respond(pending.request, s.response_status, s.response_body)
            else:
                await self._respond(pending.request, s.error_status, "event not stored; retry later")
        elif pending.websocket is not None:
            with contextlib.suppress(RelayError):
                await pending.websocket.close(1000 if ok else 1011, "stored" if ok else "not stored; retry")

    async def _respond(self, request: RelayedHttpRequest, status: int, body: str) -> None:
        headers = {"content-type": self.settings.response_content_type}
        try:
            await request.respond(status, headers, body)
        except RelayError as exc:
            log.warning("azure relay trigger: could not answer request %s: %s", request.id, exc)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("azure relay trigger task failed: %s", task.exception())

    async def aclose(self) -> None:
        """Answer every unresolved event with ``error_status``, finish answers, close the listener."""
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
        leftovers = list(self._outstanding.values())
        self._outstanding.clear()
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if not isinstance(item, BaseException):
                leftovers.append(item[1])
        for pending in leftovers:
            self._spawn(self._finish(pending, False))
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10)
        for task in list(self._tasks):
            task.cancel()
        if self.listener is not None:
            await self.listener.close()


class AzureRelayTrigger(BaseEventTrigger):
    """One event per HTTP request (and per finished WebSocket) arriving on a Hybrid Connection.

    For ``AssetWatcher``; needs no inbound port.  Each HTTP request is answered
    ``response_status``/``response_body`` only after its event was persisted (ack mode), or
    ``error_status`` if it was not; bodies above ``max_body`` get 413 and no event.

    WebSocket senders (``accept_websockets``) are accepted; their messages are collected until the
    sender closes its half (or ``websocket_timeout``), then one event carries them, and the
    WebSocket is closed with 1000 "stored" after persistence (1011 otherwise).

    :param azure_relay_conn_id: the ``azure_relay`` connection (the key stays in the connection;
        only its id is serialized).
    :param hybrid_connection: listen on this Hybrid Connection instead of the connection's one.
    :param response_status: HTTP status sent once the event is stored (default 202).
    :param response_body: body of that answer.
    :param response_content_type: content type of the answers.
    :param error_status: HTTP status when the event could not be stored (default 503: retry).
    :param max_body: largest request body (bytes) turned into an event.
    :param body_encoding: ``auto`` (UTF-8 text when valid, else base64), ``text`` or ``base64``.
    :param accept_websockets: accept WebSocket senders (else reject them with 403).
    :param websocket_timeout: seconds a WebSocket sender may take before closing its half.

    Event payload: ``kind`` (``http_request``/``websocket``), ``id``, ``hybrid_connection``,
    ``method``, ``target``, ``path``, ``query``, ``headers``, ``body``, ``body_encoding``,
    ``body_size``, ``remote_endpoint``, ``received_at`` (WebSocket: ``messages`` instead of
    ``method``).  :func:`decode_body` returns the bytes.

    Several watchers naming the same connection and Hybrid Connection share one listener; the
    answer settings of the first one started are used for the stream.
    """

    def __init__(
        self,
        azure_relay_conn_id: str = AzureRelayHook.default_conn_name,
        hybrid_connection: str | None = None,
        response_status: int = 202,
        response_body: str = "accepted",
        response_content_type: str = "text/plain; charset=utf-8",
        error_status: int = 503,
        max_body: int = 1024 * 1024,
        body_encoding: BodyEncoding = "auto",
        accept_websockets: bool = True,
        websocket_timeout: float = 60.0,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        for name, status in (("response_status", response_status), ("error_status", error_status)):
            if not 200 <= int(status) <= 599:
                raise ValueError(f"{name} must be an HTTP status 200..599, got {status}")
        if body_encoding not in ("auto", "text", "base64"):
            raise ValueError(f"body_encoding must be 'auto', 'text' or 'base64', got {body_encoding!r}")
        if int(max_body) < 0:
            raise ValueError(f"max_body must not be negative, got {max_body}")
        self.azure_relay_conn_id = azure_relay_conn_id
        self.hybrid_connection = hybrid_connection
        self.response_status = int(response_status)
        self.response_body = response_body
        self.response_content_type = response_content_type
        self.error_status = int(error_status)
        self.max_body = int(max_body)
        self.body_encoding: BodyEncoding = body_encoding
        self.accept_websockets = bool(accept_websockets)
        self.websocket_timeout = float(websocket_timeout)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Class path and the plain kwargs that rebuild this trigger (no secrets: the connection id)."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "azure_relay_conn_id": self.azure_relay_conn_id,
                "hybrid_connection": self.hybrid_connection,
                "response_status": self.response_status,
                "response_body": self.response_body,
                "response_content_type": self.response_content_type,
                "error_status": self.error_status,
                "max_body": self.max_body,
                "body_encoding": self.body_encoding,
                "accept_websockets": self.accept_websockets,
                "websocket_timeout": self.websocket_timeout,
            },
        )

    def shared_stream_key(self) -> Hashable | None:
        """One listener per (connection, Hybrid Connection)."""
        return ("azure-relay", self.azure_relay_conn_id, self.hybrid_connection or "")

    @classmethod
    def create_shared_stream_producer(cls, kwargs: dict[str, Any]) -> SharedStreamProducer:
        """Opt into ack mode: senders are answered only after their events were persisted."""
        return AzureRelayProducer(kwargs)

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        """Every raw event becomes this watcher's trigger event."""
        async for raw in shared_stream:
            yield TriggerEvent(raw)  # type: ignore[no-untyped-call]

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Stand-alone mode (no shared stream): yield each event, answer it when the next is asked for.

        Weaker than ack mode: the answer means "the triggerer took the event", not "it is stored".
        """
        producer = AzureRelayProducer(self.serialize()[1])
        try:
            async for raw, pending in producer.open_stream():
                yield TriggerEvent(raw)  # type: ignore[no-untyped-call]
                await producer.advance([AdvanceItem(pending, _CLEAN)])
        finally:
            await producer.aclose()
