"""SAS tokens, connection strings and addresses."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from urllib.parse import quote

import pytest

from oftp2_provider.relay import (
    HybridConnectionAddress,
    RelayConfigurationError,
    RelayConnectionString,
    RelayTokenError,
    SasToken,
    SasTokenProvider,
)


def test_token_matches_the_documented_algorithm() -> None:
    token = SasToken.create(
        "http://ns.servicebus.windows.net/hc1", "RootManageSharedAccessKey", "s3cret", 600
    )
    sr = quote("http://ns.servicebus.windows.net/hc1", safe="")
    expected = base64.b64encode(
        hmac.new(b"s3cret", f"{sr}\n{token.expiry}".encode(), hashlib.sha256).digest()
    ).decode()
    assert token.raw == (
        f"SharedAccessSignature sr={sr}&sig={quote(expected, safe='')}&se={token.expiry}&skn=RootManageSharedAccessKey"
    )
    assert 590 <= token.remaining() <= 600
    parsed = SasToken.parse(token.raw)
    assert parsed == token
    assert parsed.verify_signature("s3cret") and not parsed.verify_signature("other")


def test_known_vector_with_fixed_expiry() -> None:
    """A vector computed by hand: key 'key', resource http://a/b, se 1700000000."""
    sr = "http%3A%2F%2Fa%2Fb"
    sig = base64.b64encode(hmac.new(b"key", f"{sr}\n1700000000".encode(), hashlib.sha256).digest()).decode()
    raw = f"SharedAccessSignature sr={sr}&sig={quote(sig, safe='')}&se=1700000000&skn=k"
    token = SasToken.parse(raw)
    assert token.resource == "http://a/b" and token.key_name == "k" and token.expiry == 1700000000
    assert token.verify_signature("key")
    assert token.is_expired()
    with pytest.raises(RelayTokenError, match="expired"):
        token.validate({"k": "key"}, "a", "b")


def test_lower_case_escapes_are_verified_as_sent() -> None:
    """Older .NET signs 'http%3a%2f%2f…' — verification must use sr exactly as it appears."""
    sr = "http%3a%2f%2fns%2fhc1"
    se = str(int(time.time()) + 60)
    sig = base64.b64encode(hmac.new(b"k", f"{sr}\n{se}".encode(), hashlib.sha256).digest()).decode()
    token = SasToken.parse(f"SharedAccessSignature sr={sr}&sig={quote(sig, safe='')}&se={se}&skn=n")
    token.validate({"n": "k"}, "ns", "hc1")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("Bearer abc", "must start"),
        ("SharedAccessSignature sr=a&sig=b&se=1", "'skn'"),
        ("SharedAccessSignature sr=a&sig=b&se=soon&skn=k", "not a unix time"),
        ("SharedAccessSignature sr=a&sig&se=1&skn=k", "has no value"),
    ],
)
def test_malformed_tokens_name_the_field(text: str, problem: str) -> None:
    with pytest.raises(RelayTokenError, match=problem):
        SasToken.parse(text)


def test_validate_checks_key_name_signature_and_audience() -> None:
    token = SasToken.create("http://ns/hc1", "listen", "k1")
    token.validate({"listen": "k1"}, "ns", "hc1")
    token.validate({"listen": "k1"}, ("other", "NS"), "hc1/suffix/more")
    with pytest.raises(RelayTokenError, match="unknown SAS key name"):
        token.validate({"send": "k1"}, "ns", "hc1")
    with pytest.raises(RelayTokenError, match="signature"):
        token.validate({"listen": "k2"}, "ns", "hc1")
    with pytest.raises(RelayTokenError, match="audience"):
        token.validate({"listen": "k1"}, "ns", "hc10")
    with pytest.raises(RelayTokenError, match="audience"):
        token.validate({"listen": "k1"}, "elsewhere", "hc1")
    root = SasToken.create("http://ns/", "listen", "k1")
    root.validate({"listen": "k1"}, "ns", "any/entity")


def test_node_style_audience_with_port_and_hc_prefix() -> None:
    token = SasToken.create("http://127.0.0.1:5000/$hc/hc1/chat", "n", "k")
    token.validate({"n": "k"}, "127.0.0.1", "hc1/chat")


def test_provider_and_fixed_token() -> None:
    provider = SasTokenProvider("n", "k", ttl=100)
    first = provider.get_token("http://ns/hc1")
    assert first.remaining() <= 100
    fixed = SasTokenProvider.from_token(first.raw)
    assert fixed.get_token("http://ns/other").raw == first.raw
    with pytest.raises(RelayConfigurationError):
        SasToken.create("http://ns/hc1", "", "k")
    with pytest.raises(RelayConfigurationError):
        SasToken.create("http://ns/hc1", "n", "k", ttl=0)


def test_connection_string() -> None:
    cs = RelayConnectionString.parse(
        "Endpoint=sb://myns.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;"
        "SharedAccessKey=abc=;EntityPath=hc1"
    )
    assert (cs.namespace, cs.key_name, cs.key, cs.entity_path) == (
        "myns.servicebus.windows.net",
        "RootManageSharedAccessKey",
        "abc=",
        "hc1",
    )
    assert cs.token_provider().get_token("http://myns.servicebus.windows.net/hc1").key_name == cs.key_name
    with pytest.raises(RelayConfigurationError, match="Endpoint"):
        RelayConnectionString.parse("SharedAccessKeyName=a;SharedAccessKey=b")
    with pytest.raises(RelayConfigurationError, match="SharedAccessKey"):
        RelayConnectionString.parse("Endpoint=sb://ns/")


def test_address_urls_and_rewrite() -> None:
    address = HybridConnectionAddress("sb://myns.servicebus.windows.net/", "/hc1/")
    assert address.resource == "http://myns.servicebus.windows.net/hc1"
    assert (
        address.listen_url("id1")
        == "wss://myns.servicebus.windows.net/$hc/hc1?sb-hc-action=listen&sb-hc-id=id1"
    )
    assert address.connect_url("chat", {"room": "4 2"}) == (
        "wss://myns.servicebus.windows.net/$hc/hc1/chat?room=4+2&sb-hc-action=connect"
    )
    assert address.http_url("api") == "https://myns.servicebus.windows.net/hc1/api"
    assert address.rewrite("wss://x/$hc/hc1?a=1") == "wss://x/$hc/hc1?a=1"
    local = HybridConnectionAddress("myns.servicebus.windows.net", "hc1", endpoint="ws://127.0.0.1:9")
    assert local.http_url() == "http://127.0.0.1:9/hc1"
    assert local.rewrite("wss://myns.servicebus.windows.net:443/$hc/hc1?sb-hc-action=accept&sb-hc-id=7") == (
        "ws://127.0.0.1:9/$hc/hc1?sb-hc-action=accept&sb-hc-id=7"
    )
    with pytest.raises(RelayConfigurationError, match="endpoint override"):
        HybridConnectionAddress("ns", "hc1", endpoint="http://127.0.0.1:9")
    with pytest.raises(RelayConfigurationError, match="path"):
        HybridConnectionAddress("ns", "/")


def test_odd_audiences_and_hosts_are_refused_not_crashing() -> None:
    token = SasToken.create("http://[broken/hc1", "n", "k")
    with pytest.raises(RelayTokenError, match="audience"):
        token.validate({"n": "k"}, "ns", "hc1")
