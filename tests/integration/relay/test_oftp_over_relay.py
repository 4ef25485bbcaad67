"""A real OFTP2 session over TLS crossing the relay through the azbridge-compatible tunnel.

Partner (OFTPClient, TLS) → relay_forward_sender → emulator → relay_forward_listener → OFTPServer (TLS).
The relay only sees ciphertext; TLS and the OFTP authentication are end to end.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from oftp2_provider.pki import PKIBundle
from oftp2_provider.protocol.api import (
    OutboundFile,
    PartnerConfig,
    SessionConfig,
    SessionContext,
    SessionHandlerBase,
    Timeouts,
)
from oftp2_provider.protocol.transport import OFTPClient, OFTPServer, client_ssl_context, server_ssl_context
from oftp2_provider.relay import RelayEmulator, relay_forward_listener, relay_forward_sender

CLIENT, SERVER = "O0013RELAYCLIENT", "O0013RELAYSERVER"
FAST = Timeouts(connect=10, read=10, idle=10)


async def test_oftp2_tls_session_through_the_relay_tunnel(
    emulator: RelayEmulator, test_pki: PKIBundle, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    handlers: list[SessionHandlerBase] = []

    def factory(ctx: SessionContext) -> SessionHandlerBase:
        handler = SessionHandlerBase(inbox, auto_eerp=True, own_id=SERVER)
        handlers.append(handler)
        return handler

    server = OFTPServer(
        SessionConfig(odette_id=SERVER, password="SPW", timeouts=FAST),
        factory,
        partners={CLIENT: PartnerConfig(CLIENT, "CPW")},
    )
    await server.start(
        "127.0.0.1", 0, ssl=server_ssl_context(test_pki.server.cert_path, test_pki.server.key_path)
    )
    src = tmp_path / "out" / "invoice.bin"
    src.parent.mkdir()
    src.write_bytes(os.urandom(500_000))
    address, tokens = emulator.address("tunnel"), emulator.token_provider()
    client_handler = SessionHandlerBase()
    try:
        async with (
            relay_forward_listener(address, tokens, {"oftp": ("127.0.0.1", server.port)}) as forwarder,
            relay_forward_sender(address, tokens, "oftp") as local_port,
        ):
            async with OFTPClient(
                SessionConfig(odette_id=CLIENT, password="CPW", timeouts=FAST),
                "127.0.0.1",
                local_port,
                partner=PartnerConfig(SERVER, "SPW"),
                ssl=client_ssl_context(test_pki.ca.cert_path),
                server_hostname="localhost",
                handler=client_handler,
            ) as client:
                result = await client.send_file(
                    OutboundFile(dsn="INVOICE.BIN", originator=CLIENT, destination=SERVER, path=src)
                )
            assert forwarder.connections == 1
            await server.wait_sessions(1, timeout=10)
    finally:
        await server.close()
    assert result.ok and result.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    assert (inbox / "INVOICE.BIN").read_bytes() == src.read_bytes()
    assert client.outcome is not None and client.outcome.ok
    assert len(client_handler.eerps) == 1  # the EERP came back through the tunnel in the same session
