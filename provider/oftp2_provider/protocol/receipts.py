"""Signed EERP/NERP (RFC 5024 §4.3.6, §5.3.13, §5.3.14): file hash, signature, verification.

The receiver of a file with SFIDSIGN = ``Y`` hashes the *transmitted* octets (the CMS envelope as
received) with the hash of the SFIDCIPH suite and signs the receipt's fixed-width fields:

* EERP: ``DSN(26) | DATE(8) | TIME(10) | DEST(25) | ORIG(25) | HSH``
* NERP: ``DSN(26) | DATE(8) | TIME(10) | DEST(25) | ORIG(25) | CREA(25) | HSH``

as an attached CMS SignedData (eContentType id-data).  The originator verifies the signature with
the partner's certificate, rebuilds the signed octets from the received fields and compares them
with the encapsulated ones, and compares the hash with the hash of what it sent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from .certs import PartnerCertificates
from .cms import UnknownSigner, sign_bytes, verify_signed_bytes
from .codec import eerp_signed_content, nerp_signed_content
from .commands import EERP, NERP
from .suites import CipherSuite, SecurityError, UnsupportedSuite, suite_from_code

__all__ = [
    "ReceiptOutcome",
    "ReceiptVerification",
    "file_hash",
    "receipt_signed_content",
    "sign_receipt",
    "verify_receipt",
]

Receipt = TypeVar("Receipt", EERP, NERP)


class ReceiptOutcome(str, Enum):
    """Result of :func:`verify_receipt`, suitable for storing in the ledger."""

    VERIFIED = "verified"
    UNSIGNED = "unsigned"
    BAD_SIGNATURE = "bad_signature"
    HASH_MISMATCH = "hash_mismatch"
    UNKNOWN_CERTIFICATE = "unknown_certificate"


@dataclass(frozen=True)
class ReceiptVerification:
    """Outcome and a human-readable detail; ``signer`` is set when the signature verified."""

    outcome: ReceiptOutcome
    detail: str
    signer: x509.Certificate | None = None

    @property
    def ok(self) -> bool:
        """True only for :attr:`ReceiptOutcome.VERIFIED`."""
        return self.outcome is ReceiptOutcome.VERIFIED


def _hash_suite(suite: CipherSuite | int) -> CipherSuite:
    s = suite_from_code(int(suite))
    if s is CipherSuite.NONE:
        raise UnsupportedSuite("a signed EERP/NERP needs a cipher suite (SFIDCIPH 01-06), not 00")
    return s


def file_hash(path: Path | str, suite: CipherSuite | int, *, chunk_size: int = 1 << 20) -> bytes:
    """Hash a file (the transmitted octets) with the suite's hash, streaming."""
    h = hashlib.new(_hash_suite(suite).hash_name)
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            h.update(chunk)
    return h.digest()


def receipt_signed_content(receipt: EERP | NERP) -> bytes:
    """The octets an EERP/NERP signature covers (fixed-width fields with padding, then the hash)."""
    if isinstance(receipt, NERP):
        return nerp_signed_content(receipt)
    return eerp_signed_content(receipt)


def sign_receipt(
    receipt: Receipt,
    *,
    suite: CipherSuite | int,
    key: rsa.RSAPrivateKey,
    cert: x509.Certificate,
    include_cert: bool = False,
    file_hash: bytes | None = None,
) -> Receipt:
    """Return *receipt* with ``file_hash`` (if given) and ``signature`` set.

    The hash must be present — pass *file_hash* (from :func:`file_hash` or the ``sha_of_transmitted``
    of the received file) or set it on the receipt beforehand.
    """
    s = _hash_suite(suite)
    if file_hash is not None:
        receipt = dataclasses.replace(receipt, file_hash=file_hash)
    if not receipt.file_hash:
        raise ValueError(f"{type(receipt).__name__}.file_hash: a signed receipt needs the file hash")
    expected = hashlib.new(s.hash_name).digest_size
    if len(receipt.file_hash) != expected:
        raise ValueError(
            f"{type(receipt).__name__}.file_hash: {len(receipt.file_hash)} octets, "
            f"suite {int(s):02d} ({s.hash_name}) gives {expected}"
        )
    signature = sign_bytes(
        receipt_signed_content(receipt), key=key, cert=cert, hash_name=s.hash_name, include_cert=include_cert
    )
    return dataclasses.replace(receipt, signature=signature)


def verify_receipt(
    receipt: EERP | NERP,
    *,
    suite: CipherSuite | int,
    partner_certs: PartnerCertificates | Sequence[x509.Certificate],
    expected_hash: bytes | None,
) -> ReceiptVerification:
    """Check a received EERP/NERP against the partner's certificates and the hash of what we sent.

    Order: unsigned → ``UNSIGNED``; a signer not among the partner's (receipt, then sign)
    certificates → ``UNKNOWN_CERTIFICATE``; a signature that does not verify, or signed content that
    differs from the received fields → ``BAD_SIGNATURE``; a hash different from *expected_hash* →
    ``HASH_MISMATCH``.  A detached signature is verified over the content rebuilt from the fields.
    """
    name = type(receipt).__name__
    if not receipt.signature:
        return ReceiptVerification(ReceiptOutcome.UNSIGNED, f"{name} carries no signature")
    try:
        s = _hash_suite(suite)
    except UnsupportedSuite as exc:
        return ReceiptVerification(ReceiptOutcome.BAD_SIGNATURE, str(exc))
    certs = (
        partner_certs.signature_certs()
        if isinstance(partner_certs, PartnerCertificates)
        else list(partner_certs)
    )
    rebuilt = receipt_signed_content(receipt)
    try:
        content, signer = verify_signed_bytes(receipt.signature, verify_certs=certs, detached_content=rebuilt)
    except UnknownSigner as exc:
        return ReceiptVerification(ReceiptOutcome.UNKNOWN_CERTIFICATE, f"{name}: {exc}")
    except SecurityError as exc:
        return ReceiptVerification(ReceiptOutcome.BAD_SIGNATURE, f"{name}: {exc}")
    subject = signer.subject.rfc4514_string()
    if content is not None and not hmac.compare_digest(content, rebuilt):
        return ReceiptVerification(
            ReceiptOutcome.BAD_SIGNATURE,
            f"{name}: signed content does not match the received fields (DSN/date/time/IDs/hash altered)",
        )
    digest_size = hashlib.new(s.hash_name).digest_size
    if len(receipt.file_hash) != digest_size:
        return ReceiptVerification(
            ReceiptOutcome.HASH_MISMATCH,
            f"{name}: hash has {len(receipt.file_hash)} octets, suite {int(s):02d} ({s.hash_name}) gives {digest_size}",
        )
    if expected_hash is not None and not hmac.compare_digest(receipt.file_hash, expected_hash):
        return ReceiptVerification(
            ReceiptOutcome.HASH_MISMATCH,
            f"{name}: hash {receipt.file_hash.hex()} differs from the hash of the file sent ({expected_hash.hex()})",
        )
    return ReceiptVerification(ReceiptOutcome.VERIFIED, f"{name} signed by {subject!r}", signer)
