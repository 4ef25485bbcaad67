"""Our listener and sender against the loopback emulator, on every path of the protocol."""

from __future__ import annotations

import asyncio
import json
import os

import httpx
import pytest

from oftp2_provider.relay import (
    HybridConnectionAddress,
    HybridConnectionClient,
    HybridConnectionListener,
    RelayAuthorizationError,
    RelayConfigurationError,
    RelayConnectionClosed,
    RelayedConnectionRequest,
    RelayedHttpRequest,
    RelayEmulator,
    RelayEndpointNotFoundError,
    RelayRejectedError,
    SasToken,
    SasTokenProvider,
)


async def _next_http(listener: HybridConnectionListener) -> RelayedHttpRequest:
    event = await listener.next_event(timeout=10)
    assert isinstance(event, RelayedHttpRequest)
    return event


async def _next_accept(listener: HybridConnectionListener) -> RelayedConnectionRequest:
    event = await listener.next_event(timeout=10)
    assert isinstance(event, RelayedConnectionRequest)
    return event


async def test_small_http_request_on_control_channel(
    emulator: RelayEmulator, listener: HybridConnectionListener, sender: HybridConnectionClient
) -> None:
    call = asyncio.create_task(
        sender.request("POST", "api/orders", query={"x": "1"}, headers={"X-Trace": "t1"}, body=b"hello")
    )
    request = await _next_http(listener)
    assert request.method == "POST"
    assert request.target == "/hc1/api/orders?x=1"
    assert request.body == b"hello"
    assert request.headers["X-Trace"] == "t1"
    assert not any(k.lower() == "servicebusauthorization" for k in request.headers)
    await request.respond(201, {"X-Answer": "42"}, b"created", description="Created it")
    response = await call
    assert (response.status, response.reason, response.body) == (201, "Created it", b"created")
    assert response.headers["X-Answer"] == "42"
    assert response.headers["Via"].endswith(emulator.namespace)
    assert emulator.stats["rendezvous"] == 0


async def test_answer_later_after_persisting(
    listener: HybridConnectionListener, sender: HybridConnectionClient
) -> None:
    """The trigger persists the event first and answers afterwards; the sender waits meanwhile."""
    call = asyncio.create_task(sender.request("PUT", body=b"x"))
    request = await _next_http(listener)
    await asyncio.sleep(0.5)
    assert not call.done()
    await request.respond(202, body="queued")
    assert (await call).status == 202


async def test_large_request_and_response_through_rendezvous(
    emulator: RelayEmulator, listener: HybridConnectionListener, sender: HybridConnectionClient
) -> None:
    upload = os.urandom(300 * 1024)
    download = os.urandom(500 * 1024)
    call = asyncio.create_task(sender.request("POST", "big", body=upload))
    request = await _next_http(listener)
    assert request.body == upload
    assert request.target == "/hc1/big"
    await request.respond(200, {"Content-Type": "application/octet-stream"}, download)
    response = await call
    assert response.status == 200 and response.body == download
    assert emulator.stats["rendezvous"] == 1


async def test_small_request_large_response_uses_rendezvous(
    emulator: RelayEmulator, listener: HybridConnectionListener, sender: HybridConnectionClient
) -> None:
    call = asyncio.create_task(sender.request("GET", "report"))
    request = await _next_http(listener)
    assert request.body == b""
    await request.respond(200, {}, b"r" * (65 * 1024))
    response = await call
    assert response.body == b"r" * (65 * 1024)
    assert emulator.stats["rendezvous"] == 1


async def test_boundary_exactly_at_64k_is_not_silently_truncated(
    listener: HybridConnectionListener, sender: HybridConnectionClient
) -> None:
    for size in (64 * 1024 - 400, 64 * 1024, 64 * 1024 + 1):
        body = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
        call = asyncio.create_task(sender.request("POST", body=body))
        request = await _next_http(listener)
        assert request.body == body, size
        await request.respond(200, {}, body)
        assert (await call).body == body, size


async def test_independent_http_client_httpx(
    emulator: RelayEmulator, listener: HybridConnectionListener
) -> None:
    """A third-party HTTP client (httpx) as sender, token in the sb-hc-token query parameter."""
    token = emulator.token_provider().get_token(emulator.address("hc1").resource).raw
    async with httpx.AsyncClient() as client:
        call = asyncio.create_task(
            client.post(f"{emulator.http_url}/hc1/x", params={"sb-hc-token": token, "a": "b"}, content=b"q")
        )
        request = await _next_http(listener)
        assert request.target == "/hc1/x?a=b"
        await request.respond(200, {"Content-Type": "application/json"}, json.dumps({"ok": True}))
        response = await call
    assert response.status_code == 200 and response.json() == {"ok": True}


async def test_http_sender_errors(emulator: RelayEmulator, sender: HybridConnectionClient) -> None:
    # no listener connected → 502
    assert (await sender.request("GET")).status == 502
    # unknown hybrid connection → 404
    other = HybridConnectionClient(
        HybridConnectionAddress(emulator.namespace, "nope", emulator.url), emulator.token_provider()
    )
    assert (await other.request("GET")).status == 404
    # anonymous sender when authorization is required → 401
    anonymous = HybridConnectionClient(emulator.address("hc1"))
    assert (await anonymous.request("GET")).status == 401


async def test_listener_timeout_gives_504(sender: HybridConnectionClient) -> None:
    emu = RelayEmulator(request_timeout=0.5)
    async with emu, HybridConnectionListener(emu.address("hc1"), emu.token_provider()) as lst:
        client = HybridConnectionClient(emu.address("hc1"), emu.token_provider())
        response = await client.request("GET")
        assert response.status == 504
        event = await lst.next_event(timeout=5)
        assert isinstance(event, RelayedHttpRequest)


async def test_websocket_accept_echo_and_subprotocol(
    listener: HybridConnectionListener, sender: HybridConnectionClient
) -> None:
    connecting = asyncio.create_task(sender.connect("chat", {"room": "42"}, subprotocols=["oftp", "x"]))
    accept = await _next_accept(listener)
    assert accept.target == "/$hc/hc1/chat?room=42"
    assert accept.query == {"room": "42"}
    assert accept.subprotocols == ["oftp", "x"]
    server_ws = await accept.accept(subprotocol="oftp")
    client_ws = await connecting
    assert client_ws.subprotocol == "oftp"
    await client_ws.send_text("héllo")
    await client_ws.send_bytes(b"\x00\x01" * 70000)
    assert await server_ws.receive() == "héllo"
    assert await server_ws.receive() == b"\x00\x01" * 70000
    await server_ws.send_bytes(b"back")
    assert await client_ws.receive() == b"back"
    await client_ws.close()
    with pytest.raises(RelayConnectionClosed) as closed:
        await server_ws.receive()
    assert closed.value.code == 1000
    await server_ws.close()


async def test_websocket_send_file(
    tmp_path: object, listener: HybridConnectionListener, sender: HybridConnectionClient
) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "payload.bin"
    path.write_bytes(os.urandom(200_000))
    connecting = asyncio.create_task(sender.connect())
    server_ws = await (await _next_accept(listener)).accept()
    client_ws = await connecting
    assert await server_ws.send_file(path, chunk_size=50_000) == 200_000
    await server_ws.shutdown()
    received = b"".join([m async for m in client_ws if isinstance(m, bytes)])
    assert received == path.read_bytes()
    await client_ws.close()
    await server_ws.close()


async def test_websocket_reject(
    emulator: RelayEmulator, listener: HybridConnectionListener, sender: HybridConnectionClient
) -> None:
    connecting = asyncio.create_task(sender.connect())
    accept = await _next_accept(listener)
    await accept.reject(403, "Go away, partner unknown")
    with pytest.raises(RelayRejectedError) as rejected:
        await connecting
    assert rejected.value.status == 403
    assert "Go away" in rejected.value.description
    assert emulator.stats["rejected"] == 1


async def test_websocket_sender_without_listener_or_token(
    emulator: RelayEmulator, sender: HybridConnectionClient
) -> None:
    with pytest.raises(RelayEndpointNotFoundError):
        await sender.connect()
    forged = SasTokenProvider("RootManageSharedAccessKey", "not-the-key")
    with pytest.raises(RelayAuthorizationError):
        await HybridConnectionClient(emulator.address("hc1"), forged).connect()


async def test_listener_bad_token_is_a_configuration_error(emulator: RelayEmulator) -> None:
    forged = SasTokenProvider("RootManageSharedAccessKey", "wrong-key")
    with pytest.raises(RelayAuthorizationError, match="refused the token") as err:
        await HybridConnectionListener(emulator.address("hc1"), forged).open()
    assert err.value.status == 401
    expired = SasTokenProvider.from_token(
        SasToken.create(emulator.address("hc1").resource, "RootManageSharedAccessKey", "k", 1).raw.replace(
            "se=", "se=1"
        )
    )
    with pytest.raises(RelayAuthorizationError):
        await HybridConnectionListener(emulator.address("hc1"), expired).open()
    unknown_key = SasTokenProvider("NoSuchRule", emulator.keys["RootManageSharedAccessKey"])
    with pytest.raises(RelayAuthorizationError):
        await HybridConnectionListener(emulator.address("hc1"), unknown_key).open()
    other_entity = SasTokenProvider.from_token(
        emulator.token_provider().get_token(emulator.address("tunnel").resource).raw
    )
    with pytest.raises(RelayAuthorizationError) as wrong_audience:
        await HybridConnectionListener(emulator.address("hc1"), other_entity).open()
    assert wrong_audience.value.status == 403
    assert emulator.stats["auth_failures"] == 4


async def test_listener_unknown_entity_is_404(emulator: RelayEmulator) -> None:
    with pytest.raises(RelayEndpointNotFoundError):
        await HybridConnectionListener(emulator.address("missing"), emulator.token_provider()).open()


async def test_token_renewal_keeps_the_control_channel(emulator: RelayEmulator) -> None:
    tokens = emulator.token_provider(ttl=3)
    async with HybridConnectionListener(emulator.address("hc1"), tokens) as lst:
        await asyncio.sleep(4.5)
        assert lst.renewals >= 2
        assert emulator.stats["renewals"] >= 2
        assert emulator.stats["expired_closes"] == 0
        assert lst.connects == 1 and lst.is_online
        client = HybridConnectionClient(emulator.address("hc1"), emulator.token_provider())
        call = asyncio.create_task(client.request("GET"))
        await (await _next_http(lst)).respond(200, body="still here")
        assert (await call).text == "still here"


async def test_unrenewed_token_is_dropped_with_1008(emulator: RelayEmulator) -> None:
    """The emulator enforces expiry: a fixed (unrenewable) token loses the control channel."""
    token = SasToken.create(
        emulator.address("hc1").resource,
        "RootManageSharedAccessKey",
        emulator.keys["RootManageSharedAccessKey"],
        ttl=2,
    )
    lst = HybridConnectionListener(
        emulator.address("hc1"), SasTokenProvider.from_token(token.raw), reconnect_delays=[0.2]
    )
    await lst.open()
    try:
        await asyncio.sleep(3.5)
        assert emulator.stats["expired_closes"] == 1
        with pytest.raises(RelayAuthorizationError):
            await lst.next_event(timeout=5)
    finally:
        await lst.close()


async def test_emulator_restart_listener_reconnects(emulator: RelayEmulator) -> None:
    async with HybridConnectionListener(emulator.address("hc1"), emulator.token_provider()) as lst:
        assert lst.connects == 1
        await emulator.stop()
        await asyncio.sleep(0.3)
        assert not lst.is_online
        await emulator.start()
        await lst.wait_online(timeout=10)
        assert lst.connects == 2
        client = HybridConnectionClient(emulator.address("hc1"), emulator.token_provider())
        call = asyncio.create_task(client.request("POST", body=b"after restart"))
        request = await _next_http(lst)
        assert request.body == b"after restart"
        await request.respond(200)
        assert (await call).status == 200


async def test_oversize_bodies(listener: HybridConnectionListener) -> None:
    emu = RelayEmulator(max_http_body=100_000)
    async with (
        emu,
        HybridConnectionListener(
            emu.address("hc1"), emu.token_provider(), max_request_body=150_000
        ) as small_listener,
    ):
        client = HybridConnectionClient(emu.address("hc1"), emu.token_provider())
        # above the relay's own limit: 413 from the relay, nothing reaches the listener
        assert (await client.request("POST", body=b"x" * 100_001)).status == 413
    emu2 = RelayEmulator()
    async with (
        emu2,
        HybridConnectionListener(
            emu2.address("hc1"), emu2.token_provider(), max_request_body=150_000
        ) as small_listener,
    ):
        client = HybridConnectionClient(emu2.address("hc1"), emu2.token_provider())
        # above the listener's limit: the rendezvous is closed with 1009, the sender gets 413
        assert (await client.request("POST", body=b"x" * 200_000)).status == 413
        # and the listener is still healthy afterwards
        call = asyncio.create_task(client.request("POST", body=b"y" * 100_000))
        request = await _next_http(small_listener)
        assert request.body == b"y" * 100_000
        await request.respond(200)
        assert (await call).status == 200


async def test_malformed_control_messages_are_ignored(emulator: RelayEmulator) -> None:
    """Unknown JSON, non-JSON and stray binary frames do not disturb the listener."""
    async with HybridConnectionListener(emulator.address("hc1"), emulator.token_provider()) as lst:
        control = emulator._controls["hc1"][0]
        await control.ws.send("not json")
        await control.ws.send(json.dumps({"somethingNew": {}}))
        await control.ws.send(b"")
        await control.ws.send(json.dumps({"accept": {"id": "x"}}))
        await control.ws.send(
            json.dumps({"accept": {"id": 1, "address": "ws://x/", "remoteEndpoint": "bad"}})
        )
        await control.ws.send(json.dumps({"accept": {"id": 2, "address": 5, "connectHeaders": [1, 2]}}))
        await control.ws.send(
            json.dumps({"request": {"id": 3, "method": "GET", "remoteEndpoint": [], "requestHeaders": 7}})
        )
        await control.ws.send(json.dumps({"request": {"id": 4}}))  # rendezvous pointer without address
        await control.ws.send(json.dumps([1, 2, 3]))
        client = HybridConnectionClient(emulator.address("hc1"), emulator.token_provider())
        call = asyncio.create_task(client.request("GET"))
        # the malformed but usable ones surface as events; the real request follows them
        seen = {}
        while True:
            event = await lst.next_event(timeout=10)
            if isinstance(event, RelayedHttpRequest) and event.id != "3":
                break
            seen[event.id] = event
        assert sorted(seen) == ["1", "2", "3"]
        assert seen["1"].remote_endpoint == {} and seen["3"].remote_endpoint == {}
        assert seen["2"].headers == {} and seen["3"].headers == {}
        await event.respond(204)
        assert (await call).status == 204
        assert lst.connects == 1 and lst.is_online


class _BlackholeProxy:
    """A TCP proxy whose existing connections can be made to swallow traffic (a dead network path)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.generation = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def blackhole_existing(self) -> None:
        self.generation += 1

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        born = self.generation
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                if self.generation == born:
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer), return_exceptions=True)


async def test_keepalive_detects_a_dead_path_and_reconnects(emulator: RelayEmulator) -> None:
    proxy = _BlackholeProxy(emulator.port)
    proxy_port = await proxy.start()
    address = HybridConnectionAddress(emulator.namespace, "hc1", f"ws://127.0.0.1:{proxy_port}")
    lst = HybridConnectionListener(
        address, emulator.token_provider(), keepalive_interval=0.2, keepalive_timeout=0.3
    )
    async with lst:
        await asyncio.sleep(0.6)
        assert lst.connects == 1  # pongs flow: no spurious reconnect
        proxy.blackhole_existing()
        for _ in range(50):
            await asyncio.sleep(0.1)
            if lst.connects == 2 and lst.is_online:
                break
        assert lst.connects == 2 and lst.is_online
        for _ in range(50):  # the proxy passes the listener's FIN on: the relay drops the dead channel
            if emulator.listener_count("hc1") == 1:
                break
            await asyncio.sleep(0.1)
        assert emulator.listener_count("hc1") == 1
        client = HybridConnectionClient(emulator.address("hc1"), emulator.token_provider())
        call = asyncio.create_task(client.request("GET"))
        await (await _next_http(lst)).respond(200, body="alive")
        assert (await call).text == "alive"
    assert proxy.server is not None
    proxy.server.close()


async def test_close_is_a_clean_1000_and_the_relay_forgets_the_listener(emulator: RelayEmulator) -> None:
    lst = HybridConnectionListener(emulator.address("hc1"), emulator.token_provider())
    await lst.open()
    assert emulator.listener_count("hc1") == 1
    await lst.close()
    for _ in range(20):
        if emulator.listener_count("hc1") == 0:
            break
        await asyncio.sleep(0.05)
    assert emulator.listener_count("hc1") == 0
    with pytest.raises(StopAsyncIteration):
        await lst.next_event(timeout=1)
    await lst.open()  # reopen works and iterates again
    client = HybridConnectionClient(emulator.address("hc1"), emulator.token_provider())
    call = asyncio.create_task(client.request("GET", headers={"X-Case": "v"}))
    request = await _next_http(lst)
    assert request.get_header("x-case") == "v"
    await request.respond(200)
    assert (await call).status == 200
    await lst.close()


async def test_garbage_and_duplicate_headers_get_http_answers(emulator: RelayEmulator) -> None:
    for raw, status in (
        (b"NONSENSE\r\n\r\n", b"400"),
        (b"GET /$hc/hc1?sb-hc-action=listen HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),  # no upgrade
        (
            b"POST /hc1 HTTP/1.1\r\nHost: x\r\nServiceBusAuthorization: a\r\nServiceBusAuthorization: b\r\n"
            b"Content-Length: 0\r\n\r\n",
            b"401",
        ),
        (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", b"404"),
        (b"GET http://[x/hc1 HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
        (
            b"POST /hc1 HTTP/1.1\r\nHost: [x\r\nServiceBusAuthorization: SharedAccessSignature a=b\r\n\r\n",
            b"401",
        ),
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", emulator.port)
        writer.write(raw)
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert answer.split(b" ")[1] == status, (raw, answer)


async def test_sender_refuses_an_oversize_response(
    listener: HybridConnectionListener, sender: HybridConnectionClient
) -> None:
    from oftp2_provider.relay import RelayBodyTooLargeError

    call = asyncio.create_task(sender.request("GET", max_response_body=1000))
    await (await _next_http(listener)).respond(200, {}, b"z" * 1001)
    with pytest.raises(RelayBodyTooLargeError, match="above 1000 bytes"):
        await call


async def test_rule_rights_and_accept_timeout() -> None:
    emu = RelayEmulator(
        keys={"listen-only": "k1", "send-only": "k2"},
        rights={"listen-only": ["Listen"], "send-only": ["Send"]},
        accept_timeout=0.5,
    )
    async with emu:
        with pytest.raises(RelayAuthorizationError, match="lacks the Listen right"):
            await HybridConnectionListener(emu.address("hc1"), emu.token_provider("send-only")).open()
        async with HybridConnectionListener(emu.address("hc1"), emu.token_provider("listen-only")) as lst:
            wrong = HybridConnectionClient(emu.address("hc1"), emu.token_provider("listen-only"))
            assert (await wrong.request("GET")).status == 403
            sender = HybridConnectionClient(emu.address("hc1"), emu.token_provider("send-only"))
            # a listener that never answers the accept: the held sender gets 504
            with pytest.raises(RelayRejectedError) as timed_out:
                await sender.connect()
            assert timed_out.value.status == 504
            assert isinstance(await lst.next_event(timeout=1), RelayedConnectionRequest)


async def test_emulator_survives_a_misbehaving_listener(emulator: RelayEmulator) -> None:
    """A hand-driven listener answers with a bad status and header injection attempts."""
    from oftp2_provider.relay.websocket import connect

    address = emulator.address("hc1")
    token = emulator.token_provider().get_token(address.resource).raw
    control = await connect(address.listen_url("raw"), headers=[("ServiceBusAuthorization", token)])
    client = HybridConnectionClient(address, emulator.token_provider())
    try:
        for status, headers, expected in (
            ("abc", {}, 502),
            (999, {}, 502),
            (200, {"X-Ok": "1", "X-Evil": "a\r\nSet-Cookie: x=1", "Bad:Name": "v"}, 200),
        ):
            call = asyncio.create_task(client.request("GET"))
            command = json.loads(await control.recv())
            request_id = command["request"]["id"]
            await control.send(
                json.dumps(
                    {
                        "response": {
                            "requestId": request_id,
                            "statusCode": status,
                            "responseHeaders": headers,
                            "body": False,
                        }
                    }
                )
            )
            response = await call
            assert response.status == expected
            if expected == 200:
                assert response.headers["X-Ok"] == "1"
                assert "Set-Cookie" not in response.headers and "X-Evil" not in response.headers
    finally:
        await control.close()
    with pytest.raises(RelayConfigurationError, match=r"100\.\.599"):
        await RelayedHttpRequest("i", "GET", "/", {}, b"", {}, "", None).respond(1000)  # type: ignore[arg-type]
