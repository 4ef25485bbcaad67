"""Send files to a partner and wait — in the triggerer, not on a worker — for the signed EERP.

Connection: ``OFTP2_CONN_ID`` (default ``oftp2_default``), an ``oftp2`` connection to the partner.
Trigger with ``{"source": "/data/out/*.edi"}`` (paths, globs or ObjectStoragePath URLs).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param, task

from oftp2_provider.operators.oftp2 import OFTP2SendOperator

CONN_ID = os.environ.get("OFTP2_CONN_ID", "oftp2_default")

with DAG(
    dag_id="oftp2_send_signed_receipt",
    description="Send files over OFTP2, ask for a signed EERP, wait for it deferred",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["oftp2", "example"],
    params={
        "source": Param("/data/oftp2/outbox/*.edi", type="string", description="path, glob or URL"),
        "dsn": Param("{stem}", type="string", description="DSN pattern ({name}, {stem}, {suffix}, {index})"),
    },
    default_args={"retries": 3, "retry_delay": timedelta(minutes=5)},
) as dag:
    send = OFTP2SendOperator(
        task_id="send",
        oftp2_conn_id=CONN_ID,
        source="{{ params.source }}",
        dsn="{{ params.dsn }}",
        description="sent by Airflow run {{ run_id }}",
        signed_eerp=True,
        wait_for_eerp=True,
        eerp_timeout=timedelta(hours=4),
        poll_interval=float(os.environ.get("OFTP2_EERP_POLL_SECONDS", "30")),
        deferrable=True,
    )

    @task
    def report(result: dict[str, Any]) -> list[str]:
        """One line per delivered file: DSN, SHA-256 and how the receipt verified."""
        receipts = {t["transfer_id"]: t for t in result["receipts"]["transfers"]}
        lines = []
        for f in result["files"]:
            r = receipts[f["transfer_id"]]
            lines.append(
                f"{f['dsn']} {f['sha256'][:16]}… {r['status']} (receipt {r['receipt_verification']})"
            )
        print("\n".join(lines))
        return lines

    report(send.output)
