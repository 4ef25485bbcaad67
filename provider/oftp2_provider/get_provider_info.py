"""Provider metadata for Airflow's ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

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
            }
        ],
        "hooks": [{"integration-name": "OFTP2", "python-modules": ["oftp2_provider.hooks.oftp2"]}],
        "operators": [{"integration-name": "OFTP2", "python-modules": ["oftp2_provider.operators.oftp2"]}],
        "sensors": [{"integration-name": "OFTP2", "python-modules": ["oftp2_provider.sensors.oftp2"]}],
        "triggers": [{"integration-name": "OFTP2", "python-modules": ["oftp2_provider.triggers.oftp2"]}],
    }
