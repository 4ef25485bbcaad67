"""AzureRelayHook against the loopback emulator: test_connection really opens a control channel."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable

import pytest

from oftp2_provider.hooks.azure_relay import AzureRelayConfigError, AzureRelayHook
from oftp2_provider.relay import RelayedHttpRequest, RelayEmulator


async def test_test_connection_opens_and_closes_a_control_channel(
    emulator: RelayEmulator, relay_conn: Callable[..., str]
) -> None:
    ok, message = await AzureRelayHook(relay_conn()).atest_connection()
    assert ok, message
    assert emulator.stats["control_channels"] == 1
    await asyncio.sleep(0.1)
    assert emulator.listener_count("hooks") == 0, "the test listener must be closed again"


async def test_test_connection_names_the_problem(
    emulator: RelayEmulator, relay_conn: Callable[..., str], free_port: Callable[[], int]
) -> None:
    ok, message = await AzureRelayHook(relay_conn("bad_key", key="not-the-key")).atest_connection()
    assert not ok and "refused the SAS token" in message and "401" in message
    ok, message = await AzureRelayHook(relay_conn("no_hc", hybrid_connection="nope")).atest_connection()
    assert not ok and "'nope' not found" in message
    down = relay_conn("down", endpoint=f"ws://127.0.0.1:{free_port()}", connect_timeout=2)
    ok, message = await AzureRelayHook(down).atest_connection()
    assert not ok and "cannot reach the relay" in message
    ok, message = await AzureRelayHook("undefined_conn").atest_connection()
    assert not ok and "undefined_conn" in message


def test_sync_test_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sync API (what the Airflow UI calls), with the emulator on its own loop thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    emu = RelayEmulator(hybrid_connections=["hooks"])
    try:
        asyncio.run_coroutine_threadsafe(emu.start(), loop).result(10)
        name, key = next(iter(emu.keys.items()))
        body = {
            "conn_type": "azure_relay",
            "host": emu.namespace,
            "login": name,
            "password": key,
            "extra": {"hybrid_connection": "hooks", "endpoint": emu.url},
        }
        monkeypatch.setenv("AIRFLOW_CONN_RELAY_SYNC", json.dumps(body))
        assert AzureRelayHook("relay_sync").test_connection() == (
            True,
            f"listener control channel on {emu.namespace}/hooks opened and closed",
        )
        deadline = time.monotonic() + 5  # the emulator counts on its own thread, maybe a bit later
        while emu.stats["control_channels"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert emu.stats["control_channels"] == 1
    finally:
        asyncio.run_coroutine_threadsafe(emu.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


async def test_sync_test_connection_inside_a_running_loop(
    emulator: RelayEmulator, relay_conn: Callable[..., str]
) -> None:
    """Called from code that already runs a loop, the sync API uses a worker thread."""
    ok, message = await asyncio.to_thread(lambda: AzureRelayHook(relay_conn()).test_connection())
    assert ok, message
    # and directly on the loop thread (blocks it, so the emulator on this loop cannot answer):
    hook = AzureRelayHook(relay_conn("relay_other_loop", connect_timeout=1))
    ok, message = hook.test_connection()
    assert not ok and "cannot reach the relay" in message


async def test_listener_and_sender_from_the_connection(relay_conn: Callable[..., str]) -> None:
    hook = AzureRelayHook(relay_conn())
    async with await hook.aget_listener() as listener:
        sender = hook.get_sender()
        call = asyncio.ensure_future(sender.request("POST", "orders", body=b"hello"))
        event = await listener.next_event(10)
        assert isinstance(event, RelayedHttpRequest) and event.body == b"hello"
        await event.respond(200, {}, b"ok")
        assert (await call).body == b"ok"


def test_invalid_connection_raises_naming_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_BROKEN", '{"conn_type": "azure_relay", "host": "ns", "login": "k"}')
    with pytest.raises(AzureRelayConfigError) as info:
        AzureRelayHook("broken").address()
    assert "extra.hybrid_connection" in str(info.value) and "password" in str(info.value)
