"""``get_provider_info()`` declares the ``azure_relay`` connection type, hook and trigger modules."""

from __future__ import annotations

import importlib

from oftp2_provider.get_provider_info import get_provider_info
from oftp2_provider.relay_connection import conn_fields, ui_field_behaviour


def test_provider_info_declares_the_connection_type_and_modules() -> None:
    info = get_provider_info()
    entry = next(c for c in info["connection-types"] if c["connection-type"] == "azure_relay")
    assert entry["hook-class-name"] == "oftp2_provider.hooks.azure_relay.AzureRelayHook"
    assert entry["conn-fields"] == conn_fields() and entry["ui-field-behaviour"] == ui_field_behaviour()
    assert entry["conn-fields"]["hybrid_connection"]["schema"]["type"] == "string"
    assert entry["conn-fields"]["endpoint"]["schema"]["type"] == ["string", "null"]
    assert entry["conn-fields"]["token_ttl"]["schema"]["default"] == 3600
    modules = {m for group in info["hooks"] for m in group["python-modules"]}
    assert "oftp2_provider.hooks.azure_relay" in modules
    modules = {m for group in info["triggers"] for m in group["python-modules"]}
    assert "oftp2_provider.triggers.azure_relay" in modules
    for module in ("oftp2_provider.hooks.azure_relay", "oftp2_provider.triggers.azure_relay"):
        importlib.import_module(module)
