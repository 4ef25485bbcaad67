"""Fixtures for the hostile-input table: the engine's responder, raw peers and gateways from other suites."""

from __future__ import annotations

from tests.integration.airflow.conftest import oftp2_conn, partner
from tests.integration.gateway.conftest import gateways, start_gateway
from tests.integration.protocol.conftest import payload, responder, responder_factory

__all__ = ["gateways", "oftp2_conn", "partner", "payload", "responder", "responder_factory", "start_gateway"]
