"""End to end with real Airflow processes: a webhook through the relay creates exactly one DAG run.

``airflow dag-processor``, ``scheduler``, ``triggerer`` and ``api-server`` run against a private
AIRFLOW_HOME (SQLite) whose DAG folder holds only ``dags/relay_webhook_example.py``; the relay is
the loopback emulator in this test's event loop.  The sender must get 202 (the event was stored),
one ``asset_triggered`` run must succeed, and its task must have logged the request body.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from oftp2_provider.relay import HybridConnectionClient, RelayEmulator

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

BIN = Path(sys.executable).parent
DAG_FILE = Path(__file__).resolve().parents[3] / "dags" / "relay_webhook_example.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AirflowStack:
    """The four Airflow services as child processes (each in its own process group)."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def migrate(self) -> None:
        subprocess.run(
            [str(BIN / "airflow"), "db", "migrate"],
            env=self.env,
            check=True,
            timeout=180,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self, *commands: str) -> None:
        for command in commands:
            log = (self.home / f"{command}.log").open("wb")
            args = [str(BIN / "airflow"), *command.split()]
            self.procs[command] = subprocess.Popen(
                args, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.home / f"{name}.log").read_text(errors="replace")[-3000:]
                raise AssertionError(f"airflow {name} exited with {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        # Children that outlived their parent (executor workers) share the group: make sure.
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.home / "airflow.db", timeout=10) as db:
            return list(db.execute(sql, args))


@pytest.fixture
def stack_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "airflow"
    (home / "dags").mkdir(parents=True)
    shutil.copy(DAG_FILE, home / "dags" / DAG_FILE.name)
    yield home


async def test_a_webhook_through_the_relay_creates_exactly_one_dag_run(stack_home: Path) -> None:
    api_port = _free_port()
    async with RelayEmulator(hybrid_connections=["webhooks"], request_timeout=60) as emu:
        name, key = next(iter(emu.keys.items()))
        conn = {
            "conn_type": "azure_relay",
            "host": emu.namespace,
            "login": name,
            "password": key,
            "extra": {"hybrid_connection": "webhooks", "endpoint": emu.url},
        }
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AIRFLOW", "PYTEST", "_AIRFLOW")) and k != "PYTHONPATH"
        }
        env.update(
            {
                "AIRFLOW_HOME": str(stack_home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(stack_home / "dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "2",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
                "AIRFLOW__API__PORT": str(api_port),
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(16),
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "2",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
                "AIRFLOW_CONN_RELAY_E2E": json.dumps(conn),
                "RELAY_CONN_ID": "relay_e2e",
                "RELAY_HYBRID_CONNECTION": "webhooks",
            }
        )
        stack = AirflowStack(stack_home, env)
        await asyncio.to_thread(stack.migrate)
        stack.start("api-server", "dag-processor", "scheduler", "triggerer")
        try:
            # The triggerer's listener comes online once the DAG is parsed and its watcher started.
            deadline = time.monotonic() + 150  # generous: CI machines may be busy
            while emu.listener_count("webhooks") == 0:
                stack.check_alive()
                assert time.monotonic() < deadline, "the triggerer never connected to the relay"
                await asyncio.sleep(0.25)
            sender = HybridConnectionClient(emu.address("webhooks"), emu.token_provider())
            response = await sender.request(
                "POST",
                "github",
                body=b'{"action": "opened", "number": 7}',
                headers={"Content-Type": "application/json"},
            )
            assert (response.status, response.body) == (202, b"accepted")
            runs: list[tuple[Any, ...]] = []
            while time.monotonic() < deadline + 30:
                stack.check_alive()
                runs = await asyncio.to_thread(
                    stack.query,
                    "SELECT run_id, state FROM dag_run WHERE dag_id = ?",
                    "relay_webhook_example",
                )
                if runs and runs[0][1] in ("success", "failed"):
                    break
                await asyncio.sleep(0.5)
            assert len(runs) == 1 and runs[0][1] == "success", runs
            assert str(runs[0][0]).startswith("asset_triggered__")
            (value,) = await asyncio.to_thread(
                stack.query,
                "SELECT value FROM xcom WHERE dag_id = ? AND task_id = 'log_request' AND key = 'return_value'",
                "relay_webhook_example",
            )
            summary = json.loads(value[0])
            assert summary["method"] == "POST" and summary["target"] == "/webhooks/github"
            assert json.loads(summary["body"]) == {"action": "opened", "number": 7}
            await asyncio.sleep(2)  # no second run may follow
            count = await asyncio.to_thread(
                stack.query, "SELECT count(*) FROM dag_run WHERE dag_id = ?", "relay_webhook_example"
            )
            assert count == [(1,)]
        finally:
            await asyncio.to_thread(stack.stop)
