"""The ledger triggers: EERP wait, inbound-file events in shared-stream ack mode, serialisation."""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent
from airflow.triggers.shared_stream import SharedStreamManager

from oftp2_provider.ledger import Ledger, Transfer
from oftp2_provider.triggers.oftp2 import OFTP2EERPTrigger, OFTP2InboundFileTrigger

from .conftest import PARTNER


def _rebuild(trigger: BaseTrigger) -> BaseTrigger:
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    return rebuilt


def test_serialize_round_trips(ledger_path: Path) -> None:
    eerp = OFTP2EERPTrigger([3, 4], ledger_path=str(ledger_path), poll_interval=2, deadline=123.5)
    again = _rebuild(eerp)
    assert isinstance(again, OFTP2EERPTrigger) and again.transfer_ids == [3, 4] and again.deadline == 123.5
    inbound = OFTP2InboundFileTrigger(partner=PARTNER, dsn_pattern="INV*", ledger_conn_id="ledger_db")
    again_in = _rebuild(inbound)
    assert isinstance(again_in, OFTP2InboundFileTrigger)
    assert (
        again_in.shared_stream_key()
        == inbound.shared_stream_key()
        == ("oftp2-inbound", "conn", "ledger_db", PARTNER)
    )


async def _first(trigger: BaseTrigger, timeout: float = 10) -> dict[str, Any]:
    async def first() -> TriggerEvent:
        async for event in trigger.run():
            return event
        raise AssertionError("trigger ended without an event")

    event = await asyncio.wait_for(first(), timeout)
    return dict(event.payload)


async def test_eerp_trigger_fires_on_delivery(
    ledger: Ledger, ledger_path: Path, sent_transfer: Callable[..., Transfer]
) -> None:
    a, b = sent_transfer("A"), sent_transfer("B")
    trigger = OFTP2EERPTrigger([a.id, b.id], ledger_path=str(ledger_path), poll_interval=0.05)
    task = asyncio.ensure_future(_first(trigger))
    await asyncio.sleep(0.2)
    assert not task.done(), "must wait while receipts are missing"
    await asyncio.to_thread(ledger.record_receipt, a.key, "EERP", b"E...", "UNSIGNED")
    await asyncio.sleep(0.2)
    assert not task.done(), "one receipt of two is not enough"
    await asyncio.to_thread(
        ledger.record_receipt, b.key, "NERP", b"N...", "VERIFIED", 34, "processing failed"
    )
    payload = await task
    assert payload["status"] == "done" and payload["pending"] == []
    by_id = {t["transfer_id"]: t for t in payload["transfers"]}
    assert by_id[a.id]["status"] == "delivered" and by_id[a.id]["receipt_verification"] == "UNSIGNED"
    assert by_id[b.id]["status"] == "refused" and by_id[b.id]["nerp_code"] == 34
    assert by_id[b.id]["receipt_verification"] == "VERIFIED"


async def test_eerp_trigger_deadline(ledger_path: Path, sent_transfer: Callable[..., Transfer]) -> None:
    a = sent_transfer("A")
    started = time.monotonic()
    trigger = OFTP2EERPTrigger(
        [a.id], ledger_path=str(ledger_path), poll_interval=5, deadline=time.time() + 0.3
    )
    payload = await _first(trigger)
    assert payload["status"] == "timeout" and payload["pending"] == [a.id]
    assert time.monotonic() - started < 3, "the deadline must cut the poll interval short"


async def test_eerp_trigger_unknown_id(ledger: Ledger, ledger_path: Path) -> None:
    payload = await _first(OFTP2EERPTrigger([999], ledger_path=str(ledger_path)))
    assert payload["status"] == "error" and "999" in payload["message"]


async def test_eerp_trigger_does_not_block_the_loop(
    ledger_path: Path, sent_transfer: Callable[..., Transfer]
) -> None:
    a = sent_transfer("A")
    trigger = OFTP2EERPTrigger([a.id], ledger_path=str(ledger_path), poll_interval=0.0)
    task = asyncio.ensure_future(_first(trigger))
    ticks = 0
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        await asyncio.sleep(0.01)
        ticks += 1
    task.cancel()
    assert ticks > 20, f"the event loop starved while the trigger polled ({ticks} ticks)"


async def test_inbound_ack_mode_marks_dispatched_only_after_persist(
    ledger: Ledger, ledger_path: Path, received_transfer: Callable[..., Transfer]
) -> None:
    first, second = received_transfer("INV1"), received_transfer("INV2")
    received_transfer("OTHER", partner="O0013SOMEONEELSE")
    trigger = OFTP2InboundFileTrigger(partner=PARTNER, ledger_path=str(ledger_path), poll_interval=0.05)
    manager = SharedStreamManager(ack_timeout=30)
    key = trigger.shared_stream_key()
    stream = manager.subscribe(trigger_id=1, trigger=trigger, key=key)
    events = trigger.filter_shared_stream(stream)
    try:
        e1 = await asyncio.wait_for(events.__anext__(), 10)
        assert e1.payload["transfer_id"] == first.id and e1.payload["dsn"] == "INV1"
        seq1 = manager.bind_pending_event(trigger_id=1, key=key)
        assert seq1 is not None, "the stream must run in ack mode"
        e2 = await asyncio.wait_for(events.__anext__(), 10)  # moved past e1, but e1 is not persisted yet
        assert e2.payload["transfer_id"] == second.id
        seq2 = manager.bind_pending_event(trigger_id=1, key=key)
        await asyncio.sleep(0.3)
        assert (await asyncio.to_thread(ledger.get, first.id)).dispatched is False
        manager.confirm_persisted([seq1])
        await _until(lambda: ledger.get(first.id).dispatched)
        assert ledger.get(second.id).dispatched is False
        assert seq2 is not None
        manager.confirm_persisted([seq2])
        nxt = asyncio.ensure_future(events.__anext__())  # closes e2's window
        await _until(lambda: ledger.get(second.id).dispatched)
        await asyncio.sleep(0.2)
        assert not nxt.done(), "no file may be offered twice, and other partners' files never"
        nxt.cancel()
        assert [t.key.dsn for t in ledger.undispatched_inbound(10)] == ["OTHER"]
    finally:
        await manager.unsubscribe(1, key)
        await events.aclose()


async def test_inbound_unpersisted_event_is_offered_again(
    ledger: Ledger, ledger_path: Path, received_transfer: Callable[..., Transfer]
) -> None:
    first = received_transfer("INV1")
    trigger = OFTP2InboundFileTrigger(partner=PARTNER, ledger_path=str(ledger_path), poll_interval=0.05)
    manager = SharedStreamManager(ack_timeout=30)
    key = trigger.shared_stream_key()
    events = trigger.filter_shared_stream(manager.subscribe(trigger_id=1, trigger=trigger, key=key))
    e1 = await asyncio.wait_for(events.__anext__(), 10)
    assert e1.payload["transfer_id"] == first.id
    manager.bind_pending_event(trigger_id=1, key=key)
    await manager.unsubscribe(1, key)  # the triggerer went away before the event was stored
    await events.aclose()
    assert ledger.get(first.id).dispatched is False
    # A new triggerer offers the same file again.
    events2 = trigger.filter_shared_stream(manager.subscribe(trigger_id=2, trigger=trigger, key=key))
    try:
        again = await asyncio.wait_for(events2.__anext__(), 10)
        assert again.payload["transfer_id"] == first.id
    finally:
        await manager.unsubscribe(2, key)
        await events2.aclose()


async def test_inbound_standalone_run_and_dsn_filter(
    ledger: Ledger, ledger_path: Path, received_transfer: Callable[..., Transfer]
) -> None:
    received_transfer("ORDERS1")
    inv = received_transfer("INVOIC1")
    trigger = OFTP2InboundFileTrigger(dsn_pattern="INVOIC*", ledger_path=str(ledger_path), poll_interval=0.05)
    payload = await _first(trigger)
    assert payload["transfer_id"] == inv.id and payload["sha256"] == inv.sha256
    assert payload["virtual_file_key"] == str(inv.key)


async def _until(check: Callable[[], bool], timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if await asyncio.to_thread(check):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")
