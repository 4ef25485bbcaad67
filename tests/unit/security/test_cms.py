"""Streaming CMS: every layer combination and suite round-trips; every failure is typed and leaves nothing."""

from __future__ import annotations

import asyncio
import hashlib
import os
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from oftp2_provider.pki import PKIBundle
from oftp2_provider.protocol.cms import (
    DecompressionFailed,
    DecryptionFailed,
    SignatureInvalid,
    UnknownSigner,
    UnsupportedSuite,
    protect_file,
    protect_file_async,
    sign_bytes,
    unprotect_file,
    unprotect_file_async,
)
from oftp2_provider.protocol.commands import SecurityLevel
from oftp2_provider.protocol.suites import CipherSuite

SUITES = [s for s in CipherSuite if s is not CipherSuite.NONE]


def _protect(pki: PKIBundle, src: Path, dst: Path, suite: int, *, sign: bool, compress: bool, encrypt: bool):
    return protect_file(
        src,
        dst,
        suite=suite,
        sign_key=pki.client.key if sign else None,
        sign_cert=pki.client.cert if sign else None,
        compress=compress,
        encrypt_for=pki.partner.cert if encrypt else None,
        chunk_size=50_000,
    )


def _unprotect(pki: PKIBundle, src: Path, dst: Path, level: int, compressed: bool, suite: int = 4, **kw):
    args = {
        "decrypt_key": pki.partner.key,
        "decrypt_cert": pki.partner.cert,
        "verify_certs": [pki.client.cert],
        "chunk_size": 40_000,
    }
    args.update(kw)
    return unprotect_file(src, dst, security_level=level, compressed=compressed, suite=suite, **args)


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: f"suite{int(s):02d}")
@pytest.mark.parametrize(
    ("sign", "compress", "encrypt"),
    [
        (True, True, True),
        (True, False, False),
        (False, True, False),
        (False, False, True),
        (True, False, True),
    ],
    ids=["sign+compress+encrypt", "sign", "compress", "encrypt", "sign+encrypt"],
)
def test_round_trip(
    test_pki: PKIBundle,
    make_file: Callable[..., Path],
    tmp_path: Path,
    suite: CipherSuite,
    sign: bool,
    compress: bool,
    encrypt: bool,
) -> None:
    src = make_file(size=180_001)
    result = _protect(test_pki, src, tmp_path / "wire", suite, sign=sign, compress=compress, encrypt=encrypt)
    wire = (tmp_path / "wire").read_bytes()
    assert result.transmitted_size == len(wire)
    assert result.original_size == 180_001
    assert result.sha_of_transmitted == hashlib.new(suite.hash_name, wire).digest()
    assert result.security_level == SecurityLevel(int(encrypt) + 2 * int(sign))
    assert result.envelope == 1
    assert result.original_blocks == 176  # ceil(180_001 / 1024)
    assert result.transmitted_blocks == -(-len(wire) // 1024)
    if encrypt:
        assert src.read_bytes()[:1000] not in wire
    back = _unprotect(test_pki, tmp_path / "wire", tmp_path / "back", result.security_level, compress, suite)
    assert (tmp_path / "back").read_bytes() == src.read_bytes()
    assert back.sha_of_transmitted == result.sha_of_transmitted
    assert back.transmitted_size == len(wire)
    assert back.original_size == 180_001
    assert (back.verified_signer == test_pki.client.cert) is sign
    if encrypt:
        assert back.cipher == suite.cipher.name
    if sign:
        assert back.signature_digest == suite.hash_name


def test_empty_file_round_trip(test_pki: PKIBundle, tmp_path: Path) -> None:
    src = tmp_path / "empty"
    src.write_bytes(b"")
    r = _protect(test_pki, src, tmp_path / "wire", 2, sign=True, compress=True, encrypt=True)
    _unprotect(test_pki, tmp_path / "wire", tmp_path / "back", r.security_level, True, 2)
    assert (tmp_path / "back").read_bytes() == b""


def test_plain_copy_when_no_service(make_file: Callable[..., Path], tmp_path: Path) -> None:
    src = make_file(size=5000)
    r = protect_file(src, tmp_path / "wire", suite=0)
    assert (tmp_path / "wire").read_bytes() == src.read_bytes()
    assert r.envelope == 0 and r.hash_name == "sha256"
    u = unprotect_file(tmp_path / "wire", tmp_path / "back", security_level=0, compressed=False, suite=0)
    assert (tmp_path / "back").read_bytes() == src.read_bytes()
    assert u.verified_signer is None


def test_include_cert_embeds_the_signer(
    test_pki: PKIBundle, make_file: Callable[..., Path], tmp_path: Path
) -> None:
    src = make_file(size=1000)
    protect_file(src, tmp_path / "a", suite=4, sign_key=test_pki.client.key, sign_cert=test_pki.client.cert)
    protect_file(
        src,
        tmp_path / "b",
        suite=4,
        sign_key=test_pki.client.key,
        sign_cert=test_pki.client.cert,
        include_cert=True,
    )
    der = test_pki.client.cert.public_bytes(serialization.Encoding.DER)
    assert der not in (tmp_path / "a").read_bytes()
    assert der in (tmp_path / "b").read_bytes()


# --- failures: typed error, nothing at the destination, destination untouched -------------------------


@pytest.fixture
def protected(test_pki: PKIBundle, make_file: Callable[..., Path], tmp_path: Path) -> Callable[..., Path]:
    src = make_file(size=120_000)

    def _make(*, sign: bool = True, compress: bool = True, encrypt: bool = True, suite: int = 4) -> Path:
        dst = tmp_path / f"wire-{sign}-{compress}-{encrypt}-{suite}"
        _protect(test_pki, src, dst, suite, sign=sign, compress=compress, encrypt=encrypt)
        return dst

    return _make


def _assert_nothing_left(directory: Path, dst: Path) -> None:
    assert not dst.exists()
    assert not [p for p in directory.iterdir() if p.name.endswith(".part")]


def test_tampered_signed_content(test_pki: PKIBundle, protected: Callable[..., Path], tmp_path: Path) -> None:
    wire = protected(compress=False, encrypt=False)
    data = bytearray(wire.read_bytes())
    data[len(data) // 2] ^= 0x01
    wire.write_bytes(bytes(data))
    with pytest.raises(SignatureInvalid, match="message digest does not match") as info:
        _unprotect(test_pki, wire, tmp_path / "out", 2, False)
    assert int(info.value.efna or 0) == 21 and int(info.value.nerp or 0) == 31
    _assert_nothing_left(tmp_path, tmp_path / "out")


def test_tampered_signature_value(
    test_pki: PKIBundle, protected: Callable[..., Path], tmp_path: Path
) -> None:
    wire = protected(compress=False, encrypt=False)
    data = bytearray(wire.read_bytes())
    data[-20] ^= 0x01  # inside the RSA signature at the end
    wire.write_bytes(bytes(data))
    with pytest.raises(SignatureInvalid, match="does not verify"):
        _unprotect(test_pki, wire, tmp_path / "out", 2, False)
    _assert_nothing_left(tmp_path, tmp_path / "out")


def test_unknown_signer(test_pki: PKIBundle, protected: Callable[..., Path], tmp_path: Path) -> None:
    wire = protected(compress=False, encrypt=False)
    with pytest.raises(UnknownSigner, match="not among the partner's certificates"):
        _unprotect(test_pki, wire, tmp_path / "out", 2, False, verify_certs=[test_pki.partner.cert])
    with pytest.raises(UnknownSigner, match="no partner certificate"):
        _unprotect(test_pki, wire, tmp_path / "out", 2, False, verify_certs=[])
    _assert_nothing_left(tmp_path, tmp_path / "out")


def test_detached_signature_is_not_a_signed_file(test_pki: PKIBundle, tmp_path: Path) -> None:
    wire = tmp_path / "detached"
    wire.write_bytes(
        sign_bytes(
            b"data", key=test_pki.client.key, cert=test_pki.client.cert, hash_name="sha256", detached=True
        )
    )
    with pytest.raises(SignatureInvalid, match="detached"):
        _unprotect(test_pki, wire, tmp_path / "out", 2, False)
    _assert_nothing_left(tmp_path, tmp_path / "out")


def test_wrong_private_key(test_pki: PKIBundle, protected: Callable[..., Path], tmp_path: Path) -> None:
    wire = protected()
    with pytest.raises(DecryptionFailed) as info:
        _unprotect(
            test_pki, wire, tmp_path / "out", 3, True, decrypt_key=test_pki.server.key, decrypt_cert=None
        )
    assert int(info.value.efna or 0) == 22 and int(info.value.nerp or 0) == 33
    _assert_nothing_left(tmp_path, tmp_path / "out")


def test_not_addressed_to_our_certificate(
    test_pki: PKIBundle, protected: Callable[..., Path], tmp_path: Path
) -> None:
    wire = protected()
    with pytest.raises(DecryptionFailed, match="not addressed to certificate"):
        _unprotect(
            test_pki,
            wire,
            tmp_path / "out",
            3,
            True,
            decrypt_key=test_pki.server.key,
            decrypt_cert=test_pki.server.cert,
        )
    _assert_nothing_left(tmp_path, tmp_path / "out")


def test_no_private_key_configured(
    test_pki: PKIBundle, protected: Callable[..., Path], tmp_path: Path
) -> None:
    with pytest.raises(DecryptionFailed, match="no private key"):
        _unprotect(test_pki, protected(), tmp_path / "out", 3, True, decrypt_key=None)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.999])
def test_truncated_envelope(
    test_pki: PKIBundle, protected: Callable[..., Path], tmp_path: Path, keep: float
) -> None:
    wire = protected()
    data = wire.read_bytes()
    wire.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(DecryptionFailed):
        _unprotect(test_pki, wire, tmp_path / "out", 3, True)
    _assert_nothing_left(tmp_path, tmp_path / "out")


def test_trailing_garbage(test_pki: PKIBundle, protected: Callable[..., Path], tmp_path: Path) -> None:
    wire = protected()
    wire.write_bytes(wire.read_bytes() + b"\x00junk")
    with pytest.raises(DecryptionFailed, match="unexpected data after"):
        _unprotect(test_pki, wire, tmp_path / "out", 3, True)


def test_corrupt_zlib(test_pki: PKIBundle, make_file: Callable[..., Path], tmp_path: Path) -> None:
    src = make_file(size=100_000)
    protect_file(src, tmp_path / "wire", suite=4, compress=True)
    data = bytearray((tmp_path / "wire").read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    (tmp_path / "wire").write_bytes(bytes(data))
    with pytest.raises(DecompressionFailed) as info:
        _unprotect(test_pki, tmp_path / "wire", tmp_path / "out", 0, True)
    assert int(info.value.efna or 0) == 23 and int(info.value.nerp or 0) == 32
    _assert_nothing_left(tmp_path, tmp_path / "out")


def test_decompression_limit(make_file: Callable[..., Path], tmp_path: Path) -> None:
    src = tmp_path / "zeros"
    src.write_bytes(bytes(3_000_000))
    protect_file(src, tmp_path / "wire", suite=4, compress=True)
    assert (tmp_path / "wire").stat().st_size < 10_000
    with pytest.raises(DecompressionFailed, match="exceeds the limit"):
        unprotect_file(
            tmp_path / "wire",
            tmp_path / "out",
            security_level=0,
            compressed=True,
            suite=4,
            max_output=1_000_000,
        )
    _assert_nothing_left(tmp_path, tmp_path / "out")


def test_compressed_data_with_other_algorithm(tmp_path: Path) -> None:
    from oftp2_provider.protocol.cms import asn1
    from oftp2_provider.protocol.cms.ber import tlv

    body = (
        asn1.integer(0)
        + asn1.algorithm_identifier("1.2.3.4")
        + tlv(0x30, asn1.oid(asn1.OID_DATA) + tlv(0xA0, asn1.octet_string(zlib.compress(b"x"))))
    )
    wire = tmp_path / "wire"
    wire.write_bytes(tlv(0x30, asn1.oid(asn1.OID_COMPRESSED_DATA) + tlv(0xA0, tlv(0x30, body))))
    with pytest.raises(DecompressionFailed, match="not zlib"):
        unprotect_file(wire, tmp_path / "out", security_level=0, compressed=True, suite=0)


def test_layers_do_not_match_sfid(
    test_pki: PKIBundle, protected: Callable[..., Path], tmp_path: Path
) -> None:
    wire = protected(sign=True, compress=False, encrypt=False)
    with pytest.raises(DecryptionFailed, match="expected EnvelopedData"):
        _unprotect(test_pki, wire, tmp_path / "out", 1, False)
    with pytest.raises(DecompressionFailed, match="expected CompressedData"):
        _unprotect(test_pki, wire, tmp_path / "out", 0, True)
    _assert_nothing_left(tmp_path, tmp_path / "out")


def test_unsupported_suite_and_level(protected: Callable[..., Path], tmp_path: Path) -> None:
    wire = protected()
    with pytest.raises(UnsupportedSuite) as info:
        unprotect_file(wire, tmp_path / "out", security_level=3, compressed=True, suite=7)
    assert int(info.value.sfna or 0) == 15
    with pytest.raises(UnsupportedSuite, match="SFIDCIPH is 00"):
        unprotect_file(wire, tmp_path / "out", security_level=3, compressed=True, suite=0)
    with pytest.raises(UnsupportedSuite, match="SFIDSEC"):
        unprotect_file(wire, tmp_path / "out", security_level=4, compressed=True, suite=4)


def test_failure_keeps_an_existing_destination(
    test_pki: PKIBundle, protected: Callable[..., Path], tmp_path: Path
) -> None:
    wire = protected()
    out = tmp_path / "out"
    out.write_bytes(b"previous")
    with pytest.raises(DecryptionFailed):
        _unprotect(test_pki, wire, out, 3, True, decrypt_key=test_pki.server.key, decrypt_cert=None)
    assert out.read_bytes() == b"previous"


def test_protect_argument_errors(test_pki: PKIBundle, make_file: Callable[..., Path], tmp_path: Path) -> None:
    src = make_file(size=10)
    with pytest.raises(ValueError, match="both sign_key and sign_cert"):
        protect_file(src, tmp_path / "o", suite=4, sign_key=test_pki.client.key)
    with pytest.raises(UnsupportedSuite, match="suite 00 cannot sign or encrypt"):
        protect_file(src, tmp_path / "o", suite=0, encrypt_for=test_pki.partner.cert)
    assert not (tmp_path / "o").exists()


async def test_async_wrappers_run_off_the_loop(
    test_pki: PKIBundle, make_file: Callable[..., Path], tmp_path: Path
) -> None:
    src = make_file(size=400_000)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    r = await protect_file_async(
        src,
        tmp_path / "wire",
        suite=1,
        sign_key=test_pki.client.key,
        sign_cert=test_pki.client.cert,
        compress=True,
        encrypt_for=test_pki.partner.cert,
    )
    u = await unprotect_file_async(
        tmp_path / "wire",
        tmp_path / "back",
        security_level=r.security_level,
        compressed=True,
        suite=1,
        decrypt_key=test_pki.partner.key,
        decrypt_cert=test_pki.partner.cert,
        verify_certs=[test_pki.client.cert],
    )
    task.cancel()
    assert (tmp_path / "back").read_bytes() == src.read_bytes()
    assert u.verified_signer == test_pki.client.cert
    assert ticks > 10  # the loop kept running while 3DES worked in a thread


def test_decrypted_garbage_is_a_decryption_failure(test_pki: PKIBundle, tmp_path: Path) -> None:
    # What a wrong key can produce: PKCS#1 v1.5 implicit rejection yields a random content key of
    # the right length now and then, and the plaintext is then noise, not the inner CMS layer.
    from oftp2_provider.protocol.cms import envelope_bytes

    wire = tmp_path / "wire"
    wire.write_bytes(
        envelope_bytes(b"\x31\x82" + bytes(range(200)), test_pki.partner.cert, CipherSuite(4).cipher)
    )
    with pytest.raises(DecryptionFailed, match="not a CMS structure"):
        _unprotect(test_pki, wire, tmp_path / "out", 1, True)
    _assert_nothing_left(tmp_path, tmp_path / "out")


def test_non_rsa_recipient_leaves_nothing(
    test_pki: PKIBundle, make_file: Callable[..., Path], tmp_path: Path
) -> None:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "ec-partner")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    src = make_file(size=100)
    out = tmp_path / "wire"
    with pytest.raises(ValueError, match=r"ec-partner.*needs an RSA key"):
        protect_file(src, out, suite=4, encrypt_for=cert)
    _assert_nothing_left(tmp_path, out)


def test_malformed_signer_name_is_a_typed_error(test_pki: PKIBundle) -> None:
    # Found by fuzzing: asn1crypto decodes names lazily, so a broken UTF8String surfaced only while
    # matching the signer against our certificates.
    from oftp2_provider.protocol.cms import verify_signed_bytes

    signed = sign_bytes(b"content", key=test_pki.client.key, cert=test_pki.client.cert, hash_name="sha256")
    issuer_cn = b"OFTP2 Test CA ca"
    assert signed.count(issuer_cn) == 1
    broken = signed.replace(issuer_cn, b"\xf3" + issuer_cn[1:])
    with pytest.raises(UnknownSigner, match="unreadable name"):
        verify_signed_bytes(broken, verify_certs=[test_pki.client.cert])


@pytest.mark.parametrize("level", [1, 6, 9])
def test_parallel_zlib_is_one_ordinary_zlib_stream(tmp_path: Path, level: int) -> None:
    from asn1crypto import cms as asn1_cms

    from oftp2_provider.protocol.cms.writer import CompressSink

    src = tmp_path / "src"
    data = (b"repetitive OFTP2 text " * 120_000)[:2_500_000] + os.urandom(700_000)
    src.write_bytes(data)
    protect_file(src, tmp_path / "wire", suite=0, compress=True, compression_level=level, chunk_size=333_333)
    wire = (tmp_path / "wire").read_bytes()
    parsed = asn1_cms.ContentInfo.load(wire)  # an independent BER parser and zlib.decompress
    assert parsed["content"].decompressed == data
    assert zlib.decompress(b"".join(_zlib_stream(parsed))) == data
    with pytest.raises(ValueError, match="not 0-9"):
        CompressSink(_Null(), level=10)


def _zlib_stream(parsed: object) -> list[bytes]:
    content = parsed["content"]["encap_content_info"]["content"]  # type: ignore[index]
    return [bytes(content.native)]


class _Null:
    def write(self, data: bytes, /) -> None:
        pass

    def close(self) -> None:
        pass


def test_abort_mid_compression_stops_the_workers(tmp_path: Path) -> None:
    import threading

    from oftp2_provider.protocol.cms import SecureFileWriter

    before = {t.name for t in threading.enumerate()}
    writer = SecureFileWriter(tmp_path / "out", suite=4, compress=True)
    writer.write(b"x" * 3_000_000)
    writer.abort()
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
    leftover = {t.name for t in threading.enumerate() if t.is_alive()} - before
    assert not [n for n in leftover if n.startswith(("oftp2-zlib", "oftp2-hash"))], leftover
