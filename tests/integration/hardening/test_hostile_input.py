"""Hostile input on real loopback sockets against the engine's ``OFTPServer``.

Every row is a hand-crafted peer sending something a correct engine never would; the expected
answer is the protocol's (ESID or SFNA with the reason code named in the row), the server keeps
serving, and nothing is written outside the responder's inbox.  Certificates that are expired,
not yet valid or of the wrong usage are covered by ``tests/unit/security/test_certs.py``; forged and
expired relay tokens by ``tests/unit/relay/test_sas.py`` and the relay listener tests.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from oftp2_provider.gateway.daemon import Gateway
from oftp2_provider.pki import PKIBundle
from oftp2_provider.protocol import auth, codec, framing
from oftp2_provider.protocol._compat import timeout as _timeout
from oftp2_provider.protocol.api import CmsAuthenticator, OutboundFile, PartnerConfig
from oftp2_provider.protocol.commands import (
    AUCH,
    AURP,
    DATA,
    EFID,
    EFPA,
    ESID,
    SECD,
    SFID,
    SFNA,
    SFPA,
    SSID,
    SSRM,
    ProtocolLevel,
)
from oftp2_provider.protocol.errors import EsidReason, SessionRejected, SfnaReason
from oftp2_provider.protocol.transport import OFTPClient, server_ssl_context
from tests.integration.gateway.conftest import A_ID, B_ID, gateway_config
from tests.integration.protocol.conftest import (
    CLIENT,
    CLIENT_PW,
    SERVER,
    RawPeer,
    Responder,
    client_config,
    server_config,
)

SFID_DSN = slice(1, 27)  # SFIDDSN X(26) follows the command octet at every level


def snapshot(root: Path) -> set[Path]:
    """Every file under ``root`` (the test's whole temporary directory)."""
    return {p for p in root.rglob("*") if p.is_file()}


def files_containing(root: Path, content: bytes) -> list[Path]:
    return [p for p in snapshot(root) if p.read_bytes() == content]


def new_files(before: set[Path], root: Path) -> set[Path]:
    return snapshot(root) - before


def sfid_buffer(
    dsn: bytes = b"HOSTILE", description: str = "", *, dest: str = SERVER, orig: str = CLIENT, **kw: object
) -> bytes:
    """A level-5 SFID exchange buffer whose DSN octets are replaced by ``dsn`` (padded to 26)."""
    sfid = SFID("PLACEHOLDER", "20240131", "1230450001", dest, orig, description=description, **kw)  # type: ignore[arg-type]
    buf = bytearray(codec.encode(sfid, ProtocolLevel.V2_0))
    buf[SFID_DSN] = dsn.ljust(26)[:26]
    return bytes(buf)


async def expect_esid(peer: RawPeer, reason: int) -> ESID:
    cmd = await peer.recv()
    assert isinstance(cmd, ESID), cmd
    assert cmd.reason == reason, cmd
    await peer.close()
    return cmd


async def send_whole_file(peer: RawPeer, content: bytes) -> object:
    """After SFPA: one DATA buffer (EoR), EFID, and the answer (EFPA/EFNA/ESID)."""
    header = bytes([0x80 | len(content)])
    await peer.send(DATA(header + content))
    await peer.send(EFID(1, len(content)))
    return await peer.recv()


async def still_serving(responder: Responder, tmp: Path) -> None:
    src = tmp / "after.bin"
    src.write_bytes(os.urandom(500))
    async with OFTPClient(client_config(), "127.0.0.1", responder.port) as client:
        result = await client.send_file(
            OutboundFile(dsn="AFTER", originator=CLIENT, destination=SERVER, path=src)
        )
    assert result.ok


# --- dataset names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dsn",
    [b"../../ESCAPE", b"/ETC/PASSWD", b"..", b"A/../../B", b"./.HIDDEN"],
    ids=["dotdot", "absolute", "only-dots", "embedded-dotdot", "dot-slash"],
)
async def test_path_like_dsn_stays_inside_inbox(responder: Responder, tmp_path: Path, dsn: bytes) -> None:
    """``/`` and ``.`` are legal in SFIDDSN (X set): the file is accepted but stored under a safe name."""
    before = snapshot(tmp_path)
    peer = await RawPeer.connect(responder.port)
    assert isinstance(await peer.login(), SSID)
    peer.send_raw(framing.frame(sfid_buffer(dsn)))
    assert isinstance(await peer.recv(), SFPA)
    answer = await send_whole_file(peer, b"payload")
    assert isinstance(answer, EFPA), answer
    await peer.close()
    await responder.server.wait_sessions(1, timeout=5)
    created = new_files(before, tmp_path)
    assert created, "the file was not stored at all"
    inbox = responder.inbox.resolve()
    for path in created:
        assert path.resolve().parent == inbox, f"{path} is outside the inbox {inbox}"
        assert not path.name.startswith("."), path
    assert [p.read_bytes() for p in created] == [b"payload"]


@pytest.mark.parametrize(
    "dsn",
    [
        b"NUL\x00NAME",
        b"TAB\tNAME",
        b"ESC\x1bNAME",
        b"DEL\x7fNAME",
        "UMLAUT\u00c4".encode("latin-1"),
        "Ä".encode(),
    ],
    ids=["nul", "tab", "esc", "del", "latin1", "utf8"],
)
async def test_unprintable_dsn_is_esid_06(responder: Responder, tmp_path: Path, dsn: bytes) -> None:
    """Control characters and non-ASCII octets are invalid X(26) content: ESID 06, nothing written."""
    before = snapshot(tmp_path)
    peer = await RawPeer.connect(responder.port)
    assert isinstance(await peer.login(), SSID)
    peer.send_raw(framing.frame(sfid_buffer(dsn)))
    await expect_esid(peer, EsidReason.COMMAND_CONTAINED_INVALID_DATA)
    await responder.server.wait_sessions(1, timeout=5)
    assert new_files(before, tmp_path) == set()
    await still_serving(responder, tmp_path)


# --- SFIDDESC length --------------------------------------------------------------------------------


async def test_sfiddesc_999_octets_is_accepted(responder: Responder) -> None:
    peer = await RawPeer.connect(responder.port)
    assert isinstance(await peer.login(), SSID)
    peer.send_raw(framing.frame(sfid_buffer(b"DESC999", description="D" * 999)))
    assert isinstance(await peer.recv(), SFPA)
    assert isinstance(await send_whole_file(peer, b"x"), EFPA)
    await peer.close()


async def test_sfiddesc_1000_octets_is_refused(responder: Responder, tmp_path: Path) -> None:
    """The length is 9(3): 1000 octets cannot be announced; the extra octet breaks the buffer length."""
    before = snapshot(tmp_path)
    peer = await RawPeer.connect(responder.port)
    assert isinstance(await peer.login(), SSID)
    buf = sfid_buffer(b"DESC1000", description="D" * 999)
    assert buf.endswith(b"D" * 999)  # the description is the last field at level 5
    peer.send_raw(framing.frame(buf + b"D"))
    await expect_esid(peer, EsidReason.EXCHANGE_BUFFER_SIZE_ERROR)
    await responder.server.wait_sessions(1, timeout=5)
    assert new_files(before, tmp_path) == set()


# --- numeric fields ---------------------------------------------------------------------------------


def _ssid_with(field_offset: int, octets: bytes) -> bytes:
    buf = bytearray(
        codec.encode(SSID(ProtocolLevel.V2_0, CLIENT, CLIENT_PW, 99999, credit=999), ProtocolLevel.V2_0)
    )
    buf[field_offset : field_offset + len(octets)] = octets
    return bytes(buf)


# SSID v2: X + LEV(1) + CODE(25) + PSWD(8) + SDEB(5) @35 + SR(1) + COMP(1) + REST(1) + SPEC(1) + CRED(3) @44
@pytest.mark.parametrize(
    ("offset", "octets"),
    [(35, b"00000"), (35, b"00127"), (35, b"9999A"), (44, b"000"), (44, b"-01"), (44, b"1 0")],
    ids=["sdeb-0", "sdeb-127", "sdeb-letter", "credit-0", "credit-negative", "credit-space"],
)
async def test_ssid_sdeb_or_credit_out_of_range_is_esid_06(
    responder: Responder, offset: int, octets: bytes
) -> None:
    peer = await RawPeer.connect(responder.port)
    assert isinstance(await peer.recv(), SSRM)
    peer.send_raw(framing.frame(_ssid_with(offset, octets)))
    await expect_esid(peer, EsidReason.COMMAND_CONTAINED_INVALID_DATA)


@pytest.mark.parametrize(
    ("field", "value", "answer"),
    [
        ("security", b"07", EsidReason.COMMAND_CONTAINED_INVALID_DATA),
        ("lrecl", b"9999A", EsidReason.COMMAND_CONTAINED_INVALID_DATA),
        ("restart", b"-0000000000000001", EsidReason.COMMAND_CONTAINED_INVALID_DATA),
        ("format", b"Z", EsidReason.COMMAND_CONTAINED_INVALID_DATA),
    ],
)
async def test_sfid_numeric_field_out_of_range(
    responder: Responder, tmp_path: Path, field: str, value: bytes, answer: int
) -> None:
    """Octets that are not a valid value of the SFID field: ESID 06 and nothing written."""
    # SFID v2 offsets: DSN 1, RSV 27, DATE 30, TIME 38, USER 48, DEST 56, ORIG 81, FMT 106, LRECL 107,
    # FSIZ 112, OSIZ 125, REST 138, SEC 155, CIPH 157, COMP 159, ENV 160, SIGN 161, DESC 162
    offsets = {"format": 106, "lrecl": 107, "restart": 138, "security": 155}
    before = snapshot(tmp_path)
    buf = bytearray(sfid_buffer(b"NUMERIC"))
    at = offsets[field]
    buf[at : at + len(value)] = value
    peer = await RawPeer.connect(responder.port)
    assert isinstance(await peer.login(), SSID)
    peer.send_raw(framing.frame(bytes(buf)))
    await expect_esid(peer, answer)
    assert new_files(before, tmp_path) == set()


async def _gateway_peer(tmp_path: Path, start_gateway: Callable[..., Any]) -> tuple[Gateway, RawPeer]:
    cfg = gateway_config(tmp_path / "gw", A_ID, partners={"b": {"odette_id": B_ID, "password": "BPW"}})
    gw: Gateway = await start_gateway(cfg)
    peer = await RawPeer.connect(gw.port())
    assert isinstance(await peer.login(B_ID, "BPW"), SSID)
    return gw, peer


async def test_gateway_unknown_cipher_suite_is_sfna_15(
    tmp_path: Path, start_gateway: Callable[..., Any]
) -> None:
    """A well-formed SFID naming a cipher suite we do not have: SFNA 15, not ESID, nothing stored."""
    gw, peer = await _gateway_peer(tmp_path, start_gateway)
    before = snapshot(tmp_path)
    peer.send_raw(framing.frame(sfid_buffer(b"CIPHER99", security=1, cipher_suite=99, dest=A_ID, orig=B_ID)))
    answer = await peer.recv()
    assert isinstance(answer, SFNA), answer
    assert answer.reason == SfnaReason.CIPHER_SUITE_NOT_SUPPORTED
    await peer.close()
    inbox = gw.config.inbox_for("b")
    assert [p for p in new_files(before, tmp_path) if inbox in p.parents] == []


async def test_gateway_path_like_dsn_stays_in_partner_inbox(
    tmp_path: Path, start_gateway: Callable[..., Any]
) -> None:
    gw, peer = await _gateway_peer(tmp_path, start_gateway)
    peer.send_raw(framing.frame(sfid_buffer(b"../../../ESCAPE", dest=A_ID, orig=B_ID)))
    assert isinstance(await peer.recv(), SFPA)
    assert isinstance(await send_whole_file(peer, b"gateway payload"), EFPA)
    await peer.close()
    inbox = gw.config.inbox_for("b").resolve()
    holders = files_containing(tmp_path, b"gateway payload")
    assert holders, "the file was not stored"
    for path in holders:
        assert inbox in path.resolve().parents, f"{path} is outside the partner inbox {inbox}"
    assert not (tmp_path / "ESCAPE").exists() and not (tmp_path.parent / "ESCAPE").exists()


# --- floods -----------------------------------------------------------------------------------------


async def test_ssid_flood(responder_factory: Callable[..., object], tmp_path: Path) -> None:
    """60 connections at once, all sending SSIDs (wrong password, unknown code, right one) with max_sessions 8.

    Each connection gets a protocol answer (ESID 03/04/08 or our SSID) or, while more than
    ``max_pending`` (16) wait for their SSID, is dropped as the oldest waiting one; the last 16 to
    arrive are never dropped.  The server's session count returns to zero and it serves the next
    partner normally.
    """
    responder: Responder = await responder_factory(max_sessions=8)  # type: ignore[misc]
    assert responder.server.max_pending == 16
    answers: list[tuple[str, object]] = []

    async def one(i: int) -> None:
        peer = await RawPeer.connect(responder.port)
        try:
            first = await peer.recv()
            if not isinstance(first, SSRM):
                answers.append(("dropped" if first is None else "first", first))
                return
            code, pw = [(CLIENT, "WRONG"), ("O0013NOBODY", "X"), (CLIENT, CLIENT_PW)][i % 3]
            try:
                await peer.send(SSID(ProtocolLevel.V2_0, code, pw, 99999, credit=999))
            except (ConnectionError, OSError):
                answers.append(("dropped", None))
                return
            answer = await peer.recv()
            if answer is None:
                answers.append(("dropped", None))
            else:
                answers.append(("ssid", answer.reason if isinstance(answer, ESID) else type(answer).__name__))
        except (ConnectionError, OSError):
            answers.append(("dropped", None))
        finally:
            await peer.close()

    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(60))), 30)
    allowed = {
        ("dropped", None),
        ("ssid", EsidReason.INVALID_PASSWORD),
        ("ssid", EsidReason.USER_CODE_NOT_KNOWN),
        ("ssid", EsidReason.RESOURCES_NOT_AVAILABLE),
        ("ssid", "SSID"),
    }
    counts = Counter(kind for kind, _ in answers)
    assert len(answers) == 60
    assert set(answers) <= allowed, set(answers) - allowed
    assert counts["ssid"] >= responder.server.max_pending, counts
    for _ in range(50):
        if responder.server.active_sessions == 0:
            break
        await asyncio.sleep(0.1)
    assert responder.server.active_sessions == 0
    assert responder.server.pending_connections == 0 and responder.server.admitted_sessions == 0
    await still_serving(responder, tmp_path)


async def _until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    async with _timeout(timeout):
        while not check():  # noqa: ASYNC110 - polls the server's counters
            await asyncio.sleep(0.02)


async def test_idle_connection_flood_cannot_lock_partners_out(
    responder_factory: Callable[..., object], tmp_path: Path
) -> None:
    """12 idle connections (no SSID ever) against max_sessions 2: partners still get in.

    Only sessions past the SSID decision count towards ``max_sessions``; connections waiting for
    their SSID are capped at ``max_pending`` (default 2 × 2 = 4), the oldest dropped first, so the
    flood holds at most 4 sockets and two partners logging in meanwhile are both admitted.  A third
    concurrent partner still gets ESID 08: the session limit itself is unchanged.
    """
    responder: Responder = await responder_factory(max_sessions=2)  # type: ignore[misc]
    server = responder.server
    idle = [await RawPeer.connect(responder.port) for _ in range(12)]
    try:
        await _until(lambda: server.active_sessions == 4)
        assert server.pending_connections == 4  # the flood is bounded
        for peer in idle[:8]:  # the oldest were dropped: SSRM, then the connection closes
            assert isinstance(await peer.recv(), SSRM)
            assert await peer.recv() is None
        first = OFTPClient(client_config(), "127.0.0.1", responder.port)
        second = OFTPClient(client_config(), "127.0.0.1", responder.port)
        await first.connect()
        await second.connect()
        assert server.admitted_sessions == 2 and server.pending_connections <= 4
        with pytest.raises(SessionRejected) as info:
            await OFTPClient(client_config(), "127.0.0.1", responder.port).connect()
        assert info.value.reason == EsidReason.RESOURCES_NOT_AVAILABLE
        src = tmp_path / "during-flood.bin"
        src.write_bytes(os.urandom(2000))
        result = await first.send_file(
            OutboundFile(dsn="FLOOD", originator=CLIENT, destination=SERVER, path=src)
        )
        assert result.ok
        await first.close()
        await second.close()
        assert (responder.inbox / "FLOOD").read_bytes() == src.read_bytes()
        assert server.pending_connections <= 4 and server.active_sessions <= 2 + 4
    finally:
        for peer in idle:
            await peer.close()
    await _until(lambda: server.active_sessions == 0)
    assert server.admitted_sessions == 0 and server.pending_connections == 0


async def test_idle_connection_gets_esid_09_after_the_ssid_timeout(
    responder_factory: Callable[..., object],
) -> None:
    """A connection that never sends its SSID is ended after ``ssid_timeout`` with ESID 09, not after ``connect``."""
    responder: Responder = await responder_factory(ssid_timeout=0.5)  # type: ignore[misc]
    peer = await RawPeer.connect(responder.port)
    try:
        assert isinstance(await peer.recv(), SSRM)
        loop = asyncio.get_running_loop()
        started = loop.time()
        answer = await peer.recv(timeout=5)
        assert isinstance(answer, ESID) and answer.reason == EsidReason.TIME_OUT, answer
        assert loop.time() - started < 3
    finally:
        await peer.close()
    await _until(lambda: responder.server.pending_connections == 0)


# --- secure authentication garbage ------------------------------------------------------------------


@pytest.fixture
async def secure_responder(responder_factory: Callable[..., object], test_pki: PKIBundle) -> Responder:
    authenticator = CmsAuthenticator(
        test_pki.server.key, test_pki.server.cert, {CLIENT: test_pki.client.cert}
    )
    config = server_config(secure_auth=True, authenticator=authenticator)
    partners = {CLIENT: PartnerConfig(CLIENT, CLIENT_PW, secure_auth=True)}
    return await responder_factory(config, partners=partners)  # type: ignore[misc, no-any-return]


async def _secure_login(peer: RawPeer) -> AUCH:
    answer = await peer.login(secure_auth=True)
    assert isinstance(answer, SSID) and answer.secure_auth, answer
    await peer.send(SECD())
    challenge = await peer.recv()
    assert isinstance(challenge, AUCH), challenge
    return challenge


@pytest.mark.parametrize("response", [b"\x00" * 20, os.urandom(20), b"A" * 19 + b"B"])
async def test_aurp_garbage_is_esid_11(secure_responder: Responder, response: bytes) -> None:
    peer = await RawPeer.connect(secure_responder.port)
    await _secure_login(peer)
    await peer.send(AURP(response))
    await expect_esid(peer, EsidReason.INVALID_CHALLENGE_RESPONSE)


@pytest.mark.parametrize(
    "challenge", [b"", b"\x30\x80\x00\x00", os.urandom(300), b"\x30\x82\xff\xff" + b"\x00" * 50], ids=str
)
async def test_auch_garbage_is_esid_11(
    secure_responder: Responder, test_pki: PKIBundle, challenge: bytes
) -> None:
    """We answer the server's challenge correctly, then challenge it with garbage."""
    peer = await RawPeer.connect(secure_responder.port)
    auch = await _secure_login(peer)
    await peer.send(AURP(auth.answer_challenge(auch.challenge, test_pki.client.key, test_pki.client.cert)))
    assert isinstance(await peer.recv(), SECD)
    await peer.send(AUCH(challenge))
    await expect_esid(peer, EsidReason.INVALID_CHALLENGE_RESPONSE)


# --- TLS versions -----------------------------------------------------------------------------------


def _old_tls_client() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    return ctx


def _permissive_server(pki: PKIBundle) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.load_cert_chain(str(pki.server.cert_path), str(pki.server.key_path))
    return ctx


async def _handshake(port: int, ctx: ssl.SSLContext) -> str | None:
    """The negotiated TLS version, or raise the handshake error."""
    _reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=ctx), 5)
    version = writer.get_extra_info("ssl_object").version()
    writer.close()
    return version  # type: ignore[no-any-return]


@pytest.mark.parametrize("given", ["permissive", "project"])
async def test_tls_below_1_2_is_refused(
    responder_factory: Callable[..., object], test_pki: PKIBundle, given: str
) -> None:
    """The server raises any context it is given to TLS ≥ 1.2; a TLS 1.0/1.1-only client fails."""
    probe = await asyncio.start_server(
        lambda r, w: w.close(), "127.0.0.1", 0, ssl=_permissive_server(test_pki)
    )
    try:
        version = await _handshake(int(probe.sockets[0].getsockname()[1]), _old_tls_client())
    except (ssl.SSLError, ConnectionError) as exc:
        pytest.skip(f"this OpenSSL cannot speak TLS 1.0/1.1 at all ({exc}); the refusal would prove nothing")
    finally:
        probe.close()
    assert version in ("TLSv1", "TLSv1.1")
    server_ctx = (
        _permissive_server(test_pki)
        if given == "permissive"
        else server_ssl_context(test_pki.server.cert_path, test_pki.server.key_path)
    )
    responder: Responder = await responder_factory(ssl=server_ctx)  # type: ignore[misc]
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await _handshake(responder.port, _old_tls_client())
    modern = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    modern.check_hostname = False
    modern.verify_mode = ssl.CERT_NONE
    assert await _handshake(responder.port, modern) in ("TLSv1.2", "TLSv1.3")
