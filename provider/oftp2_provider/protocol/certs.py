"""Certificates and keys: loading (PEM, DER, PKCS#12), checks per purpose, TLS contexts.

OFTP2 uses X.509 certificates for four separate jobs — TLS, secure authentication, file
encryption/signing and signed receipts — and a partner may use a different certificate for each.
:class:`PartnerCertificates` holds one per purpose; :func:`check_certificate` reports every problem
of one certificate for one purpose in plain words that name the certificate.
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID

__all__ = [
    "CertificateReport",
    "PartnerCertificates",
    "Purpose",
    "check_certificate",
    "fingerprint",
    "harden_ssl_context",
    "load_certificate",
    "load_certificates",
    "load_pkcs12",
    "load_private_key",
    "make_client_ssl_context",
    "make_server_ssl_context",
]

Purpose = Literal["tls", "auth", "encrypt", "sign", "receipt"]
PrivateKey = rsa.RSAPrivateKey
CertSource = x509.Certificate | Path | str | bytes

#: Warn when a certificate expires within this many days.
EXPIRY_WARNING_DAYS = 30
#: Forward-secret TLS 1.2 suites; TLS 1.3 suites are all forward secret.
FS_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"


def _read(source: Path | str | bytes) -> bytes:
    if isinstance(source, bytes):
        return source
    return Path(source).read_bytes()


def load_certificates(source: Path | str | bytes) -> list[x509.Certificate]:
    """Load every certificate of a PEM bundle, or the single certificate of a DER file/bytes."""
    data = _read(source)
    if b"-----BEGIN" in data:
        certs = x509.load_pem_x509_certificates(data)
    else:
        try:
            certs = [x509.load_der_x509_certificate(data)]
        except ValueError as exc:
            raise ValueError(f"{_label(source)}: not a PEM or DER X.509 certificate ({exc})") from None
    return certs


def load_certificate(source: Path | str | bytes) -> x509.Certificate:
    """Load one X.509 certificate from a PEM or DER file (path) or from bytes."""
    certs = load_certificates(source)
    if not certs:
        raise ValueError(f"{_label(source)}: no certificate found")
    return certs[0]


def load_private_key(source: Path | str | bytes, password: bytes | str | None = None) -> PrivateKey:
    """Load an RSA private key (PEM or DER, PKCS#1 or PKCS#8, optionally encrypted)."""
    data = _read(source)
    pw = password.encode() if isinstance(password, str) else password
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, pw)
        else:
            key = serialization.load_der_private_key(data, pw)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{_label(source)}: cannot load private key ({exc})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{_label(source)}: OFTP2 cipher suites need an RSA key, got {type(key).__name__}")
    return key


def load_pkcs12(
    source: Path | str | bytes, password: bytes | str | None
) -> tuple[PrivateKey, x509.Certificate, list[x509.Certificate]]:
    """Load ``(key, certificate, chain)`` from a PKCS#12 (.p12/.pfx) file or bytes."""
    pw = password.encode() if isinstance(password, str) else password
    try:
        key, cert, chain = pkcs12.load_key_and_certificates(_read(source), pw)
    except ValueError as exc:
        raise ValueError(f"{_label(source)}: cannot load PKCS#12 ({exc})") from None
    if key is None or cert is None:
        raise ValueError(f"{_label(source)}: PKCS#12 holds no private key and certificate")
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{_label(source)}: OFTP2 cipher suites need an RSA key, got {type(key).__name__}")
    return key, cert, list(chain)


def _label(source: object) -> str:
    return "<bytes>" if isinstance(source, bytes) else str(source)


def subject_of(cert: x509.Certificate) -> str:
    """The subject as an RFC 4514 string, for messages."""
    return cert.subject.rfc4514_string()


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint as lower-case hex (the form accepted in ``pinned``)."""
    return cert.fingerprint(hashes.SHA256()).hex()


@dataclass
class CertificateReport:
    """Outcome of :func:`check_certificate`: ``problems`` make it unusable, ``warnings`` do not."""

    subject: str
    purpose: str
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    expires_soon: bool = False
    not_after: dt.datetime | None = None

    @property
    def ok(self) -> bool:
        """True when there is no problem."""
        return not self.problems

    def raise_for_problems(self) -> None:
        """Raise ``ValueError`` listing the problems, if any."""
        if self.problems:
            raise ValueError("; ".join(self.problems))


@dataclass
class PartnerCertificates:
    """A partner's certificates, one per purpose; any may be ``None`` (not configured)."""

    tls: x509.Certificate | None = None
    auth: x509.Certificate | None = None
    encrypt: x509.Certificate | None = None
    sign: x509.Certificate | None = None
    receipt: x509.Certificate | None = None

    @classmethod
    def single(cls, cert: x509.Certificate) -> PartnerCertificates:
        """The same certificate for every purpose (common for small partners)."""
        return cls(tls=cert, auth=cert, encrypt=cert, sign=cert, receipt=cert)

    def for_purpose(self, purpose: Purpose) -> x509.Certificate | None:
        """The certificate configured for *purpose*."""
        value: x509.Certificate | None = getattr(self, purpose)
        return value

    def signature_certs(self) -> list[x509.Certificate]:
        """Certificates a receipt or file signature may come from: receipt first, then sign."""
        out: list[x509.Certificate] = []
        for cert in (self.receipt, self.sign):
            if cert is not None and cert not in out:
                out.append(cert)
        return out


def _key_usage_problem(cert: x509.Certificate, purpose: Purpose) -> str | None:
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        ku = None
    if purpose in ("auth", "encrypt"):
        if ku is not None and not ku.key_encipherment:
            return "key usage lacks keyEncipherment"
    elif purpose in ("sign", "receipt"):
        if ku is not None and not (ku.digital_signature or ku.content_commitment):
            return "key usage lacks digitalSignature/nonRepudiation"
    elif purpose == "tls":
        if ku is not None and not (ku.digital_signature or ku.key_encipherment):
            return "key usage lacks digitalSignature"
        try:
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            return None
        wanted = {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        if not wanted & set(eku) and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in eku:
            return "extended key usage allows neither serverAuth nor clientAuth"
    else:
        raise ValueError(f"unknown certificate purpose {purpose!r}")
    return None


def _validity_problem(cert: x509.Certificate, now: dt.datetime, what: str) -> str | None:
    if now < cert.not_valid_before_utc:
        return f"{what} not yet valid (valid from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC)"
    if now > cert.not_valid_after_utc:
        return f"{what} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    return None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _build_chain(
    cert: x509.Certificate,
    anchors: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate],
    now: dt.datetime,
) -> str | None:
    """Walk issuers up to a trust anchor; return a problem text or ``None`` when trusted."""
    current = cert
    seen: set[bytes] = set()
    for _depth in range(10):
        if current in anchors:
            return None
        issuers = [c for c in (*anchors, *intermediates) if c.subject == current.issuer]
        verified: x509.Certificate | None = None
        for issuer in issuers:
            try:
                current.verify_directly_issued_by(issuer)
            except (ValueError, TypeError, Exception):  # InvalidSignature is not a ValueError
                continue
            verified = issuer
            break
        if verified is None:
            return f"untrusted chain: no trusted issuer for {current.issuer.rfc4514_string()}"
        if not _is_ca(verified):
            return f"untrusted chain: issuer {subject_of(verified)} is not a CA"
        problem = _validity_problem(verified, now, f"issuer {subject_of(verified)}")
        if problem:
            return f"untrusted chain: {problem}"
        if verified in anchors:
            return None
        fp = verified.fingerprint(hashes.SHA256())
        if fp in seen:
            return "untrusted chain: issuer loop"
        seen.add(fp)
        current = verified
    return "untrusted chain: too long"


def check_certificate(
    cert: x509.Certificate,
    *,
    purpose: Purpose,
    trust_anchors: Iterable[x509.Certificate] | None = None,
    pinned: Iterable[x509.Certificate | str | bytes] | None = None,
    intermediates: Iterable[x509.Certificate] = (),
    now: dt.datetime | None = None,
) -> CertificateReport:
    """Check *cert* for *purpose*; every problem names the certificate subject.

    Checked: validity period (expired / not yet valid, warning when it ends within 30 days), key
    usage for the purpose (``auth``/``encrypt`` need keyEncipherment, ``sign``/``receipt``
    digitalSignature or nonRepudiation, ``tls`` digitalSignature and serverAuth/clientAuth when an
    EKU is present), an RSA key (OFTP2 suites are RSA only), then trust: with ``pinned``
    (certificates or SHA-256 fingerprints) the certificate must be one of them; otherwise with
    ``trust_anchors`` a chain of verified signatures must lead to one of them.  With neither, trust
    is not checked and a warning says so.
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.timezone.utc)
    subject = subject_of(cert)
    report = CertificateReport(subject=subject, purpose=purpose, not_after=cert.not_valid_after_utc)
    prefix = f"certificate {subject!r} ({purpose})"
    problem = _validity_problem(cert, now, prefix)
    if problem:
        report.problems.append(problem)
    elif cert.not_valid_after_utc - now < dt.timedelta(days=EXPIRY_WARNING_DAYS):
        report.expires_soon = True
        report.warnings.append(f"{prefix} expires soon, on {cert.not_valid_after_utc:%Y-%m-%d} UTC")
    problem = _key_usage_problem(cert, purpose)
    if problem:
        report.problems.append(f"{prefix}: wrong key usage: {problem}")
    if purpose != "tls" and not isinstance(cert.public_key(), rsa.RSAPublicKey):
        report.problems.append(f"{prefix}: key is not RSA (OFTP2 cipher suites need RSA)")
    if pinned is not None:
        pins = set()
        for pin in pinned:
            if isinstance(pin, x509.Certificate):
                pins.add(fingerprint(pin))
            elif isinstance(pin, bytes):
                pins.add(pin.hex())
            else:
                pins.add(pin.replace(":", "").lower())
        if fingerprint(cert) not in pins:
            report.problems.append(f"{prefix}: pinned mismatch (SHA-256 {fingerprint(cert)} is not pinned)")
    elif trust_anchors is not None:
        problem = _build_chain(cert, list(trust_anchors), list(intermediates), now)
        if problem:
            report.problems.append(f"{prefix}: {problem}")
    else:
        report.warnings.append(f"{prefix}: trust not checked (no trust anchors or pins configured)")
    return report


def _pem(certs: Iterable[x509.Certificate]) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def _ca_pem(source: CertSource | Sequence[x509.Certificate]) -> str:
    if isinstance(source, x509.Certificate):
        return _pem([source])
    if isinstance(source, (Path, str, bytes)):
        return _pem(load_certificates(source))
    return _pem(source)


def _load_chain(
    ctx: ssl.SSLContext, cert: CertSource, key: PrivateKey | Path | str | bytes, password: bytes | None
) -> None:
    if isinstance(cert, (Path, str)) and isinstance(key, (Path, str)):
        ctx.load_cert_chain(str(cert), str(key), password=password)
        return
    cert_obj = cert if isinstance(cert, x509.Certificate) else load_certificate(cert)
    key_obj = key if isinstance(key, rsa.RSAPrivateKey) else load_private_key(key, password)
    pem = cert_obj.public_bytes(serialization.Encoding.PEM) + key_obj.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd, name = tempfile.mkstemp(prefix="oftp2-tls-", suffix=".pem")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        ctx.load_cert_chain(name)
    finally:
        os.unlink(name)


def harden_ssl_context(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """Restrict *ctx* to TLS ≥ 1.2 with forward-secret ciphers only and no TLS compression (returns it)."""
    if ctx.minimum_version < ssl.TLSVersion.TLSv1_2:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(FS_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION
    return ctx


_harden = harden_ssl_context


def make_server_ssl_context(
    cert: CertSource,
    key: PrivateKey | Path | str | bytes,
    *,
    client_ca: CertSource | Sequence[x509.Certificate] | None = None,
    require_client_cert: bool = False,
    password: bytes | None = None,
) -> ssl.SSLContext:
    """TLS server context for the responder (port 6619): TLS ≥ 1.2, forward-secret ciphers only.

    With ``client_ca`` the client certificate is verified against it (requested, and required when
    ``require_client_cert``).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(ctx)
    _load_chain(ctx, cert, key, password)
    if client_ca is not None:
        ctx.load_verify_locations(cadata=_ca_pem(client_ca))
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    elif require_client_cert:
        raise ValueError("require_client_cert needs client_ca to verify client certificates against")
    return ctx


def make_client_ssl_context(
    ca: CertSource | Sequence[x509.Certificate] | None = None,
    pinned: CertSource | Sequence[x509.Certificate] | None = None,
    cert: CertSource | None = None,
    key: PrivateKey | Path | str | bytes | None = None,
    *,
    check_hostname: bool = True,
    password: bytes | None = None,
) -> ssl.SSLContext:
    """TLS client context for the initiator: TLS ≥ 1.2, forward-secret ciphers only.

    ``ca`` — trust these CA certificates (default: the system store).  ``pinned`` — trust exactly
    these server certificates (leaf pinning through OpenSSL's partial-chain mode; ``ca`` is then
    ignored and host names are not checked, the pin is stronger).  ``cert``/``key`` — client certificate for mutual TLS.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(ctx)
    ctx.verify_mode = ssl.CERT_REQUIRED
    if pinned is not None:
        ctx.check_hostname = False
        ctx.load_verify_locations(cadata=_ca_pem(pinned))
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    elif ca is not None:
        ctx.check_hostname = check_hostname
        ctx.load_verify_locations(cadata=_ca_pem(ca))
    else:
        ctx.check_hostname = check_hostname
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if cert is not None:
        if key is None:
            raise ValueError("a client certificate needs its private key")
        _load_chain(ctx, cert, key, password)
    return ctx
