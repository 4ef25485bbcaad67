"""The event-handler worker process: ``python -m oftp2_provider.gateway.worker``.

Reads one JSON request per line on stdin, runs ``handler.handle(event, configuration)`` and writes
one JSON answer per line on the original stdout.  Anything the handler prints goes to stderr, so it
can never corrupt the answers.  The parent kills the process when a call exceeds its time limit.

Request:  ``{"handler": "python:m.C", "options": {...}, "event": {...}, "configuration": ...}``
Answer:   ``{"ok": true, "events": [...]}`` or ``{"ok": false, "error": "..."}``
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

from .events import Event, load_handler_class


def _run(request: dict[str, Any], cache: dict[tuple[str, str], Any]) -> dict[str, Any]:
    ref = request["handler"]
    options = request.get("options") or {}
    key = (ref, json.dumps(options, sort_keys=True, default=str))
    handler = cache.get(key)
    if handler is None:
        handler = load_handler_class(ref)(options)
        cache[key] = handler
    event = Event.from_dict(request["event"])
    result = handler.handle(event, request.get("configuration"))
    emitted: list[dict[str, Any]] = []
    for item in result or ():
        emitted.append(item.to_dict() if isinstance(item, Event) else dict(item))
    return {"ok": True, "events": emitted}


def main() -> int:
    """Serve requests until stdin closes."""
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)  # handler prints go to stderr
    sys.stdout = sys.stderr
    cache: dict[tuple[str, str], Any] = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = _run(json.loads(line), cache)
        except BaseException as exc:  # report everything to the parent
            if isinstance(exc, KeyboardInterrupt):
                return 130
            answer = {
                "ok": False,
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=20),
            }
        try:
            out.write(json.dumps(answer, default=str) + "\n")
        except (TypeError, ValueError) as exc:
            out.write(json.dumps({"ok": False, "error": f"handler result is not JSON: {exc}"}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
