"""The gateway's keys at work: secure authentication (SECD/AUCH/AURP) and signed receipts.

:class:`GatewayAuthenticator` implements the engine's
:class:`~oftp2_provider.protocol.api.Authenticator` with ``identity.auth`` (our key, which
decrypts the partner's challenges) and each partner's ``certificates.auth`` (which our challenges
are encrypted for).  Keys and certificates are loaded once, when the gateway starts, so a wrong
path or password fails the start, not a session.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from oftp2_provider.protocol.auth import answer_challenge, make_challenge
from oftp2_provider.protocol.certs import load_certificate, load_private_key
from oftp2_provider.protocol.commands import EERP, NERP
from oftp2_provider.protocol.receipts import ReceiptVerification, file_hash, sign_receipt, verify_receipt

from .config import GatewayConfig

__all__ = ["GatewayAuthenticator", "ReceiptKeys", "authenticator_for"]


class GatewayAuthenticator:
    """Secure-authentication crypto for every partner of one gateway."""

    def __init__(
        self, own_key: rsa.RSAPrivateKey, own_cert: x509.Certificate, partners: dict[str, x509.Certificate]
    ):
        self._key = own_key
        self._cert = own_cert
        self._partners = {code.strip().upper(): cert for code, cert in partners.items()}

    def make_challenge(self, partner_code: str) -> tuple[bytes, bytes]:
        """An AUCH challenge for the partner's authentication certificate (ESID 11 if none)."""
        return make_challenge(self._partners.get(partner_code.strip().upper()))

    def answer_challenge(self, challenge: bytes) -> bytes:
        """Decrypt the partner's challenge with our authentication key."""
        return answer_challenge(challenge, self._key, self._cert)


def authenticator_for(config: GatewayConfig) -> GatewayAuthenticator | None:
    """The authenticator of a configuration, or ``None`` when ``identity.auth`` is not set."""
    pair = config.identity.auth
    if pair is None:
        return None
    password = pair.key_password.get_secret_value() if pair.key_password else None
    key = load_private_key(pair.key, password)
    cert = load_certificate(pair.cert)
    partners = {
        p.odette_id: load_certificate(p.certificates.auth)
        for p in config.partners.values()
        if p.certificates.auth is not None
    }
    return GatewayAuthenticator(key, cert, partners)


class ReceiptKeys:
    """Keys for signed receipts and file security.

    Ours: ``identity.signing`` (sign files and receipts), ``identity.decryption`` (decrypt inbound
    files); the partners': ``certificates.signing`` (verify their files and receipts) and
    ``certificates.encryption`` (encrypt files for them).
    """

    def __init__(self, config: GatewayConfig) -> None:
        pair = config.identity.signing
        self.own: tuple[rsa.RSAPrivateKey, x509.Certificate] | None = None
        if pair is not None:
            password = pair.key_password.get_secret_value() if pair.key_password else None
            self.own = (load_private_key(pair.key, password), load_certificate(pair.cert))
        self.partners: dict[str, x509.Certificate] = {
            p.odette_id: load_certificate(p.certificates.signing)
            for p in config.partners.values()
            if p.certificates.signing is not None
        }
        #: Our decryption key for inbound encrypted files.
        self.decrypt: tuple[rsa.RSAPrivateKey, x509.Certificate] | None = None
        dec = config.identity.decryption
        if dec is not None:
            password = dec.key_password.get_secret_value() if dec.key_password else None
            self.decrypt = (load_private_key(dec.key, password), load_certificate(dec.cert))
        #: Partners' certificates we encrypt outbound files for.
        self.encrypt_for: dict[str, x509.Certificate] = {
            p.odette_id: load_certificate(p.certificates.encryption)
            for p in config.partners.values()
            if p.certificates.encryption is not None
        }

    def sign(self, receipt: EERP | NERP, suite: int, transmitted: Path) -> EERP | NERP:
        """Sign ``receipt`` over the hash of the file as received; unchanged when we cannot sign."""
        if self.own is None or not suite:
            return receipt
        key, cert = self.own
        digest = file_hash(transmitted, suite)
        if isinstance(receipt, EERP):
            return sign_receipt(receipt, suite=suite, key=key, cert=cert, file_hash=digest)
        return sign_receipt(receipt, suite=suite, key=key, cert=cert, file_hash=digest)

    def verify(
        self, receipt: EERP | NERP, partner_id: str, suite: int, sent: Path | None
    ) -> ReceiptVerification:
        """Check a partner's receipt against its certificate and the hash of the file we sent."""
        cert = self.partners.get(partner_id)
        expected = None
        if sent is not None and suite and sent.is_file():
            try:
                expected = file_hash(sent, suite)
            except (OSError, ValueError):
                expected = None
        return verify_receipt(
            receipt, suite=suite, partner_certs=[cert] if cert else [], expected_hash=expected
        )
