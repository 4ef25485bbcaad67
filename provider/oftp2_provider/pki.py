"""Generate a small X.509 test PKI (CA, server, client, partner certificates).

Used by the test-suite and by ``make demo``; never for production keys.  No Airflow imports.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Identity:
    """A certificate and its private key, in memory and as PEM files."""

    name: str
    cert: x509.Certificate
    key: rsa.RSAPrivateKey
    cert_path: Path
    key_path: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "airflow-provider-oftp2 test PKI"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def new_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def _write(directory: Path, name: str, cert: x509.Certificate, key: rsa.RSAPrivateKey) -> Identity:
    cert_path = directory / f"{name}.crt"
    key_path = directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return Identity(name, cert, key, cert_path, key_path)


def make_ca(directory: Path, name: str = "ca") -> Identity:
    key = new_key()
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"OFTP2 Test CA {name}"))
        .issuer_name(_name(f"OFTP2 Test CA {name}"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _write(directory, name, cert, key)


def issue(
    directory: Path,
    ca: Identity,
    name: str,
    *,
    common_name: str | None = None,
    hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    key_encipherment: bool = True,
    digital_signature: bool = True,
    server: bool = True,
    client: bool = True,
) -> Identity:
    """Issue an end-entity certificate signed by *ca*."""
    key = new_key()
    now = dt.datetime.now(dt.timezone.utc)
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    usages = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name or name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(days=1))
        .not_valid_after(not_after or now + dt.timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=digital_signature,
                content_commitment=digital_signature,
                key_encipherment=key_encipherment,
                data_encipherment=key_encipherment,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    return _write(directory, name, cert, key)


@dataclass(frozen=True)
class PKIBundle:
    """The standard set of test identities."""

    directory: Path
    ca: Identity
    server: Identity
    client: Identity
    partner: Identity
    expired: Identity
    not_yet_valid: Identity
    sign_only: Identity
    other_ca: Identity
    untrusted: Identity


def generate_test_pki(directory: Path) -> PKIBundle:
    """Create CA, server, client, partner, expired, not-yet-valid, wrong-usage and untrusted identities."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca(directory, "ca")
    now = dt.datetime.now(dt.timezone.utc)
    other_ca = make_ca(directory, "other-ca")
    return PKIBundle(
        directory=directory,
        ca=ca,
        server=issue(directory, ca, "server"),
        client=issue(directory, ca, "client"),
        partner=issue(directory, ca, "partner"),
        expired=issue(
            directory,
            ca,
            "expired",
            not_before=now - dt.timedelta(days=30),
            not_after=now - dt.timedelta(days=1),
        ),
        not_yet_valid=issue(
            directory,
            ca,
            "not-yet-valid",
            not_before=now + dt.timedelta(days=10),
            not_after=now + dt.timedelta(days=100),
        ),
        sign_only=issue(directory, ca, "sign-only", key_encipherment=False),
        other_ca=other_ca,
        untrusted=issue(directory, other_ca, "untrusted"),
    )
