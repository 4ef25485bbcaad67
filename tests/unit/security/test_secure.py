"""protocol.secure: protected outbound files, the secure inbound handler and receipt checks.

Sessions run between a real OFTPServer and OFTPClient on loopback TCP with the test PKI.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from oftp2_provider.pki import PKIBundle
from oftp2_provider.protocol.api import (
    OutboundFile,
    PartnerConfig,
    SendResult,
    SessionConfig,
    SessionHandlerBase,
)
from oftp2_provider.protocol.certs import PartnerCertificates
from oftp2_provider.protocol.commands import SFID, RecordFormat, SecurityLevel
from oftp2_provider.protocol.receipts import ReceiptOutcome
from oftp2_provider.protocol.secure import (
    InboundSecurity,
    OutboundSecurity,
    SecureSessionHandler,
    check_offer,
    protect_outbound,
)
from oftp2_provider.protocol.suites import SecurityPolicy, UnsupportedSuite
from oftp2_provider.protocol.transport import OFTPClient, OFTPServer

SERVER, CLIENT = "O0013SERVER", "O0013CLIENT"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Exchange:
    result: SendResult
    sender: SecureSessionHandler
    receiver: SecureSessionHandler
    inbox: Path


async def _exchange(
    tmp_path: Path,
    pki: PKIBundle,
    src: Path,
    options: OutboundSecurity,
    *,
    inbound: InboundSecurity | None = None,
) -> Exchange:
    """Send *src* protected per *options* from CLIENT to SERVER; both sides use SecureSessionHandler."""
    inbox = tmp_path / "inbox"
    inbox.mkdir(exist_ok=True)
    receiver_security = inbound or InboundSecurity(
        key=pki.server.key,
        cert=pki.server.cert,
        partners={CLIENT: PartnerCertificates.single(pki.client.cert)},
    )
    receivers: list[SecureSessionHandler] = []

    def factory(ctx: object) -> SecureSessionHandler:
        h = SecureSessionHandler(SessionHandlerBase(inbox), receiver_security, own_id=SERVER)
        receivers.append(h)
        return h

    server = OFTPServer(
        SessionConfig(SERVER, "SPW"), factory, partners={CLIENT: PartnerConfig(CLIENT, "CPW")}
    )
    await server.start("127.0.0.1", 0)
    sender = SecureSessionHandler(
        SessionHandlerBase(),
        InboundSecurity(partners={SERVER: PartnerCertificates.single(pki.server.cert)}),
        own_id=CLIENT,
    )
    try:
        item = OutboundFile(dsn="PAYLOAD", originator=CLIENT, destination=SERVER, path=src)
        protected = protect_outbound(item, options, workdir=tmp_path)
        try:
            async with OFTPClient(
                SessionConfig(CLIENT, "CPW"),
                "127.0.0.1",
                server.port,
                partner=PartnerConfig(SERVER, "SPW"),
                handler=sender,
            ) as client:
                result = await client.send_file(protected.item)
                if result.ok:
                    sender.expect_sent(protected, result)
        finally:
            protected.cleanup()
        await server.wait_sessions(1, timeout=10)
    finally:
        await server.close()
    return Exchange(result, sender, receivers[0], inbox)


@pytest.mark.parametrize("suite", [1, 2, 3, 4, 5, 6])
async def test_sign_compress_encrypt_signed_eerp_every_suite(
    tmp_path: Path, test_pki: PKIBundle, make_file: object, suite: int
) -> None:
    src = make_file(size=70_000)  # type: ignore[operator]
    options = OutboundSecurity(
        suite=suite,
        sign=True,
        compress=True,
        encrypt=True,
        signed_eerp=True,
        key=test_pki.client.key,
        cert=test_pki.client.cert,
        partner_cert=test_pki.server.cert,
    )
    ex = await _exchange(tmp_path, test_pki, src, options)
    assert ex.result.ok, ex.result
    assert ex.result.sfid.security is SecurityLevel.ENCRYPTED_AND_SIGNED
    assert ex.result.sfid.cipher_suite == suite and ex.result.sfid.compression == 1
    assert ex.result.sfid.envelope == 1 and ex.result.sfid.signed_eerp
    assert ex.result.sfid.original_size == -(-src.stat().st_size // 1024)
    delivered = ex.inbox / "PAYLOAD"
    assert _sha(delivered) == _sha(src)
    assert not list((ex.inbox / ".transmitted").glob("*PAYLOAD*"))  # the envelope is gone
    [verification] = ex.sender.verifications.values()
    assert verification.outcome is ReceiptOutcome.VERIFIED, verification.detail
    inner = ex.receiver.inner
    assert isinstance(inner, SessionHandlerBase)
    assert inner.received[0].path == delivered and inner.received[0].sha256 == _sha(src)


async def test_plain_file_with_signed_eerp(tmp_path: Path, test_pki: PKIBundle, make_file: object) -> None:
    src = make_file(size=5000)  # type: ignore[operator]
    ex = await _exchange(tmp_path, test_pki, src, OutboundSecurity(suite=4, signed_eerp=True))
    assert ex.result.ok and ex.result.sfid.security is SecurityLevel.NONE
    assert _sha(ex.inbox / "PAYLOAD") == _sha(src)
    [verification] = ex.sender.verifications.values()
    assert verification.ok, verification.detail


async def test_wrong_signer_is_efna_21_and_quarantined(
    tmp_path: Path, test_pki: PKIBundle, make_file: object
) -> None:
    src = make_file(size=20_000)  # type: ignore[operator]
    options = OutboundSecurity(suite=4, sign=True, key=test_pki.untrusted.key, cert=test_pki.untrusted.cert)
    ex = await _exchange(tmp_path, test_pki, src, options)
    assert ex.result.refused_at == "EFNA" and ex.result.reason == 21
    assert not (ex.inbox / "PAYLOAD").exists()
    [moved] = ex.receiver.quarantined
    assert moved.parent == ex.inbox / "quarantine" and moved.exists()
    assert moved.with_name(moved.name + ".reason").read_text().startswith("21 ")
    assert not list((ex.inbox / ".transmitted" / ".partial").glob("PAYLOAD*"))  # no restart from it


async def test_encrypted_for_another_certificate_is_efna_22(
    tmp_path: Path, test_pki: PKIBundle, make_file: object
) -> None:
    src = make_file(size=20_000)  # type: ignore[operator]
    options = OutboundSecurity(suite=2, encrypt=True, partner_cert=test_pki.partner.cert)
    ex = await _exchange(tmp_path, test_pki, src, options)
    assert ex.result.refused_at == "EFNA" and ex.result.reason == 22
    assert not (ex.inbox / "PAYLOAD").exists()
    assert ex.receiver.failures[0][1:3] == ("EFNA", 22)


async def test_policy_refusals_at_sfid(tmp_path: Path, test_pki: PKIBundle, make_file: object) -> None:
    src = make_file(size=3000)  # type: ignore[operator]
    strict = InboundSecurity(
        key=test_pki.server.key,
        cert=test_pki.server.cert,
        partners={CLIENT: PartnerCertificates.single(test_pki.client.cert)},
        policy=SecurityPolicy(require_signed=True),
    )
    ex = await _exchange(tmp_path, test_pki, src, OutboundSecurity(suite=4, compress=True), inbound=strict)
    assert ex.result.refused_at == "SFNA" and ex.result.reason == 20
    no_key = InboundSecurity(
        partners={CLIENT: PartnerCertificates.single(test_pki.client.cert)}, receipts=False
    )
    options = OutboundSecurity(suite=4, encrypt=True, partner_cert=test_pki.server.cert)
    ex = await _exchange(tmp_path, test_pki, src, options, inbound=no_key)
    assert ex.result.refused_at == "SFNA" and ex.result.reason == 16
    assert "no private key" in ex.result.text


async def test_verify_after_efpa_gives_signed_nerp_31(
    tmp_path: Path, test_pki: PKIBundle, make_file: object
) -> None:
    src = make_file(size=20_000)  # type: ignore[operator]
    deferred = InboundSecurity(
        key=test_pki.server.key,
        cert=test_pki.server.cert,
        partners={CLIENT: PartnerCertificates.single(test_pki.client.cert)},
        verify_before_confirm=False,
    )
    options = OutboundSecurity(
        suite=3,
        sign=True,
        signed_eerp=True,
        key=test_pki.sign_only.key,  # same CA, but not the certificate configured for CLIENT
        cert=test_pki.sign_only.cert,
    )
    ex = await _exchange(tmp_path, test_pki, src, options, inbound=deferred)
    assert ex.result.ok  # confirmed with EFPA, then refused by NERP
    assert not (ex.inbox / "PAYLOAD").exists()
    nerps = ex.sender.inner.nerps  # type: ignore[attr-defined]
    assert [n.reason for n in nerps] == [31]
    [verification] = ex.sender.verifications.values()
    assert verification.ok, verification.detail  # the NERP itself is properly signed


async def test_tampered_receipt_is_hash_mismatch(
    tmp_path: Path, test_pki: PKIBundle, make_file: object
) -> None:
    src = make_file(size=4000)  # type: ignore[operator]
    ex = await _exchange(tmp_path, test_pki, src, OutboundSecurity(suite=6, signed_eerp=True))
    eerp = ex.sender.inner.eerps[0]  # type: ignore[attr-defined]
    key = eerp.key
    ex.sender.expect_receipt(key, suite=6, expected_hash=b"\x00" * 64, signed=True)
    from oftp2_provider.protocol.api import Role, SessionContext

    ctx = SessionContext("t", Role.INITIATOR)
    verification = ex.sender.check_receipt(eerp, ctx)
    assert verification is not None and verification.outcome is ReceiptOutcome.HASH_MISMATCH
    import dataclasses

    unsigned = dataclasses.replace(eerp, signature=b"")
    verification = ex.sender.check_receipt(unsigned, ctx)
    assert verification is not None and verification.outcome is ReceiptOutcome.UNSIGNED
    stranger = SecureSessionHandler(SessionHandlerBase(), InboundSecurity(), own_id=CLIENT)
    verification = stranger.check_receipt(eerp, ctx)
    assert verification is not None and verification.outcome is ReceiptOutcome.UNKNOWN_CERTIFICATE


def test_protect_outbound_flags_and_validation(
    tmp_path: Path, test_pki: PKIBundle, make_file: object
) -> None:
    src = make_file(size=10_000)  # type: ignore[operator]
    item = OutboundFile(
        dsn="F", originator=CLIENT, destination=SERVER, path=src, format=RecordFormat.FIXED, lrecl=100
    )
    p = protect_outbound(item, OutboundSecurity(compress=True), workdir=tmp_path)
    assert p.temp is not None and p.temp.exists() and p.item.path == p.temp
    assert p.item.format is RecordFormat.UNSTRUCTURED and p.item.lrecl == 0
    assert p.item.security is SecurityLevel.NONE and p.item.file_compression == 1 and p.item.envelope == 1
    assert p.item.original_size == 10_000 and p.result is not None
    assert p.result.transmitted_blocks == -(-p.temp.stat().st_size // 1024)
    assert (p.item.date, p.item.time) == (item.date, item.time)
    assert p.item.restart == 0  # a new envelope never resumes an old one
    assert (
        protect_outbound(item, OutboundSecurity(compress=True), workdir=tmp_path, resumable=True).item.restart
        is None
    )
    p.cleanup()
    assert not p.temp.exists()
    with pytest.raises(UnsupportedSuite, match="sign"):
        OutboundSecurity(sign=True, key=test_pki.client.key, cert=test_pki.client.cert)
    with pytest.raises(ValueError, match="partner_cert"):
        OutboundSecurity(suite=1, encrypt=True)
    with pytest.raises(ValueError, match="key"):
        OutboundSecurity(suite=1, sign=True)


def test_check_offer_needs_keys_for_what_is_offered(test_pki: PKIBundle) -> None:
    base = {"dsn": "X", "date": "20260101", "time": "1200000001", "destination": SERVER, "originator": CLIENT}
    empty = InboundSecurity()
    signed = SFID(**base, security=SecurityLevel.SIGNED, cipher_suite=1, envelope=1)  # type: ignore[arg-type]
    refusal = check_offer(signed, empty)
    assert refusal is not None and refusal.reason == 19 and CLIENT in refusal.text
    want_eerp = SFID(**base, signed_eerp=True)  # type: ignore[arg-type]
    refusal = check_offer(want_eerp, empty)
    assert refusal is not None and refusal.reason == 15
    unknown = SFID(**base, security=SecurityLevel.SIGNED, cipher_suite=9, envelope=1)  # type: ignore[arg-type]
    refusal = check_offer(unknown, empty)
    assert refusal is not None and refusal.reason == 15
    ok = InboundSecurity(partners={CLIENT: PartnerCertificates.single(test_pki.client.cert)})
    assert check_offer(signed, ok) is None


async def test_delivery_failure_after_efpa_is_nerp_34(
    tmp_path: Path, test_pki: PKIBundle, make_file: object
) -> None:
    src = make_file(size=8000)  # type: ignore[operator]
    blocked = tmp_path / "inbox" / "PAYLOAD"
    blocked.mkdir(parents=True)  # the destination is taken by a directory: the rename must fail
    (blocked / "keep").write_text("x")
    options = OutboundSecurity(
        suite=4,
        sign=True,
        encrypt=True,
        signed_eerp=True,
        key=test_pki.client.key,
        cert=test_pki.client.cert,
        partner_cert=test_pki.server.cert,
    )
    ex = await _exchange(tmp_path, test_pki, src, options)
    assert ex.result.ok
    assert [n.reason for n in ex.sender.inner.nerps] == [34]  # type: ignore[attr-defined]
    [verification] = ex.sender.verifications.values()
    assert verification.ok, verification.detail
    [moved] = ex.receiver.quarantined
    assert moved.with_name(moved.name + ".reason").read_text().startswith("34 ")
    assert not list((ex.inbox / ".transmitted").rglob("PAYLOAD*"))  # neither envelope nor plain left


async def test_interrupted_secured_transfer_resumes_the_same_envelope(
    tmp_path: Path, test_pki: PKIBundle, make_file: object
) -> None:
    import asyncio
    import dataclasses
    from collections.abc import AsyncIterator

    from oftp2_provider.protocol.transport import SessionAborted

    src = make_file(size=2_000_000)  # type: ignore[operator]
    options = OutboundSecurity(
        suite=4, sign=True, encrypt=True, key=test_pki.client.key, cert=test_pki.client.cert,
        partner_cert=test_pki.server.cert,
    )  # fmt: skip
    item = OutboundFile(dsn="BIG", originator=CLIENT, destination=SERVER, path=src)
    protected = protect_outbound(item, options, workdir=tmp_path, resumable=True)
    assert protected.temp is not None
    envelope = protected.temp.read_bytes()
    inbox = tmp_path / "inbox"
    security = InboundSecurity(
        key=test_pki.server.key,
        cert=test_pki.server.cert,
        partners={CLIENT: PartnerCertificates.single(test_pki.client.cert)},
    )
    handlers: list[SecureSessionHandler] = []

    def factory(ctx: object) -> SecureSessionHandler:
        handlers.append(SecureSessionHandler(SessionHandlerBase(inbox), security, own_id=SERVER))
        return handlers[-1]

    server = OFTPServer(
        SessionConfig(SERVER, "SPW"), factory, partners={CLIENT: PartnerConfig(CLIENT, "CPW")}
    )
    await server.start("127.0.0.1", 0)
    box: list[OFTPClient] = []

    async def killing(offset: int) -> AsyncIterator[bytes]:
        for start in range(offset, len(envelope), 65536):
            yield envelope[start : start + 65536]
            if start >= 700_000:
                await asyncio.sleep(0.2)
                drv = box[0]._driver
                assert drv is not None
                drv.writer.transport.abort()
                await asyncio.sleep(0.1)
                return

    try:
        first = dataclasses.replace(protected.item, path=None, source=killing, size=len(envelope))
        client = OFTPClient(
            SessionConfig(CLIENT, "CPW"), "127.0.0.1", server.port, partner=PartnerConfig(SERVER, "SPW")
        )
        box.append(client)
        await client.connect()
        with pytest.raises(SessionAborted):
            await client.send_file(first)
        await client.close()
        await server.wait_sessions(1, timeout=5)
        assert not (inbox / "BIG").exists()
        kept = (inbox / ".transmitted" / ".partial" / "BIG").stat().st_size
        assert kept >= 500_000
        async with OFTPClient(
            SessionConfig(CLIENT, "CPW"), "127.0.0.1", server.port, partner=PartnerConfig(SERVER, "SPW")
        ) as client2:
            result = await client2.send_file(protected.item)
        await server.wait_sessions(2, timeout=5)
    finally:
        await server.close()
        protected.cleanup()
    assert result.ok and result.restart_offset == kept // 1024 * 1024 > 0
    assert _sha(inbox / "BIG") == _sha(src)  # decrypted and verified after the resumed transfer


async def test_decompression_beyond_the_announced_size_is_efna_23(
    tmp_path: Path, test_pki: PKIBundle
) -> None:
    import dataclasses

    src = tmp_path / "zeros.bin"
    src.write_bytes(b"\x00" * 3_000_000)  # compresses to a few KiB
    inbox = tmp_path / "inbox"
    security = InboundSecurity(quarantine=tmp_path / "q")
    received: list[SecureSessionHandler] = []

    def factory(ctx: object) -> SecureSessionHandler:
        received.append(SecureSessionHandler(SessionHandlerBase(inbox), security, own_id=SERVER))
        return received[-1]

    server = OFTPServer(
        SessionConfig(SERVER, "SPW"), factory, partners={CLIENT: PartnerConfig(CLIENT, "CPW")}
    )
    await server.start("127.0.0.1", 0)
    item = OutboundFile(dsn="BOMB", originator=CLIENT, destination=SERVER, path=src)
    protected = protect_outbound(item, OutboundSecurity(compress=True), workdir=tmp_path)
    lying = dataclasses.replace(protected.item, original_size=10_000)  # announces 10 blocks
    try:
        async with OFTPClient(
            SessionConfig(CLIENT, "CPW"), "127.0.0.1", server.port, partner=PartnerConfig(SERVER, "SPW")
        ) as client:
            lied = await client.send_file(lying)
            honest = await client.send_file(dataclasses.replace(protected.item, dsn="HONEST"))
        await server.wait_sessions(1, timeout=10)
    finally:
        await server.close()
        protected.cleanup()
    assert lied.refused_at == "EFNA" and lied.reason == 23 and "limit" in lied.text
    assert not (inbox / "BOMB").exists() and len(list((tmp_path / "q").glob("BOMB.*.reason"))) == 1
    assert honest.ok and _sha(inbox / "HONEST") == _sha(src)
