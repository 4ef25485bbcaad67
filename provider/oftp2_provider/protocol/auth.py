"""Secure authentication (RFC 5024 §4.2.3, SECD/AUCH/AURP).

Each side proves it holds the private key of the certificate its partner associates with its
SSIDCODE: the challenger sends 20 fresh random octets in a CMS EnvelopedData encrypted for that
certificate (AUCH); the other side decrypts and returns them (AURP); the challenger compares in
constant time.  Any failure ends the session with ESID 11.
"""

from __future__ import annotations

import hmac
import os

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from .cms import envelope_bytes, open_envelope
from .suites import AuthenticationFailed, CipherSuite, SecurityError, suite_from_code

__all__ = ["CHALLENGE_SIZE", "AuthenticationFailed", "answer_challenge", "check_response", "make_challenge"]

#: AURPRSP is exactly 20 octets.
CHALLENGE_SIZE = 20


def make_challenge(
    partner_cert: x509.Certificate | None, *, suite: CipherSuite | int = CipherSuite.TDES_RSA_SHA1
) -> tuple[bytes, bytes]:
    """Return ``(AUCHCHAL, challenge)``: a DER EnvelopedData for *partner_cert* and its 20 octets.

    The content-encryption algorithm is the suite's (3DES for 01/03/05, AES-256 for 02/04/06).
    A missing or unusable partner certificate raises :class:`AuthenticationFailed` (ESID 11).
    """
    if partner_cert is None:
        raise AuthenticationFailed("no certificate is configured for this partner: cannot authenticate")
    s = suite_from_code(int(suite))
    if s is CipherSuite.NONE:
        s = CipherSuite.TDES_RSA_SHA1
    challenge = os.urandom(CHALLENGE_SIZE)
    try:
        return envelope_bytes(challenge, partner_cert, s.cipher), challenge
    except ValueError as exc:
        raise AuthenticationFailed(str(exc)) from exc


def answer_challenge(auch: bytes, own_key: rsa.RSAPrivateKey, own_cert: x509.Certificate | None) -> bytes:
    """Decrypt an AUCHCHAL and return the 20 octets for AURP; failures raise :class:`AuthenticationFailed`."""
    try:
        plain = open_envelope(auch, key=own_key, cert=own_cert)
    except SecurityError as exc:
        raise AuthenticationFailed(f"cannot decrypt the authentication challenge: {exc}") from exc
    if len(plain) != CHALLENGE_SIZE:
        raise AuthenticationFailed(
            f"authentication challenge has {len(plain)} octets, expected {CHALLENGE_SIZE}"
        )
    return plain


def check_response(expected: bytes, response: bytes) -> bool:
    """Compare the AURP response with the challenge sent, in constant time."""
    return len(expected) == CHALLENGE_SIZE and hmac.compare_digest(expected, response)
