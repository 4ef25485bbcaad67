"""Streaming CMS consumers: EnvelopedData, CompressedData, SignedData.

Each layer is a generator of content chunks that pulls its input from a :class:`~.ber.Source`, so
layers nest — ``signed(IterSource(compressed(IterSource(enveloped(file)))))`` — and a file is
unwrapped in one pass with bounded memory.  BER (indefinite or definite lengths, constructed or
primitive content) and DER are both accepted.

Errors: every failure inside a layer becomes that layer's typed error (DecryptionFailed,
DecompressionFailed, SignatureInvalid, UnsupportedSuite); typed errors coming from an outer layer
pass through unchanged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from ..suites import (
    CIPHERS_BY_OID,
    HASH_OIDS,
    DecompressionFailed,
    DecryptionFailed,
    SecurityError,
    SignatureInvalid,
    SymmetricCipher,
    UnsupportedSuite,
    hash_by_name,
)
from . import asn1
from .ber import (
    CLASS_CONTEXT,
    OCTET_STRING,
    OID,
    SEQUENCE,
    SET,
    BerError,
    BerReader,
    Container,
    Header,
    Source,
)
from .writer import symmetric

__all__ = [
    "SignedInfo",
    "UnknownSigner",
    "compressed_layer",
    "enveloped_layer",
    "signed_layer",
]

log = logging.getLogger(__name__)

#: Largest zlib output produced from one input step (bounds memory against compression bombs).
MAX_INFLATE_STEP = 1 << 20


class UnknownSigner(SignatureInvalid):
    """The signature was made with a certificate that is not among the partner's certificates."""


@dataclass
class SignedInfo:
    """Filled in by :func:`signed_layer` once the signature has been verified."""

    signer: x509.Certificate | None = None
    digest_name: str = ""
    embedded_certs: list[x509.Certificate] = field(default_factory=list)
    content: bytes | None = None  # only for in-memory use (collect=True)


def _read_oid(r: BerReader) -> str:
    h = r.expect(OID, constructed=False)
    return asn1.decode_oid(h.raw + r.read_value(h, 256))


def _content_info(r: BerReader, expected: str, what: str) -> list[Container]:
    """Enter ``ContentInfo { OID, [0] {`` and check the type; returns the containers to leave."""
    ci = r.enter(r.expect(SEQUENCE, constructed=True), "ContentInfo")
    ctype = _read_oid(r)
    if ctype != expected:
        raise BerError(f"expected {what} (content type {expected}), found content type {ctype}")
    explicit = r.enter(r.expect(0, tag_class=CLASS_CONTEXT, constructed=True), f"{what} [0]")
    return [explicit, ci]


def _finish(r: BerReader, containers: Sequence[Container], what: str) -> None:
    for c in containers:
        r.leave(c)
    if not r.at_end():
        raise BerError(f"unexpected data after the {what}")


def enveloped_layer(
    source: Source,
    *,
    key: rsa.RSAPrivateKey,
    cert: x509.Certificate | None,
    chunk_size: int = 1 << 20,
    used: list[SymmetricCipher] | None = None,
    expect_cms: bool = False,
) -> Iterator[bytes]:
    """Decrypt a ContentInfo(EnvelopedData) for (*key*, *cert*); yields plaintext chunks.

    With *expect_cms* the plaintext must start like a CMS ContentInfo; otherwise the key was wrong
    (RSA PKCS#1 v1.5 decryption with a wrong key may yield a random key instead of an error).
    """
    r = BerReader(source)
    try:
        checker = _CmsStartCheck() if expect_cms else None
        outer = _content_info(r, asn1.OID_ENVELOPED_DATA, "EnvelopedData")
        ed = r.enter(r.expect(SEQUENCE, constructed=True), "EnvelopedData")
        r.read_value(r.expect(0x02, constructed=False), 16)  # version
        h = r.header()
        if h.is_context(0):  # originatorInfo
            r.skip(h)
            h = r.header()
        if not h.is_universal(SET):
            raise BerError(f"expected RecipientInfos SET, found {h.describe()}")
        recipients = asn1.parse_recipient_infos(r.read_element(header=h))
        if cert is not None:
            mine = [ri for ri in recipients if ri.matches(cert)]
            if not mine:
                raise DecryptionFailed(
                    f"EnvelopedData is not addressed to certificate {cert.subject.rfc4514_string()!r} "
                    f"(serial {cert.serial_number:x}); {len(recipients)} other recipient(s)"
                )
        else:
            mine = recipients
        eci = r.enter(r.expect(SEQUENCE, constructed=True), "EncryptedContentInfo")
        _read_oid(r)
        alg_oid, iv = asn1.parse_algorithm(r.read_element())
        cipher = CIPHERS_BY_OID.get(alg_oid)
        if cipher is None:
            raise UnsupportedSuite(f"content-encryption algorithm {alg_oid} is not supported")
        if used is not None:
            used.append(cipher)
        if iv is None or len(iv) != cipher.block_size:
            raise BerError(f"{cipher.name}: IV must be {cipher.block_size} octets")
        content_key: bytes | None = None
        for ri in mine:
            if ri.algorithm != asn1.OID_RSA:
                continue
            try:
                candidate = key.decrypt(ri.encrypted_key, padding.PKCS1v15())
            except ValueError:
                continue
            if len(candidate) == cipher.key_size:
                content_key = candidate
                break
        if content_key is None:
            raise DecryptionFailed("the content-encryption key cannot be decrypted with our private key")
        h = r.header()
        if not h.is_context(0):
            raise BerError("EnvelopedData has no encrypted content")
        dec = Cipher(symmetric(cipher, content_key), modes.CBC(iv)).decryptor()
        bs = cipher.block_size
        pending = b""  # the last ciphertext octets (≥ 1 block once any arrived), decrypted at the end
        total = 0
        for chunk in r.octet_chunks(h, chunk_size):
            total += len(chunk)
            if len(chunk) >= bs:
                outs = [dec.update(pending)] if pending else []
                view = memoryview(chunk)
                outs.append(dec.update(view[:-bs]))
                pending = bytes(view[-bs:])
            else:
                pending += chunk
                if len(pending) <= bs:
                    continue
                outs = [dec.update(pending[:-bs])]
                pending = pending[-bs:]
            for plain in outs:
                if plain:
                    if checker is not None:
                        checker.feed(plain)
                    yield plain
        last = dec.update(pending) + dec.finalize()
        if total == 0 or total % bs or len(last) % bs or not last:
            raise DecryptionFailed(f"encrypted content is {total} octets, not a positive multiple of {bs}")
        pad = last[-1]
        if not 1 <= pad <= bs or last[-pad:] != bytes([pad]) * pad:
            raise DecryptionFailed("bad padding after decryption (wrong key or corrupted data)")
        if checker is not None:
            checker.feed(last[:-pad])
            checker.finish()
        if len(last) > pad:
            yield last[:-pad]
        r.leave(eci)
        r.leave(ed)
        _finish(r, outer, "EnvelopedData")
    except SecurityError:
        raise
    except Exception as exc:  # untrusted input: any parsing failure is this layer's failure
        raise DecryptionFailed(f"EnvelopedData: {_why(exc)}") from exc


class _CmsStartCheck:
    """Checks that decrypted octets begin with ``SEQUENCE { OID 1.2.840.113549.1.… }``."""

    PREFIX = b"\x2a\x86\x48\x86\xf7\x0d\x01"

    def __init__(self) -> None:
        self._head = b""
        self._done = False

    def feed(self, data: bytes) -> None:
        if self._done:
            return
        self._head += data[:32]
        if len(self._head) >= 16:
            self.finish()

    def finish(self) -> None:
        if self._done:
            return
        self._done = True
        head = self._head[:16]
        if not (head[:1] == b"\x30" and self.PREFIX in head):
            raise DecryptionFailed(
                "decrypted content is not a CMS structure: wrong private key or corrupted data"
            )


def _encapsulated(r: BerReader, what: str) -> tuple[Container, tuple[Container, Header] | None]:
    """Enter EncapsulatedContentInfo; returns (container, eContent header or None if detached)."""
    encap = r.enter(r.expect(SEQUENCE, constructed=True), "EncapsulatedContentInfo")
    ctype = _read_oid(r)
    if ctype != asn1.OID_DATA:
        log.info("%s: inner content type %s (not id-data) accepted", what, ctype)
    if not r.more(encap):
        return encap, None
    explicit = r.enter(r.expect(0, tag_class=CLASS_CONTEXT, constructed=True), "eContent [0]")
    inner = r.header()
    if not inner.is_universal(OCTET_STRING):
        raise BerError(f"eContent is {inner.describe()}, not an OCTET STRING")
    return encap, (explicit, inner)


def compressed_layer(
    source: Source, *, chunk_size: int = 1 << 20, max_output: int | None = None
) -> Iterator[bytes]:
    """Inflate a ContentInfo(CompressedData) (zlib); yields the uncompressed chunks."""
    r = BerReader(source)
    try:
        outer = _content_info(r, asn1.OID_COMPRESSED_DATA, "CompressedData")
        cd = r.enter(r.expect(SEQUENCE, constructed=True), "CompressedData")
        r.read_value(r.expect(0x02, constructed=False), 16)
        alg_oid, _params = asn1.parse_algorithm(r.read_element())
        if alg_oid != asn1.OID_ZLIB:
            raise DecompressionFailed(f"compression algorithm {alg_oid} is not zlib")
        encap, content = _encapsulated(r, "CompressedData")
        if content is None:
            raise BerError("CompressedData has no content")
        explicit, inner = content
        z = zlib.decompressobj()
        produced = 0
        for chunk in r.octet_chunks(inner, chunk_size):
            if z.eof:
                raise DecompressionFailed("data after the end of the zlib stream")
            data = chunk
            while data:
                out = z.decompress(data, MAX_INFLATE_STEP)
                data = z.unconsumed_tail
                produced += len(out)
                if max_output is not None and produced > max_output:
                    raise DecompressionFailed(f"decompressed size exceeds the limit of {max_output} octets")
                if out:
                    yield out
            if z.unused_data:
                raise DecompressionFailed("data after the end of the zlib stream")
        if not z.eof:
            raise DecompressionFailed("zlib stream is incomplete")
        _finish(r, [explicit, encap, cd, *outer], "CompressedData")
    except SecurityError:
        raise
    except zlib.error as exc:
        raise DecompressionFailed(f"corrupt zlib data: {exc}") from exc
    except Exception as exc:  # untrusted input: any parsing failure is this layer's failure
        raise DecompressionFailed(f"CompressedData: {_why(exc)}") from exc


def _verify_signer(
    signer: asn1.Signer, cert: x509.Certificate, digests: dict[str, bytes], econtent_type: str
) -> str:
    """Verify one SignerInfo with *cert*; returns the digest name or raises SignatureInvalid."""
    name = HASH_OIDS.get(signer.digest_oid)
    if name is None or name not in digests:
        raise SignatureInvalid(f"digest algorithm {signer.digest_oid} not announced or not supported")
    if signer.signature_oid not in asn1.RSA_SIGNATURE_OIDS:
        raise SignatureInvalid(f"signature algorithm {signer.signature_oid} is not RSA PKCS#1 v1.5")
    public = cert.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        raise SignatureInvalid(f"certificate {cert.subject.rfc4514_string()!r} has no RSA key")
    algorithm = hash_by_name(name)
    try:
        if signer.signed_attrs is not None:
            if signer.message_digest is None:
                raise SignatureInvalid("signed attributes lack the message-digest attribute")
            if not hmac.compare_digest(signer.message_digest, digests[name]):
                raise SignatureInvalid("message digest does not match the content (content altered)")
            if signer.content_type is not None and signer.content_type != econtent_type:
                raise SignatureInvalid("content-type attribute does not match eContentType")
            public.verify(signer.signature, signer.signed_attrs, padding.PKCS1v15(), algorithm)
        else:
            public.verify(signer.signature, digests[name], padding.PKCS1v15(), utils.Prehashed(algorithm))
    except InvalidSignature:
        raise SignatureInvalid(
            f"signature by {cert.subject.rfc4514_string()!r} does not verify (content or signature altered)"
        ) from None
    return name


def signed_layer(
    source: Source,
    *,
    verify_certs: Sequence[x509.Certificate],
    info: SignedInfo,
    chunk_size: int = 1 << 20,
    detached_content: bytes | None = None,
    collect: bool = False,
) -> Iterator[bytes]:
    """Read a ContentInfo(SignedData), yield the content, then verify the signature.

    The last chunk is yielded before verification completes: callers write to a temporary file and
    present it only when this generator finished without raising.  *detached_content* is what the
    signature covers when the SignedData carries no eContent (a detached signature).
    """
    r = BerReader(source)
    try:
        outer = _content_info(r, asn1.OID_SIGNED_DATA, "SignedData")
        sd = r.enter(r.expect(SEQUENCE, constructed=True), "SignedData")
        r.read_value(r.expect(0x02, constructed=False), 16)
        algs = r.enter(r.expect(SET, constructed=True), "digestAlgorithms")
        hashers: dict[str, Any] = {}
        while r.more(algs):
            alg_oid, _ = asn1.parse_algorithm(r.read_element())
            name = HASH_OIDS.get(alg_oid)
            if name is not None:
                hashers[name] = hashlib.new(name)
        if not hashers:
            raise UnsupportedSuite("SignedData announces no supported digest algorithm")
        ctype_encap, content = _encapsulated(r, "SignedData")
        collected: list[bytes] = []
        if content is None:
            if detached_content is None:
                raise SignatureInvalid("SignedData is detached: the signed content is missing")
            for hasher in hashers.values():
                hasher.update(detached_content)
        else:
            explicit, inner = content
            for chunk in r.octet_chunks(inner, chunk_size):
                for hasher in hashers.values():
                    hasher.update(chunk)
                if collect:
                    collected.append(chunk)
                else:
                    yield chunk
            r.leave(explicit)
        r.leave(ctype_encap)
        h = r.header()
        if h.is_context(0):
            info.embedded_certs = asn1.parse_certificate_set(r.read_element(header=h))
            h = r.header()
        if h.is_context(1):  # crls
            r.skip(h)
            h = r.header()
        if not h.is_universal(SET):
            raise BerError(f"expected SignerInfos SET, found {h.describe()}")
        signers = asn1.parse_signer_infos(r.read_element(header=h))
        r.leave(sd)
        _finish(r, outer, "SignedData")
    except SecurityError:
        raise
    except Exception as exc:  # untrusted input: any parsing failure is this layer's failure
        raise SignatureInvalid(f"SignedData: {_why(exc)}") from exc
    try:
        _check_signers(signers, verify_certs, hashers, info)
    except SecurityError:
        raise
    except Exception as exc:
        raise SignatureInvalid(f"SignedData: {_why(exc)}") from exc
    if collect and content is not None:
        info.content = b"".join(collected)


def _why(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text if isinstance(exc, BerError) else f"{type(exc).__name__}: {text}"


def _check_signers(
    signers: list[asn1.Signer],
    verify_certs: Sequence[x509.Certificate],
    hashers: dict[str, Any],
    info: SignedInfo,
) -> None:
    if not signers:
        raise SignatureInvalid("SignedData has no signer")
    if not verify_certs:
        raise UnknownSigner("no partner certificate is configured to verify the signature")
    digests = {name: hasher.digest() for name, hasher in hashers.items()}
    last_error: SignatureInvalid | None = None
    for signer in signers:
        for cert in verify_certs:
            if not signer.matches(cert):
                continue
            try:
                info.digest_name = _verify_signer(signer, cert, digests, asn1.OID_DATA)
            except SignatureInvalid as exc:
                last_error = exc
                continue
            info.signer = cert
            return
    if last_error is not None:
        raise last_error
    named = ", ".join(_describe_signer(s, info.embedded_certs) for s in signers)
    raise UnknownSigner(f"signed by {named}, which is not among the partner's certificates")


def _describe_signer(signer: asn1.Signer, embedded: Sequence[x509.Certificate]) -> str:
    for cert in embedded:
        if signer.matches(cert):
            return repr(cert.subject.rfc4514_string())
    if signer.serial is not None:
        try:
            issuer = repr(signer.issuer.human_friendly)
        except Exception:  # a malformed name from the peer
            issuer = "<unreadable name>"
        return f"issuer {issuer} serial {signer.serial:x}"
    return f"key id {(signer.key_id or b'').hex()}"
