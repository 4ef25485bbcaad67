"""Child processes of the demo: each in its own process group, logged to a file, stopped by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

__all__ = ["ProcessSet", "StepFailed", "free_port", "wait_for"]

BIN = Path(sys.executable).parent
T = TypeVar("T")


class StepFailed(RuntimeError):
    """A demo step did not reach its expected state; the message says what was missing."""


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], T], timeout: float, what: str, *, alive: Callable[[], None]) -> T:
    """Poll ``check`` until it returns something truthy; ``alive`` raises if a process died."""
    end = time.monotonic() + timeout
    while True:
        value: T | None = None
        try:
            value = check()
        except StepFailed:
            raise
        except Exception:  # not ready yet (connection refused, table missing…)
            value = None
        if value:
            return value
        alive()
        if time.monotonic() > end:
            raise StepFailed(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


class ProcessSet:
    """Named child processes started with ``start_new_session`` and stopped group by group."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def log_path(self, name: str) -> Path:
        """The log file of process ``name``."""
        return self.log_dir / f"{name}.log"

    def start(self, name: str, args: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Start ``args`` as ``name``; stdout and stderr go to ``<log_dir>/<name>.log``."""
        with self.log_path(name).open("wb") as log:
            proc = subprocess.Popen(
                list(args),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def check_alive(self) -> None:
        """Raise :class:`StepFailed` naming the first process that exited."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = [
                    ln for ln in self.log_path(name).read_text(errors="replace").splitlines() if ln.strip()
                ]
                last = tail[-1].strip()[:300] if tail else "no output"
                raise StepFailed(f"{name} exited with {proc.returncode}: {last} (see {self.log_path(name)})")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM every process group, wait, then SIGKILL what is left (also orphans in the group)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(10)
        for proc in self.procs.values():  # executor workers that outlived their parent share its group
            _signal_group(proc.pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
