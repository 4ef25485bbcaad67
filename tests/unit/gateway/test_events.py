"""Event handlers: main-process configuration, worker-process handling, time limits, failures."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from oftp2_provider.gateway.config import EventHandlerConfig
from oftp2_provider.gateway.events import Event, EventBus, EventName, load_object

HANDLERS = "python:tests.unit.gateway.sample_handlers"


def _cfg(name: str, cls: str, **kw: object) -> EventHandlerConfig:
    return EventHandlerConfig.model_validate({"name": name, "handler": f"{HANDLERS}.{cls}", **kw})


def _collect(bus: EventBus) -> list[Event]:
    seen: list[Event] = []
    bus.subscribe(seen.append)
    return seen


async def test_handle_runs_in_a_worker_process_and_can_emit(tmp_path: Path) -> None:
    bus = EventBus([_cfg("rec", "Recorder", options={"dir": str(tmp_path)})], workers=1)
    seen = _collect(bus)
    try:
        await bus.start()
        event = bus.emit(EventName.FILE_RECEIVED, {"echo": True, "size": 3}, partner="P", transfer_id=7)
        await bus.drain(30)
        record = json.loads((tmp_path / f"{event.id}.json").read_text())
        assert record["worker_pid"] != os.getpid()
        assert record["worker_pid"] in bus.pool.pids
        assert record["configuration"]["main_pid"] == os.getpid()
        assert record["event"]["name"] == "file.received"
        assert record["event"]["code"] == 1200
        assert record["event"]["transfer_id"] == 7
        echoed = [e for e in seen if e.name == "custom.echoed"]
        assert len(echoed) == 1
        assert echoed[0].parent_id == event.id and echoed[0].partner == "P" and echoed[0].depth == 1
    finally:
        await bus.close()


async def test_skip_and_reject_happen_in_the_main_process(tmp_path: Path) -> None:
    bus = EventBus([_cfg("rec", "Recorder", options={"dir": str(tmp_path)})], workers=1)
    seen = _collect(bus)
    try:
        bus.emit("session.started", {"skip": True})
        bus.emit("session.started", {"reject": True})
        await bus.drain(30)
        assert os.listdir(tmp_path) == []
        rejected = [e for e in seen if e.name == "handler.rejected"]
        assert len(rejected) == 1 and rejected[0].data["reason"] == "rejected by test"
    finally:
        await bus.close()


async def test_event_filter(tmp_path: Path) -> None:
    bus = EventBus([_cfg("rec", "Recorder", events=["file.sent"], options={"dir": str(tmp_path)})], workers=1)
    try:
        bus.emit("file.received", {})
        sent = bus.emit("file.sent", {})
        await bus.drain(30)
        assert os.listdir(tmp_path) == [f"{sent.id}.json"]
    finally:
        await bus.close()


async def test_timeout_kills_and_replaces_the_worker_and_the_bus_keeps_working(tmp_path: Path) -> None:
    bus = EventBus(
        [
            _cfg("slow", "Sleeper", events=["slow"], timeout=0.5),
            _cfg("rec", "Recorder", events=["after"], options={"dir": str(tmp_path)}),
        ],
        workers=1,
    )
    seen = _collect(bus)
    try:
        await bus.start()
        first_pid = bus.pool.pids[0]
        loop = asyncio.get_running_loop()
        started = loop.time()
        bus.emit("slow", {"seconds": 60})
        await bus.drain(30)
        assert loop.time() - started < 10
        failed = [e for e in seen if e.name == "handler.failed"]
        assert len(failed) == 1
        assert failed[0].data["timeout"] is True and failed[0].data["handler"] == "slow"
        assert bus.pool.replaced == 1
        assert bus.pool.pids and bus.pool.pids[0] != first_pid
        with pytest.raises(ProcessLookupError):
            os.kill(first_pid, 0)
        after = bus.emit("after", {})
        await bus.drain(30)
        assert (tmp_path / f"{after.id}.json").exists()
    finally:
        await bus.close()


async def test_exceptions_are_events_not_crashes(tmp_path: Path) -> None:
    bus = EventBus([_cfg("boom", "Boom")], workers=1)
    seen = _collect(bus)
    try:
        bus.emit("x", {})
        bus.emit("x", {"boom_in_main": True})
        await bus.drain(30)
        failed = sorted((e.data["error"] for e in seen if e.name == "handler.failed"), key=len)
        assert len(failed) == 2
        assert any("boom in handle" in f for f in failed)
        assert any("boom in get_configuration" in f for f in failed)
        tracebacks = [e.data.get("traceback", "") for e in seen if e.name == "handler.failed"]
        assert any("RuntimeError" in t for t in tracebacks)
        # the worker survived a Python exception (no replacement needed)
        assert bus.pool.replaced == 0
    finally:
        await bus.close()


def test_unknown_handler_fails_at_start_naming_it() -> None:
    with pytest.raises(ImportError, match="NoSuchClass"):
        EventBus([_cfg("x", "NoSuchClass")])
    with pytest.raises(ImportError, match="no_such_module"):
        load_object("python:no_such_module.Thing")


def test_event_round_trip() -> None:
    event = Event("file.sent", {"a": 1}, session_id="s1", partner="P", transfer_id=3)
    again = Event.from_dict(json.loads(json.dumps(event.to_dict())))
    assert again == event
    with pytest.raises(ValueError, match="name"):
        Event.from_dict({"data": {}})
