"""Provider metadata for Airflow's ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from oftp2_provider import relay_connection
from oftp2_provider.connection import conn_fields, ui_field_behaviour


def get_provider_info() -> dict[str, Any]:
    """Describe the provider: the ``oftp2`` connection type (form generated from its pydantic model)
    and the hook, operator, sensor and trigger modules."""
    return {
        "package-name": "airflow-provider-oftp2",
        "name": "OFTP2",
        "description": "OFTP2 (ODETTE File Transfer Protocol 2, RFC 5024) for Apache Airflow.",
        "versions": ["0.1.0"],
        "connection-types": [
            {
                "connection-type": "oftp2",
                "hook-class-name": "oftp2_provider.hooks.oftp2.OFTP2Hook",
                "hook-name": "OFTP2",
                "conn-fields": conn_fields(),
                "ui-field-behaviour": ui_field_behaviour(),
            },
            {
                "connection-type": "azure_relay",
                "hook-class-name": "oftp2_provider.hooks.azure_relay.AzureRelayHook",
                "hook-name": "Azure Relay",
                "conn-fields": relay_connection.conn_fields(),
                "ui-field-behaviour": relay_connection.ui_field_behaviour(),
            },
        ],
        "hooks": [
            {"integration-name": "OFTP2", "python-modules": ["oftp2_provider.hooks.oftp2"]},
            {"integration-name": "Azure Relay", "python-modules": ["oftp2_provider.hooks.azure_relay"]},
        ],
        "operators": [{"integration-name": "OFTP2", "python-modules": ["oftp2_provider.operators.oftp2"]}],
        "sensors": [{"integration-name": "OFTP2", "python-modules": ["oftp2_provider.sensors.oftp2"]}],
        "triggers": [
            {"integration-name": "OFTP2", "python-modules": ["oftp2_provider.triggers.oftp2"]},
            {"integration-name": "Azure Relay", "python-modules": ["oftp2_provider.triggers.azure_relay"]},
        ],
    }
