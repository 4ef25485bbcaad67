"""OFTP2 file security: streaming CMS sign → compress → encrypt and the reverse (RFC 5024 §6).

Public entry points:

* :func:`protect_file` / :class:`SecureFileWriter` — build the transmitted virtual file from the
  original: ``EnvelopedData(CompressedData(SignedData(data)))`` with any layer optional.
* :func:`unprotect_file` — unwrap a received file according to SFIDSEC/SFIDCOMP, verify, and only
  then move the result into place.
* :func:`protect_file_async` / :func:`unprotect_file_async` — the same, off the event loop.
* :func:`open_envelope`, :func:`verify_signed_bytes` — small in-memory variants used by secure
  authentication and signed receipts.

Memory stays bounded (about one ``chunk_size`` per layer) whatever the file size.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from ..commands import SecurityLevel
from ..suites import (
    CipherSuite,
    DecompressionFailed,
    DecryptionFailed,
    SecurityError,
    SignatureInvalid,
    SymmetricCipher,
    UnsupportedSuite,
    suite_from_code,
)
from .ber import FileSource, IterSource, Source
from .reader import SignedInfo, UnknownSigner, compressed_layer, enveloped_layer, signed_layer
from .writer import BackgroundHash, CompressSink, EnvelopeSink, SignSink, Sink, envelope_bytes, sign_bytes

__all__ = [
    "DecompressionFailed",
    "DecryptionFailed",
    "ProtectResult",
    "SecureFileWriter",
    "SignatureInvalid",
    "UnknownSigner",
    "UnprotectResult",
    "UnsupportedSuite",
    "envelope_bytes",
    "open_envelope",
    "protect_file",
    "protect_file_async",
    "sign_bytes",
    "transmitted_hash_name",
    "unprotect_file",
    "unprotect_file_async",
    "verify_signed_bytes",
]

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 1 << 20


def transmitted_hash_name(suite: CipherSuite | int) -> str:
    """Hash used for the transmitted-file hash (EERPHSH): the suite's, SHA-256 for suite 00."""
    s = suite_from_code(int(suite))
    return "sha256" if s is CipherSuite.NONE else s.hash_name


@dataclass(frozen=True)
class ProtectResult:
    """What :func:`protect_file` produced.

    ``transmitted_size``/``original_size`` are octets (SFIDFSIZ/SFIDOSIZ are these in 1 KiB blocks,
    rounded up); ``sha_of_transmitted`` is the hash of the output with the suite's hash algorithm
    (``hash_name``), i.e. the EERPHSH the receiver should send back.
    """

    transmitted_size: int
    original_size: int
    sha_of_transmitted: bytes
    hash_name: str
    security_level: SecurityLevel
    compressed: bool

    @property
    def envelope(self) -> int:
        """SFIDENV: 1 when any CMS layer was applied."""
        return int(self.security_level != SecurityLevel.NONE or self.compressed)

    @property
    def transmitted_blocks(self) -> int:
        """SFIDFSIZ: the transmitted size in 1 KiB blocks, rounded up."""
        return -(-self.transmitted_size // 1024)

    @property
    def original_blocks(self) -> int:
        """SFIDOSIZ: the original size in 1 KiB blocks, rounded up."""
        return -(-self.original_size // 1024)


@dataclass(frozen=True)
class UnprotectResult:
    """What :func:`unprotect_file` verified.

    ``verified_signer`` is the partner certificate that verified the signature (``None`` when the
    file was not signed); ``sha_of_transmitted`` hashes the received octets (for a signed EERP).
    """

    verified_signer: x509.Certificate | None
    original_size: int
    transmitted_size: int
    sha_of_transmitted: bytes
    hash_name: str
    cipher: str | None = None
    signature_digest: str | None = None


class _FileSink:
    def __init__(self, fh: BinaryIO, hash_name: str) -> None:
        self._fh = fh
        self.hash = BackgroundHash(hash_name)
        self.size = 0

    def write(self, data: bytes, /) -> None:
        self.hash.update(data)
        self.size += len(data)
        self._fh.write(data)

    def close(self) -> None:
        self._fh.flush()


def _temp_beside(dst: Path) -> Path:
    return dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:12]}.part")


class SecureFileWriter:
    """Write the protected form of data pushed in with :meth:`write`; :meth:`close` finishes.

    The output goes to a temporary file beside *dst* and is renamed into place by :meth:`close`;
    :meth:`abort` (or leaving a ``with`` block through an exception) removes it.
    """

    def __init__(
        self,
        dst: Path | str,
        *,
        suite: CipherSuite | int,
        sign_key: rsa.RSAPrivateKey | None = None,
        sign_cert: x509.Certificate | None = None,
        compress: bool = False,
        encrypt_for: x509.Certificate | None = None,
        include_cert: bool = False,
        compression_level: int = 6,
        fsync: bool = False,
    ) -> None:
        self._fsync = fsync
        self.suite = suite_from_code(int(suite))
        if (sign_key is None) != (sign_cert is None):
            raise ValueError("signing needs both sign_key and sign_cert")
        if self.suite is CipherSuite.NONE and (sign_key is not None or encrypt_for is not None):
            raise UnsupportedSuite("cipher suite 00 cannot sign or encrypt; choose suite 01-06")
        self.dst = Path(dst)
        self._tmp = _temp_beside(self.dst)
        self._fh = open(self._tmp, "wb")  # closed in close()/abort()
        self._file = _FileSink(self._fh, transmitted_hash_name(self.suite))
        self._original = 0
        self._done = False
        self._sign_sink: SignSink | None = None
        self._compress_sink: CompressSink | None = None
        sink: Sink = self._file
        try:
            if encrypt_for is not None:
                sink = EnvelopeSink(sink, recipient=encrypt_for, cipher=self.suite.cipher)
            if compress:
                sink = self._compress_sink = CompressSink(sink, level=compression_level)
            if sign_key is not None and sign_cert is not None:
                sink = self._sign_sink = SignSink(
                    sink,
                    key=sign_key,
                    cert=sign_cert,
                    hash_name=self.suite.hash_name,
                    include_cert=include_cert,
                )
        except BaseException:
            self.abort()
            raise
        self._sink = sink
        signed, encrypted = sign_key is not None, encrypt_for is not None
        self.security_level = SecurityLevel(int(encrypted) + 2 * int(signed))
        self.compressed = compress

    def write(self, data: bytes) -> None:
        """Add original octets."""
        self._original += len(data)
        self._sink.write(data)

    def close(self) -> ProtectResult:
        """Finish every layer, flush to disk and rename the output into place."""
        if self._done:
            raise ValueError("SecureFileWriter already closed")
        try:
            self._sink.close()
            self._fh.flush()
            if self._fsync:
                os.fsync(self._fh.fileno())
            self._fh.close()
            os.replace(self._tmp, self.dst)
        except BaseException:
            self.abort()
            raise
        self._done = True
        return ProtectResult(
            transmitted_size=self._file.size,
            original_size=self._original,
            sha_of_transmitted=self._file.hash.digest(),
            hash_name=self._file.hash.name,
            security_level=self.security_level,
            compressed=self.compressed,
        )

    def abort(self) -> None:
        """Discard the partial output."""
        self._done = True
        self._file.hash.close()
        if self._sign_sink is not None:
            self._sign_sink.hash.close()
        if self._compress_sink is not None:
            self._compress_sink.discard()
        self._fh.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> SecureFileWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._done:
            self.close()


def protect_file(
    src: Path | str,
    dst: Path | str,
    *,
    suite: CipherSuite | int,
    sign_key: rsa.RSAPrivateKey | None = None,
    sign_cert: x509.Certificate | None = None,
    compress: bool = False,
    encrypt_for: x509.Certificate | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    include_cert: bool = False,
    compression_level: int = 6,
    fsync: bool = False,
) -> ProtectResult:
    """Sign, compress and encrypt *src* into *dst* (each step optional), streaming.

    The SFID fields follow from the result: SFIDSEC = ``security_level``, SFIDCIPH = *suite*,
    SFIDCOMP = ``compressed``, SFIDENV = ``envelope``, SFIDFSIZ/SFIDOSIZ from the sizes.
    """
    writer = SecureFileWriter(
        dst,
        suite=suite,
        sign_key=sign_key,
        sign_cert=sign_cert,
        compress=compress,
        encrypt_for=encrypt_for,
        include_cert=include_cert,
        compression_level=compression_level,
        fsync=fsync,
    )
    with writer, open(src, "rb") as fh:
        while chunk := fh.read(chunk_size):
            writer.write(chunk)
        return writer.close()


class _HashingSource:
    def __init__(self, inner: Source, hash_name: str) -> None:
        self._inner = inner
        self.hash = BackgroundHash(hash_name)
        self.size = 0

    def read(self, n: int, /) -> bytes:
        data = self._inner.read(n)
        self.hash.update(data)
        self.size += len(data)
        return data


def _layers(
    source: Source,
    *,
    security_level: SecurityLevel,
    compressed: bool,
    decrypt_key: rsa.RSAPrivateKey | None,
    decrypt_cert: x509.Certificate | None,
    verify_certs: Sequence[x509.Certificate],
    info: SignedInfo,
    chunk_size: int,
    max_output: int | None,
    ciphers: list[SymmetricCipher],
) -> Iterator[bytes]:
    chunks: Iterator[bytes] | None = None
    current: Source = source
    if security_level in (SecurityLevel.ENCRYPTED, SecurityLevel.ENCRYPTED_AND_SIGNED):
        if decrypt_key is None:
            raise DecryptionFailed("the file is encrypted but no private key is configured to decrypt it")
        chunks = enveloped_layer(
            current,
            key=decrypt_key,
            cert=decrypt_cert,
            chunk_size=chunk_size,
            used=ciphers,
            expect_cms=compressed or security_level is SecurityLevel.ENCRYPTED_AND_SIGNED,
        )
        current = IterSource(chunks)
    if compressed:
        chunks = compressed_layer(current, chunk_size=chunk_size, max_output=max_output)
        current = IterSource(chunks)
    if security_level in (SecurityLevel.SIGNED, SecurityLevel.ENCRYPTED_AND_SIGNED):
        chunks = signed_layer(current, verify_certs=verify_certs, info=info, chunk_size=chunk_size)
        current = IterSource(chunks)
    if chunks is None:
        return _plain(source, chunk_size)
    return chunks


def _plain(source: Source, chunk_size: int) -> Iterator[bytes]:
    while data := source.read(chunk_size):
        yield data


def unprotect_file(
    src: Path | str,
    dst: Path | str,
    *,
    security_level: int,
    compressed: bool | int,
    suite: CipherSuite | int,
    decrypt_key: rsa.RSAPrivateKey | None = None,
    decrypt_cert: x509.Certificate | None = None,
    verify_certs: Sequence[x509.Certificate] = (),
    chunk_size: int = DEFAULT_CHUNK,
    max_output: int | None = None,
    fsync: bool = True,
) -> UnprotectResult:
    """Unwrap a received virtual file: decrypt → decompress → verify, as SFIDSEC/SFIDCOMP say.

    The result is written to a temporary file beside *dst* and renamed into place only when every
    check passed; on failure nothing is left at *dst* and a typed error says why:
    :class:`DecryptionFailed` (EFNA 22 / NERP 33), :class:`DecompressionFailed` (EFNA 23 / NERP 32),
    :class:`SignatureInvalid` (EFNA 21 / NERP 31; :class:`UnknownSigner` when the signer is not a
    partner certificate), :class:`UnsupportedSuite` (SFNA 15).
    """
    try:
        level = SecurityLevel(int(security_level))
    except ValueError:
        raise UnsupportedSuite(f"SFIDSEC {security_level!r} is not 00-03") from None
    the_suite = suite_from_code(int(suite))
    if level is not SecurityLevel.NONE and the_suite is CipherSuite.NONE:
        raise UnsupportedSuite(f"SFIDSEC {int(level):02d} needs a cipher suite, but SFIDCIPH is 00")
    dst = Path(dst)
    tmp = _temp_beside(dst)
    info = SignedInfo()
    ciphers: list[SymmetricCipher] = []
    original = 0
    source: _HashingSource | None = None
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            source = _HashingSource(FileSource(fin), transmitted_hash_name(the_suite))
            for chunk in _layers(
                source,
                security_level=level,
                compressed=bool(compressed),
                decrypt_key=decrypt_key,
                decrypt_cert=decrypt_cert,
                verify_certs=list(verify_certs),
                info=info,
                chunk_size=chunk_size,
                max_output=max_output,
                ciphers=ciphers,
            ):
                original += len(chunk)
                fout.write(chunk)
            fout.flush()
            if fsync:
                os.fsync(fout.fileno())
        if level in (SecurityLevel.SIGNED, SecurityLevel.ENCRYPTED_AND_SIGNED) and info.signer is None:
            raise SignatureInvalid("signature was not verified")
        os.replace(tmp, dst)
    except SecurityError as exc:
        if source is not None:
            source.hash.close()
        tmp.unlink(missing_ok=True)
        log.warning("unprotect %s failed: %s: %s", src, type(exc).__name__, exc)
        raise
    except BaseException:
        if source is not None:
            source.hash.close()
        tmp.unlink(missing_ok=True)
        raise
    if ciphers and the_suite is not CipherSuite.NONE and ciphers[0] != the_suite.cipher:
        log.info("%s: encrypted with %s although SFIDCIPH %02d names %s", src, ciphers[0].name,
                 int(the_suite), the_suite.cipher.name)  # fmt: skip
    assert source is not None
    return UnprotectResult(
        verified_signer=info.signer,
        original_size=original,
        transmitted_size=source.size,
        sha_of_transmitted=source.hash.digest(),
        hash_name=source.hash.name,
        cipher=ciphers[0].name if ciphers else None,
        signature_digest=info.digest_name or None,
    )


async def protect_file_async(src: Path | str, dst: Path | str, **kwargs: Any) -> ProtectResult:
    """:func:`protect_file` in a worker thread (keeps the event loop responsive)."""
    return await asyncio.to_thread(protect_file, src, dst, **kwargs)


async def unprotect_file_async(src: Path | str, dst: Path | str, **kwargs: Any) -> UnprotectResult:
    """:func:`unprotect_file` in a worker thread (keeps the event loop responsive)."""
    return await asyncio.to_thread(unprotect_file, src, dst, **kwargs)


def open_envelope(data: bytes, *, key: rsa.RSAPrivateKey, cert: x509.Certificate | None = None) -> bytes:
    """Decrypt a small in-memory EnvelopedData (DER or BER); raises :class:`DecryptionFailed`."""
    return b"".join(enveloped_layer(FileSource(io.BytesIO(data)), key=key, cert=cert))


def verify_signed_bytes(
    data: bytes,
    *,
    verify_certs: Sequence[x509.Certificate],
    detached_content: bytes | None = None,
) -> tuple[bytes | None, x509.Certificate]:
    """Verify a small in-memory SignedData.

    Returns ``(encapsulated content or None when detached, signer certificate)``; raises
    :class:`SignatureInvalid` (or :class:`UnknownSigner`).
    """
    info = SignedInfo()
    for _ in signed_layer(
        FileSource(io.BytesIO(data)),
        verify_certs=verify_certs,
        info=info,
        detached_content=detached_content,
        collect=True,
    ):
        pass
    if info.signer is None:
        raise SignatureInvalid("signature was not verified")
    return info.content, info.signer
