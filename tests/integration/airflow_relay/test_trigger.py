"""AzureRelayTrigger against the loopback emulator, driven by Airflow's real SharedStreamManager.

Requests go through the relay with our sender (HybridConnectionClient); the trigger runs in ack
mode, so a sender must hear 202 only after the event's persistence was confirmed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from airflow.triggers.base import TriggerEvent
from airflow.triggers.shared_stream import SharedStreamManager

from oftp2_provider.relay import (
    HybridConnectionClient,
    RelayAuthorizationError,
    RelayConnectionClosed,
    RelayEmulator,
    RelayEndpointNotFoundError,
    RelayHttpResponse,
)
from oftp2_provider.triggers.azure_relay import AzureRelayTrigger, decode_body


class Watcher:
    """One subscriber of the shared stream, as the triggerer runs it."""

    def __init__(self, manager: SharedStreamManager, trigger: AzureRelayTrigger, trigger_id: int = 1) -> None:
        self.manager = manager
        self.trigger = trigger
        self.trigger_id = trigger_id
        self.key = trigger.shared_stream_key()
        stream = manager.subscribe(trigger_id=trigger_id, trigger=trigger, key=self.key)
        self.events = trigger.filter_shared_stream(stream)
        self._next: asyncio.Future[TriggerEvent] | None = None

    async def next(self, timeout: float = 10) -> tuple[dict[str, Any], int | None]:
        """The next event and its persist-confirmation seq (pulling it closes the previous window)."""
        if self._next is None:
            self._next = asyncio.ensure_future(self.events.__anext__())
        event = await asyncio.wait_for(asyncio.shield(self._next), timeout)
        self._next = None
        return dict(event.payload), self.manager.bind_pending_event(trigger_id=self.trigger_id, key=self.key)

    def move_on(self) -> None:
        """Start waiting for the next event: the window of the current one closes."""
        if self._next is None:
            self._next = asyncio.ensure_future(self.events.__anext__())

    async def close(self) -> None:
        if self._next is not None:
            self._next.cancel()
        await self.manager.unsubscribe(self.trigger_id, self.key)
        await self.events.aclose()


@asynccontextmanager
async def watching(trigger: AzureRelayTrigger, ack_timeout: float = 30) -> AsyncIterator[Watcher]:
    watcher = Watcher(SharedStreamManager(ack_timeout=ack_timeout), trigger)
    try:
        yield watcher
    finally:
        await watcher.close()


async def _until(check: Callable[[], bool], timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def _sender(emulator: RelayEmulator, path: str = "hooks") -> HybridConnectionClient:
    return HybridConnectionClient(emulator.address(path), emulator.token_provider())


async def _post(
    emulator: RelayEmulator, body: bytes, suffix: str = "orders", **kw: Any
) -> asyncio.Task[RelayHttpResponse]:
    """Send once the trigger's listener is online (the emulator answers 502 before)."""
    await _until(lambda: emulator.listener_count("hooks") > 0)
    return asyncio.ensure_future(_sender(emulator).request("POST", suffix, body=body, **kw))


async def test_request_answered_only_after_the_event_is_persisted(
    emulator: RelayEmulator, relay_conn: Callable[..., str]
) -> None:
    trigger = AzureRelayTrigger(relay_conn(), response_status=202, response_body="stored")
    async with watching(trigger) as w:
        first = await _post(emulator, b'{"order": 1}', query={"x": "1"}, headers={"X-Trace": "t1"})
        payload, seq = await w.next()
        assert seq is not None, "the stream must run in ack mode"
        assert payload["kind"] == "http_request" and payload["method"] == "POST"
        assert payload["target"] == "/hooks/orders?x=1" and payload["path"] == "/hooks/orders"
        assert payload["query"] == {"x": "1"} and payload["headers"]["X-Trace"] == "t1"
        assert payload["body"] == '{"order": 1}' and payload["body_encoding"] == "text"
        assert payload["hybrid_connection"] == "hooks" and payload["body_size"] == 12
        w.move_on()  # the watcher moved past the event, but Airflow has not stored it yet
        await asyncio.sleep(0.5)
        assert not first.done(), "the sender must not hear an answer before the event is stored"
        second = await _post(emulator, b"two")
        w.manager.confirm_persisted([seq])
        response = await asyncio.wait_for(first, 10)
        assert (response.status, response.body) == (202, b"stored")
        payload2, seq2 = await w.next()
        assert payload2["body"] == "two" and not second.done()
        w.move_on()
        assert seq2 is not None
        w.manager.confirm_persisted([seq2])
        assert (await asyncio.wait_for(second, 10)).status == 202


async def test_large_binary_body_through_rendezvous_and_oversize_refused(
    emulator: RelayEmulator, relay_conn: Callable[..., str]
) -> None:
    trigger = AzureRelayTrigger(relay_conn(), max_body=300_000)
    blob = os.urandom(200_000)  # above 64 kB: the relay delivers it by rendezvous
    async with watching(trigger) as w:
        call = await _post(emulator, blob)
        payload, seq = await w.next()
        assert payload["body_encoding"] == "base64" and payload["body_size"] == len(blob)
        assert decode_body(payload) == blob
        too_big = await (await _post(emulator, b"x" * 300_001))
        assert too_big.status == 413 and b"300000" in too_big.body
        w.move_on()
        assert seq is not None
        w.manager.confirm_persisted([seq])
        assert (await asyncio.wait_for(call, 10)).status == 202
        w.move_on()
        await asyncio.sleep(0.3)
        assert w._next is not None and not w._next.done(), "the oversize request must not become an event"


async def test_unstored_event_gets_the_error_status(
    emulator: RelayEmulator, relay_conn: Callable[..., str]
) -> None:
    trigger = AzureRelayTrigger(relay_conn(), error_status=503)
    w = Watcher(SharedStreamManager(ack_timeout=30), trigger)
    call = await _post(emulator, b"lost?")
    payload, seq = await w.next()
    assert payload["body"] == "lost?" and seq is not None
    await w.close()  # the triggerer stops before Airflow confirmed the event
    response = await asyncio.wait_for(call, 10)
    assert response.status == 503 and b"retry" in response.body


async def test_ack_timeout_fails_the_event_with_the_error_status(
    emulator: RelayEmulator, relay_conn: Callable[..., str]
) -> None:
    trigger = AzureRelayTrigger(relay_conn(), error_status=500)
    async with watching(trigger, ack_timeout=0.5) as w:
        call = await _post(emulator, b"never confirmed")
        await w.next()
        response = await asyncio.wait_for(call, 10)
        assert response.status == 500


async def test_websocket_messages_become_one_event_closed_after_persist(
    emulator: RelayEmulator, relay_conn: Callable[..., str]
) -> None:
    trigger = AzureRelayTrigger(relay_conn())
    async with watching(trigger) as w:
        await _until(lambda: emulator.listener_count("hooks") > 0)
        ws = await _sender(emulator).connect("feed", {"partner": "acme"})
        await ws.send_text("hello ")
        await ws.send_text("world")
        await ws.shutdown(1000, "done")  # half-close: we wait for the listener's verdict
        payload, seq = await w.next()
        assert payload["kind"] == "websocket" and payload["messages"] == 2
        assert payload["body"] == "hello world" and payload["query"] == {"partner": "acme"}
        assert payload["path"] == "/hooks/feed" and payload["target"] == "/hooks/feed?partner=acme"
        w.move_on()
        verdict = asyncio.ensure_future(ws.recv())
        await asyncio.sleep(0.3)
        assert not verdict.done(), "the WebSocket must stay open until the event is stored"
        assert seq is not None
        w.manager.confirm_persisted([seq])
        with pytest.raises(RelayConnectionClosed) as closed:
            await asyncio.wait_for(verdict, 10)
        assert (closed.value.code, closed.value.reason) == (1000, "stored")
        ws.abort()


async def test_websockets_can_be_refused(emulator: RelayEmulator, relay_conn: Callable[..., str]) -> None:
    from oftp2_provider.relay import RelayRejectedError

    async with watching(AzureRelayTrigger(relay_conn(), accept_websockets=False)):
        await _until(lambda: emulator.listener_count("hooks") > 0)
        with pytest.raises(RelayRejectedError) as info:
            await _sender(emulator).connect()
        assert info.value.status == 403


async def test_listener_survives_an_emulator_restart(
    emulator: RelayEmulator, relay_conn: Callable[..., str]
) -> None:
    trigger = AzureRelayTrigger(relay_conn())
    async with watching(trigger) as w:
        await _until(lambda: emulator.listener_count("hooks") == 1)
        await emulator.stop()
        await emulator.start()
        await _until(lambda: emulator.listener_count("hooks") == 1, timeout=15)
        call = await _post(emulator, b"after restart")
        payload, seq = await w.next()
        assert payload["body"] == "after restart" and seq is not None
        w.move_on()
        w.manager.confirm_persisted([seq])
        assert (await asyncio.wait_for(call, 10)).status == 202


@pytest.mark.parametrize(
    ("conn_kwargs", "error"),
    [
        ({"key": "wrong"}, RelayAuthorizationError),
        ({"hybrid_connection": "nope"}, RelayEndpointNotFoundError),
    ],
)
async def test_configuration_errors_fail_the_stream(
    emulator: RelayEmulator, relay_conn: Callable[..., str], conn_kwargs: dict[str, Any], error: type
) -> None:
    async with watching(AzureRelayTrigger(relay_conn("relay_bad", **conn_kwargs))) as w:
        with pytest.raises(error):
            await w.next()


async def test_standalone_run_answers_when_the_next_event_is_asked_for(
    emulator: RelayEmulator, relay_conn: Callable[..., str]
) -> None:
    trigger = AzureRelayTrigger(relay_conn(), response_status=200, response_body="taken")
    events = trigger.run()
    nxt: Awaitable[TriggerEvent] = asyncio.ensure_future(events.__anext__())
    try:
        call = await _post(emulator, b"solo")
        event = await asyncio.wait_for(nxt, 10)
        assert event.payload["body"] == "solo"
        await asyncio.sleep(0.3)
        assert not call.done()
        nxt = asyncio.ensure_future(events.__anext__())
        response = await asyncio.wait_for(call, 10)
        assert (response.status, response.body) == (200, b"taken")
    finally:
        nxt.cancel()  # type: ignore[attr-defined]
        with contextlib.suppress(asyncio.CancelledError):
            await nxt
        await events.aclose()
    await _until(lambda: emulator.listener_count("hooks") == 0)


async def test_the_trigger_never_blocks_the_loop(
    emulator: RelayEmulator, relay_conn: Callable[..., str]
) -> None:
    trigger = AzureRelayTrigger(relay_conn(), max_body=2_000_000)
    async with watching(trigger) as w:
        await _until(lambda: emulator.listener_count("hooks") > 0)
        sender = _sender(emulator)
        calls = [asyncio.ensure_future(sender.request("POST", body=os.urandom(500_000))) for _ in range(8)]
        ticks, worst = 0, 0.0
        seqs: list[int] = []
        end = time.monotonic() + 10
        while len(seqs) < 8 and time.monotonic() < end:
            if w._next is None:
                w.move_on()
            assert w._next is not None
            if w._next.done():
                _, seq = await w.next()
                assert seq is not None
                seqs.append(seq)
                continue
            before = time.monotonic()
            await asyncio.sleep(0.005)
            worst = max(worst, time.monotonic() - before)
            ticks += 1
        w.move_on()
        w.manager.confirm_persisted(seqs)
        statuses = [r.status for r in await asyncio.wait_for(asyncio.gather(*calls), 20)]
        assert statuses == [202] * 8
        assert worst < 1.0, f"the event loop stalled {worst:.3f} s"
