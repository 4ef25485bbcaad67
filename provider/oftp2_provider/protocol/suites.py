"""OFTP2 cipher suites (SFIDCIPH) and the typed errors of the security layer.

A cipher suite fixes three algorithms at once: the symmetric cipher of a CMS EnvelopedData, the
asymmetric algorithm (always RSA with PKCS#1 v1.5 padding) and the hash used for signatures and for
the EERP/NERP file hash.  Suites 01 and 02 come from RFC 5024 §10.2, 03–06 from Odette OP09.

Every failure of the security layer is a :class:`SecurityError` that carries the reason codes the
session answers with (SFNA at file start, EFNA at file end, NERP later, ESID for authentication).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from cryptography.hazmat.primitives import hashes

from .errors import EfnaReason, EsidReason, NerpReason, OFTPError, SfnaReason

__all__ = [
    "AuthenticationFailed",
    "CipherSuite",
    "DecompressionFailed",
    "DecryptionFailed",
    "SecurityError",
    "SecurityPolicy",
    "SignatureInvalid",
    "SymmetricCipher",
    "UnsupportedSuite",
    "suite_from_code",
]


@dataclass(frozen=True, slots=True)
class SymmetricCipher:
    """A content-encryption algorithm of a suite: name, OID, key and block size in octets."""

    name: str
    oid: str
    key_size: int
    block_size: int


TDES_EDE3_CBC = SymmetricCipher("des-ede3-cbc", "1.2.840.113549.3.7", 24, 8)
AES256_CBC = SymmetricCipher("aes256-cbc", "2.16.840.1.101.3.4.1.42", 32, 16)
#: Symmetric ciphers this implementation decrypts, by OID (AES-128 too, as openssl's default).
CIPHERS_BY_OID: dict[str, SymmetricCipher] = {
    c.oid: c
    for c in (
        TDES_EDE3_CBC,
        AES256_CBC,
        SymmetricCipher("aes128-cbc", "2.16.840.1.101.3.4.1.2", 16, 16),
        SymmetricCipher("aes192-cbc", "2.16.840.1.101.3.4.1.22", 24, 16),
    )
}

#: Hash algorithm names (asn1crypto / hashlib spelling) by OID.
HASH_OIDS: dict[str, str] = {
    "1.3.14.3.2.26": "sha1",
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
}


class SecurityError(OFTPError):
    """A file, receipt or authentication security check failed.

    ``sfna``, ``efna``, ``nerp`` and ``esid`` are the reason codes to answer with, where one applies.
    """

    sfna: SfnaReason | None = None
    efna: EfnaReason | None = None
    nerp: NerpReason | None = None
    esid: EsidReason | None = None


class UnsupportedSuite(SecurityError):
    """The cipher suite (or an algorithm inside a CMS object) is not supported: SFNA/EFNA 15, NERP 25."""

    sfna = SfnaReason.CIPHER_SUITE_NOT_SUPPORTED
    efna = EfnaReason.CIPHER_SUITE_NOT_SUPPORTED
    nerp = NerpReason.CIPHER_SUITE_NOT_SUPPORTED


class SignatureInvalid(SecurityError):
    """A CMS signature is missing, malformed or does not verify: EFNA 21, NERP 31."""

    efna = EfnaReason.INVALID_FILE_SIGNATURE
    nerp = NerpReason.FILE_SIGNATURE_NOT_VALID


class DecryptionFailed(SecurityError):
    """A CMS EnvelopedData could not be decrypted: EFNA 22, NERP 33."""

    efna = EfnaReason.FILE_DECRYPTION_FAILURE
    nerp = NerpReason.FILE_DECRYPTION_FAILED


class DecompressionFailed(SecurityError):
    """A CMS CompressedData could not be decompressed: EFNA 23, NERP 32."""

    efna = EfnaReason.FILE_DECOMPRESSION_FAILURE
    nerp = NerpReason.FILE_DECOMPRESSION_FAILED


class AuthenticationFailed(SecurityError):
    """Secure authentication failed (bad challenge, wrong key, no certificate): ESID 11."""

    esid = EsidReason.INVALID_CHALLENGE_RESPONSE


class CipherSuite(IntEnum):
    """SFIDCIPH values.  ``NONE`` means no security service."""

    NONE = 0
    TDES_RSA_SHA1 = 1
    AES256_RSA_SHA1 = 2
    TDES_RSA_SHA256 = 3
    AES256_RSA_SHA256 = 4
    TDES_RSA_SHA512 = 5
    AES256_RSA_SHA512 = 6

    @property
    def cipher(self) -> SymmetricCipher:
        """The content-encryption algorithm (3DES-EDE-CBC or AES-256-CBC)."""
        if self is CipherSuite.NONE:
            raise UnsupportedSuite("cipher suite 00 has no encryption algorithm")
        return TDES_EDE3_CBC if self.value % 2 == 1 else AES256_CBC

    @property
    def hash_name(self) -> str:
        """The hash algorithm name: ``sha1``, ``sha256`` or ``sha512``."""
        if self is CipherSuite.NONE:
            raise UnsupportedSuite("cipher suite 00 has no hash algorithm")
        return ("sha1", "sha256", "sha512")[(self.value - 1) // 2]

    @property
    def hash_oid(self) -> str:
        """The OID of :attr:`hash_name`."""
        return {v: k for k, v in HASH_OIDS.items()}[self.hash_name]

    def hash_algorithm(self) -> hashes.HashAlgorithm:
        """A fresh ``cryptography`` hash object for this suite."""
        return hash_by_name(self.hash_name)


def hash_by_name(name: str) -> hashes.HashAlgorithm:
    """``cryptography`` hash algorithm for ``sha1``/``sha256``/``sha384``/``sha512``."""
    table: dict[str, type[hashes.HashAlgorithm]] = {
        "sha1": hashes.SHA1,
        "sha256": hashes.SHA256,
        "sha384": hashes.SHA384,
        "sha512": hashes.SHA512,
    }
    try:
        return table[name]()
    except KeyError:
        raise UnsupportedSuite(f"hash algorithm {name!r} is not supported") from None


def suite_from_code(code: int) -> CipherSuite:
    """Return the suite for an SFIDCIPH value; unknown codes raise :class:`UnsupportedSuite` (SFNA 15)."""
    try:
        return CipherSuite(int(code))
    except (ValueError, TypeError):
        raise UnsupportedSuite(f"SFIDCIPH {code!r}: cipher suite not supported (known: 00-06)") from None


@dataclass(frozen=True, slots=True)
class SecurityPolicy:
    """What a receiver accepts from one partner; :meth:`refusal` gives the SFNA for an SFID.

    ``require_*`` refuse files without the service (SFNA 17 / 20), ``allow_*`` = ``False`` refuse
    files with it (SFNA 16 / 18 / 19); ``suites`` lists the accepted SFIDCIPH values (SFNA 15).
    """

    allow_encrypted: bool = True
    require_encrypted: bool = False
    allow_signed: bool = True
    require_signed: bool = False
    allow_compressed: bool = True
    suites: frozenset[int] = frozenset(range(0, 7))

    def refusal(
        self, *, security: int, cipher_suite: int, compression: int, envelope: int = 1
    ) -> tuple[SfnaReason, str] | None:
        """``(reason, text)`` to refuse a file start with, or ``None`` to accept it.

        Pass the SFID's ``security``, ``cipher_suite``, ``compression`` and ``envelope`` fields.
        """
        try:
            suite = suite_from_code(cipher_suite)
        except UnsupportedSuite as exc:
            return SfnaReason.CIPHER_SUITE_NOT_SUPPORTED, str(exc)
        if int(suite) not in self.suites:
            return SfnaReason.CIPHER_SUITE_NOT_SUPPORTED, f"cipher suite {int(suite):02d} is not accepted"
        if security not in (0, 1, 2, 3):
            return SfnaReason.UNSPECIFIED, f"SFIDSEC {security:02d} is not 00-03"
        if compression not in (0, 1):
            return SfnaReason.COMPRESSION_NOT_ALLOWED, f"SFIDCOMP {compression} is not a known algorithm"
        encrypted, signed = bool(security & 1), bool(security & 2)
        if (encrypted or signed) and suite is CipherSuite.NONE:
            return SfnaReason.CIPHER_SUITE_NOT_SUPPORTED, f"SFIDSEC {security:02d} needs a cipher suite"
        if (encrypted or signed or compression) and envelope != 1:
            return SfnaReason.UNSPECIFIED, "secured or compressed file without a CMS envelope (SFIDENV 0)"
        if encrypted and not self.allow_encrypted:
            return SfnaReason.ENCRYPTED_FILE_NOT_ALLOWED, "encrypted files are not accepted"
        if not encrypted and self.require_encrypted:
            return SfnaReason.UNENCRYPTED_FILE_NOT_ALLOWED, "files must be encrypted"
        if compression and not self.allow_compressed:
            return SfnaReason.COMPRESSION_NOT_ALLOWED, "compressed files are not accepted"
        if signed and not self.allow_signed:
            return SfnaReason.SIGNED_FILE_NOT_ALLOWED, "signed files are not accepted"
        if not signed and self.require_signed:
            return SfnaReason.UNSIGNED_FILE_NOT_ALLOWED, "files must be signed"
        return None
