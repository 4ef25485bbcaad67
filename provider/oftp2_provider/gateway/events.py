"""Gateway events and event handlers.

The gateway emits an :class:`Event` for everything an operator may want to react to (sessions,
files, receipts, errors).  Configured handlers follow a two-step contract:

* ``get_configuration(event)`` runs **in the gateway process**, quickly: return ``None`` (or
  :data:`SKIP`) to ignore the event, raise :class:`RejectEvent` to refuse it (logged as a
  ``handler.rejected`` event), or return a JSON-serialisable configuration for the next step;
* ``handle(event, configuration)`` runs **in a worker process** of a pool sized to the CPUs, under
  a hard time limit (a stuck worker is killed and replaced); it may return events to emit.

A handler that raises or overruns produces a ``handler.failed`` event and a log line; the gateway
itself keeps running.  Handlers are named ``python:package.module.Class``; the class is created
once per process with the ``options`` table from the configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib
import json
import logging
import os
import sys
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .config import EventHandlerConfig

__all__ = [
    "SKIP",
    "Event",
    "EventBus",
    "EventHandler",
    "EventName",
    "HandlerFailed",
    "HandlerPool",
    "HandlerTimeout",
    "RejectEvent",
    "load_handler_class",
    "load_object",
]

log = logging.getLogger("oftp2.gateway.events")


class EventName(str, Enum):
    """The events the gateway emits (the value is the name handlers filter on)."""

    SESSION_STARTED = "session.started"
    SESSION_ENDED = "session.ended"
    SESSION_REJECTED = "session.rejected"
    FILE_RECEIVED = "file.received"
    FILE_REFUSED = "file.refused"
    FILE_SENT = "file.sent"
    FILE_SEND_FAILED = "file.send_failed"
    RECEIPT_RECEIVED = "receipt.received"
    RECEIPT_SENT = "receipt.sent"
    CALL_FAILED = "call.failed"
    ERROR = "error"
    HANDLER_FAILED = "handler.failed"
    HANDLER_REJECTED = "handler.rejected"
    GATEWAY_STARTED = "gateway.started"
    GATEWAY_STOPPING = "gateway.stopping"


#: Stable numeric ids of the event names (for log searches and external monitoring).
EVENT_CODES: dict[str, int] = {
    EventName.GATEWAY_STARTED.value: 1000,
    EventName.GATEWAY_STOPPING.value: 1001,
    EventName.SESSION_STARTED.value: 1100,
    EventName.SESSION_ENDED.value: 1101,
    EventName.SESSION_REJECTED.value: 1102,
    EventName.CALL_FAILED.value: 1103,
    EventName.FILE_RECEIVED.value: 1200,
    EventName.FILE_REFUSED.value: 1201,
    EventName.FILE_SENT.value: 1210,
    EventName.FILE_SEND_FAILED.value: 1211,
    EventName.RECEIPT_RECEIVED.value: 1300,
    EventName.RECEIPT_SENT.value: 1301,
    EventName.ERROR.value: 1900,
    EventName.HANDLER_FAILED.value: 1910,
    EventName.HANDLER_REJECTED.value: 1911,
}

#: Code of events that handlers emit with a name the gateway does not know.
CUSTOM_EVENT_CODE = 5000

#: Events caused by handler results are dispatched again, up to this depth (loops stop there).
MAX_EVENT_DEPTH = 4


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Event:
    """One gateway event: a unique ``id``, a ``name`` (see :class:`EventName`) and JSON ``data``."""

    name: str
    data: Mapping[str, Any] = field(default_factory=dict)
    session_id: str | None = None
    partner: str | None = None
    transfer_id: int | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    at: str = field(default_factory=_now)
    parent_id: str | None = None
    depth: int = 0

    @property
    def code(self) -> int:
        """The numeric id of this event's name (``CUSTOM_EVENT_CODE`` for handler-defined names)."""
        return EVENT_CODES.get(self.name, CUSTOM_EVENT_CODE)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the form workers and the control API see)."""
        return {
            "id": self.id,
            "name": self.name,
            "code": self.code,
            "at": self.at,
            "session_id": self.session_id,
            "partner": self.partner,
            "transfer_id": self.transfer_id,
            "parent_id": self.parent_id,
            "depth": self.depth,
            "data": dict(self.data),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Event:
        """Rebuild an event from :meth:`to_dict` output (unknown keys are ignored)."""
        if not isinstance(raw.get("name"), str) or not raw["name"]:
            raise ValueError("an event needs a non-empty string 'name'")
        kwargs: dict[str, Any] = {"name": raw["name"], "data": dict(raw.get("data") or {})}
        for key in ("session_id", "partner", "transfer_id", "id", "at", "parent_id", "depth"):
            if raw.get(key) is not None:
                kwargs[key] = raw[key]
        return cls(**kwargs)


class _Skip:
    def __repr__(self) -> str:
        return "SKIP"


SKIP: Any = _Skip()
"""Returned by ``get_configuration`` to ignore an event (``None`` works too)."""


class RejectEvent(Exception):
    """Raised by ``get_configuration`` to refuse an event; the message says why."""


class HandlerFailed(Exception):
    """``handle`` raised in the worker (``detail`` holds the worker's traceback)."""

    def __init__(self, message: str, detail: str = "") -> None:
        self.detail = detail
        super().__init__(message)


class HandlerTimeout(HandlerFailed):
    """``handle`` overran its time limit; the worker was killed and replaced."""


class EventHandler(Protocol):
    """What a handler class provides (created as ``Class(options)`` in each process)."""

    def get_configuration(self, event: Event) -> Any:
        """In the gateway process: ``None``/``SKIP`` to skip, raise :class:`RejectEvent`, or a config."""
        ...

    def handle(self, event: Event, configuration: Any) -> Iterable[Event | Mapping[str, Any]] | None:
        """In a worker process: do the work; optionally return events to emit."""
        ...


def load_object(ref: str) -> Any:
    """Import ``python:package.module.Name`` (or ``package.module:Name``) and return the object."""
    target = ref[len("python:") :] if ref.startswith("python:") else ref
    if ":" in target:
        module_name, _, attr = target.partition(":")
    else:
        module_name, _, attr = target.rpartition(".")
    if not module_name or not attr:
        raise ImportError(f"{ref!r} is not 'python:package.module.Name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"cannot import {module_name!r} for {ref!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImportError(f"module {module_name!r} has no attribute {attr!r} (from {ref!r})") from None


def load_handler_class(ref: str) -> Callable[[dict[str, Any]], EventHandler]:
    """Load a handler class and check that it has ``handle``."""
    cls = load_object(ref)
    if not callable(cls) or not hasattr(cls, "handle"):
        raise TypeError(
            f"{ref} is not an event handler class (it needs a handle(event, configuration) method)"
        )
    factory: Callable[[dict[str, Any]], EventHandler] = cls
    return factory


# --------------------------------------------------------------------------------------------------
# Worker processes


class _Worker:
    """One worker process speaking JSON lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def spawn(cls, env: Mapping[str, str]) -> _Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "oftp2_provider.gateway.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,
            env=dict(env),
            limit=64 * 1024 * 1024,
        )
        return cls(proc)

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    async def call(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(request) + "\n").encode("utf-8"))
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise HandlerFailed(f"worker process exited (code {await self.proc.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def kill(self) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self.proc.wait()

    async def stop(self, timeout: float = 5.0) -> None:
        if self.alive and self.proc.stdin is not None:
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except asyncio.TimeoutError:
                await self.kill()
        else:
            await self.proc.wait()


class HandlerPool:
    """A fixed-size pool of worker processes with a hard time limit per call."""

    def __init__(self, size: int | None = None) -> None:
        self.size = max(1, size or os.cpu_count() or 1)
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._all: set[_Worker] = set()
        self._started = False
        self._closed = False
        self.replaced = 0
        env = dict(os.environ)
        # the worker must import the same code as the gateway, including handler modules on sys.path
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self._env = env

    async def start(self) -> None:
        """Start the worker processes."""
        if self._started:
            return
        self._started = True
        workers = await asyncio.gather(*(_Worker.spawn(self._env) for _ in range(self.size)))
        for worker in workers:
            self._all.add(worker)
            self._idle.put_nowait(worker)

    async def _replace(self, worker: _Worker) -> None:
        self._all.discard(worker)
        await worker.kill()
        self.replaced += 1
        if not self._closed:
            fresh = await _Worker.spawn(self._env)
            self._all.add(fresh)
            self._idle.put_nowait(fresh)

    async def run(
        self, handler: str, options: Mapping[str, Any], event: Event, configuration: Any, timeout: float
    ) -> list[dict[str, Any]]:
        """Run ``handle`` in a worker; returns the events it produced.

        Raises :class:`HandlerTimeout` (worker killed and replaced) or :class:`HandlerFailed`.
        """
        if self._closed:
            raise HandlerFailed("the handler pool is closed")
        await self.start()
        request = {
            "handler": handler,
            "options": dict(options),
            "event": event.to_dict(),
            "configuration": configuration,
        }
        try:
            json.dumps(request)
        except (TypeError, ValueError) as exc:
            raise HandlerFailed(f"configuration for {handler} is not JSON-serialisable: {exc}") from None
        worker = await self._idle.get()
        try:
            answer = await worker.call(request, timeout)
        except asyncio.TimeoutError:
            await self._replace(worker)
            raise HandlerTimeout(f"{handler} did not finish within {timeout:g} s; worker killed") from None
        except (HandlerFailed, OSError, ValueError, ConnectionError) as exc:
            await self._replace(worker)
            raise HandlerFailed(f"{handler}: {exc}") from None
        except BaseException:
            await self._replace(worker)
            raise
        self._idle.put_nowait(worker)
        if not answer.get("ok"):
            raise HandlerFailed(
                f"{handler}: {answer.get('error', 'failed')}", str(answer.get("traceback", ""))
            )
        events = answer.get("events") or []
        return [e for e in events if isinstance(e, dict)]

    @property
    def pids(self) -> list[int]:
        """Process ids of the live workers."""
        return sorted(w.proc.pid for w in self._all if w.alive)

    async def close(self) -> None:
        """Stop every worker (idle ones get EOF, busy ones are killed)."""
        self._closed = True
        await asyncio.gather(*(w.stop() for w in list(self._all)), return_exceptions=True)
        self._all.clear()


# --------------------------------------------------------------------------------------------------
# The bus


@dataclass
class _Registered:
    config: EventHandlerConfig
    instance: EventHandler


class EventBus:
    """Fan events out to log, in-process listeners and configured handlers.

    :meth:`emit` never blocks and never raises: handler work runs in background tasks that
    :meth:`drain` waits for.
    """

    def __init__(
        self,
        handlers: Iterable[EventHandlerConfig] = (),
        *,
        workers: int | None = None,
        history: int = 1000,
    ) -> None:
        self.pool = HandlerPool(workers)
        self._handlers: list[_Registered] = []
        for cfg in handlers:
            factory = load_handler_class(cfg.handler)  # fail at start, naming the handler
            self._handlers.append(_Registered(cfg, factory(dict(cfg.options))))
        self._listeners: list[Callable[[Event], None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.history: deque[Event] = deque(maxlen=history)

    def subscribe(self, listener: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``listener(event)`` synchronously for each event; returns an unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    async def start(self) -> None:
        """Start the worker pool if any handler is configured."""
        if self._handlers:
            await self.pool.start()

    def emit(
        self,
        name: str | EventName,
        data: Mapping[str, Any] | None = None,
        *,
        session_id: str | None = None,
        partner: str | None = None,
        transfer_id: int | None = None,
        parent: Event | None = None,
    ) -> Event:
        """Create, log and dispatch an event; returns it."""
        event = Event(
            name=name.value if isinstance(name, EventName) else str(name),
            data=dict(data or {}),
            session_id=session_id,
            partner=partner,
            transfer_id=transfer_id,
            parent_id=parent.id if parent else None,
            depth=parent.depth + 1 if parent else 0,
        )
        self.publish(event)
        return event

    def publish(self, event: Event) -> None:
        """Dispatch an already-built event."""
        self.history.append(event)
        level = logging.WARNING if event.name in ("error", "handler.failed", "call.failed") else logging.INFO
        log.log(
            level,
            "event %s %s",
            event.name,
            json.dumps(event.data, default=str, sort_keys=True),
            extra={
                "event_id": event.id,
                "event_code": event.code,
                "session_id": event.session_id,
                "partner": event.partner,
                "transfer_id": event.transfer_id,
            },
        )
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("event listener %r failed on %s", listener, event.name)
        for registered in self._handlers:
            wanted = registered.config.events
            if wanted and event.name not in wanted:
                continue
            if event.name in ("handler.failed", "handler.rejected") and not wanted:
                continue  # never feed a handler's own failure back to catch-all handlers
            self._dispatch(registered, event)

    def _dispatch(self, registered: _Registered, event: Event) -> None:
        cfg = registered.config
        try:
            get_configuration = getattr(registered.instance, "get_configuration", None)
            configuration = get_configuration(event) if get_configuration else {}
        except RejectEvent as exc:
            self.emit(
                EventName.HANDLER_REJECTED,
                {"handler": cfg.name, "event": event.name, "event_id": event.id, "reason": str(exc)},
                session_id=event.session_id,
                partner=event.partner,
                transfer_id=event.transfer_id,
                parent=event,
            )
            return
        except Exception as exc:
            self._failed(cfg, event, f"get_configuration raised {type(exc).__name__}: {exc}")
            return
        if configuration is None or configuration is SKIP:
            log.debug("handler %s skipped event %s", cfg.name, event.name)
            return
        task = asyncio.get_running_loop().create_task(self._run(registered, event, configuration))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, registered: _Registered, event: Event, configuration: Any) -> None:
        cfg = registered.config
        try:
            produced = await self.pool.run(cfg.handler, cfg.options, event, configuration, cfg.timeout)
        except HandlerTimeout as exc:
            self._failed(cfg, event, str(exc), timeout=True)
            return
        except HandlerFailed as exc:
            self._failed(cfg, event, str(exc), detail=exc.detail)
            return
        except Exception as exc:  # never let a handler problem escape into the gateway
            self._failed(cfg, event, f"{type(exc).__name__}: {exc}")
            return
        for raw in produced:
            if event.depth + 1 > MAX_EVENT_DEPTH:
                log.warning("handler %s: event chain deeper than %d dropped", cfg.name, MAX_EVENT_DEPTH)
                break
            try:
                child = Event.from_dict(raw)
            except (ValueError, TypeError) as exc:
                self._failed(cfg, event, f"returned an invalid event: {exc}")
                continue
            self.emit(
                child.name,
                child.data,
                session_id=child.session_id or event.session_id,
                partner=child.partner or event.partner,
                transfer_id=child.transfer_id or event.transfer_id,
                parent=event,
            )

    def _failed(
        self, cfg: EventHandlerConfig, event: Event, message: str, *, timeout: bool = False, detail: str = ""
    ) -> None:
        data: dict[str, Any] = {
            "handler": cfg.name,
            "event": event.name,
            "event_id": event.id,
            "error": message,
            "timeout": timeout,
        }
        if detail:
            data["traceback"] = detail[-4000:]
        self.emit(
            EventName.HANDLER_FAILED,
            data,
            session_id=event.session_id,
            partner=event.partner,
            transfer_id=event.transfer_id,
            parent=event,
        )

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until no handler work is pending (new work started meanwhile is awaited too)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self._tasks:
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            done, _ = await asyncio.wait(set(self._tasks), timeout=remaining)
            if deadline is not None and loop.time() >= deadline and not done:
                raise asyncio.TimeoutError("event handlers still running")

    async def close(self, timeout: float = 10.0) -> None:
        """Let running handlers finish (up to ``timeout``), then stop the worker pool."""
        with contextlib.suppress(asyncio.TimeoutError):
            await self.drain(timeout)
        for task in list(self._tasks):
            task.cancel()
        await self.pool.close()
