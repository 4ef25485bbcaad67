"""Unit tests of the Airflow layer."""
