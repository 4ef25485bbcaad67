"""Signed EERP/NERP: produced, verified, and every tampering detected with the right outcome."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from oftp2_provider.pki import PKIBundle
from oftp2_provider.protocol.certs import PartnerCertificates
from oftp2_provider.protocol.cms import sign_bytes
from oftp2_provider.protocol.codec import eerp_signed_content
from oftp2_provider.protocol.commands import EERP, NERP
from oftp2_provider.protocol.receipts import (
    ReceiptOutcome,
    file_hash,
    receipt_signed_content,
    sign_receipt,
    verify_receipt,
)
from oftp2_provider.protocol.suites import CipherSuite, UnsupportedSuite

HASH = hashlib.sha256(b"the transmitted envelope").digest()


def _eerp(**kw: object) -> EERP:
    fields: dict[str, object] = {
        "dsn": "INVOICE.2026",
        "date": "20261124",
        "time": "1516170001",
        "destination": "O0013000000ORIGIN",
        "originator": "O0013000000DEST",
        "user_data": "",
    }
    fields.update(kw)
    return EERP(**fields)  # type: ignore[arg-type]


def _nerp() -> NERP:
    return NERP(
        dsn="INVOICE.2026",
        date="20261124",
        time="1516170001",
        destination="O0013000000ORIGIN",
        originator="O0013000000DEST",
        creator="O0013000000HUB",
        reason=31,
        text="signature invalid",
    )


def test_signed_content_layout() -> None:
    content = receipt_signed_content(dataclasses.replace(_eerp(), file_hash=b"\x01\x02"))
    assert len(content) == 26 + 8 + 10 + 25 + 25 + 2
    assert content.startswith(b"INVOICE.2026" + b" " * 14 + b"20261124" + b"1516170001")
    assert content.endswith(b"\x01\x02")
    nerp = dataclasses.replace(_nerp(), file_hash=b"\x09")
    assert receipt_signed_content(nerp)[94:119] == b"O0013000000HUB".ljust(25)


def test_file_hash_streams_with_the_suite_hash(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"a" * 100_000)
    assert file_hash(path, 1, chunk_size=999) == hashlib.sha1(b"a" * 100_000).digest()
    assert file_hash(path, CipherSuite.TDES_RSA_SHA512) == hashlib.sha512(b"a" * 100_000).digest()
    with pytest.raises(UnsupportedSuite):
        file_hash(path, 0)


@pytest.mark.parametrize("suite", [1, 4, 6])
@pytest.mark.parametrize("make", [_eerp, _nerp], ids=["EERP", "NERP"])
def test_sign_and_verify(test_pki: PKIBundle, suite: int, make: object) -> None:
    digest = hashlib.new(CipherSuite(suite).hash_name, b"envelope").digest()
    receipt = make()  # type: ignore[operator]
    signed = sign_receipt(
        receipt, suite=suite, key=test_pki.partner.key, cert=test_pki.partner.cert, file_hash=digest
    )
    assert signed.file_hash == digest and signed.signature
    result = verify_receipt(
        signed,
        suite=suite,
        partner_certs=PartnerCertificates(receipt=test_pki.partner.cert),
        expected_hash=digest,
    )
    assert result.outcome is ReceiptOutcome.VERIFIED, result.detail
    assert result.ok and result.signer == test_pki.partner.cert


def test_unsigned(test_pki: PKIBundle) -> None:
    result = verify_receipt(_eerp(), suite=4, partner_certs=[test_pki.partner.cert], expected_hash=HASH)
    assert result.outcome is ReceiptOutcome.UNSIGNED and not result.ok


def _signed(test_pki: PKIBundle, **kw: object) -> EERP:
    return sign_receipt(
        _eerp(),
        suite=4,
        key=test_pki.partner.key,
        cert=test_pki.partner.cert,
        file_hash=HASH,
        **kw,  # type: ignore[arg-type]
    )


def test_hash_mismatch(test_pki: PKIBundle) -> None:
    result = verify_receipt(
        _signed(test_pki),
        suite=4,
        partner_certs=[test_pki.partner.cert],
        expected_hash=hashlib.sha256(b"other").digest(),
    )
    assert result.outcome is ReceiptOutcome.HASH_MISMATCH
    assert "differs from the hash of the file sent" in result.detail


def test_altered_field_is_a_bad_signature(test_pki: PKIBundle) -> None:
    tampered = dataclasses.replace(_signed(test_pki), dsn="INVOICE.2027")
    result = verify_receipt(tampered, suite=4, partner_certs=[test_pki.partner.cert], expected_hash=HASH)
    assert result.outcome is ReceiptOutcome.BAD_SIGNATURE
    assert "does not match the received fields" in result.detail


def test_altered_hash_field_is_a_bad_signature(test_pki: PKIBundle) -> None:
    other = hashlib.sha256(b"x").digest()
    tampered = dataclasses.replace(_signed(test_pki), file_hash=other)
    result = verify_receipt(tampered, suite=4, partner_certs=[test_pki.partner.cert], expected_hash=other)
    assert result.outcome is ReceiptOutcome.BAD_SIGNATURE


def test_corrupted_signature(test_pki: PKIBundle) -> None:
    signed = _signed(test_pki)
    sig = bytearray(signed.signature)
    sig[-5] ^= 0xFF
    result = verify_receipt(
        dataclasses.replace(signed, signature=bytes(sig)),
        suite=4,
        partner_certs=[test_pki.partner.cert],
        expected_hash=HASH,
    )
    assert result.outcome is ReceiptOutcome.BAD_SIGNATURE
    garbage = verify_receipt(
        dataclasses.replace(signed, signature=b"\x30\x03\x02\x01\x00"),
        suite=4,
        partner_certs=[test_pki.partner.cert],
        expected_hash=HASH,
    )
    assert garbage.outcome is ReceiptOutcome.BAD_SIGNATURE


def test_unknown_certificate(test_pki: PKIBundle) -> None:
    result = verify_receipt(
        _signed(test_pki, include_cert=True),
        suite=4,
        partner_certs=[test_pki.client.cert],
        expected_hash=HASH,
    )
    assert result.outcome is ReceiptOutcome.UNKNOWN_CERTIFICATE
    assert "CN=partner" in result.detail  # named from the embedded certificate
    none = verify_receipt(_signed(test_pki), suite=4, partner_certs=PartnerCertificates(), expected_hash=HASH)
    assert none.outcome is ReceiptOutcome.UNKNOWN_CERTIFICATE


def test_signed_by_an_other_key_with_a_copied_identity(test_pki: PKIBundle) -> None:
    # Signer info names the partner certificate, but the key is someone else's.
    receipt = dataclasses.replace(_eerp(), file_hash=HASH)
    forged = sign_bytes(
        eerp_signed_content(receipt), key=test_pki.client.key, cert=test_pki.partner.cert, hash_name="sha256"
    )
    result = verify_receipt(
        dataclasses.replace(receipt, signature=forged),
        suite=4,
        partner_certs=[test_pki.partner.cert],
        expected_hash=HASH,
    )
    assert result.outcome is ReceiptOutcome.BAD_SIGNATURE


def test_detached_signature_verifies_over_the_fields(test_pki: PKIBundle) -> None:
    receipt = dataclasses.replace(_eerp(), file_hash=HASH)
    detached = sign_bytes(
        eerp_signed_content(receipt),
        key=test_pki.partner.key,
        cert=test_pki.partner.cert,
        hash_name="sha256",
        detached=True,
    )
    ok = verify_receipt(
        dataclasses.replace(receipt, signature=detached),
        suite=4,
        partner_certs=[test_pki.partner.cert],
        expected_hash=HASH,
    )
    assert ok.outcome is ReceiptOutcome.VERIFIED, ok.detail
    bad = verify_receipt(
        dataclasses.replace(receipt, signature=detached, time="1516170002"),
        suite=4,
        partner_certs=[test_pki.partner.cert],
        expected_hash=HASH,
    )
    assert bad.outcome is ReceiptOutcome.BAD_SIGNATURE


def test_sign_needs_a_matching_hash(test_pki: PKIBundle) -> None:
    with pytest.raises(ValueError, match="needs the file hash"):
        sign_receipt(_eerp(), suite=4, key=test_pki.partner.key, cert=test_pki.partner.cert)
    with pytest.raises(ValueError, match="gives 20"):
        sign_receipt(_eerp(), suite=1, key=test_pki.partner.key, cert=test_pki.partner.cert, file_hash=HASH)
    with pytest.raises(UnsupportedSuite):
        sign_receipt(_eerp(), suite=0, key=test_pki.partner.key, cert=test_pki.partner.cert, file_hash=HASH)
