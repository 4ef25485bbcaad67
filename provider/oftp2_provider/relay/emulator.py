"""A loopback emulator of Azure Relay Hybrid Connections, for tests, demos and offline development.

One TCP port (optionally TLS) serves the listener control channel, sender WebSockets, accept/reject
and request rendezvous under ``/$hc/{path}``, and HTTP senders under ``/{path}``.  Tokens are checked
like the service does (signature over the ``sr`` as sent, expiry, key name, audience prefix); a
control channel whose token expires without ``renewToken`` is closed with 1008.  Faithful enough for
Microsoft's ``hyco-ws`` and ``hyco-https`` Node packages (see ``tests/interop/relay``).

Usage::

    async with RelayEmulator(hybrid_connections=["hc1"]) as emu:
        address = emu.address("hc1")            # HybridConnectionAddress with the endpoint override
        tokens = emu.token_provider()           # SasTokenProvider for the root key
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
import ssl as ssl_module
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from websockets.datastructures import Headers

from oftp2_provider.relay._http import (
    BodyTooLarge,
    RequestHead,
    header,
    read_body,
    read_request_head,
    reason_phrase,
    serialize_head,
    simple_response,
)
from oftp2_provider.relay.address import HybridConnectionAddress
from oftp2_provider.relay.errors import RelayConnectionClosed, RelayError, RelayTokenError
from oftp2_provider.relay.sas import SasToken, SasTokenProvider
from oftp2_provider.relay.websocket import (
    STREAM_LIMIT,
    RelayWebSocket,
    is_upgrade_request,
    server_handshake_response,
)

log = logging.getLogger(__name__)

CONTROL_CHANNEL_LIMIT = 64 * 1024
DEFAULT_KEY_NAME = "RootManageSharedAccessKey"
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "upgrade", "servicebusauthorization"}


@dataclass
class _Control:
    ws: RelayWebSocket
    entity: str
    expiry: int
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, message: dict[str, Any], body: bytes | None = None) -> None:
        async with self.lock:
            await self.ws.send(json.dumps(message))
            if body is not None:
                await self.ws.send(body)


@dataclass
class _PendingAccept:
    result: asyncio.Future[RelayWebSocket | tuple[int, str]]
    finished: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _PendingRequest:
    request: dict[str, Any]
    body: bytes
    response: asyncio.Future[tuple[dict[str, Any], bytes]]
    pointer: bool = False


class RelayEmulator:
    """An in-process Azure Relay emulator: ``await start()`` / ``await stop()`` (restartable), or ``async with``.

    ``keys`` maps SAS key names to keys (default: one random ``RootManageSharedAccessKey``);
    ``hybrid_connections`` lists the entity names (others get 404).  ``rights`` maps key names to
    their rights (``Listen``, ``Send``, ``Manage``; default: all).  ``port=0`` picks a free port,
    kept across restarts.  ``ssl`` (a server context) makes it ``wss``/``https``.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        namespace: str = "relay-emulator.local",
        keys: Mapping[str, str] | None = None,
        hybrid_connections: Iterable[str] = ("hc1",),
        ssl: ssl_module.SSLContext | None = None,
        advertise_host: str | None = None,
        requires_client_authorization: bool = True,
        accept_timeout: float = 30.0,
        request_timeout: float = 60.0,
        max_http_body: int = 64 * 1024 * 1024,
        rights: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.namespace = namespace
        self.keys = dict(keys) if keys else {DEFAULT_KEY_NAME: secrets.token_urlsafe(32)}
        self.hybrid_connections = {name.strip("/") for name in hybrid_connections}
        self.ssl = ssl
        self.advertise_host = advertise_host or host
        self.requires_client_authorization = requires_client_authorization
        self.accept_timeout = accept_timeout
        self.request_timeout = request_timeout
        self.max_http_body = max_http_body
        self.rights = {name: set(values) for name, values in (rights or {}).items()}
        self.stats: dict[str, int] = {
            "control_channels": 0,
            "renewals": 0,
            "expired_closes": 0,
            "accepted": 0,
            "rejected": 0,
            "http_requests": 0,
            "rendezvous": 0,
            "auth_failures": 0,
        }
        self._server: asyncio.Server | None = None
        self._controls: dict[str, list[_Control]] = {}
        self._accepts: dict[str, _PendingAccept] = {}
        self._requests: dict[str, _PendingRequest] = {}
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle -------------------------------------------------------------------------------------
    @property
    def scheme(self) -> str:
        """``wss`` with TLS, else ``ws``."""
        return "wss" if self.ssl else "ws"

    @property
    def url(self) -> str:
        """The WebSocket base URL, e.g. ``ws://127.0.0.1:40123``."""
        return f"{self.scheme}://{self.advertise_host}:{self.port}"

    @property
    def http_url(self) -> str:
        """The HTTP base URL, e.g. ``http://127.0.0.1:40123``."""
        return ("https" if self.ssl else "http") + f"://{self.advertise_host}:{self.port}"

    def address(self, path: str = "hc1") -> HybridConnectionAddress:
        """The address of a hybrid connection here, with the endpoint override set."""
        return HybridConnectionAddress(self.namespace, path, endpoint=self.url)

    def token_provider(self, key_name: str | None = None, ttl: float = 3600) -> SasTokenProvider:
        """A token provider for one of the configured keys (default: the first)."""
        name = key_name or next(iter(self.keys))
        return SasTokenProvider(name, self.keys[name], ttl)

    def connection_string(self, path: str | None = None) -> str:
        """A portal-style connection string for the first key."""
        name = next(iter(self.keys))
        text = f"Endpoint=sb://{self.namespace}/;SharedAccessKeyName={name};SharedAccessKey={self.keys[name]}"
        return text + (f";EntityPath={path}" if path else "")

    def listener_count(self, path: str = "hc1") -> int:
        """How many control channels are connected for ``path``."""
        return len(self._controls.get(path.strip("/"), []))

    async def start(self) -> None:
        """Start serving (on the same port after a restart)."""
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, ssl=self.ssl, limit=STREAM_LIMIT
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("relay emulator listening on %s", self.url)

    async def stop(self) -> None:
        """Stop: close control channels (1001), drop every connection, free the port."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for controls in list(self._controls.values()):
            for control in list(controls):
                with contextlib.suppress(Exception):
                    await control.ws.shutdown(1001, "emulator stopping")
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 5)
        self._controls.clear()
        self._accepts.clear()
        self._requests.clear()

    async def __aenter__(self) -> RelayEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- helpers ---------------------------------------------------------------------------------------
    def _match_entity(self, path: str) -> tuple[str, str] | None:
        """Split ``a/b/c`` into the longest configured entity and the suffix."""
        clean = unquote(path).strip("/")
        segments = clean.split("/")
        for cut in range(len(segments), 0, -1):
            candidate = "/".join(segments[:cut])
            if candidate in self.hybrid_connections:
                return candidate, "/".join(segments[cut:])
        return None

    def _check_token(
        self, raw: str | None, host_header: str, path: str, right: str = "Listen"
    ) -> tuple[int, str] | None:
        """None when fine, else (status, description).  ``right``: Listen or Send."""
        if not raw:
            return 401, "MissingToken: the request has no ServiceBusAuthorization token"
        try:
            token = SasToken.parse(raw)
            try:
                reached = urlsplit("//" + host_header).hostname or ""
            except ValueError:
                reached = ""
            hosts = (self.namespace, self.advertise_host, reached)
            token.validate(self.keys, hosts, path)
        except RelayTokenError as exc:
            self.stats["auth_failures"] += 1
            status = 403 if "audience" in str(exc) else 401
            return status, f"InvalidToken: {exc}"
        granted = self.rights.get(token.key_name, {"Listen", "Send", "Manage"})
        if right not in granted and "Manage" not in granted:
            self.stats["auth_failures"] += 1
            return 403, f"Unauthorized: rule {token.key_name!r} lacks the {right} right"
        return None

    async def _reply(self, writer: asyncio.StreamWriter, status: int, text: str) -> None:
        writer.write(simple_response(status, text))
        with contextlib.suppress(Exception):
            await writer.drain()

    def _address(self, entity: str, suffix: str, action: str, ident: str, query: str = "") -> str:
        path = quote(entity, safe="/") + (("/" + quote(suffix, safe="/")) if suffix else "")
        prefix = f"{query}&" if query else ""
        return f"{self.url}/$hc/{path}?{prefix}sb-hc-action={action}&sb-hc-id={ident}"

    # -- connection handler ----------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        try:
            try:
                head = await read_request_head(reader)
            except EOFError:
                return
            except RelayError as exc:
                await self._reply(writer, 400, f"BadRequest: {exc}")
                return
            try:
                parts = urlsplit(head.target)
            except ValueError as exc:
                await self._reply(writer, 400, f"BadRequest: request target {head.target[:80]!r}: {exc}")
                return
            if parts.path.startswith("/$hc/"):
                await self._on_websocket(reader, writer, head, parts.path[5:], parts.query)
            else:
                await self._on_http(reader, writer, head, parts.path, parts.query)
        except (ConnectionError, asyncio.IncompleteReadError, RelayConnectionClosed):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("relay emulator: unexpected error")
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    async def _on_websocket(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: RequestHead,
        path: str,
        query_text: str,
    ) -> None:
        query = dict(parse_qsl(query_text, keep_blank_values=True))
        action = query.get("sb-hc-action", "")
        if head.method != "GET" or not is_upgrade_request(head.headers):
            await self._reply(writer, 400, "BadRequest: a WebSocket upgrade is required under /$hc/")
            return
        match = self._match_entity(path)
        if match is None:
            await self._reply(writer, 404, f"EndpointNotFound: no Hybrid Connection at {unquote(path)!r}")
            return
        entity, suffix = match
        if action in ("listen", "connect"):
            token = header(head.headers, "ServiceBusAuthorization") or query.get("sb-hc-token")
            right = "Listen" if action == "listen" else "Send"
            problem = self._check_token(token, header(head.headers, "Host"), f"{entity}/{suffix}", right)
            if problem and (action == "listen" or self.requires_client_authorization):
                await self._reply(writer, *problem)
                return
            if action == "listen":
                assert token is not None
                await self._on_listen(reader, writer, head, entity, SasToken.parse(token).expiry)
            else:
                app_query = "&".join(
                    f"{quote(k, safe='')}={quote(v, safe='')}"
                    for k, v in parse_qsl(query_text, keep_blank_values=True)
                    if not k.startswith("sb-hc-")
                )
                await self._on_connect(reader, writer, head, entity, suffix, app_query)
        elif action == "accept":
            await self._on_accept(reader, writer, head, query)
        elif action == "request":
            await self._on_rendezvous(reader, writer, head, query)
        else:
            await self._reply(writer, 400, f"BadRequest: unknown sb-hc-action {action!r}")

    # -- listen ----------------------------------------------------------------------------------------
    async def _on_listen(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: RequestHead,
        entity: str,
        expiry: int,
    ) -> None:
        writer.write(server_handshake_response(head.headers))
        await writer.drain()
        control = _Control(RelayWebSocket(reader, writer, client=False), entity, expiry)
        self._controls.setdefault(entity, []).append(control)
        self.stats["control_channels"] += 1
        watchdog = asyncio.create_task(self._expiry_watchdog(control))
        try:
            await self._read_control(control)
        finally:
            watchdog.cancel()
            with contextlib.suppress(ValueError):
                self._controls.get(entity, []).remove(control)
            control.ws.abort()

    async def _expiry_watchdog(self, control: _Control) -> None:
        while True:
            remaining = control.expiry - time.time()
            if remaining <= 0:
                self.stats["expired_closes"] += 1
                log.info("relay emulator: control channel token expired; closing with 1008")
                with contextlib.suppress(Exception):
                    await control.ws.shutdown(1008, "token expired")
                control.ws.abort()
                return
            await asyncio.sleep(min(remaining, 1.0) + 0.01)

    async def _read_control(self, control: _Control) -> None:
        while True:
            try:
                message = await control.ws.recv()
            except RelayConnectionClosed:
                with contextlib.suppress(Exception):
                    await control.ws.shutdown(1000, "")
                return
            except RelayError:
                return
            if isinstance(message, bytes):
                continue  # stray (empty) binary frames are tolerated
            try:
                command = json.loads(message)
            except ValueError:
                continue
            if not isinstance(command, dict):
                continue
            if isinstance(command.get("renewToken"), dict):
                raw = str(command["renewToken"].get("token", ""))
                problem = self._check_token(raw, "", control.entity)
                if problem:
                    await control.ws.shutdown(1008, problem[1][:100])
                    control.ws.abort()
                    return
                control.expiry = SasToken.parse(raw).expiry
                self.stats["renewals"] += 1
            elif isinstance(command.get("response"), dict):
                response = command["response"]
                body = b""
                if response.get("body"):
                    try:
                        data = await control.ws.recv()
                    except RelayConnectionClosed:
                        return
                    body = data.encode("utf-8") if isinstance(data, str) else data
                pending = self._requests.get(str(response.get("requestId", "")))
                if pending is not None and not pending.response.done():
                    pending.response.set_result((response, body))

    def _pick(self, entity: str) -> _Control | None:
        controls = [c for c in self._controls.get(entity, []) if not c.ws.close_sent]
        return random.choice(controls) if controls else None

    # -- sender WebSocket ------------------------------------------------------------------------------
    async def _on_connect(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: RequestHead,
        entity: str,
        suffix: str,
        app_query: str,
    ) -> None:
        control = self._pick(entity)
        if control is None:
            await self._reply(writer, 404, f"EndpointNotFound: no listener connected for {entity!r}")
            return
        ident = str(uuid.uuid4())
        pending = _PendingAccept(asyncio.get_running_loop().create_future())
        self._accepts[ident] = pending
        connect_headers: dict[str, str] = {}
        for name, value in head.headers.raw_items():
            if name.lower() in ("servicebusauthorization", "authorization"):
                continue
            connect_headers[name] = f"{connect_headers[name]}, {value}" if name in connect_headers else value
        peer = writer.get_extra_info("peername") or ("", 0)
        accept = {
            "address": self._address(entity, suffix, "accept", ident, app_query),
            "id": ident,
            "connectHeaders": connect_headers,
            "remoteEndpoint": {"address": str(peer[0]), "port": int(peer[1])},
        }
        try:
            await control.send({"accept": accept})
            outcome = await asyncio.wait_for(pending.result, self.accept_timeout)
        except asyncio.TimeoutError:
            await self._reply(writer, 504, "GatewayTimeout: the listener did not accept in time")
            return
        except RelayConnectionClosed:
            await self._reply(writer, 502, "BadGateway: the listener went away")
            return
        finally:
            self._accepts.pop(ident, None)
        try:
            if isinstance(outcome, tuple):
                status, description = outcome
                self.stats["rejected"] += 1
                writer.write(
                    serialize_head(
                        f"HTTP/1.1 {status} {description or reason_phrase(status)}",
                        [("Content-Length", "0"), ("Connection", "close")],
                    )
                )
                await writer.drain()
                return
            listener_ws = outcome
            writer.write(server_handshake_response(head.headers, listener_ws.subprotocol))
            await writer.drain()
            sender_ws = RelayWebSocket(reader, writer, client=False)
            self.stats["accepted"] += 1
            await bridge(sender_ws, listener_ws)
        finally:
            pending.finished.set()

    async def _on_accept(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: RequestHead,
        query: dict[str, str],
    ) -> None:
        pending = self._accepts.get(query.get("sb-hc-id", ""))
        if pending is None or pending.result.done():
            await self._reply(writer, 403, "Forbidden: accept address unknown, used or expired")
            return
        status_text = query.get("sb-hc-statusCode") or query.get("statusCode")
        if status_text:
            description = query.get("sb-hc-statusDescription") or query.get("statusDescription") or ""
            status = int(status_text) if status_text.isdigit() else 500
            pending.result.set_result((status, description))
            await self._reply(writer, 410, "Gone: the sender was rejected")
            return
        offered = [p.strip() for p in header(head.headers, "Sec-WebSocket-Protocol").split(",") if p.strip()]
        subprotocol = offered[0] if offered else None
        writer.write(server_handshake_response(head.headers, subprotocol))
        await writer.drain()
        pending.result.set_result(RelayWebSocket(reader, writer, client=False, subprotocol=subprotocol))
        await pending.finished.wait()

    # -- HTTP sender -----------------------------------------------------------------------------------
    async def _on_http(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: RequestHead,
        path: str,
        query_text: str,
    ) -> None:
        match = self._match_entity(path)
        if match is None:
            await self._reply(writer, 404, f"EndpointNotFound: no Hybrid Connection at {unquote(path)!r}")
            return
        entity, suffix = match
        query = parse_qsl(query_text, keep_blank_values=True)
        token = header(head.headers, "ServiceBusAuthorization") or dict(query).get("sb-hc-token")
        used_authorization = False
        if not token and header(head.headers, "Authorization").startswith("SharedAccessSignature "):
            token, used_authorization = header(head.headers, "Authorization"), True
        if self.requires_client_authorization:
            problem = self._check_token(token, header(head.headers, "Host"), f"{entity}/{suffix}", "Send")
            if problem:
                await self._reply(writer, *problem)
                return
        try:
            body = await read_body(reader, head.headers, self.max_http_body)
        except BodyTooLarge as exc:
            await self._reply(writer, 413, f"PayloadTooLarge: {exc}")
            return
        control = self._pick(entity)
        if control is None:
            await self._reply(writer, 502, f"BadGateway: no listener connected for {entity!r}")
            return
        self.stats["http_requests"] += 1
        headers: dict[str, str] = {}
        for name, value in head.headers.raw_items():
            lower = name.lower()
            if lower in _HOP_HEADERS or (lower == "authorization" and used_authorization):
                continue
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        if body and not any(n.lower() == "content-length" for n in headers):
            headers["Content-Length"] = str(len(body))
        target = path
        kept = [(k, v) for k, v in query if not k.startswith("sb-hc-")]
        if kept:
            target += "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in kept)
        ident = str(uuid.uuid4())
        peer = writer.get_extra_info("peername") or ("", 0)
        request = {
            "address": self._address(entity, suffix, "request", ident),
            "id": ident,
            "requestTarget": target,
            "method": head.method,
            "remoteEndpoint": {"address": str(peer[0]), "port": int(peer[1])},
            "requestHeaders": headers,
            "body": bool(body),
        }
        pending = _PendingRequest(request, body, asyncio.get_running_loop().create_future())
        self._requests[ident] = pending
        try:
            if len(json.dumps({"request": request})) + len(body) <= CONTROL_CHANNEL_LIMIT:
                await control.send({"request": request}, body if body else None)
            else:
                pending.pointer = True
                await control.send({"request": {"address": request["address"], "id": ident}})
            response, response_body = await asyncio.wait_for(pending.response, self.request_timeout)
        except asyncio.TimeoutError:
            await self._reply(writer, 504, "GatewayTimeout: the listener did not respond within the timeout")
            return
        except RelayConnectionClosed:
            await self._reply(writer, 502, "BadGateway: the listener went away")
            return
        except RelayError as exc:
            await self._reply(writer, 502, f"BadGateway: {exc}")
            return
        finally:
            self._requests.pop(ident, None)
        try:
            status = int(response.get("statusCode", 200))
            if not 100 <= status <= 599:
                raise ValueError(status)
        except (TypeError, ValueError):
            await self._reply(writer, 502, f"BadGateway: invalid statusCode {response.get('statusCode')!r}")
            return
        description = str(response.get("statusDescription") or reason_phrase(status)).replace("\r", " ")
        description = description.replace("\n", " ")
        headers_in = response.get("responseHeaders")
        out = Headers()
        for name, value in headers_in.items() if isinstance(headers_in, dict) else []:
            if "\r" in f"{name}{value}" or "\n" in f"{name}{value}" or ":" in str(name):
                continue  # never let a listener inject header lines
            if str(name).lower() not in ("content-length", "transfer-encoding", "connection"):
                out[str(name)] = str(value)
        out["Content-Length"] = str(len(response_body))
        out["Via"] = f"1.1 {self.namespace}"
        out["Connection"] = "close"
        writer.write(serialize_head(f"HTTP/1.1 {status} {description}", out) + response_body)
        await writer.drain()

    async def _on_rendezvous(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: RequestHead,
        query: dict[str, str],
    ) -> None:
        pending = self._requests.get(query.get("sb-hc-id", ""))
        if pending is None or pending.response.done():
            await self._reply(writer, 403, "Forbidden: request address unknown, used or expired")
            return
        writer.write(server_handshake_response(head.headers))
        await writer.drain()
        self.stats["rendezvous"] += 1
        ws = RelayWebSocket(reader, writer, client=False, max_size=self.max_http_body + CONTROL_CHANNEL_LIMIT)
        try:
            if pending.pointer:
                await ws.send(json.dumps({"request": pending.request}))
                if pending.body:
                    await ws.send(pending.body)
            while True:
                message = await ws.recv()
                if isinstance(message, bytes):
                    continue
                command = json.loads(message)
                if isinstance(command, dict) and isinstance(command.get("response"), dict):
                    break
            response = command["response"]
            body = b""
            if response.get("body"):
                data = await ws.recv()
                body = data.encode("utf-8") if isinstance(data, str) else data
            if not pending.response.done():
                pending.response.set_result((response, body))
            await ws.close(1000, "")
        except RelayConnectionClosed as exc:
            if not pending.response.done():
                if exc.code == 1009:
                    pending.response.set_result(
                        ({"statusCode": 413, "statusDescription": "Payload Too Large"}, b"")
                    )
                else:
                    pending.response.set_exception(
                        RelayError(f"rendezvous closed ({exc.code}) before a response")
                    )
        except (ValueError, RelayError) as exc:
            if not pending.response.done():
                pending.response.set_exception(RelayError(f"bad rendezvous response: {exc}"))
            ws.abort()


async def bridge(a: RelayWebSocket, b: RelayWebSocket) -> None:
    """Relay messages both ways, keeping text/binary, forwarding close frames as half-closes."""

    async def pump(src: RelayWebSocket, dst: RelayWebSocket) -> None:
        try:
            while True:
                message = await src.recv()
                await dst.send(message)
        except RelayConnectionClosed as exc:
            code = 1001 if exc.code in (1005, 1006) else exc.code
            await dst.shutdown(code, exc.reason if code == exc.code else "peer went away")
            if exc.code == 1006:
                dst.abort()
        except RelayError:
            await dst.shutdown(1011, "relay error")
            dst.abort()
            src.abort()

    try:
        await asyncio.gather(pump(a, b), pump(b, a))
    finally:
        a.abort()
        b.abort()
