"""Event-driven processing of received files: one DAG run per file, then the receipt is released.

The ``OFTP2InboundFileTrigger`` watches the ledger (filled by the gateway or a poll) and emits one
asset event per newly received file, in shared-stream ack mode: a file is marked dispatched only
after Airflow stored its event.  A resent file (same virtual-file key) is recorded as a duplicate by
the ledger and never starts a second run.  The gateway (or poll) should *hold* receipts so the
EERP/NERP goes out only after this DAG decided.

Settings (environment): ``OFTP2_CONN_ID`` (default ``oftp2_default``), ``OFTP2_PARTNER`` (only
files from this partner; default: all), ``OFTP2_LEDGER_CONN_ID`` or ``OFTP2_LEDGER_PATH`` (where the
ledger is; default: the embedded SQLite ledger under $AIRFLOW_HOME).
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Asset, AssetWatcher, task

from oftp2_provider.operators.oftp2 import OFTP2ReleaseReceiptOperator
from oftp2_provider.triggers.oftp2 import OFTP2InboundFileTrigger

CONN_ID = os.environ.get("OFTP2_CONN_ID", "oftp2_default")

inbound_files = Asset(
    "oftp2://inbound/" + os.environ.get("OFTP2_PARTNER", "all"),
    watchers=[
        AssetWatcher(
            name="oftp2_inbound_files",
            trigger=OFTP2InboundFileTrigger(
                partner=os.environ.get("OFTP2_PARTNER") or None,
                ledger_conn_id=os.environ.get("OFTP2_LEDGER_CONN_ID") or None,
                ledger_path=os.environ.get("OFTP2_LEDGER_PATH") or None,
                poll_interval=float(os.environ.get("OFTP2_INBOUND_POLL_SECONDS", "5")),
            ),
        )
    ],
)

with DAG(
    dag_id="oftp2_inbound_event_driven",
    description="Process each file received over OFTP2, then release its EERP (or a NERP)",
    schedule=[inbound_files],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["oftp2", "example"],
) as dag:

    @task
    def received_file(**context: Any) -> dict[str, Any]:
        """The file this run is for (from the asset event that started it)."""
        events = [e for evs in context["triggering_asset_events"].values() for e in evs]
        payloads = [e.extra["payload"] for e in events if e.extra and "payload" in e.extra]
        if not payloads:
            raise ValueError("this run was not started by an OFTP2 inbound-file event")
        return dict(payloads[0])

    @task
    def process(file: dict[str, Any]) -> dict[str, Any]:
        """Check the file against the ledger's hash (replace with real processing)."""
        path = Path(file["path"])
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        ok = digest == file["sha256"]
        print(f"{file['virtual_file_key']}: {path} {'OK' if ok else 'HASH MISMATCH'}")
        return {"transfer_id": file["transfer_id"], "nerp_code": None if ok else 34}

    decision = process(received_file())
    OFTP2ReleaseReceiptOperator(
        task_id="release_receipt",
        oftp2_conn_id=CONN_ID,
        transfer_id="{{ ti.xcom_pull(task_ids='process')['transfer_id'] }}",
        nerp_code="{{ ti.xcom_pull(task_ids='process')['nerp_code'] }}",
        text="processing failed",
    ).set_upstream(decision)
