"""Webhooks through Azure Relay: one DAG run per HTTP request, with no inbound port.

The ``AzureRelayTrigger`` listens on a Hybrid Connection (it dials out to the relay over
WebSockets) and emits one asset event per HTTP request sent to
``https://<namespace>/<hybrid connection>/…``.  It runs in shared-stream ack mode: the sender gets
``202 accepted`` only after Airflow stored the event, and ``503`` (retry) if it could not — so a
webhook is never acknowledged and then lost.  The task below logs the request from the asset
event's extra.

Settings (environment): ``RELAY_CONN_ID`` (an ``azure_relay`` connection; default
``azure_relay_default``), ``RELAY_HYBRID_CONNECTION`` (overrides the connection's Hybrid Connection).
Try it offline with ``oftp2 relay-emulator`` and a connection whose ``extra.endpoint`` points at it
(see docs/azure-relay.md, "Airflow").
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from typing import Any

from airflow.sdk import DAG, Asset, AssetWatcher, task

from oftp2_provider.triggers.azure_relay import AzureRelayTrigger, decode_body

log = logging.getLogger(__name__)

RELAY_CONN_ID = os.environ.get("RELAY_CONN_ID", "azure_relay_default")

webhooks = Asset(
    "azure-relay://" + RELAY_CONN_ID + "/" + os.environ.get("RELAY_HYBRID_CONNECTION", "webhooks"),
    watchers=[
        AssetWatcher(
            name="relay_webhooks",
            trigger=AzureRelayTrigger(
                azure_relay_conn_id=RELAY_CONN_ID,
                hybrid_connection=os.environ.get("RELAY_HYBRID_CONNECTION") or None,
                response_status=202,
                response_body="accepted",
            ),
        )
    ],
)

with DAG(
    dag_id="relay_webhook_example",
    description="Log each webhook that arrives through an Azure Relay Hybrid Connection",
    schedule=[webhooks],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["azure-relay", "example"],
) as dag:

    @task
    def log_request(**context: Any) -> dict[str, Any]:
        """Log the relayed request this run is for; return its summary (XCom)."""
        events = [e for evs in context["triggering_asset_events"].values() for e in evs]
        payloads = [e.extra["payload"] for e in events if e.extra and "payload" in e.extra]
        if not payloads:
            raise ValueError("this run was not started by an Azure Relay event")
        request = dict(payloads[0])
        body = decode_body(request)
        log.info(
            "relayed %s %s from %s: %d bytes, content-type %s",
            request.get("method", "WEBSOCKET"),
            request["target"],
            request.get("remote_endpoint", {}).get("address", "?"),
            len(body),
            request["headers"].get("Content-Type") or request["headers"].get("content-type"),
        )
        log.info("body: %s", body[:2000].decode("utf-8", "replace"))
        return {
            "id": request["id"],
            "method": request.get("method"),
            "target": request["target"],
            "body_size": len(body),
            "body": body.decode("utf-8", "replace") if request["body_encoding"] == "text" else None,
        }

    log_request()
