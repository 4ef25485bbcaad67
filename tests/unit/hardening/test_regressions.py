"""Regression tests for what the fuzzers and the hardening review found (each names its input)."""

from __future__ import annotations

import json
import logging

import pytest

from oftp2_provider.protocol.api import passwords_match
from tests.fuzz.targets import relay_control


def test_relay_accept_with_malformed_address_is_ignored_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found by the relay target: ``urlsplit`` raised ValueError ("Invalid IPv6 URL") inside the listener.

    It used to end in the listener's catch-all with a traceback at ERROR; now it is a warning that
    names the address, and nothing is queued.
    """
    caplog.set_level(logging.WARNING, logger="oftp2_provider.relay")
    for address in ("wss://[x/", "wss://[::1/$hc/hc1", "http://]/"):
        relay_control(json.dumps({"accept": {"address": address, "id": "1"}}).encode())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("malformed address" in m for m in warnings) == 3, warnings
    assert not [r for r in caplog.records if r.exc_info]


@pytest.mark.parametrize(
    ("expected", "presented", "match"),
    [
        ("SECRET", "SECRET", True),
        ("SECRET", "secret  ", True),
        ("SECRET", "SECRE", False),
        ("SECRET", "SECRET1", False),
        ("SECRET", "", False),
        ("", "", True),
        ("SECRET", "SÉCRET", False),  # non-ASCII must not raise (hmac.compare_digest refuses non-ASCII str)
        ("PÄSS", "päss", True),
    ],
)
def test_passwords_match_is_constant_time_and_unchanged(expected: str, presented: str, match: bool) -> None:
    """SSID password comparison moved to ``hmac.compare_digest``; its results did not change."""
    assert passwords_match(expected, presented) is match


def test_passwords_match_case_sensitive_option() -> None:
    assert passwords_match("Secret", "Secret", case_sensitive=True)
    assert not passwords_match("Secret", "SECRET", case_sensitive=True)
