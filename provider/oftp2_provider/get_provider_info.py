"""Provider metadata for Airflow's ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-oftp2",
        "name": "OFTP2",
        "description": "OFTP2 (ODETTE File Transfer Protocol 2, RFC 5024) for Apache Airflow.",
        "versions": ["0.1.0"],
        "connection-types": [],
        "hooks": [],
        "operators": [],
        "sensors": [],
        "triggers": [],
    }
