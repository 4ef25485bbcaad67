"""Event handlers used by the gateway tests (imported by worker processes by name)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from oftp2_provider.gateway.events import SKIP, Event, RejectEvent


class Recorder:
    """Writes each handled event to ``options['dir']/<event id>.json`` (with the worker pid)."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options = dict(options)

    def get_configuration(self, event: Event) -> Any:
        if event.data.get("skip"):
            return SKIP
        if event.data.get("reject"):
            raise RejectEvent("rejected by test")
        return {"dir": self.options["dir"], "main_pid": os.getpid()}

    def handle(self, event: Event, configuration: Any) -> list[dict[str, Any]]:
        print("this print must not corrupt the worker protocol")
        record = {"event": event.to_dict(), "worker_pid": os.getpid(), "configuration": configuration}
        Path(configuration["dir"], f"{event.id}.json").write_text(json.dumps(record))
        if event.data.get("echo"):
            return [{"name": "custom.echoed", "data": {"of": event.id}}]
        return []


class Sleeper:
    """Sleeps ``event.data['seconds']`` in the worker (to trigger the time limit)."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options = dict(options)

    def get_configuration(self, event: Event) -> Any:
        return {}

    def handle(self, event: Event, configuration: Any) -> None:
        time.sleep(float(event.data.get("seconds", 0)))


class Boom:
    """Raises in ``handle``."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        pass

    def get_configuration(self, event: Event) -> Any:
        if event.data.get("boom_in_main"):
            raise RuntimeError("boom in get_configuration")
        return {}

    def handle(self, event: Event, configuration: Any) -> None:
        raise RuntimeError("boom in handle")
