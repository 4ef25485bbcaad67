"""Call the partner every 15 minutes: send what is queued, receive its files and receipts.

Received files go to the connection's inbox and the ledger, where ``oftp2_inbound_event_driven``
(or an ``OFTP2InboundFileSensor``) picks them up.  Connection: ``OFTP2_CONN_ID``.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG

from oftp2_provider.operators.oftp2 import OFTP2PollOperator

with DAG(
    dag_id="oftp2_scheduled_poll",
    description="Poll an OFTP2 partner on a schedule",
    schedule=timedelta(minutes=15),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["oftp2", "example"],
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2)},
) as dag:
    OFTP2PollOperator(
        task_id="poll",
        oftp2_conn_id=os.environ.get("OFTP2_CONN_ID", "oftp2_default"),
        hold_receipts=os.environ.get("OFTP2_HOLD_RECEIPTS", "true").lower() == "true",
    )
