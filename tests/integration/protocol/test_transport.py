"""OFTPClient ⇄ OFTPServer on real loopback sockets (plain TCP and TLS)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from oftp2_provider.pki import PKIBundle
from oftp2_provider.protocol.api import (
    AcceptDecision,
    CmsAuthenticator,
    ConnectionRequest,
    OutboundFile,
    PartnerConfig,
    SessionHandlerBase,
    make_eerp,
    make_nerp,
    receipt_key,
)
from oftp2_provider.protocol.commands import EERP, ProtocolLevel, RecordFormat
from oftp2_provider.protocol.errors import EsidReason, SessionRejected
from oftp2_provider.protocol.transport import (
    OFTPClient,
    OFTPServer,
    SessionAborted,
    client_ssl_context,
    server_ssl_context,
)

from .conftest import (
    CLIENT,
    SERVER,
    SERVER_PARTNER,
    Responder,
    client_config,
    server_config,
)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def outbound(path: Path, dsn: str | None = None, **kw: object) -> OutboundFile:
    return OutboundFile(dsn=dsn or path.name.upper(), originator=CLIENT, destination=SERVER, path=path, **kw)  # type: ignore[arg-type]


async def test_send_file_and_eerp_in_same_session(responder: Responder, payload: Callable[..., Path]) -> None:
    src = payload(300_000)
    handler = SessionHandlerBase()
    async with OFTPClient(
        client_config(), "127.0.0.1", responder.port, partner=SERVER_PARTNER, handler=handler
    ) as client:
        result = await client.send_file(outbound(src))
    assert result.ok and result.octets_sent == 300_000 and result.sha256 == sha(src)
    received = responder.inbox / src.name.upper()
    assert received.read_bytes() == src.read_bytes()
    assert not any((responder.inbox / ".partial").iterdir())
    # the responder answered with an EERP when it got the turn
    assert [receipt_key(e) for e in handler.eerps] == [result.sfid.key]
    assert client.outcome is not None and client.outcome.ok
    await responder.server.wait_sessions(1, timeout=5)
    (h,) = responder.handlers
    assert h.outcome is not None and h.outcome.ok and h.received[0].sha256 == result.sha256


async def test_tls_session(
    responder_factory: Callable[..., object], payload: Callable[..., Path], test_pki: PKIBundle
) -> None:
    ctx = server_ssl_context(test_pki.server.cert_path, test_pki.server.key_path)
    responder: Responder = await responder_factory(ssl=ctx)  # type: ignore[misc]
    src = payload(1_000_000)
    tls = client_ssl_context(test_pki.ca.cert_path)
    async with OFTPClient(
        client_config(),
        "127.0.0.1",
        responder.port,
        partner=SERVER_PARTNER,
        ssl=tls,
        server_hostname="localhost",
    ) as client:
        assert client.ctx.tls
        result = await client.send_file(outbound(src))
    assert result.ok and (responder.inbox / src.name.upper()).read_bytes() == src.read_bytes()
    await responder.server.wait_sessions(1, timeout=5)
    assert responder.handlers[0].contexts[0].tls


async def test_tls_untrusted_server_fails(
    responder_factory: Callable[..., object], test_pki: PKIBundle
) -> None:
    ctx = server_ssl_context(test_pki.untrusted.cert_path, test_pki.untrusted.key_path)
    responder: Responder = await responder_factory(ssl=ctx)  # type: ignore[misc]
    tls = client_ssl_context(test_pki.ca.cert_path)
    client = OFTPClient(client_config(), "127.0.0.1", responder.port, ssl=tls, server_hostname="localhost")
    with pytest.raises(OSError):
        await client.connect()


async def test_several_files_both_ways_with_cd(
    responder: Responder, payload: Callable[..., Path], tmp_path: Path
) -> None:
    files = [payload(50_000 + i * 1000, f"f{i}.bin") for i in range(3)]
    back = [payload(20_000 + i, f"back{i}.bin") for i in range(2)]
    responder.queue.extend(
        OutboundFile(dsn=p.name.upper(), originator=SERVER, destination=CLIENT, path=p) for p in back
    )
    client_inbox = tmp_path / "client-inbox"
    handler = SessionHandlerBase(client_inbox, auto_eerp=True, own_id=CLIENT)
    async with OFTPClient(
        client_config(), "127.0.0.1", responder.port, partner=SERVER_PARTNER, handler=handler
    ) as client:
        results = [await client.send_file(outbound(p)) for p in files]
    assert all(r.ok for r in results)
    for p in files:
        assert (responder.inbox / p.name.upper()).read_bytes() == p.read_bytes()
    for p in back:
        assert (client_inbox / p.name.upper()).read_bytes() == p.read_bytes()
    assert len(handler.eerps) == 3
    await responder.server.wait_sessions(1, timeout=5)
    server_handler = responder.handlers[0]
    # the client answered the responder's files with EERPs, sent after the turn came back
    assert sorted(e.dsn for e in server_handler.eerps) == ["BACK0.BIN", "BACK1.BIN"]
    assert sorted(r.sfid.dsn for r in server_handler.sent) == ["BACK0.BIN", "BACK1.BIN"]


async def test_eerp_nerp_rtr(responder: Responder, payload: Callable[..., Path]) -> None:
    src = payload(1000)
    async with OFTPClient(client_config(), "127.0.0.1", responder.port) as client:
        result = await client.send_file(outbound(src))
        eerp = make_eerp(result.sfid, own_id=CLIENT)
        await client.send_eerp(EERP(eerp.dsn, eerp.date, eerp.time, SERVER, CLIENT))
        await client.send_nerp(make_nerp(result.sfid, 23, creator=CLIENT, text="duplicate"))
    await responder.server.wait_sessions(1, timeout=5)
    h = responder.handlers[0]
    assert [e.dsn for e in h.eerps] == [src.name.upper()]
    assert h.nerps[0].reason == 23 and h.nerps[0].text == "duplicate"


@pytest.mark.parametrize(("sdeb", "credit"), [(128, 1), (128, 999), (99999, 1), (99999, 999)])
async def test_buffer_and_credit_sizes(
    responder_factory: Callable[..., object], payload: Callable[..., Path], sdeb: int, credit: int
) -> None:
    responder: Responder = await responder_factory(server_config(sdeb=sdeb, credit=credit))  # type: ignore[misc]
    src = payload(150_000)
    async with OFTPClient(client_config(sdeb=sdeb, credit=credit), "127.0.0.1", responder.port) as client:
        neg = client.negotiated
        assert neg is not None and (neg.sdeb, neg.credit) == (sdeb, credit)
        result = await client.send_file(outbound(src))
    assert result.ok and (responder.inbox / src.name.upper()).read_bytes() == src.read_bytes()


@pytest.mark.parametrize(
    ("client_level", "server_level"),
    [
        (ProtocolLevel.V1_3, ProtocolLevel.V2_0),
        (ProtocolLevel.V2_0, ProtocolLevel.V1_3),
        (ProtocolLevel.V1_4, ProtocolLevel.V2_0),
        (ProtocolLevel.V2_0, ProtocolLevel.V1_4),
        (ProtocolLevel.V2_0, ProtocolLevel.V2_0),
    ],
)
async def test_level_negotiation(
    responder_factory: Callable[..., object],
    payload: Callable[..., Path],
    client_level: ProtocolLevel,
    server_level: ProtocolLevel,
) -> None:
    responder: Responder = await responder_factory(server_config(level=server_level))  # type: ignore[misc]
    src = payload(5000)
    handler = SessionHandlerBase()
    async with OFTPClient(
        client_config(level=client_level), "127.0.0.1", responder.port, handler=handler
    ) as client:
        neg = client.negotiated
        assert neg is not None and neg.level == min(client_level, server_level)
        result = await client.send_file(outbound(src))
    assert result.ok and (responder.inbox / src.name.upper()).read_bytes() == src.read_bytes()
    if neg.level < ProtocolLevel.V1_4:
        assert len(result.sfid.date) == 6 and len(result.sfid.time) == 6
    # the EERP echoes the (possibly shortened) date and time exactly
    assert [receipt_key(e) for e in handler.eerps] == [result.sfid.key]


async def test_fixed_record_file(responder: Responder, tmp_path: Path) -> None:
    src = tmp_path / "fixed.dat"
    src.write_bytes(b"".join(bytes([65 + i % 26]) * 80 for i in range(100)))
    async with OFTPClient(client_config(), "127.0.0.1", responder.port) as client:
        result = await client.send_file(outbound(src, format=RecordFormat.FIXED, lrecl=80))
    assert result.ok
    await responder.server.wait_sessions(1, timeout=5)
    rec = responder.handlers[0].received[0]
    assert rec.record_count == 100 and rec.path.read_bytes() == src.read_bytes()


async def test_unknown_user_and_wrong_password(responder: Responder) -> None:
    with pytest.raises(SessionRejected) as info:
        async with OFTPClient(client_config(odette_id="O0013NOBODY"), "127.0.0.1", responder.port):
            pass
    assert info.value.reason == EsidReason.USER_CODE_NOT_KNOWN
    with pytest.raises(SessionRejected) as info:
        async with OFTPClient(client_config(password="WRONG"), "127.0.0.1", responder.port):
            pass
    assert info.value.reason == EsidReason.INVALID_PASSWORD


async def test_client_rejects_wrong_responder_password(responder: Responder) -> None:
    with pytest.raises(SessionAborted) as info:
        async with OFTPClient(
            client_config(), "127.0.0.1", responder.port, partner=PartnerConfig(SERVER, "NOTSPW")
        ):
            pass
    assert info.value.reason == EsidReason.INVALID_PASSWORD


async def test_handler_can_reject_and_cap_level(responder_factory: Callable[..., object]) -> None:
    class Picky(SessionHandlerBase):
        async def accept_connection(self, request: ConnectionRequest) -> AcceptDecision:
            if request.client_user_data == "BUSY":
                return AcceptDecision.reject(EsidReason.RESOURCES_NOT_AVAILABLE, "busy")
            return AcceptDecision.accept(level=ProtocolLevel.V1_4)

    responder: Responder = await responder_factory()  # type: ignore[misc]
    responder.server.handler_factory = lambda ctx: Picky()
    with pytest.raises(SessionRejected) as info:
        async with OFTPClient(client_config(user_data="BUSY"), "127.0.0.1", responder.port):
            pass
    assert info.value.reason == EsidReason.RESOURCES_NOT_AVAILABLE
    async with OFTPClient(client_config(), "127.0.0.1", responder.port) as client:
        assert client.negotiated is not None and client.negotiated.level == ProtocolLevel.V1_4


async def test_refused_file_is_a_result(
    responder_factory: Callable[..., object], payload: Callable[..., Path]
) -> None:
    responder: Responder = await responder_factory()  # type: ignore[misc]
    responder.server.handler_factory = lambda ctx: SessionHandlerBase()  # no inbox → SFNA 14
    async with OFTPClient(client_config(), "127.0.0.1", responder.port) as client:
        result = await client.send_file(outbound(payload(10)))
        assert not result.ok and result.refused_at == "SFNA" and result.reason == 14
        # the session goes on after a refusal
        await client.send_eerp(EERP("X", "20240101", "1200000001", SERVER, CLIENT))


def _killing_source(
    path: Path, kill_after: int, client_box: list[OFTPClient]
) -> Callable[[int], AsyncIterator[bytes]]:
    content = path.read_bytes()

    async def source(offset: int) -> AsyncIterator[bytes]:
        sent = 0
        for start in range(offset, len(content), 65536):
            chunk = content[start : start + 65536]
            yield chunk
            sent += len(chunk)
            if sent >= kill_after:
                await asyncio.sleep(0.2)  # let the data reach the responder
                drv = client_box[0]._driver
                assert drv is not None
                drv.writer.transport.abort()  # the connection dies mid-file
                await asyncio.sleep(0.1)

    return source


async def test_restart_after_connection_killed(responder: Responder, payload: Callable[..., Path]) -> None:
    src = payload(3_000_000)
    first = outbound(src, dsn="BIG.FILE")
    box: list[OFTPClient] = []
    source = _killing_source(src, 1_000_000, box)
    killed = OutboundFile(
        dsn="BIG.FILE",
        originator=CLIENT,
        destination=SERVER,
        source=source,
        size=src.stat().st_size,
        date=first.date,
        time=first.time,
    )
    client = OFTPClient(client_config(), "127.0.0.1", responder.port)
    box.append(client)
    await client.connect()
    with pytest.raises(SessionAborted):
        await client.send_file(killed)
    await client.close()
    await responder.server.wait_sessions(1, timeout=5)
    partial = responder.inbox / ".partial" / "BIG.FILE"
    kept = partial.stat().st_size
    assert kept >= 500_000 and not (responder.inbox / "BIG.FILE").exists()
    # second session: same virtual file (same DSN/date/time) → the responder resumes
    async with OFTPClient(client_config(), "127.0.0.1", responder.port) as client2:
        result = await client2.send_file(first)
    assert result.ok
    assert result.restart_offset == kept // 1024 * 1024 and result.restart_offset > 0
    assert result.octets_sent == src.stat().st_size - result.restart_offset
    assert result.sha256 == sha(src)
    final = responder.inbox / "BIG.FILE"
    assert sha(final) == sha(src)
    await responder.server.wait_sessions(2, timeout=5)
    assert responder.handlers[-1].received[0].sha256 == sha(src)
    assert responder.handlers[-1].received[0].restart_offset == result.restart_offset


async def test_restart_never_resumes_a_different_file(
    responder: Responder, payload: Callable[..., Path]
) -> None:
    partial_dir = responder.inbox / ".partial"
    partial_dir.mkdir(parents=True)
    (partial_dir / "SAME.NAME").write_bytes(os.urandom(50_000))  # left over from another virtual file
    src = payload(60_000)
    async with OFTPClient(client_config(), "127.0.0.1", responder.port) as client:
        result = await client.send_file(outbound(src, dsn="SAME.NAME"))
    assert result.ok and result.restart_offset == 0
    assert (responder.inbox / "SAME.NAME").read_bytes() == src.read_bytes()


async def test_peer_disappears_mid_transfer(responder: Responder, payload: Callable[..., Path]) -> None:
    src = payload(2_000_000)
    box: list[OFTPClient] = []
    source = _killing_source(src, 500_000, box)
    client = OFTPClient(client_config(), "127.0.0.1", responder.port)
    box.append(client)
    await client.connect()
    with pytest.raises(SessionAborted) as info:
        await client.send_file(
            OutboundFile(dsn="GONE", originator=CLIENT, destination=SERVER, source=source, size=2_000_000)
        )
    assert info.value.connection_lost  # noticed at once, not after streaming into a dead socket
    await client.close()
    await responder.server.wait_sessions(1, timeout=5)
    assert not (responder.inbox / "GONE").exists()  # never presented as complete
    assert responder.handlers[0].received == []
    # the responder is still serving
    async with OFTPClient(client_config(), "127.0.0.1", responder.port) as again:
        assert (await again.send_file(outbound(payload(10, "ok.bin")))).ok


async def test_max_sessions_is_esid_08(responder_factory: Callable[..., object]) -> None:
    responder: Responder = await responder_factory(max_sessions=1)  # type: ignore[misc]
    first = OFTPClient(client_config(), "127.0.0.1", responder.port)
    await first.connect()
    with pytest.raises(SessionRejected) as info:
        async with OFTPClient(client_config(), "127.0.0.1", responder.port):
            pass
    assert info.value.reason == EsidReason.RESOURCES_NOT_AVAILABLE
    await first.close()


async def test_concurrent_sessions(responder: Responder, payload: Callable[..., Path]) -> None:
    srcs = [payload(200_000, f"c{i}.bin") for i in range(5)]

    async def one(p: Path) -> bool:
        async with OFTPClient(client_config(), "127.0.0.1", responder.port) as c:
            return (await c.send_file(outbound(p))).ok

    assert all(await asyncio.gather(*(one(p) for p in srcs)))
    for p in srcs:
        assert (responder.inbox / p.name.upper()).read_bytes() == p.read_bytes()


async def test_poll_receives_queued_files(
    responder: Responder, payload: Callable[..., Path], tmp_path: Path
) -> None:
    back = payload(70_000, "queued.bin")
    responder.queue.append(OutboundFile(dsn="QUEUED", originator=SERVER, destination=CLIENT, path=back))
    handler = SessionHandlerBase(tmp_path / "polled", auto_eerp=True, own_id=CLIENT)
    client = OFTPClient(client_config(), "127.0.0.1", responder.port, handler=handler)
    await client.connect()
    assert await client.receive()  # the responder sent its file and gave the turn back
    outcome = await client.close()
    assert outcome.ok
    assert (tmp_path / "polled" / "QUEUED").read_bytes() == back.read_bytes()
    await responder.server.wait_sessions(1, timeout=5)
    assert [e.dsn for e in responder.handlers[0].eerps] == ["QUEUED"]


async def test_secure_authentication_with_cms(
    responder_factory: Callable[..., object], payload: Callable[..., Path], test_pki: PKIBundle
) -> None:
    server_auth = CmsAuthenticator(test_pki.server.key, test_pki.server.cert, {CLIENT: test_pki.client.cert})
    responder: Responder = await responder_factory(server_config(secure_auth=True, authenticator=server_auth))  # type: ignore[misc]
    client_auth = CmsAuthenticator(test_pki.client.key, test_pki.client.cert, {SERVER: test_pki.server.cert})
    src = payload(4000)
    async with OFTPClient(
        client_config(secure_auth=True, authenticator=client_auth), "127.0.0.1", responder.port
    ) as client:
        assert client.negotiated is not None and client.negotiated.secure_auth
        assert (await client.send_file(outbound(src))).ok
    assert (responder.inbox / src.name.upper()).read_bytes() == src.read_bytes()


async def test_secure_authentication_wrong_key_is_esid_11(
    responder_factory: Callable[..., object], test_pki: PKIBundle
) -> None:
    server_auth = CmsAuthenticator(test_pki.server.key, test_pki.server.cert, {CLIENT: test_pki.client.cert})
    responder: Responder = await responder_factory(server_config(secure_auth=True, authenticator=server_auth))  # type: ignore[misc]
    # the client holds the wrong private key for the certificate the responder knows
    impostor = CmsAuthenticator(test_pki.partner.key, test_pki.partner.cert, {SERVER: test_pki.server.cert})
    with pytest.raises((SessionAborted, SessionRejected)) as info:
        async with OFTPClient(
            client_config(secure_auth=True, authenticator=impostor), "127.0.0.1", responder.port
        ):
            pass
    assert info.value.reason == EsidReason.INVALID_CHALLENGE_RESPONSE
    await responder.server.wait_sessions(1, timeout=5)
    assert responder.server.outcomes[0].reason == EsidReason.INVALID_CHALLENGE_RESPONSE


async def test_handler_failure_ends_with_esid_99(responder_factory: Callable[..., object]) -> None:
    class Broken(SessionHandlerBase):
        async def eerp_received(self, eerp: EERP, ctx: object) -> None:  # type: ignore[override]
            raise RuntimeError("database down")

    responder: Responder = await responder_factory()  # type: ignore[misc]
    responder.server.handler_factory = lambda ctx: Broken()
    client = OFTPClient(client_config(), "127.0.0.1", responder.port)
    await client.connect()
    with pytest.raises(SessionRejected) as info:
        await client.send_eerp(EERP("X", "20240101", "1200000001", SERVER, CLIENT))
    assert info.value.reason == EsidReason.UNSPECIFIED
    await client.close()


async def test_handle_connection_on_foreign_streams(tmp_path: Path, payload: Callable[..., Path]) -> None:
    handlers: list[SessionHandlerBase] = []

    def factory(ctx: object) -> SessionHandlerBase:
        handlers.append(SessionHandlerBase(tmp_path / "relay-inbox"))
        return handlers[-1]

    oftp = OFTPServer(server_config(), factory)  # never listens itself

    async def bridge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await oftp.handle_connection(reader, writer, tls=True)

    tunnel = await asyncio.start_server(bridge, "127.0.0.1", 0)
    port = tunnel.sockets[0].getsockname()[1]
    src = payload(2000)
    async with tunnel, OFTPClient(client_config(), "127.0.0.1", port) as client:
        assert (await client.send_file(outbound(src))).ok
    await oftp.wait_sessions(1, timeout=5)
    assert (tmp_path / "relay-inbox" / src.name.upper()).read_bytes() == src.read_bytes()
    assert oftp.outcomes[0].ok


async def test_variable_record_file_round_trip(responder: Responder, tmp_path: Path) -> None:
    records = [b"", b"a", b"x" * 63, b"y" * 64, b"z" * 5000, b"end"]
    src = tmp_path / "var.dat"
    src.write_bytes(b"".join(len(r).to_bytes(2, "big") + r for r in records))
    async with OFTPClient(client_config(sdeb=128), "127.0.0.1", responder.port) as client:
        result = await client.send_file(outbound(src, format=RecordFormat.VARIABLE))
    assert result.ok and result.restart_offset == 0
    await responder.server.wait_sessions(1, timeout=5)
    rec = responder.handlers[0].received[0]
    assert rec.record_count == len(records)
    assert rec.path.read_bytes() == src.read_bytes()  # stored with the same 2-octet length prefixes
    assert rec.sha256 == result.sha256


async def test_fixed_record_restart_counts_records(responder: Responder, tmp_path: Path) -> None:
    src = tmp_path / "records.dat"
    src.write_bytes(b"".join(f"{i:099d}\n".encode() for i in range(30_000)))  # 30 000 records of 100
    first = outbound(src, dsn="RECS", format=RecordFormat.FIXED, lrecl=100)
    box: list[OFTPClient] = []
    killed = OutboundFile(
        dsn="RECS",
        originator=CLIENT,
        destination=SERVER,
        source=_killing_source(src, 1_000_000, box),
        size=src.stat().st_size,
        format=RecordFormat.FIXED,
        lrecl=100,
        date=first.date,
        time=first.time,
    )
    client = OFTPClient(client_config(), "127.0.0.1", responder.port)
    box.append(client)
    await client.connect()
    with pytest.raises(SessionAborted):
        await client.send_file(killed)
    await client.close()
    await responder.server.wait_sessions(1, timeout=5)
    async with OFTPClient(client_config(), "127.0.0.1", responder.port) as again:
        result = await again.send_file(first)
    assert result.ok and result.restart_offset > 0 and result.restart_offset % 100 == 0
    assert result.sha256 == sha(src)
    await responder.server.wait_sessions(2, timeout=5)
    rec = responder.handlers[-1].received[0]
    assert rec.record_count == 30_000 and rec.path.read_bytes() == src.read_bytes()
