"""OFTP2 security through OFTP2Hook: secure authentication, CMS file security, signed receipts.

The partner is the engine's OFTPServer on loopback requiring secure authentication, with the
protocol's own SecureSessionHandler (it decrypts, decompresses and verifies what we send, and signs
its EERPs); keys come from the test PKI.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from oftp2_provider.hooks.errors import OFTP2AuthenticationError
from oftp2_provider.hooks.oftp2 import OFTP2Hook, OutboundSpec
from oftp2_provider.ledger import Direction, TransferStatus
from oftp2_provider.protocol.api import (
    CmsAuthenticator,
    OutboundFile,
    PartnerConfig,
    SessionConfig,
    SessionContext,
    Timeouts,
)
from oftp2_provider.protocol.certs import PartnerCertificates
from oftp2_provider.protocol.commands import EERP, NERP
from oftp2_provider.protocol.errors import EfnaReason, EsidReason
from oftp2_provider.protocol.receipts import ReceiptOutcome, file_hash, verify_receipt
from oftp2_provider.protocol.secure import (
    InboundSecurity,
    OutboundSecurity,
    SecureSessionHandler,
    protect_outbound,
)
from oftp2_provider.protocol.transport import OFTPServer

from .conftest import OUR_PASSWORD, OURS, PARTNER, PARTNER_PASSWORD, PartnerBehaviour, PartnerHandler


class SecurePartner:
    """An OFTPServer demanding secure authentication; every session wrapped in SecureSessionHandler."""

    def __init__(self, inbox: Path, pki: Any) -> None:
        self.behaviour = PartnerBehaviour(auto_eerp=False)
        self.handlers: list[PartnerHandler] = []
        self.secure: list[SecureSessionHandler] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        me = pki.partner
        config = SessionConfig(
            odette_id=PARTNER,
            password=PARTNER_PASSWORD,
            secure_auth=True,
            authenticator=CmsAuthenticator(me.key, me.cert, {OURS: pki.client.cert}),
            timeouts=Timeouts(connect=10, read=10, idle=10),
        )
        security = InboundSecurity(
            key=me.key, cert=me.cert, partners={OURS: PartnerCertificates.single(pki.client.cert)}
        )

        def factory(ctx: SessionContext) -> SecureSessionHandler:
            inner = PartnerHandler(inbox, self.behaviour)
            self.handlers.append(inner)
            handler = SecureSessionHandler(inner, security, own_id=PARTNER)
            self.secure.append(handler)
            return handler

        partners = {OURS: PartnerConfig(OURS, OUR_PASSWORD, secure_auth=True)}
        self.server = OFTPServer(config, factory, partners=partners)
        self.call(self.server.start("127.0.0.1", 0))
        self.port = self.server.port

    def call(self, coro: Any) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(30)

    @property
    def received(self) -> list[Any]:
        return [r for h in self.handlers for r in h.received]

    def close(self) -> None:
        self.call(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def secure_partner(tmp_path: Path, test_pki: Any) -> Iterator[SecurePartner]:
    server = SecurePartner(tmp_path / "partner-inbox", test_pki)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def secure_conn(
    secure_partner: SecurePartner, oftp2_conn: Callable[..., str], test_pki: Any
) -> Callable[..., str]:
    """An oftp2 connection to the secure partner with full security; keyword args override extras."""

    def make(conn_id: str = "oftp2_secure", **extra: Any) -> str:
        settings: dict[str, Any] = {
            "secure_auth": True,
            "signing_cert": f"file:{test_pki.client.cert_path}",
            "signing_key": f"file:{test_pki.client.key_path}",
            "partner_cert": f"file:{test_pki.partner.cert_path}",
            "sign_files": True,
            "encrypt_files": True,
            "compress_files": True,
            "signed_eerp": True,
            "cipher_suite": 4,
            **extra,
        }
        return oftp2_conn(conn_id, port=secure_partner.port, **settings)

    return make


def _spec(tmp_path: Path, dsn: str, data: bytes) -> OutboundSpec:
    path = tmp_path / f"{dsn}.dat"
    path.write_bytes(data)
    return OutboundSpec(path=path, dsn=dsn, size=len(data), sha256=hashlib.sha256(data).hexdigest())


def test_secure_send_with_signed_eerp(
    secure_partner: SecurePartner, secure_conn: Callable[..., str], tmp_path: Path, test_pki: Any
) -> None:
    """Secure authentication, then a signed+compressed+encrypted file; the partner's signed EERP verifies."""
    hook = OFTP2Hook(secure_conn())
    data = b"UNH+1+DELFOR:D:96A:UN'confidential schedule\n" * 500
    (outcome,) = hook.send([_spec(tmp_path, "DELFOR", data)])
    assert outcome.status == "delivered", outcome
    (got,) = secure_partner.received
    sfid = got.sfid
    assert (int(sfid.security), sfid.cipher_suite, sfid.compression, sfid.envelope, sfid.signed_eerp) == (
        3,
        4,
        1,
        1,
        True,
    )
    assert got.path.read_bytes() == data  # the partner decrypted, decompressed and verified it
    assert secure_partner.secure[0].failures == []
    ledger = hook.get_ledger()
    row = ledger.get(outcome.transfer_id)
    assert (row.size, row.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert row.transmitted_size is not None and row.transmitted_size < len(data)  # compressed envelope
    assert [r.verification for r in ledger.receipts(row.id)] == ["VERIFIED"]


def test_signed_eerp_over_another_file_is_a_hash_mismatch(
    secure_partner: SecurePartner, secure_conn: Callable[..., str], tmp_path: Path, test_pki: Any
) -> None:
    """A correctly signed EERP whose hash is not the one of the octets we sent is not 'verified'."""
    from oftp2_provider.protocol.receipts import sign_receipt

    hook = OFTP2Hook(secure_conn(sign_files=False, encrypt_files=False, compress_files=True))
    data = b"compressed only\n" * 300
    (outcome,) = hook.send([_spec(tmp_path, "ONLYZ", data)], exchange=False)
    assert outcome.status == "sent"
    ledger = hook.get_ledger()
    row = ledger.get(outcome.transfer_id)
    other = tmp_path / "other.bin"
    other.write_bytes(b"not what was sent")
    eerp = EERP(row.key.dsn, row.key.date, row.key.time, destination=OURS, originator=PARTNER)
    partner = test_pki.partner
    forged = sign_receipt(eerp, suite=4, key=partner.key, cert=partner.cert, file_hash=file_hash(other, 4))
    secure_partner.behaviour.deliver.append(forged)  # a new session: the partner sends only this
    hook.poll()
    assert [r.verification for r in ledger.receipts(row.id)] == ["HASH_MISMATCH"]


def test_poll_receives_a_secured_file(
    secure_partner: SecurePartner, secure_conn: Callable[..., str], tmp_path: Path, test_pki: Any
) -> None:
    """The partner sends a signed+compressed+encrypted file asking for a signed EERP; a second one is
    signed by a stranger: the first lands decrypted in the inbox and gets a verifiable signed EERP,
    the second is refused with EFNA and quarantined."""
    hook = OFTP2Hook(secure_conn())
    data = b"UNH+1+ORDERS:D:96A:UN'secret order\n" * 400
    partner = test_pki.partner
    plain = tmp_path / "orders.edi"
    plain.write_bytes(data)
    stranger = tmp_path / "stranger.edi"
    stranger.write_bytes(b"forged order\n" * 50)
    protected = []
    for dsn, path, signer in (("ORDERS", plain, partner), ("FORGED", stranger, test_pki.untrusted)):
        item = OutboundFile(dsn=dsn, originator=PARTNER, destination=OURS, path=path)
        options = OutboundSecurity(
            suite=4,
            sign=True,
            compress=True,
            encrypt=True,
            signed_eerp=True,
            key=signer.key,
            cert=signer.cert,
            partner_cert=test_pki.client.cert,
        )
        protected.append(protect_outbound(item, options, workdir=tmp_path))
    secure_partner.behaviour.deliver.extend(p.item for p in protected)
    result = hook.poll()
    (received,) = result.received
    assert Path(received["path"]).read_bytes() == data
    assert [(r["dsn"], r["answer"], r["reason"]) for r in result.refused] == [
        ("FORGED", "EFNA", int(EfnaReason.INVALID_FILE_SIGNATURE))
    ]
    ledger = hook.get_ledger()
    rows = {t.key.dsn: t for t in ledger.list_transfers(direction=Direction.INBOUND)}
    assert rows["ORDERS"].status is TransferStatus.RECEIVED
    assert rows["ORDERS"].sha256 == hashlib.sha256(data).hexdigest()
    assert rows["FORGED"].status is TransferStatus.FAILED
    inbox = Path(received["path"]).parent
    assert [p.name for p in inbox.iterdir() if p.is_file()] == [Path(received["path"]).name]
    assert any((inbox / "quarantine").iterdir())
    # the partner got our EERP, signed over the envelope it sent, verifiable with our certificate
    eerps = [e for h in secure_partner.handlers for e in h.eerps]
    (eerp,) = [e for e in eerps if e.dsn == "ORDERS"]
    assert eerp.signature
    check = verify_receipt(
        eerp,
        suite=4,
        partner_certs=[test_pki.client.cert],
        expected_hash=protected[0].expected_hash,
    )
    assert check.outcome is ReceiptOutcome.VERIFIED, check
    nerps = [n for h in secure_partner.handlers for n in h.nerps]
    assert not [n for n in nerps if isinstance(n, NERP) and n.dsn == "ORDERS"]
    for p in protected:
        p.cleanup()


def test_wrong_authentication_key_is_esid_11(
    secure_partner: SecurePartner, secure_conn: Callable[..., str], test_pki: Any
) -> None:
    """Our key does not match the certificate the partner encrypts its challenge for: ESID 11, fail-fast."""
    wrong = test_pki.untrusted
    hook = OFTP2Hook(
        secure_conn(
            "oftp2_wrongkey", signing_cert=f"file:{wrong.cert_path}", signing_key=f"file:{wrong.key_path}"
        )
    )
    ok, message = hook.test_connection()
    assert not ok
    assert "11" in message, message
    with pytest.raises(OFTP2AuthenticationError) as info:
        hook.poll()
    assert info.value.reason == EsidReason.INVALID_CHALLENGE_RESPONSE
    assert not info.value.retryable


def test_partner_failing_our_challenge_is_esid_11(
    secure_partner: SecurePartner, secure_conn: Callable[..., str], test_pki: Any
) -> None:
    """We encrypt our challenge for the wrong partner certificate: the partner ends with ESID 11."""
    hook = OFTP2Hook(secure_conn("oftp2_wrongpartner", partner_cert=f"file:{test_pki.untrusted.cert_path}"))
    with pytest.raises(OFTP2AuthenticationError) as info:
        hook.poll()
    assert info.value.reason == EsidReason.INVALID_CHALLENGE_RESPONSE


def test_secure_auth_without_keys_names_the_fields(oftp2_conn: Callable[..., str]) -> None:
    from oftp2_provider.hooks.errors import OFTP2ConfigError

    hook = OFTP2Hook(oftp2_conn("oftp2_nokeys", secure_auth=True))
    with pytest.raises(
        OFTP2ConfigError, match=r"secure_auth needs extra\.signing_cert and extra\.signing_key"
    ):
        hook.session_config()


def test_signed_eerp_without_our_key_is_refused_at_offer(
    partner: Any, oftp2_conn: Callable[..., str], tmp_path: Path
) -> None:
    """A file asking for a signed EERP we cannot sign is refused with SFNA 99, not accepted and
    answered with an unsigned receipt."""
    hook = OFTP2Hook(oftp2_conn("oftp2_nosigner"))
    path = tmp_path / "wants-signed.edi"
    path.write_bytes(b"please sign\n")
    partner.behaviour.deliver.append(
        OutboundFile(
            dsn="WANTSIGN", originator=PARTNER, destination=OURS, path=path, cipher_suite=4, signed_eerp=True
        )
    )
    result = hook.poll()
    assert result.received == []
    sent = [r for h in partner.handlers for r in h.sent]
    assert [(r.sfid.dsn, r.refused_at, r.reason) for r in sent] == [("WANTSIGN", "SFNA", 99)]
