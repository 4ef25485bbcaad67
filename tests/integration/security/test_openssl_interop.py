"""CMS interoperability with ``openssl cms``, in both directions, including BER ``-stream`` output."""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from oftp2_provider.pki import PKIBundle
from oftp2_provider.protocol.auth import answer_challenge, make_challenge
from oftp2_provider.protocol.cms import (
    DecryptionFailed,
    SignatureInvalid,
    protect_file,
    unprotect_file,
    verify_signed_bytes,
)
from oftp2_provider.protocol.cms.ber import BerReader, FileSource
from oftp2_provider.protocol.codec import eerp_signed_content
from oftp2_provider.protocol.commands import EERP
from oftp2_provider.protocol.receipts import ReceiptOutcome, sign_receipt, verify_receipt
from oftp2_provider.protocol.suites import CipherSuite

Run = Callable[..., subprocess.CompletedProcess[bytes]]


def _nothing_at(dst: Path) -> None:
    assert not dst.exists()
    assert not list(dst.parent.glob(f".{dst.name}.*.part"))


def _is_indefinite(path: Path) -> bool:
    with path.open("rb") as fh:
        return BerReader(FileSource(fh)).header().length is None


# --- ours → openssl ----------------------------------------------------------------------------------


@pytest.mark.parametrize("suite", [1, 4, 6])
def test_openssl_verifies_our_signature(
    openssl: Run, test_pki: PKIBundle, sample: Path, tmp_path: Path, suite: int
) -> None:
    wire = tmp_path / "signed.p7"
    protect_file(sample, wire, suite=suite, sign_key=test_pki.client.key, sign_cert=test_pki.client.cert)
    assert _is_indefinite(wire)
    out = tmp_path / "verified"
    openssl(
        "cms", "-verify", "-binary", "-inform", "DER", "-in", wire, "-CAfile", test_pki.ca.cert_path,
        "-certfile", test_pki.client.cert_path, "-purpose", "any", "-out", out,
    )  # fmt: skip
    assert out.read_bytes() == sample.read_bytes()
    printed = openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", wire).stdout
    assert CipherSuite(suite).hash_name.encode() in printed
    assert CipherSuite(suite).hash_oid.encode() in printed
    assert test_pki.client.cert.tbs_certificate_bytes not in wire.read_bytes()  # not embedded by default


def test_openssl_verifies_with_embedded_certificate(
    openssl: Run, test_pki: PKIBundle, sample: Path, tmp_path: Path
) -> None:
    wire = tmp_path / "signed.p7"
    protect_file(
        sample, wire, suite=4, sign_key=test_pki.client.key, sign_cert=test_pki.client.cert, include_cert=True
    )
    out = tmp_path / "verified"
    openssl("cms", "-verify", "-binary", "-inform", "DER", "-in", wire, "-CAfile", test_pki.ca.cert_path,
            "-purpose", "any", "-out", out)  # fmt: skip
    assert out.read_bytes() == sample.read_bytes()


@pytest.mark.parametrize("suite", [1, 2, 5, 6])
def test_openssl_decrypts_ours(
    openssl: Run, test_pki: PKIBundle, sample: Path, tmp_path: Path, suite: int
) -> None:
    wire = tmp_path / "enc.p7"
    protect_file(sample, wire, suite=suite, encrypt_for=test_pki.partner.cert)
    out = tmp_path / "decrypted"
    openssl("cms", "-decrypt", "-binary", "-inform", "DER", "-in", wire, "-recip", test_pki.partner.cert_path,
            "-inkey", test_pki.partner.key_path, "-out", out)  # fmt: skip
    assert out.read_bytes() == sample.read_bytes()
    printed = openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", wire).stdout
    assert CipherSuite(suite).cipher.oid.encode() in printed


def test_openssl_unwraps_our_sign_then_encrypt(
    openssl: Run, test_pki: PKIBundle, sample: Path, tmp_path: Path
) -> None:
    wire = tmp_path / "wire"
    protect_file(sample, wire, suite=3, sign_key=test_pki.client.key, sign_cert=test_pki.client.cert,
                 encrypt_for=test_pki.partner.cert)  # fmt: skip
    inner = tmp_path / "inner.p7"
    openssl("cms", "-decrypt", "-binary", "-inform", "DER", "-in", wire, "-inkey", test_pki.partner.key_path,
            "-out", inner)  # fmt: skip
    out = tmp_path / "out"
    openssl("cms", "-verify", "-binary", "-inform", "DER", "-in", inner, "-noverify", "-certfile",
            test_pki.client.cert_path, "-out", out)  # fmt: skip
    assert out.read_bytes() == sample.read_bytes()


def test_openssl_uncompresses_ours(
    openssl: Run, openssl_has_zlib: bool, test_pki: PKIBundle, sample: Path, tmp_path: Path
) -> None:
    wire = tmp_path / "comp.p7"
    protect_file(sample, wire, suite=0, compress=True)
    printed = openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", wire).stdout
    assert b"zlib compression" in printed.lower() or b"1.2.840.113549.1.9.16.3.8" in printed
    if not openssl_has_zlib:
        pytest.skip(
            "this openssl build has no zlib: `openssl cms -uncompress` is unsupported (structure checked)"
        )
    out = tmp_path / "out"
    openssl("cms", "-uncompress", "-binary", "-inform", "DER", "-in", wire, "-out", out)
    assert out.read_bytes() == sample.read_bytes()


@pytest.mark.parametrize("suite", [1, 2])
def test_openssl_decrypts_our_auth_challenge(
    openssl: Run, test_pki: PKIBundle, tmp_path: Path, suite: int
) -> None:
    auch, challenge = make_challenge(test_pki.partner.cert, suite=suite)
    (tmp_path / "auch").write_bytes(auch)
    out = tmp_path / "plain"
    openssl("cms", "-decrypt", "-binary", "-inform", "DER", "-in", tmp_path / "auch", "-inkey",
            test_pki.partner.key_path, "-out", out)  # fmt: skip
    assert out.read_bytes() == challenge


def test_openssl_verifies_our_signed_eerp(openssl: Run, test_pki: PKIBundle, tmp_path: Path) -> None:
    eerp = EERP("DSN.1", "20261124", "1200000001", "O0013000000A", "O0013000000B")
    signed = sign_receipt(
        eerp, suite=4, key=test_pki.partner.key, cert=test_pki.partner.cert, file_hash=bytes(32)
    )
    (tmp_path / "sig").write_bytes(signed.signature)
    out = tmp_path / "content"
    openssl("cms", "-verify", "-binary", "-inform", "DER", "-in", tmp_path / "sig", "-noverify", "-certfile",
            test_pki.partner.cert_path, "-out", out)  # fmt: skip
    assert out.read_bytes() == eerp_signed_content(signed)


# --- openssl → ours ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["der", "ber-stream"])
@pytest.mark.parametrize("md", ["sha1", "sha256", "sha512"])
def test_we_verify_openssl_signature(
    openssl: Run, test_pki: PKIBundle, sample: Path, tmp_path: Path, md: str, stream: bool
) -> None:
    wire = tmp_path / "signed.p7"
    openssl("cms", "-sign", "-binary", "-nodetach", *(["-stream"] if stream else []), "-md", md, "-in", sample,
            "-signer", test_pki.client.cert_path, "-inkey", test_pki.client.key_path, "-outform", "DER",
            "-out", wire)  # fmt: skip
    assert _is_indefinite(wire) is stream
    result = unprotect_file(wire, tmp_path / "out", security_level=2, compressed=False, suite=4,
                            verify_certs=[test_pki.client.cert])  # fmt: skip
    assert (tmp_path / "out").read_bytes() == sample.read_bytes()
    assert result.verified_signer == test_pki.client.cert
    assert result.signature_digest == md


def test_we_verify_openssl_signature_without_attributes(
    openssl: Run, test_pki: PKIBundle, sample: Path, tmp_path: Path
) -> None:
    wire = tmp_path / "signed.p7"
    openssl("cms", "-sign", "-binary", "-nodetach", "-noattr", "-in", sample, "-signer", test_pki.client.cert_path,
            "-inkey", test_pki.client.key_path, "-outform", "DER", "-out", wire)  # fmt: skip
    unprotect_file(
        wire,
        tmp_path / "out",
        security_level=2,
        compressed=False,
        suite=4,
        verify_certs=[test_pki.client.cert],
    )
    assert (tmp_path / "out").read_bytes() == sample.read_bytes()


@pytest.mark.parametrize("stream", [False, True], ids=["der", "ber-stream"])
@pytest.mark.parametrize("cipher", ["-des3", "-aes256"])
def test_we_decrypt_openssl_envelope(
    openssl: Run, test_pki: PKIBundle, sample: Path, tmp_path: Path, cipher: str, stream: bool
) -> None:
    wire = tmp_path / "enc.p7"
    openssl("cms", "-encrypt", "-binary", cipher, *(["-stream"] if stream else []), "-in", sample, "-outform", "DER",
            "-out", wire, test_pki.partner.cert_path)  # fmt: skip
    assert _is_indefinite(wire) is stream
    result = unprotect_file(wire, tmp_path / "out", security_level=1, compressed=False, suite=1 if cipher == "-des3" else 2,
                            decrypt_key=test_pki.partner.key, decrypt_cert=test_pki.partner.cert)  # fmt: skip
    assert (tmp_path / "out").read_bytes() == sample.read_bytes()
    assert result.cipher == ("des-ede3-cbc" if cipher == "-des3" else "aes256-cbc")


def test_we_unwrap_openssl_sign_then_encrypt_stream(
    openssl: Run, test_pki: PKIBundle, sample: Path, tmp_path: Path
) -> None:
    signed = tmp_path / "signed.p7"
    wire = tmp_path / "wire.p7"
    openssl("cms", "-sign", "-binary", "-nodetach", "-stream", "-in", sample, "-signer", test_pki.client.cert_path,
            "-inkey", test_pki.client.key_path, "-outform", "DER", "-out", signed)  # fmt: skip
    openssl("cms", "-encrypt", "-binary", "-aes256", "-stream", "-in", signed, "-outform", "DER", "-out", wire,
            test_pki.partner.cert_path)  # fmt: skip
    result = unprotect_file(wire, tmp_path / "out", security_level=3, compressed=False, suite=6,
                            decrypt_key=test_pki.partner.key, decrypt_cert=test_pki.partner.cert,
                            verify_certs=[test_pki.client.cert], chunk_size=4096)  # fmt: skip
    assert (tmp_path / "out").read_bytes() == sample.read_bytes()
    assert result.verified_signer == test_pki.client.cert and result.cipher == "aes256-cbc"


@pytest.mark.parametrize("cipher", ["-des3", "-aes256"])
def test_we_answer_an_openssl_challenge(
    openssl: Run, test_pki: PKIBundle, tmp_path: Path, cipher: str
) -> None:
    challenge = bytes(range(20))
    (tmp_path / "c").write_bytes(challenge)
    openssl("cms", "-encrypt", "-binary", cipher, "-in", tmp_path / "c", "-outform", "DER", "-out", tmp_path / "auch",
            test_pki.partner.cert_path)  # fmt: skip
    assert (
        answer_challenge((tmp_path / "auch").read_bytes(), test_pki.partner.key, test_pki.partner.cert)
        == challenge
    )


@pytest.mark.parametrize("detach", [False, True], ids=["attached", "detached"])
def test_we_verify_an_openssl_signed_eerp(
    openssl: Run, test_pki: PKIBundle, tmp_path: Path, detach: bool
) -> None:
    eerp = EERP("DSN.1", "20261124", "1200000001", "O0013000000A", "O0013000000B", file_hash=bytes(range(32)))
    (tmp_path / "content").write_bytes(eerp_signed_content(eerp))
    openssl("cms", "-sign", "-binary", *([] if detach else ["-nodetach"]), "-in", tmp_path / "content", "-signer",
            test_pki.partner.cert_path, "-inkey", test_pki.partner.key_path, "-nocerts", "-outform", "DER",
            "-out", tmp_path / "sig")  # fmt: skip
    signed_eerp = dataclasses.replace(eerp, signature=(tmp_path / "sig").read_bytes())
    result = verify_receipt(
        signed_eerp, suite=4, partner_certs=[test_pki.partner.cert], expected_hash=bytes(range(32))
    )
    assert result.outcome is ReceiptOutcome.VERIFIED, result.detail
    content, _ = verify_signed_bytes(
        signed_eerp.signature,
        verify_certs=[test_pki.partner.cert],
        detached_content=eerp_signed_content(eerp),
    )
    assert (content is None) is detach


# --- openssl output, tampered or for someone else: typed errors, nothing at the destination -------------


def test_tampered_openssl_signature(openssl: Run, test_pki: PKIBundle, sample: Path, tmp_path: Path) -> None:
    wire = tmp_path / "signed.p7"
    openssl("cms", "-sign", "-binary", "-nodetach", "-stream", "-in", sample, "-signer", test_pki.client.cert_path,
            "-inkey", test_pki.client.key_path, "-outform", "DER", "-out", wire)  # fmt: skip
    data = bytearray(wire.read_bytes())
    data[300_000] ^= 0x20
    wire.write_bytes(bytes(data))
    with pytest.raises(SignatureInvalid):
        unprotect_file(wire, tmp_path / "out", security_level=2, compressed=False, suite=4,
                       verify_certs=[test_pki.client.cert])  # fmt: skip
    _nothing_at(tmp_path / "out")


def test_openssl_envelope_for_someone_else(
    openssl: Run, test_pki: PKIBundle, sample: Path, tmp_path: Path
) -> None:
    wire = tmp_path / "enc.p7"
    openssl("cms", "-encrypt", "-binary", "-des3", "-in", sample, "-outform", "DER", "-out", wire,
            test_pki.server.cert_path)  # fmt: skip
    with pytest.raises(DecryptionFailed, match="not addressed"):
        unprotect_file(wire, tmp_path / "out", security_level=1, compressed=False, suite=1,
                       decrypt_key=test_pki.partner.key, decrypt_cert=test_pki.partner.cert)  # fmt: skip
    with pytest.raises(DecryptionFailed):
        unprotect_file(wire, tmp_path / "out", security_level=1, compressed=False, suite=1,
                       decrypt_key=test_pki.partner.key)  # fmt: skip
    _nothing_at(tmp_path / "out")


def test_truncated_openssl_stream(openssl: Run, test_pki: PKIBundle, sample: Path, tmp_path: Path) -> None:
    wire = tmp_path / "enc.p7"
    openssl("cms", "-encrypt", "-binary", "-aes256", "-stream", "-in", sample, "-outform", "DER", "-out", wire,
            test_pki.partner.cert_path)  # fmt: skip
    wire.write_bytes(wire.read_bytes()[:-7])
    with pytest.raises(DecryptionFailed):
        unprotect_file(wire, tmp_path / "out", security_level=1, compressed=False, suite=2,
                       decrypt_key=test_pki.partner.key, decrypt_cert=test_pki.partner.cert)  # fmt: skip
    _nothing_at(tmp_path / "out")


@pytest.fixture
def ski_identity(test_pki: PKIBundle, tmp_path: Path) -> tuple[Path, Path]:
    """A certificate with a subjectKeyIdentifier (the test PKI's end-entity certificates have none)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    from oftp2_provider.pki import new_key

    key = new_key()
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "ski-partner")]))
        .issuer_name(test_pki.ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(test_pki.ca.key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "ski.crt", tmp_path / "ski.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_recipient_and_signer_by_key_identifier(
    openssl: Run, ski_identity: tuple[Path, Path], sample: Path, tmp_path: Path
) -> None:
    from oftp2_provider.protocol.certs import load_certificate, load_private_key

    cert_path, key_path = ski_identity
    cert, key = load_certificate(cert_path), load_private_key(key_path)
    signed, wire = tmp_path / "signed.p7", tmp_path / "wire.p7"
    openssl("cms", "-sign", "-binary", "-nodetach", "-keyid", "-in", sample, "-signer", cert_path, "-inkey", key_path,
            "-nocerts", "-outform", "DER", "-out", signed)  # fmt: skip
    openssl("cms", "-encrypt", "-binary", "-aes256", "-keyid", "-in", signed, "-outform", "DER", "-out", wire,
            cert_path)  # fmt: skip
    printed = openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", wire).stdout
    assert b"subjectKeyIdentifier" in printed
    result = unprotect_file(wire, tmp_path / "out", security_level=3, compressed=False, suite=4, decrypt_key=key,
                            decrypt_cert=cert, verify_certs=[cert])  # fmt: skip
    assert (tmp_path / "out").read_bytes() == sample.read_bytes()
    assert result.verified_signer == cert
