"""``SessionContext.peer_certificate`` on real loopback sockets: the DER the peer presented in TLS, else None."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from oftp2_provider.pki import Identity, PKIBundle
from oftp2_provider.protocol.api import SessionContext, SessionHandlerBase
from oftp2_provider.protocol.transport import (
    OFTPClient,
    OFTPServer,
    client_ssl_context,
    server_ssl_context,
)

from .conftest import SERVER_PARTNER, client_config, server_config


class _Seen:
    """What the handler factory saw: the certificate at factory time and the context itself."""

    def __init__(self) -> None:
        self.at_factory: list[bytes | None] = []
        self.contexts: list[SessionContext] = []

    def factory(self, ctx: SessionContext) -> SessionHandlerBase:
        self.at_factory.append(ctx.peer_certificate)
        self.contexts.append(ctx)
        return SessionHandlerBase()


@pytest.fixture
async def servers() -> AsyncIterator[list[OFTPServer]]:
    started: list[OFTPServer] = []
    yield started
    for server in started:
        await server.close()


async def _serve(servers: list[OFTPServer], seen: _Seen, tls: ssl.SSLContext | None = None) -> OFTPServer:
    server = OFTPServer(server_config(), seen.factory)
    await server.start("127.0.0.1", 0, ssl=tls)
    servers.append(server)
    return server


def _der(identity: Identity) -> bytes:
    return identity.cert.public_bytes(Encoding.DER)


async def _session(server: OFTPServer, tls: ssl.SSLContext | None) -> SessionContext:
    client = OFTPClient(
        client_config(),
        "127.0.0.1",
        server.port,
        partner=SERVER_PARTNER,
        ssl=tls,
        server_hostname="localhost" if tls else None,
    )
    async with client:
        pass
    await server.wait_sessions(1, timeout=5)
    return client.ctx


async def test_tls_with_client_certificate_both_sides_see_the_peer_der(
    servers: list[OFTPServer], test_pki: PKIBundle
) -> None:
    seen = _Seen()
    server = await _serve(
        servers,
        seen,
        server_ssl_context(test_pki.server.cert_path, test_pki.server.key_path, cafile=test_pki.ca.cert_path),
    )
    client_ctx = await _session(
        server,
        client_ssl_context(
            test_pki.ca.cert_path, certfile=test_pki.client.cert_path, keyfile=test_pki.client.key_path
        ),
    )
    assert seen.at_factory == [_der(test_pki.client)]  # already set when the handler is built
    assert seen.contexts[0].tls and seen.contexts[0].peer_certificate == _der(test_pki.client)
    assert client_ctx.tls and client_ctx.peer_certificate == _der(test_pki.server)
    assert "peer_certificate" not in repr(client_ctx)  # kilobytes of DER stay out of reprs


async def test_tls_without_client_certificate_is_none_on_the_responder(
    servers: list[OFTPServer], test_pki: PKIBundle
) -> None:
    seen = _Seen()
    server = await _serve(
        servers,
        seen,
        server_ssl_context(test_pki.server.cert_path, test_pki.server.key_path, cafile=test_pki.ca.cert_path),
    )
    client_ctx = await _session(server, client_ssl_context(test_pki.ca.cert_path))
    assert seen.at_factory == [None] and seen.contexts[0].tls
    assert client_ctx.peer_certificate == _der(test_pki.server)


async def test_plain_tcp_is_none_on_both_sides(servers: list[OFTPServer]) -> None:
    seen = _Seen()
    server = await _serve(servers, seen)
    client_ctx = await _session(server, None)
    assert seen.at_factory == [None] and not seen.contexts[0].tls
    assert client_ctx.peer_certificate is None and not client_ctx.tls


async def test_handle_connection_marked_tls_has_no_certificate(tmp_path: Path) -> None:
    """A tunnel that says ``tls=True`` but hands over a plain stream has no certificate to show."""
    seen = _Seen()
    oftp = OFTPServer(server_config(), seen.factory)

    async def bridge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await oftp.handle_connection(reader, writer, tls=True)

    tunnel = await asyncio.start_server(bridge, "127.0.0.1", 0)
    port = tunnel.sockets[0].getsockname()[1]
    async with tunnel, OFTPClient(client_config(), "127.0.0.1", port, partner=SERVER_PARTNER):
        pass
    await oftp.wait_sessions(1, timeout=5)
    assert seen.at_factory == [None] and seen.contexts[0].tls
