"""Certificate loading and checks with the fixture PKI; TLS contexts over real loopback TLS."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from oftp2_provider.pki import PKIBundle
from oftp2_provider.protocol.certs import (
    PartnerCertificates,
    check_certificate,
    fingerprint,
    load_certificate,
    load_pkcs12,
    load_private_key,
    make_client_ssl_context,
    make_server_ssl_context,
)


def test_load_pem_der_and_keys(test_pki: PKIBundle, tmp_path: Path) -> None:
    cert = test_pki.partner.cert
    assert load_certificate(test_pki.partner.cert_path) == cert
    der = tmp_path / "partner.der"
    der.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    assert load_certificate(der) == cert
    assert load_certificate(der.read_bytes()) == cert
    key = load_private_key(test_pki.partner.key_path)
    assert key.private_numbers() == test_pki.partner.key.private_numbers()
    enc = tmp_path / "enc.key"
    enc.write_bytes(
        test_pki.partner.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret"),
        )
    )
    assert load_private_key(enc, "s3cret").private_numbers() == key.private_numbers()
    with pytest.raises(ValueError, match=r"enc\.key: cannot load private key"):
        load_private_key(enc, "wrong")
    with pytest.raises(ValueError, match=r"not a PEM or DER X\.509 certificate"):
        load_certificate(b"garbage")


def test_load_pkcs12(test_pki: PKIBundle, tmp_path: Path) -> None:
    p12 = tmp_path / "partner.p12"
    p12.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"partner",
            test_pki.partner.key,
            test_pki.partner.cert,
            [test_pki.ca.cert],
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    key, cert, chain = load_pkcs12(p12, "pw")
    assert cert == test_pki.partner.cert and chain == [test_pki.ca.cert]
    assert key.private_numbers() == test_pki.partner.key.private_numbers()
    with pytest.raises(ValueError, match=r"partner\.p12: cannot load PKCS#12"):
        load_pkcs12(p12, "nope")


def test_good_certificate(test_pki: PKIBundle) -> None:
    for purpose in ("tls", "auth", "encrypt", "sign", "receipt"):
        report = check_certificate(test_pki.partner.cert, purpose=purpose, trust_anchors=[test_pki.ca.cert])  # type: ignore[arg-type]
        assert report.ok, report.problems
        assert not report.expires_soon and not report.warnings


def test_expired_and_not_yet_valid(test_pki: PKIBundle) -> None:
    report = check_certificate(test_pki.expired.cert, purpose="sign", trust_anchors=[test_pki.ca.cert])
    assert not report.ok
    assert any("'CN=expired," in p and "expired on" in p for p in report.problems), report.problems
    report = check_certificate(
        test_pki.not_yet_valid.cert, purpose="encrypt", trust_anchors=[test_pki.ca.cert]
    )
    assert any("not yet valid" in p and "not-yet-valid" in p for p in report.problems), report.problems


def test_expires_soon_warning(test_pki: PKIBundle) -> None:
    soon = test_pki.partner.cert.not_valid_after_utc - dt.timedelta(days=10)
    report = check_certificate(
        test_pki.partner.cert, purpose="sign", trust_anchors=[test_pki.ca.cert], now=soon
    )
    assert report.ok and report.expires_soon
    assert "expires soon" in report.warnings[0]


def test_wrong_key_usage(test_pki: PKIBundle) -> None:
    for purpose in ("auth", "encrypt"):
        report = check_certificate(test_pki.sign_only.cert, purpose=purpose, trust_anchors=[test_pki.ca.cert])  # type: ignore[arg-type]
        assert any(
            "wrong key usage" in p and "keyEncipherment" in p and "sign-only" in p for p in report.problems
        )
    assert check_certificate(test_pki.sign_only.cert, purpose="sign", trust_anchors=[test_pki.ca.cert]).ok


def test_untrusted_chain(test_pki: PKIBundle) -> None:
    report = check_certificate(test_pki.untrusted.cert, purpose="sign", trust_anchors=[test_pki.ca.cert])
    assert any("untrusted chain" in p and "untrusted" in p for p in report.problems), report.problems
    assert check_certificate(
        test_pki.untrusted.cert, purpose="sign", trust_anchors=[test_pki.other_ca.cert]
    ).ok
    # Same issuer name, different key: a look-alike CA does not make a chain.
    report = check_certificate(test_pki.partner.cert, purpose="sign", trust_anchors=[test_pki.other_ca.cert])
    assert not report.ok


def test_pinned(test_pki: PKIBundle) -> None:
    assert check_certificate(test_pki.partner.cert, purpose="tls", pinned=[test_pki.partner.cert]).ok
    assert check_certificate(
        test_pki.partner.cert, purpose="tls", pinned=[fingerprint(test_pki.partner.cert)]
    ).ok
    report = check_certificate(test_pki.partner.cert, purpose="tls", pinned=[test_pki.server.cert])
    assert any("pinned mismatch" in p for p in report.problems)
    unchecked = check_certificate(test_pki.partner.cert, purpose="tls")
    assert unchecked.ok and "trust not checked" in unchecked.warnings[0]


def test_partner_certificates(test_pki: PKIBundle) -> None:
    pc = PartnerCertificates(sign=test_pki.partner.cert, receipt=test_pki.client.cert)
    assert pc.for_purpose("encrypt") is None
    assert pc.signature_certs() == [test_pki.client.cert, test_pki.partner.cert]
    assert PartnerCertificates.single(test_pki.partner.cert).auth == test_pki.partner.cert


# --- TLS over loopback -----------------------------------------------------------------------------


async def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, port: int) -> bytes:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(await reader.readexactly(4))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, ssl=server_ctx)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"), 10
        )
        version = writer.get_extra_info("ssl_object").version()
        writer.write(b"ping")
        data = await asyncio.wait_for(reader.readexactly(4), 10)
        writer.close()
        assert version in ("TLSv1.2", "TLSv1.3")
        return data
    finally:
        server.close()
        await server.wait_closed()


async def test_tls_with_ca(test_pki: PKIBundle, free_port) -> None:  # type: ignore[no-untyped-def]
    server = make_server_ssl_context(test_pki.server.cert_path, test_pki.server.key_path)
    client = make_client_ssl_context(ca=test_pki.ca.cert)
    assert await _handshake(server, client, free_port()) == b"ping"


async def test_tls_pinned_and_in_memory_keys(test_pki: PKIBundle, free_port) -> None:  # type: ignore[no-untyped-def]
    server = make_server_ssl_context(test_pki.server.cert, test_pki.server.key)
    assert (
        await _handshake(server, make_client_ssl_context(pinned=[test_pki.server.cert]), free_port())
        == b"ping"
    )
    with pytest.raises(ssl.SSLCertVerificationError):
        await _handshake(server, make_client_ssl_context(pinned=[test_pki.partner.cert]), free_port())
    with pytest.raises(ssl.SSLCertVerificationError):
        await _handshake(server, make_client_ssl_context(ca=test_pki.other_ca.cert), free_port())


async def test_mutual_tls(test_pki: PKIBundle, free_port) -> None:  # type: ignore[no-untyped-def]
    server = make_server_ssl_context(
        test_pki.server.cert, test_pki.server.key, client_ca=test_pki.ca.cert, require_client_cert=True
    )
    good = make_client_ssl_context(ca=test_pki.ca.cert, cert=test_pki.client.cert, key=test_pki.client.key)
    assert await _handshake(server, good, free_port()) == b"ping"
    anonymous = make_client_ssl_context(ca=test_pki.ca.cert)
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        await _handshake(server, anonymous, free_port())
    stranger = make_client_ssl_context(
        ca=test_pki.ca.cert, cert=test_pki.untrusted.cert, key=test_pki.untrusted.key
    )
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        await _handshake(server, stranger, free_port())


async def test_old_tls_and_weak_ciphers_refused(test_pki: PKIBundle, free_port) -> None:  # type: ignore[no-untyped-def]
    server = make_server_ssl_context(test_pki.server.cert, test_pki.server.key)
    assert server.minimum_version == ssl.TLSVersion.TLSv1_2
    names = {c["name"] for c in server.get_ciphers()}
    assert names and all(n.startswith(("TLS_", "ECDHE-", "DHE-")) for n in names), names
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await _handshake(server, old, free_port())
    static_rsa = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    static_rsa.check_hostname = False
    static_rsa.verify_mode = ssl.CERT_NONE
    static_rsa.maximum_version = ssl.TLSVersion.TLSv1_2
    static_rsa.set_ciphers("AES256-GCM-SHA384:AES128-SHA")  # no forward secrecy
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await _handshake(server, static_rsa, free_port())


def test_require_client_cert_needs_a_ca(test_pki: PKIBundle) -> None:
    with pytest.raises(ValueError, match="needs client_ca"):
        make_server_ssl_context(test_pki.server.cert, test_pki.server.key, require_client_cert=True)


async def test_tls_from_secret_bytes_with_encrypted_key(test_pki: PKIBundle, free_port) -> None:  # type: ignore[no-untyped-def]
    # The hook passes resolved secrets as bytes: PEM CA, PEM certificate, password-protected PEM key.
    key_pem = test_pki.client.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    server = make_server_ssl_context(
        test_pki.server.cert,
        test_pki.server.key,
        client_ca=test_pki.ca.cert_path.read_bytes(),
        require_client_cert=True,
    )
    client = make_client_ssl_context(
        ca=test_pki.ca.cert_path.read_bytes(),
        cert=test_pki.client.cert_path.read_bytes(),
        key=key_pem,
        password=b"pw",
    )
    assert await _handshake(server, client, free_port()) == b"ping"


def test_chain_through_an_intermediate(test_pki: PKIBundle, tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from oftp2_provider.pki import Identity, issue, new_key

    key = new_key()
    now = dt.datetime.now(dt.timezone.utc)
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "OFTP2 Test Intermediate")])

    def intermediate(ca_flag: bool) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(test_pki.ca.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30 * 12))
            .add_extension(x509.BasicConstraints(ca=ca_flag, path_length=None), critical=True)
            .sign(test_pki.ca.key, hashes.SHA256())
        )

    inter = intermediate(True)
    leaf = issue(tmp_path, Identity("inter", inter, key, tmp_path / "i.crt", tmp_path / "i.key"), "leaf")
    anchors = [test_pki.ca.cert]
    assert check_certificate(leaf.cert, purpose="sign", trust_anchors=anchors, intermediates=[inter]).ok
    missing = check_certificate(leaf.cert, purpose="sign", trust_anchors=anchors)
    assert any("no trusted issuer" in p for p in missing.problems)
    not_ca = check_certificate(
        leaf.cert, purpose="sign", trust_anchors=anchors, intermediates=[intermediate(False)]
    )
    assert any("is not a CA" in p for p in not_ca.problems)


async def test_transport_tls_helpers_are_hardened(test_pki: PKIBundle, free_port) -> None:  # type: ignore[no-untyped-def]
    from oftp2_provider.protocol.transport import client_ssl_context, server_ssl_context

    server = server_ssl_context(test_pki.server.cert_path, test_pki.server.key_path)
    client = client_ssl_context(test_pki.ca.cert_path)
    for ctx in (server, client):
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
        names = {c["name"] for c in ctx.get_ciphers()}
        assert names and all(n.startswith(("TLS_", "ECDHE-", "DHE-")) for n in names), names
    assert await _handshake(server, client, free_port()) == b"ping"
    static_rsa = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    static_rsa.check_hostname = False
    static_rsa.verify_mode = ssl.CERT_NONE
    static_rsa.maximum_version = ssl.TLSVersion.TLSv1_2
    static_rsa.set_ciphers("AES256-GCM-SHA384:AES128-SHA")  # no forward secrecy
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await _handshake(server, static_rsa, free_port())
