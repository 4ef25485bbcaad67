"""Typed helpers over asn1crypto (untyped) for the small CMS structures.

Everything large is streamed by :mod:`.ber`; only algorithm identifiers, recipient infos, signer
infos and certificate sets pass through here.  No asn1crypto object leaves this module.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from asn1crypto import algos as _algos
from asn1crypto import cms as _cms
from asn1crypto import core as _core
from asn1crypto import x509 as _x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .ber import BerError

OID_DATA = "1.2.840.113549.1.7.1"
OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
OID_COMPRESSED_DATA = "1.2.840.113549.1.9.16.1.9"
OID_ZLIB = "1.2.840.113549.1.9.16.3.8"
OID_RSA = "1.2.840.113549.1.1.1"
OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
OID_SIGNING_TIME = "1.2.840.113549.1.9.5"
#: RSA signature algorithm OIDs → digest name (rsaEncryption itself means "digest from digestAlgorithm").
RSA_SIGNATURE_OIDS: dict[str, str | None] = {
    OID_RSA: None,
    "1.2.840.113549.1.1.5": "sha1",
    "1.2.840.113549.1.1.11": "sha256",
    "1.2.840.113549.1.1.12": "sha384",
    "1.2.840.113549.1.1.13": "sha512",
}


def oid(dotted: str) -> bytes:
    """DER of an OBJECT IDENTIFIER."""
    return bytes(_core.ObjectIdentifier(dotted).dump())


def decode_oid(value_der: bytes) -> str:
    """Dotted string of a complete OID element."""
    try:
        return str(_core.ObjectIdentifier.load(value_der).dotted)
    except (ValueError, TypeError) as exc:
        raise BerError(f"bad OBJECT IDENTIFIER: {exc}") from None


def algorithm_identifier(dotted: str, parameters: bytes | None = None) -> bytes:
    """DER AlgorithmIdentifier; *parameters* is a complete DER element or ``None`` (absent)."""
    body = oid(dotted) + (parameters or b"")
    return bytes([0x30]) + _length(len(body)) + body


def octet_string(value: bytes) -> bytes:
    """DER OCTET STRING."""
    return b"\x04" + _length(len(value)) + value


def integer(value: int) -> bytes:
    """DER INTEGER."""
    return bytes(_core.Integer(value).dump())


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def parse_algorithm(der: bytes) -> tuple[str, bytes | None]:
    """``(oid, parameters)`` of an AlgorithmIdentifier; parameters as raw contents of the element."""
    try:
        seq = _core.Sequence.load(der)
        alg_oid = str(_core.ObjectIdentifier.load(seq[0].dump()).dotted)
        params: bytes | None = None
        if len(seq) > 1:
            params = bytes(seq[1].contents)
            if seq[1].tag == 5:  # NULL
                params = None
        return alg_oid, params
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise BerError(f"bad AlgorithmIdentifier: {exc}") from None


def _asn1_cert(cert: x509.Certificate) -> Any:
    return _x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def issuer_and_serial(cert: x509.Certificate) -> Any:
    """asn1crypto IssuerAndSerialNumber for *cert* (private use)."""
    parsed = _asn1_cert(cert)
    return _cms.IssuerAndSerialNumber(
        {"issuer": parsed["tbs_certificate"]["issuer"], "serial_number": parsed.serial_number}
    )


def key_trans_recipient_info(cert: x509.Certificate, encrypted_key: bytes) -> bytes:
    """DER RecipientInfo (KeyTransRecipientInfo v0, issuer+serial, rsaEncryption)."""
    ktri = _cms.KeyTransRecipientInfo(
        {
            "version": "v0",
            "rid": _cms.RecipientIdentifier(name="issuer_and_serial_number", value=issuer_and_serial(cert)),
            "key_encryption_algorithm": _cms.KeyEncryptionAlgorithm({"algorithm": "rsaes_pkcs1v15"}),
            "encrypted_key": encrypted_key,
        }
    )
    return bytes(_cms.RecipientInfo(name="ktri", value=ktri).dump())


@dataclass(frozen=True)
class Recipient:
    """One KeyTransRecipientInfo: who it is for, the key-transport algorithm, the wrapped key."""

    issuer: Any  # asn1crypto Name or None
    serial: int | None
    key_id: bytes | None
    algorithm: str
    encrypted_key: bytes

    def matches(self, cert: x509.Certificate) -> bool:
        """True when this recipient identifies *cert* (malformed names never match)."""
        if self.serial is not None:
            if self.serial != cert.serial_number:
                return False
            if bytes(self.issuer.dump()) == cert.issuer.public_bytes():
                return True
            try:  # equivalent names in another string encoding
                return bool(self.issuer == _asn1_cert(cert).issuer)
            except Exception:  # asn1crypto parses lazily; a malformed name is simply no match
                return False
        if self.key_id is not None:
            try:
                ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
            except x509.ExtensionNotFound:
                return False
            return bool(ski == self.key_id)
        return False


def parse_recipient_infos(set_der: bytes) -> list[Recipient]:
    """The key-transport recipients of a RecipientInfos SET (other kinds are ignored)."""
    try:
        infos = _cms.RecipientInfos.load(set_der)
        out: list[Recipient] = []
        for info in infos:
            if info.name != "ktri":
                continue
            ktri = info.chosen
            rid = ktri["rid"]
            if rid.name == "issuer_and_serial_number":
                issuer, serial, key_id = rid.chosen["issuer"], int(rid.chosen["serial_number"].native), None
            else:
                issuer, serial, key_id = None, None, bytes(rid.chosen.native)
            out.append(
                Recipient(
                    issuer=issuer,
                    serial=serial,
                    key_id=key_id,
                    algorithm=str(ktri["key_encryption_algorithm"]["algorithm"].dotted),
                    encrypted_key=bytes(ktri["encrypted_key"].native),
                )
            )
        return out
    except (ValueError, TypeError, KeyError) as exc:
        raise BerError(f"bad RecipientInfos: {exc}") from None


def _attribute(type_oid: str, value_der: bytes) -> bytes:
    body = oid(type_oid) + b"\x31" + _length(len(value_der)) + value_der
    return b"\x30" + _length(len(body)) + body


def signed_attributes(digest: bytes, content_type: str = OID_DATA, when: dt.datetime | None = None) -> bytes:
    """DER ``SET OF Attribute`` (content-type, signing-time, message-digest), sorted as DER demands."""
    when = when or dt.datetime.now(dt.timezone.utc)
    attrs = [
        _attribute(OID_CONTENT_TYPE, oid(content_type)),
        _attribute(OID_SIGNING_TIME, bytes(_x509.Time(name="utc_time", value=when).chosen.dump())),
        _attribute(OID_MESSAGE_DIGEST, octet_string(digest)),
    ]
    body = b"".join(sorted(attrs))
    return b"\x31" + _length(len(body)) + body


def signer_info(cert: x509.Certificate, digest_oid: str, signed_attrs_set: bytes, signature: bytes) -> bytes:
    """DER SignerInfo v1 (issuer+serial, signedAttrs, rsaEncryption)."""
    sid = issuer_and_serial(cert).dump()
    body = (
        integer(1)
        + bytes(sid)
        + algorithm_identifier(digest_oid)
        + b"\xa0"
        + signed_attrs_set[1:]  # [0] IMPLICIT SET OF: same contents, context tag
        + algorithm_identifier(OID_RSA, b"\x05\x00")
        + octet_string(signature)
    )
    return b"\x30" + _length(len(body)) + body


@dataclass(frozen=True)
class Signer:
    """A parsed SignerInfo."""

    issuer: Any
    serial: int | None
    key_id: bytes | None
    digest_oid: str
    signed_attrs: bytes | None  # re-tagged as SET OF (the octets the signature covers)
    message_digest: bytes | None
    content_type: str | None
    signature_oid: str
    signature: bytes

    def matches(self, cert: x509.Certificate) -> bool:
        """True when this signer identifies *cert*."""
        return Recipient(self.issuer, self.serial, self.key_id, "", b"").matches(cert)


def parse_signer_infos(set_der: bytes) -> list[Signer]:
    """Every SignerInfo of a SignerInfos SET."""
    try:
        infos = _cms.SignerInfos.load(set_der)
        out: list[Signer] = []
        for info in infos:
            sid = info["sid"]
            if sid.name == "issuer_and_serial_number":
                issuer, serial, key_id = sid.chosen["issuer"], int(sid.chosen["serial_number"].native), None
            else:
                issuer, serial, key_id = None, None, bytes(sid.chosen.native)
            attrs = info["signed_attrs"]
            signed: bytes | None = None
            digest: bytes | None = None
            ctype: str | None = None
            if attrs.contents is not None and len(attrs):
                signed = b"\x31" + bytes(attrs.dump())[1:]
                for attr in attrs:
                    kind = str(attr["type"].dotted)
                    values = attr["values"]
                    if len(values) != 1:
                        raise BerError(f"signed attribute {kind} must have exactly one value")
                    if kind == OID_MESSAGE_DIGEST:
                        digest = bytes(values[0].native)
                    elif kind == OID_CONTENT_TYPE:
                        ctype = str(values[0].dotted)
            out.append(
                Signer(
                    issuer=issuer,
                    serial=serial,
                    key_id=key_id,
                    digest_oid=str(info["digest_algorithm"]["algorithm"].dotted),
                    signed_attrs=signed,
                    message_digest=digest,
                    content_type=ctype,
                    signature_oid=str(info["signature_algorithm"]["algorithm"].dotted),
                    signature=bytes(info["signature"].native),
                )
            )
        return out
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise BerError(f"bad SignerInfos: {exc}") from None


def parse_certificate_set(implicit_der: bytes) -> list[x509.Certificate]:
    """X.509 certificates of a ``[0] IMPLICIT CertificateSet`` (other choices ignored)."""
    try:
        certs = _cms.CertificateSet.load(b"\x31" + implicit_der[1:])
        return [
            x509.load_der_x509_certificate(bytes(choice.chosen.dump()))
            for choice in certs
            if choice.name == "certificate"
        ]
    except (ValueError, TypeError) as exc:
        raise BerError(f"bad certificate set: {exc}") from None


def certificate_set(certs: list[x509.Certificate]) -> bytes:
    """DER ``[0] IMPLICIT CertificateSet`` holding *certs*."""
    body = b"".join(c.public_bytes(serialization.Encoding.DER) for c in certs)
    return b"\xa0" + _length(len(body)) + body


def digest_algorithm_name(dotted: str) -> str | None:
    """``sha1``/``sha256``/… for a digest OID, ``None`` if unknown."""
    try:
        name = _algos.DigestAlgorithmId(dotted).native
    except ValueError:
        return None
    return str(name)
