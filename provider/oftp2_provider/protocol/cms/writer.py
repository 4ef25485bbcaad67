"""Streaming CMS producers: SignedData, CompressedData, EnvelopedData (RFC 5652, RFC 3274).

Each layer is a *sink*: it accepts the octets of its content with ``write`` and passes its own
encoding on to the next sink.  Chained in RFC 5024 §6 order — sign, then compress, then encrypt —
a file goes through in one pass with bounded memory (one chunk per layer).

Encoding: the outer structures use the BER **indefinite-length** form (as ``openssl cms -stream``
and BouncyCastle do); the content travels as a constructed OCTET STRING of definite-length
primitive chunks.  The small parts — algorithm identifiers, RecipientInfo, SignerInfo — are DER.
The SignerInfo comes after the content in SignedData, so the digest is computed while the content
streams and the signature is written at the end: no second pass and no size known in advance.
"""

from __future__ import annotations

import collections
import concurrent.futures
import datetime as dt
import hashlib
import os
import queue
import threading
import zlib
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, CipherAlgorithm, algorithms, modes

from ..suites import HASH_OIDS, SymmetricCipher, hash_by_name
from . import asn1
from .ber import EOC, encode_length, indefinite, tlv

__all__ = [
    "BackgroundHash",
    "CompressSink",
    "EnvelopeSink",
    "SignSink",
    "Sink",
    "envelope_bytes",
    "sign_bytes",
]


class Sink(Protocol):
    """Receives octets; ``close`` finishes the encoding (and closes the next sink)."""

    def write(self, data: bytes, /) -> None: ...

    def close(self) -> None: ...


class BackgroundHash:
    """A hash updated by a helper thread (hashlib releases the GIL), fed through a bounded queue."""

    def __init__(self, hash_name: str, depth: int = 4) -> None:
        self._hash = hashlib.new(hash_name)
        self.name = self._hash.name
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._run, name="oftp2-hash", daemon=True)
        self._thread.start()
        self._closed = False

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            self._hash.update(data)

    def update(self, data: bytes) -> None:
        """Queue *data* (immutable bytes) for hashing."""
        if data:
            self._queue.put(data)

    def digest(self) -> bytes:
        """Wait for the queued data and return the digest."""
        self.close()
        return self._hash.digest()

    def close(self) -> None:
        """Stop the helper thread (idempotent)."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()


def _octets(out: Sink, data: bytes) -> None:
    if data:
        out.write(b"\x04" + encode_length(len(data)))
        out.write(data)


def _content_info_start(content_type: str) -> bytes:
    """``ContentInfo { contentType, [0] {`` — both indefinite."""
    return indefinite(0x10) + asn1.oid(content_type) + indefinite(0x80)


def symmetric(cipher: SymmetricCipher, key: bytes) -> CipherAlgorithm:
    """A ``cryptography`` algorithm object for a suite cipher and key."""
    if cipher.name == "des-ede3-cbc":
        return TripleDES(key)
    return algorithms.AES(key)


class SignSink:
    """CMS SignedData with attached content (eContentType id-data), one signer, RSA PKCS#1 v1.5."""

    def __init__(
        self,
        out: Sink,
        *,
        key: rsa.RSAPrivateKey,
        cert: x509.Certificate,
        hash_name: str,
        include_cert: bool = False,
    ) -> None:
        self._out = out
        self._key = key
        self._cert = cert
        self._hash_name = hash_name
        self.hash = BackgroundHash(hash_name)
        self._include_cert = include_cert
        self._digest_oid = {v: k for k, v in HASH_OIDS.items()}[hash_name]
        digest_set = tlv(0x31, asn1.algorithm_identifier(self._digest_oid))
        out.write(
            _content_info_start(asn1.OID_SIGNED_DATA)
            + indefinite(0x10)  # SignedData
            + asn1.integer(1)
            + digest_set
            + indefinite(0x10)  # EncapsulatedContentInfo
            + asn1.oid(asn1.OID_DATA)
            + indefinite(0x80)  # [0] EXPLICIT
            + indefinite(0x04)  # OCTET STRING, constructed
        )

    def write(self, data: bytes, /) -> None:
        """Add content octets."""
        self.hash.update(data)
        _octets(self._out, data)

    def close(self) -> None:
        """Write the SignerInfo and the end-of-contents octets."""
        attrs = asn1.signed_attributes(self.hash.digest(), asn1.OID_DATA, dt.datetime.now(dt.timezone.utc))
        signature = self._key.sign(attrs, padding.PKCS1v15(), hash_by_name(self._hash_name))
        info = asn1.signer_info(self._cert, self._digest_oid, attrs, signature)
        tail = EOC * 3  # OCTET STRING, [0], EncapsulatedContentInfo
        if self._include_cert:
            tail += asn1.certificate_set([self._cert])
        tail += tlv(0x31, info) + EOC * 3  # SignedData, [0], ContentInfo
        self._out.write(tail)
        self._out.close()


#: zlib header FLG octet per compression level (FLEVEL bits; FCHECK makes CMF*256+FLG a multiple of 31).
_ZLIB_FLG = {0: 0x01, 1: 0x01, 2: 0x5E, 3: 0x5E, 4: 0x5E, 5: 0x5E, 6: 0x9C, 7: 0xDA, 8: 0xDA, 9: 0xDA}
_WINDOW = 32 * 1024


def _deflate_block(data: bytes, dictionary: bytes, level: int) -> bytes:
    """Raw deflate of one block, primed with the previous 32 KiB, ending on a byte boundary."""
    z = zlib.compressobj(level, zlib.DEFLATED, -15, zdict=dictionary) if dictionary else None
    if z is None:
        z = zlib.compressobj(level, zlib.DEFLATED, -15)
    return z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)


class CompressSink:
    """CMS CompressedData (RFC 3274, zlib), content type id-data.

    The zlib stream is built from independently deflated 1 MiB blocks, each primed with the 32 KiB
    before it (the way ``pigz`` parallelises zlib), so *threads* blocks compress at once; the output
    is one ordinary zlib stream (header, deflate blocks, Adler-32).
    """

    def __init__(
        self, out: Sink, *, level: int = 6, threads: int | None = None, block_size: int = 1 << 20
    ) -> None:
        if not 0 <= level <= 9:
            raise ValueError(f"zlib compression level {level} is not 0-9")
        self._out = out
        self._level = level
        self._block = block_size
        self._pending = bytearray()
        self._window = b""
        self._adler = 1
        workers = threads or min(4, os.cpu_count() or 1)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="oftp2-zlib"
        )
        self._in_flight: collections.deque[concurrent.futures.Future[bytes]] = collections.deque()
        self._max_in_flight = workers * 2
        out.write(
            _content_info_start(asn1.OID_COMPRESSED_DATA)
            + indefinite(0x10)  # CompressedData
            + asn1.integer(0)
            + asn1.algorithm_identifier(asn1.OID_ZLIB)
            + indefinite(0x10)  # EncapsulatedContentInfo
            + asn1.oid(asn1.OID_DATA)
            + indefinite(0x80)
            + indefinite(0x04)
        )
        _octets(out, bytes([0x78, _ZLIB_FLG[level]]))

    def _submit(self, block: bytes) -> None:
        self._adler = zlib.adler32(block, self._adler)
        self._in_flight.append(self._pool.submit(_deflate_block, block, self._window, self._level))
        self._window = block[-_WINDOW:] if len(block) >= _WINDOW else (self._window + block)[-_WINDOW:]
        while len(self._in_flight) > self._max_in_flight:
            _octets(self._out, self._in_flight.popleft().result())

    def write(self, data: bytes, /) -> None:
        """Add content octets."""
        if not self._pending and len(data) == self._block:
            self._submit(bytes(data))
            return
        self._pending += data
        while len(self._pending) >= self._block:
            self._submit(bytes(self._pending[: self._block]))
            del self._pending[: self._block]

    def close(self) -> None:
        """Compress what is left, end the zlib stream and close the structure."""
        try:
            if self._pending:
                self._submit(bytes(self._pending))
                self._pending.clear()
            while self._in_flight:
                _octets(self._out, self._in_flight.popleft().result())
        finally:
            self._pool.shutdown(wait=True)
        # An empty final fixed-Huffman block, then the Adler-32 of the uncompressed data.
        _octets(self._out, b"\x03\x00" + self._adler.to_bytes(4, "big"))
        self._out.write(EOC * 6)
        self._out.close()

    def discard(self) -> None:
        """Stop the worker threads without finishing the output."""
        for future in self._in_flight:
            future.cancel()
        self._in_flight.clear()
        self._pool.shutdown(wait=True)


class EnvelopeSink:
    """CMS EnvelopedData for one recipient (KeyTransRecipientInfo, rsaEncryption PKCS#1 v1.5)."""

    def __init__(self, out: Sink, *, recipient: x509.Certificate, cipher: SymmetricCipher) -> None:
        public = recipient.public_key()
        if not isinstance(public, rsa.RSAPublicKey):
            raise ValueError(
                f"certificate {recipient.subject.rfc4514_string()!r}: OFTP2 encryption needs an RSA key"
            )
        self._out = out
        self._block = cipher.block_size
        key = os.urandom(cipher.key_size)
        iv = os.urandom(cipher.block_size)
        wrapped = public.encrypt(key, padding.PKCS1v15())
        self._enc = Cipher(symmetric(cipher, key), modes.CBC(iv)).encryptor()
        self._count = 0
        out.write(
            _content_info_start(asn1.OID_ENVELOPED_DATA)
            + indefinite(0x10)  # EnvelopedData
            + asn1.integer(0)
            + tlv(0x31, asn1.key_trans_recipient_info(recipient, wrapped))
            + indefinite(0x10)  # EncryptedContentInfo
            + asn1.oid(asn1.OID_DATA)
            + asn1.algorithm_identifier(cipher.oid, asn1.octet_string(iv))
            + indefinite(0x80)  # [0] IMPLICIT OCTET STRING, constructed
        )

    def write(self, data: bytes, /) -> None:
        """Encrypt and add content octets."""
        self._count += len(data)
        _octets(self._out, self._enc.update(data))

    def close(self) -> None:
        """Pad (PKCS#7), finish and close the structure."""
        pad = self._block - self._count % self._block
        _octets(self._out, self._enc.update(bytes([pad]) * pad) + self._enc.finalize())
        self._out.write(EOC * 5)
        self._out.close()


class _BufferSink:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes, /) -> None:
        self.parts.append(bytes(data))

    def close(self) -> None:
        pass


def envelope_bytes(data: bytes, recipient: x509.Certificate, cipher: SymmetricCipher) -> bytes:
    """A DER ContentInfo(EnvelopedData) of *data* for *recipient* (small payloads, e.g. AUCH)."""
    public = recipient.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        raise ValueError(f"certificate {recipient.subject.rfc4514_string()!r}: needs an RSA key")
    key = os.urandom(cipher.key_size)
    iv = os.urandom(cipher.block_size)
    enc = Cipher(symmetric(cipher, key), modes.CBC(iv)).encryptor()
    pad = cipher.block_size - len(data) % cipher.block_size
    ciphertext = enc.update(data + bytes([pad]) * pad) + enc.finalize()
    eci = tlv(
        0x30,
        asn1.oid(asn1.OID_DATA)
        + asn1.algorithm_identifier(cipher.oid, asn1.octet_string(iv))
        + tlv(0x80, ciphertext),
    )
    ri = tlv(0x31, asn1.key_trans_recipient_info(recipient, public.encrypt(key, padding.PKCS1v15())))
    ed = tlv(0x30, asn1.integer(0) + ri + eci)
    return tlv(0x30, asn1.oid(asn1.OID_ENVELOPED_DATA) + tlv(0xA0, ed))


def sign_bytes(
    data: bytes,
    *,
    key: rsa.RSAPrivateKey,
    cert: x509.Certificate,
    hash_name: str,
    include_cert: bool = False,
    detached: bool = False,
) -> bytes:
    """A DER ContentInfo(SignedData) over *data* (attached unless *detached*), e.g. for EERP/NERP."""
    digest_oid = {v: k for k, v in HASH_OIDS.items()}[hash_name]
    h = hashes.Hash(hash_by_name(hash_name))
    h.update(data)
    attrs = asn1.signed_attributes(h.finalize(), asn1.OID_DATA, dt.datetime.now(dt.timezone.utc))
    signature = key.sign(attrs, padding.PKCS1v15(), hash_by_name(hash_name))
    encap = asn1.oid(asn1.OID_DATA)
    if not detached:
        encap += tlv(0xA0, asn1.octet_string(data))
    body = (
        asn1.integer(1)
        + tlv(0x31, asn1.algorithm_identifier(digest_oid))
        + tlv(0x30, encap)
        + (asn1.certificate_set([cert]) if include_cert else b"")
        + tlv(0x31, asn1.signer_info(cert, digest_oid, attrs, signature))
    )
    return tlv(0x30, asn1.oid(asn1.OID_SIGNED_DATA) + tlv(0xA0, tlv(0x30, body)))
