"""The ``azure_relay`` connection model, its generated form, and the trigger's serialization."""

from __future__ import annotations

import base64
import importlib
import json

import pytest

from oftp2_provider.connection import ConnectionConfigError
from oftp2_provider.relay_connection import AzureRelayConnectionConfig, conn_fields, ui_field_behaviour
from oftp2_provider.triggers.azure_relay import AzureRelayTrigger, decode_body, encode_body

KEY = "c2VjcmV0LWtleS1mb3ItdGVzdHM="


def _config(**extra: object) -> AzureRelayConnectionConfig:
    return AzureRelayConnectionConfig.from_values(
        "relay",
        host="sb://myns.servicebus.windows.net/",
        login="listen-rule",
        password=KEY,
        extra={"hybrid_connection": "/webhooks/", **extra},
    )


def test_valid_connection_builds_address_and_tokens() -> None:
    config = _config(endpoint="ws://127.0.0.1:9351/", token_ttl=600)
    address = config.address()
    assert (address.namespace, address.path, address.endpoint) == (
        "myns.servicebus.windows.net",
        "webhooks",
        "ws://127.0.0.1:9351",
    )
    assert config.address("other").path == "other"
    token = config.token_provider().get_token(address.resource)
    assert token.key_name == "listen-rule" and token.verify_signature(KEY)
    assert 590 <= token.remaining() <= 600
    assert KEY not in repr(config), "the key must not appear in reprs (logs)"


def test_form_prefixed_extras_are_accepted() -> None:
    config = AzureRelayConnectionConfig.from_values(
        "relay",
        host="myns.servicebus.windows.net",
        login="k",
        password="v",
        extra=json.dumps(
            {"extra__azure_relay__hybrid_connection": "hc1", "extra__azure_relay__endpoint": ""}
        ),
    )
    assert config.extras.hybrid_connection == "hc1" and config.extras.endpoint is None


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"host": ""}, "host"),
        ({"host": "my ns"}, "host"),
        ({"login": None}, "login"),
        ({"password": ""}, "password"),
        ({"extra": {}}, "extra.hybrid_connection"),
        ({"extra": {"hybrid_connection": "a b"}}, "extra.hybrid_connection"),
        ({"extra": {"hybrid_connection": "hc", "endpoint": "http://x:1"}}, "extra.endpoint"),
        ({"extra": {"hybrid_connection": "hc", "token_ttl": 5}}, "extra.token_ttl"),
        ({"extra": {"hybrid_connection": "hc", "typo": 1}}, "extra.typo"),
        ({"extra": "{not json"}, "extra"),
    ],
)
def test_invalid_connection_names_the_field(values: dict[str, object], field: str) -> None:
    raw: dict[str, object] = {
        "host": "myns.servicebus.windows.net",
        "login": "rule",
        "password": KEY,
        "extra": {"hybrid_connection": "hc"},
        **values,
    }
    with pytest.raises(ConnectionConfigError) as info:
        AzureRelayConnectionConfig.from_values("relay", **raw)  # type: ignore[arg-type]
    assert field in [name for name, _ in info.value.problems], info.value.problems
    assert KEY not in str(info.value)


def test_trigger_serialize_round_trips_without_secrets() -> None:
    trigger = AzureRelayTrigger(
        "relay_conn",
        hybrid_connection="orders",
        response_status=201,
        response_body="stored",
        error_status=500,
        max_body=10,
        body_encoding="base64",
        accept_websockets=False,
        websocket_timeout=5,
    )
    classpath, kwargs = trigger.serialize()
    json.dumps(kwargs)  # plain JSON
    module, _, name = classpath.rpartition(".")
    again = getattr(importlib.import_module(module), name)(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    assert again.shared_stream_key() == trigger.shared_stream_key() == ("azure-relay", "relay_conn", "orders")
    assert not any("key" == k or "password" in k for k in kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{"response_status": 99}, {"error_status": 600}, {"body_encoding": "hex"}, {"max_body": -1}],
)
def test_trigger_rejects_bad_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        AzureRelayTrigger("relay", **kwargs)  # type: ignore[arg-type]


def test_body_encoding() -> None:
    assert encode_body("grüße".encode(), "auto") == ("grüße", "text")
    raw = b"\xff\x00binary"
    text, enc = encode_body(raw, "auto")
    assert enc == "base64" and base64.b64decode(text) == raw
    assert decode_body({"body": text, "body_encoding": enc}) == raw
    assert encode_body(b"abc", "base64") == ("YWJj", "base64")
    assert encode_body(raw, "text")[1] == "text"


def test_form_is_generated_from_the_model() -> None:
    fields = conn_fields()
    assert set(fields) == {
        "hybrid_connection",
        "endpoint",
        "tls_ca",
        "token_ttl",
        "connect_timeout",
        "keepalive_interval",
    }
    assert fields["hybrid_connection"]["schema"] == {"type": "string", "minLength": 1}
    assert fields["endpoint"]["schema"]["type"] == ["string", "null"]
    assert fields["token_ttl"]["schema"] == {
        "type": ["integer", "null"],
        "default": 3600,
        "minimum": 60,
        "maximum": 604800,
    }
    for name, field in fields.items():
        assert field["label"] and field["description"], name
    behaviour = ui_field_behaviour()
    assert {"port", "extra"} <= set(behaviour["hidden-fields"])
    assert behaviour["relabeling"]["password"] == "SAS key"
