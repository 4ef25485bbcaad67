"""The AssetWatcher path with real Airflow processes: a received file starts exactly one DAG run.

Runs ``airflow dag-processor``, ``scheduler``, ``triggerer`` and ``api-server`` against a private
AIRFLOW_HOME; the ledger is filled the way the gateway fills it.  A resent file (same virtual-file
key) must not start a second run; a new file must.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from oftp2_provider.ledger import Ledger, TransferStatus, VirtualFileKey

from .conftest import OURS, PARTNER

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
DAG_ID = "oftp2_inbound_event_driven"

pytestmark = [pytest.mark.airflow, pytest.mark.slow]


def _wait(check: Callable[[], bool], timeout: float, what: str, procs: list[subprocess.Popen[bytes]]) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        dead = [p.args for p in procs if p.poll() is not None]
        assert not dead, f"Airflow process died: {dead}"
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def airflow_stack(
    tmp_path: Path, free_port: Callable[[], int]
) -> Iterator[tuple[dict[str, str], Path, Path]]:
    home = tmp_path / "airflow"
    dags = tmp_path / "dags"
    dags.mkdir(parents=True)
    home.mkdir()
    shutil.copy(ROOT / "dags" / f"{DAG_ID}.py", dags)
    ledger_path = tmp_path / "ledger.sqlite"
    api_port = free_port()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API_AUTH__JWT_SECRET": "oftp2-test-jwt-secret-0123456789abcdef",
        "AIRFLOW__API__SECRET_KEY": "oftp2-test-secret",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "2",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
        "OFTP2_LEDGER_PATH": str(ledger_path),
        "OFTP2_PARTNER": PARTNER,
        "OFTP2_INBOUND_POLL_SECONDS": "1",
        "AIRFLOW_CONN_OFTP2_DEFAULT": json.dumps(
            {
                "conn_type": "oftp2",
                "host": "127.0.0.1",
                "login": OURS,
                "extra": {"partner_id": PARTNER, "ledger_path": str(ledger_path)},
            }
        ),
    }
    env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
    subprocess.run(
        [str(BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True, timeout=180
    )
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        for cmd in (["api-server"], ["dag-processor"], ["scheduler"], ["triggerer"]):
            log = (tmp_path / f"{cmd[0]}.log").open("wb")
            logs.append(log)
            procs.append(
                subprocess.Popen(
                    [str(BIN / "airflow"), *cmd],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        yield procs, home / "airflow.db", ledger_path
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
        for log in logs:
            log.close()


def _runs(db: Path) -> list[tuple[str, str]]:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return list(
                conn.execute("SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id", (DAG_ID,))
            )
    except sqlite3.OperationalError:
        return []


def _receive(ledger: Ledger, tmp: Path, dsn: str, key: VirtualFileKey) -> tuple[int, bool]:
    data = f"{dsn} content\n".encode()
    path = tmp / f"{dsn}.{key.time}"
    path.write_bytes(data)
    transfer, duplicate = ledger.begin_inbound(PARTNER, key)
    if not duplicate:
        ledger.complete_inbound(
            transfer.id, path, len(data), hashlib.sha256(data).hexdigest(), hold_receipt=True
        )
    return transfer.id, duplicate


def test_received_file_starts_exactly_one_run(
    airflow_stack: tuple[list[subprocess.Popen[bytes]], Path, Path], tmp_path: Path
) -> None:
    procs, db, ledger_path = airflow_stack
    ledger = Ledger.from_sqlite(ledger_path)
    key1 = VirtualFileKey("INVOIC1", "20260101", "1200000001", PARTNER, OURS)
    first, dup = _receive(ledger, tmp_path, "INVOIC1", key1)
    assert not dup
    _wait(lambda: any(s == "success" for _, s in _runs(db)), 150, "the first DAG run to succeed", procs)
    assert ledger.get(first).dispatched
    assert ledger.get(first).status is TransferStatus.RELEASED  # the DAG released the held EERP
    # The partner sends the same virtual file again: the ledger knows it, no new run.
    again, dup = _receive(ledger, tmp_path, "INVOIC1", key1)
    assert dup and again == first
    # A different file does start a run: proof the watcher is still alive when we count.
    second, _ = _receive(
        ledger, tmp_path, "INVOIC2", VirtualFileKey("INVOIC2", "20260101", "1200000002", PARTNER, OURS)
    )
    _wait(lambda: ledger.get(second).dispatched and len(_runs(db)) >= 2, 90, "the second file's run", procs)
    time.sleep(3)
    runs = _runs(db)
    assert len(runs) == 2, runs
