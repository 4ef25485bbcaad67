"""Fixtures for the chaos tests: TLS contexts from the shared test PKI and the gateway fixtures."""

from __future__ import annotations

import ssl

import pytest

from oftp2_provider.pki import PKIBundle
from oftp2_provider.protocol.transport import client_ssl_context, server_ssl_context

from ..gateway.conftest import gateways, start_gateway

__all__ = ["chaos_tls", "gateways", "start_gateway"]  # the gateway fixtures, reused


@pytest.fixture
def chaos_tls(test_pki: PKIBundle) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context) trusting the test CA."""
    return (
        server_ssl_context(test_pki.server.cert_path, test_pki.server.key_path),
        client_ssl_context(test_pki.ca.cert_path),
    )
