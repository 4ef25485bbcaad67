"""OFTP2 (ODETTE File Transfer Protocol 2) provider for Apache Airflow."""

from __future__ import annotations

__version__ = "0.1.0"
