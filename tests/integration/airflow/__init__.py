"""Integration tests of the Airflow layer."""
