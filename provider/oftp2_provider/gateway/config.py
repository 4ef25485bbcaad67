"""The gateway configuration: a TOML or YAML file validated by pydantic models.

Every error names the key path that is wrong (``partners.acme.password: …``), so a typo in a
500-line partner table is found without reading a traceback.  Relative paths in the file are
resolved against the directory of the configuration file.

The Markdown reference in ``docs/gateway.md`` is generated from these models (see
:mod:`oftp2_provider.gateway.docgen`), so field descriptions here are user documentation.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from oftp2_provider.protocol.certs import load_certificates

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "ApiUser",
    "ConfigError",
    "ControlApiConfig",
    "EventHandlerConfig",
    "EventsConfig",
    "FileSecurityPolicy",
    "GatewayConfig",
    "IdentityConfig",
    "KeyPair",
    "LedgerConfig",
    "LimitsConfig",
    "ListenerConfig",
    "PartnerAddress",
    "PartnerCertificates",
    "PartnerConfig",
    "RelayListener",
    "TcpListener",
    "TlsListener",
    "load_config",
    "parse_config",
]


class ConfigError(ValueError):
    """The configuration file cannot be used; ``problems`` lists ``(key path, message)`` pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {path or '<root>'}: {message}" for path, message in problems)
        super().__init__(f"invalid gateway configuration {source}:\n{lines}")


# --------------------------------------------------------------------------------------------------
# Field types


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    value = Path(os.path.expanduser(str(value)))
    base = (info.context or {}).get("base_dir") if info.context else None
    if not value.is_absolute() and base is not None:
        value = Path(base) / value
    return value


def _existing_file(value: Path, info: ValidationInfo) -> Path:
    value = _resolve_path(value, info)
    if (info.context or {}).get("check_files", True) and not value.is_file():
        raise ValueError(f"file not found: {value}")
    return value


ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]
"""A path; relative values are taken relative to the configuration file."""

ExistingFile = Annotated[Path, AfterValidator(_existing_file)]
"""A path to a file that must exist when the configuration is loaded."""

_ODETTE_ID = re.compile(r"^[\x21-\x7e][\x20-\x7e]{0,24}$")


def _odette_id(value: str) -> str:
    value = value.rstrip()
    if not _ODETTE_ID.fullmatch(value):
        raise ValueError("an Odette ID is 1 to 25 printable ASCII characters (SSIDCODE, X(25))")
    return value.upper()


def _password(value: SecretStr | str) -> SecretStr:
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    if raw.startswith("env:"):
        name = raw[4:]
        if name not in os.environ:
            raise ValueError(f"environment variable {name} is not set")
        raw = os.environ[name]
    raw = raw.rstrip()
    if len(raw) > 8 or not all(0x20 <= ord(c) < 0x7F for c in raw):
        raise ValueError("an OFTP password is at most 8 printable ASCII characters (SSIDPSWD, X(8))")
    return SecretStr(raw)


OdetteId = Annotated[str, AfterValidator(_odette_id)]
"""An Odette ID (ISO 6523 SIO), compared upper-cased after right-trimming."""

OftpPassword = Annotated[SecretStr, BeforeValidator(_password)]
"""An SSIDPSWD value (≤ 8 characters); ``env:NAME`` reads it from the environment."""

_PYTHON_REF = re.compile(r"^python:[A-Za-z_][\w.]*(\.|:)[A-Za-z_]\w*$")


def _python_ref(value: str) -> str:
    if not _PYTHON_REF.fullmatch(value):
        raise ValueError("must look like 'python:package.module.Name' (or 'python:package.module:Name')")
    return value


PythonRef = Annotated[str, AfterValidator(_python_ref)]
"""A reference to a Python object: ``python:package.module.Name``."""

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_OPENSSL_FINGERPRINT = re.compile(r"^sha-?256\s+fingerprint\s*=", re.IGNORECASE)


def _sha256_fingerprint(value: str) -> str:
    text = _OPENSSL_FINGERPRINT.sub("", value.strip())  # `openssl x509 -fingerprint -sha256` output
    text = re.sub(r"[\s:]", "", text).lower()
    if not _HEX64.fullmatch(text):
        raise ValueError(
            "a SHA-256 fingerprint is 64 hex digits, colons allowed "
            f"(`openssl x509 -noout -fingerprint -sha256 -in partner.crt`), got {len(text)} characters"
            + ("" if re.fullmatch(r"[0-9a-f]*", text) else " with non-hex ones")
        )
    return text


Sha256Fingerprint = Annotated[str, AfterValidator(_sha256_fingerprint)]
"""A SHA-256 certificate fingerprint, normalised to 64 lower-case hex digits."""


def certificate_sha256(path: Path) -> str:
    """SHA-256 (lower-case hex) of the DER of the one certificate in a PEM or DER file.

    ``ValueError`` names the file when it cannot be read, holds no certificate, or holds more
    than one (a pin is one certificate).
    """
    try:
        certs = load_certificates(path)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise ValueError(f"{path}: not a PEM or DER X.509 certificate") from None
    if len(certs) != 1:
        raise ValueError(f"{path} holds {len(certs)} certificates; pin exactly one")
    return hashlib.sha256(certs[0].public_bytes(Encoding.DER)).hexdigest()


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --------------------------------------------------------------------------------------------------
# Identity and certificates


class KeyPair(_Model):
    """A certificate and its private key (PEM files).

    The same table is used by `identity.tls`, `identity.auth`, `identity.signing`,
    `identity.decryption`, `listeners[].cert` and `control_api.tls`.
    """

    cert: ExistingFile = Field(description="Certificate file (PEM).")
    key: ExistingFile = Field(description="Private key file (PEM, PKCS#8 or traditional).")
    key_password: SecretStr | None = Field(default=None, description="Password of an encrypted private key.")


class IdentityConfig(_Model):
    """Who this gateway is: its Odette ID, password and keys."""

    odette_id: OdetteId = Field(description="Our Odette ID, sent as SSIDCODE and expected as SFIDDEST.")
    password: OftpPassword = Field(
        description="The password we present to partners (SSIDPSWD) unless a partner overrides it."
    )
    tls: KeyPair | None = Field(
        default=None,
        description="TLS certificate: server certificate of TLS listeners, client certificate when calling.",
    )
    auth: KeyPair | None = Field(
        default=None, description="Key for OFTP2 secure authentication (decrypts AUCH)."
    )
    signing: KeyPair | None = Field(
        default=None, description="Key that signs outbound files and signed EERP/NERP."
    )
    decryption: KeyPair | None = Field(default=None, description="Key that decrypts inbound encrypted files.")
    ca_certs: list[ExistingFile] = Field(
        default_factory=list, description="Trust anchors (PEM) for partner certificates and TLS servers."
    )


# --------------------------------------------------------------------------------------------------
# Listeners


class TcpListener(_Model):
    """A plain TCP listener (odette-ftp, port 3305)."""

    type: Literal["tcp"] = Field(default="tcp", description="Listener kind.")
    host: str = Field(default="0.0.0.0", description="Address to bind.")
    port: int = Field(default=3305, ge=0, le=65535, description="TCP port (0 picks a free port).")


class TlsListener(_Model):
    """A TLS listener (odette-ftps, port 6619): TLS from the first byte."""

    type: Literal["tls"] = Field(default="tls", description="Listener kind.")
    host: str = Field(default="0.0.0.0", description="Address to bind.")
    port: int = Field(default=6619, ge=0, le=65535, description="TCP port (0 picks a free port).")
    cert: KeyPair | None = Field(default=None, description="Server certificate; defaults to `identity.tls`.")
    client_ca: list[ExistingFile] = Field(
        default_factory=list, description="CAs for client certificates; defaults to `identity.ca_certs`."
    )
    require_client_cert: bool = Field(
        default=False, description="Refuse TLS clients without a valid certificate."
    )
    min_version: Literal["1.2", "1.3"] = Field(default="1.2", description="Lowest TLS version accepted.")


class RelayListener(_Model):
    """An Azure Relay Hybrid Connection listener: partners tunnel OFTP through the relay (azbridge-compatible).

    No inbound port is opened: the gateway keeps an outbound WebSocket to the relay and bridges each
    relayed connection to a loopback OFTP server.
    """

    type: Literal["relay"] = Field(default="relay", description="Listener kind.")
    namespace: str = Field(description="Relay namespace FQDN, e.g. `example.servicebus.windows.net`.")
    path: str = Field(description="Hybrid Connection name.")
    key_name: str | None = Field(default=None, description="SAS key (policy) name with Listen rights.")
    key: SecretStr | None = Field(default=None, description="SAS key.")
    endpoint: str | None = Field(default=None, description="Override URL (for the loopback emulator).")


ListenerConfig = Annotated[TcpListener | TlsListener | RelayListener, Field(discriminator="type")]


# --------------------------------------------------------------------------------------------------
# Ledger


class LedgerConfig(_Model):
    """Where transfers, receipts and events are stored: at most one of the three options."""

    sqlite_path: ConfigPath | None = Field(
        default=None, description="SQLite file (the default is `<state_dir>/ledger.sqlite`)."
    )
    conn_id: str | None = Field(
        default=None, description="An Airflow SQL connection id (sqlite or postgres)."
    )
    uri: str | None = Field(
        default=None, description="A database URI: `postgresql://…` or `sqlite:////path`."
    )

    @model_validator(mode="after")
    def _one_backend(self) -> LedgerConfig:
        chosen = [k for k in ("sqlite_path", "conn_id", "uri") if getattr(self, k) is not None]
        if len(chosen) > 1:
            raise ValueError(f"choose one of sqlite_path, conn_id, uri (got {', '.join(chosen)})")
        return self


# --------------------------------------------------------------------------------------------------
# Partners

_SUITES = (1, 2, 3, 4, 5, 6)
Level = Literal[1, 2, 4, 5]
_ALL_LEVELS: tuple[Level, ...] = (5, 4, 2, 1)


class PartnerAddress(_Model):
    """How we reach a partner when we call it."""

    host: str = Field(description="Host name or IP address.")
    port: int = Field(default=3305, ge=1, le=65535, description="Port (3305 plain, 6619 TLS by convention).")
    tls: bool = Field(default=False, description="Use TLS (implicit, from the first byte).")
    server_hostname: str | None = Field(
        default=None, description="TLS server name to check; defaults to `host`."
    )
    ca_certs: list[ExistingFile] = Field(
        default_factory=list, description="CAs for the partner's TLS certificate; defaults to identity CAs."
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        if isinstance(data, str):
            scheme = ""
            text = data
            if "://" in text:
                scheme, text = text.split("://", 1)
            host, sep, port = text.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError("an address string looks like 'host:port' or 'tls://host:port'")
            if scheme not in ("", "tcp", "tls"):
                raise ValueError("address scheme must be tcp:// or tls://")
            return {"host": host.strip("[]"), "port": int(port), "tls": scheme == "tls"}
        return data


class PartnerCertificates(_Model):
    """A partner's certificates, one per purpose (PEM files)."""

    auth: ExistingFile | None = Field(
        default=None, description="Certificate for secure authentication (AUCH)."
    )
    signing: ExistingFile | None = Field(
        default=None, description="Certificate that verifies the partner's signed files and receipts."
    )
    encryption: ExistingFile | None = Field(
        default=None, description="Certificate we encrypt outbound files for."
    )


class FileSecurityPolicy(_Model):
    """What a partner's files must look like, and how we protect the files we send."""

    require_signed: bool = Field(default=False, description="Refuse unsigned inbound files (SFNA 20).")
    require_encrypted: bool = Field(default=False, description="Refuse unencrypted inbound files (SFNA 17).")
    allow_compressed: bool = Field(default=True, description="Accept file-level compression (else SFNA 18).")
    allowed_suites: list[int] = Field(
        default_factory=lambda: list(_SUITES),
        description="Cipher suites accepted on inbound files (SFNA 15 otherwise).",
    )
    sign_outbound: bool = Field(default=False, description="Sign the files we send.")
    encrypt_outbound: bool = Field(default=False, description="Encrypt the files we send.")
    compress_outbound: bool = Field(default=False, description="Compress the files we send.")
    cipher_suite: int = Field(
        default=0, ge=0, le=6, description="Cipher suite for outbound files and signed receipts (0 = none)."
    )
    request_signed_receipt: bool = Field(
        default=False, description="Ask for a signed EERP/NERP (SFIDSIGN = Y)."
    )
    require_signed_receipts: bool = Field(
        default=False, description="Treat unsigned or unverifiable receipts from this partner as failures."
    )

    @field_validator("allowed_suites")
    @classmethod
    def _known_suites(cls, value: list[int]) -> list[int]:
        unknown = sorted(set(value) - set(_SUITES))
        if unknown:
            raise ValueError(f"unknown cipher suite(s) {unknown}; known: 1-6")
        return value

    @model_validator(mode="after")
    def _suite_needed(self) -> FileSecurityPolicy:
        if (
            self.sign_outbound or self.encrypt_outbound or self.request_signed_receipt
        ) and not self.cipher_suite:
            raise ValueError(
                "cipher_suite must be set when signing, encrypting or requesting signed receipts"
            )
        return self


class PartnerConfig(_Model):
    """A trading partner: how it authenticates, what it may send, and how to reach it."""

    odette_id: OdetteId = Field(description="The partner's Odette ID (its SSIDCODE).")
    password: OftpPassword = Field(description="The password the partner must present (SSIDPSWD).")
    our_password: OftpPassword | None = Field(
        default=None, description="The password we present to this partner; defaults to `identity.password`."
    )
    originators: list[str] = Field(
        default_factory=list,
        description="Other file originators (SFIDORIG) accepted through this partner, e.g. behind a VAN; "
        "`*` accepts any.  The partner's own Odette ID is always accepted.",
    )
    allowed_levels: list[Level] = Field(
        default_factory=lambda: list(_ALL_LEVELS),
        description="Protocol levels (SSIDLEV) the partner may use; others are refused with ESID 10.",
    )
    max_sdeb: int = Field(
        default=99999, ge=128, le=99999, description="Largest data exchange buffer we offer."
    )
    max_credit: int = Field(default=999, ge=1, le=999, description="Largest credit window we offer.")
    compression: bool = Field(default=False, description="Offer buffer (run-length) compression.")
    restart: bool = Field(default=True, description="Offer restart of interrupted files.")
    secure_auth: bool = Field(
        default=False, description="Require OFTP2 secure authentication (SSIDAUTH = Y)."
    )
    certificates: PartnerCertificates = Field(
        default_factory=lambda: PartnerCertificates(), description="The partner's certificates by purpose."
    )
    security: FileSecurityPolicy = Field(
        default_factory=lambda: FileSecurityPolicy(), description="File security policy."
    )
    inbox: ConfigPath | None = Field(
        default=None,
        description="Directory for received files; defaults to `<state_dir>/inbox/<partner name>`.",
    )
    address: PartnerAddress | None = Field(
        default=None, description="Where to call the partner (`host:port`, `tls://host:port` or a table)."
    )
    receipt_policy: Literal["immediate", "hold"] = Field(
        default="immediate",
        description="`immediate`: EERP as soon as a file is stored; `hold`: only after release_receipt.",
    )
    duplicate_policy: Literal["refuse", "resend_receipt"] = Field(
        default="refuse",
        description="A file already received: refuse it (SFNA 13) or accept and discard it, re-sending its receipt.",
    )
    max_file_size: int | None = Field(
        default=None,
        ge=0,
        description="Largest inbound file in octets (SFNA 06 beyond it); none = unlimited.",
    )
    tls_client_certificate: ExistingFile | None = Field(
        default=None,
        description="Pin: the partner must log in over TLS with exactly this client certificate "
        "(PEM or DER file, compared by the SHA-256 of its DER); other sessions get ESID 99.",
    )
    tls_client_fingerprint: Sha256Fingerprint | None = Field(
        default=None,
        description="Pin by SHA-256 fingerprint (hex, colons allowed) instead of a file; "
        "at most one of the two.",
    )

    @field_validator("originators")
    @classmethod
    def _originator_ids(cls, value: list[str]) -> list[str]:
        return [v if v == "*" else _odette_id(v) for v in value]

    def accepts_originator(self, originator: str) -> bool:
        """True when files from ``originator`` (SFIDORIG) may arrive through this partner."""
        wanted = originator.rstrip().upper()
        return wanted == self.odette_id or "*" in self.originators or wanted in self.originators

    @property
    def tls_pinned(self) -> bool:
        """True when the partner must present a pinned TLS client certificate."""
        return self.tls_client_certificate is not None or self.tls_client_fingerprint is not None

    def tls_client_pin(self) -> str | None:
        """The pinned SHA-256 (64 lower-case hex digits; the certificate file is read), or ``None``.

        ``ValueError`` names the file when ``tls_client_certificate`` cannot be read or is not one
        certificate.
        """
        if self.tls_client_certificate is not None:
            return certificate_sha256(self.tls_client_certificate)
        return self.tls_client_fingerprint

    @field_validator("tls_client_certificate")
    @classmethod
    def _readable_certificate(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and (info.context or {}).get("check_files", True):
            certificate_sha256(value)  # unreadable, not a certificate, or several: fail the load
        return value

    @model_validator(mode="after")
    def _one_pin(self) -> PartnerConfig:
        if self.tls_client_certificate is not None and self.tls_client_fingerprint is not None:
            raise ValueError("set tls_client_certificate or tls_client_fingerprint, not both")
        return self

    @model_validator(mode="after")
    def _needs(self) -> PartnerConfig:
        if self.secure_auth and self.certificates.auth is None:
            raise ValueError("secure_auth needs certificates.auth (the partner's authentication certificate)")
        if self.security.require_signed_receipts and self.certificates.signing is None:
            raise ValueError("security.require_signed_receipts needs certificates.signing")
        if self.security.encrypt_outbound and self.certificates.encryption is None:
            raise ValueError("security.encrypt_outbound needs certificates.encryption")
        if self.security.require_signed and self.certificates.signing is None:
            raise ValueError("security.require_signed needs certificates.signing")
        return self


# --------------------------------------------------------------------------------------------------
# Limits, control API, events


class LimitsConfig(_Model):
    """Resource limits; beyond them sessions are refused with ESID 08."""

    max_sessions: int = Field(default=100, ge=1, description="Concurrent OFTP sessions over all listeners.")
    max_sessions_per_address: int = Field(
        default=20, ge=1, description="Concurrent sessions from one IP address."
    )
    idle_timeout: float = Field(default=90.0, gt=0, description="Seconds without a buffer before ESID 09.")
    shutdown_grace: float = Field(
        default=10.0,
        ge=0,
        description="Seconds sessions get to end after SIGTERM before they are cut (ESID 05).",
    )
    stale_sending_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="An outbound file `sending` for longer than this (a crashed gateway) is queued again.",
    )


class ApiUser(_Model):
    """A control-API user: name, salted password hash and rights."""

    name: str = Field(min_length=1, description="User name (HTTP Basic).")
    password_hash: str = Field(
        description="Output of `oftp2 gateway --hash-password` (`scrypt$…` or `pbkdf2_sha256$…`)."
    )
    read_only: bool = Field(default=False, description="May only read (GET); writes answer 403.")

    @field_validator("password_hash")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(("scrypt$", "pbkdf2_sha256$")):
            raise ValueError(
                "must be a hash from `oftp2 gateway --hash-password` (scrypt$… or pbkdf2_sha256$…)"
            )
        return value


class ControlApiConfig(_Model):
    """The small HTTP(S) control API (off by default)."""

    enabled: bool = Field(default=False, description="Start the API.")
    host: str = Field(default="127.0.0.1", description="Address to bind.")
    port: int = Field(default=8619, ge=0, le=65535, description="Port (0 picks a free port).")
    tls: KeyPair | None = Field(default=None, description="Serve HTTPS with this certificate.")
    users: list[ApiUser] = Field(default_factory=list, description="Authorized users (HTTP Basic).")
    max_auth_failures: int = Field(
        default=10,
        ge=1,
        description="Wrong credentials from one address within `auth_lockout_seconds` before it is locked out (429).",
    )
    auth_lockout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Failure window and lock-out time for an address that sent too many wrong credentials.",
    )

    @model_validator(mode="after")
    def _users_when_enabled(self) -> ControlApiConfig:
        if self.enabled and not self.users:
            raise ValueError("the control API is enabled but has no users")
        names = [u.name for u in self.users]
        if len(names) != len(set(names)):
            raise ValueError("user names must be unique")
        return self


class EventHandlerConfig(_Model):
    """An event handler: ``get_configuration`` in the gateway process, ``handle`` in a worker."""

    name: str = Field(min_length=1, description="Name used in logs and error events.")
    handler: PythonRef = Field(description="The handler class, `python:package.module.Class`.")
    events: list[str] = Field(
        default_factory=list, description="Event names handled (e.g. `file.received`); empty = all."
    )
    timeout: float = Field(
        default=600.0, gt=0, description="Hard time limit of one `handle` call, in seconds."
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Free options, available to the handler as `self.options`."
    )


class EventsConfig(_Model):
    """The event-handler worker pool."""

    workers: int | None = Field(
        default=None, ge=1, description="Worker processes; defaults to the CPU count."
    )
    handlers: list[EventHandlerConfig] = Field(default_factory=list, description="Handlers, in order.")


# --------------------------------------------------------------------------------------------------
# The whole file


def _default_listeners() -> list[TcpListener | TlsListener | RelayListener]:
    return [TcpListener()]


class GatewayConfig(_Model):
    """The gateway configuration file."""

    identity: IdentityConfig = Field(description="Our Odette ID, password and keys (see `identity`).")
    node_id: str | None = Field(
        default=None,
        description="Name of this gateway in the ledger (claims, audit); defaults to `<host>:<state_dir>`. "
        "Gateways sharing one ledger need different node ids.",
    )
    state_dir: ConfigPath = Field(
        default=Path("oftp2-state"),
        validate_default=True,
        description="Working directory for the default ledger and inboxes (relative to the file).",
    )
    listeners: list[ListenerConfig] = Field(
        default_factory=_default_listeners, description="Where partners can call us."
    )
    ledger: LedgerConfig = Field(
        default_factory=lambda: LedgerConfig(), description="The transfer ledger (see `ledger`)."
    )
    partners: dict[str, PartnerConfig] = Field(
        default_factory=dict, description="Partners by name (the name is used by `--call`)."
    )
    accept_hook: PythonRef | None = Field(
        default=None,
        description="`python:module.func` deciding on each connection (default: the partner table).",
    )
    limits: LimitsConfig = Field(
        default_factory=lambda: LimitsConfig(), description="Session limits and timers (see `limits`)."
    )
    control_api: ControlApiConfig = Field(
        default_factory=lambda: ControlApiConfig(), description="The HTTP(S) control API (see `control_api`)."
    )
    events: EventsConfig = Field(
        default_factory=lambda: EventsConfig(),
        description="Event handlers and their worker pool (see `events`).",
    )
    log_format: Literal["text", "json"] = Field(default="text", description="Log line format.")

    @model_validator(mode="after")
    def _cross_checks(self) -> GatewayConfig:
        seen: dict[str, str] = {}
        for name, partner in self.partners.items():
            if partner.odette_id in seen:
                raise ValueError(
                    f"partners.{name}.odette_id: {partner.odette_id} is also used by partners.{seen[partner.odette_id]}"
                )
            if partner.odette_id == self.identity.odette_id:
                raise ValueError(f"partners.{name}.odette_id: equals identity.odette_id")
            seen[partner.odette_id] = name
            if partner.secure_auth and self.identity.auth is None:
                raise ValueError(f"partners.{name}.secure_auth needs identity.auth (our authentication key)")
            if partner.security.sign_outbound and self.identity.signing is None:
                raise ValueError(f"partners.{name}.security.sign_outbound needs identity.signing")
            if partner.security.require_encrypted and self.identity.decryption is None:
                raise ValueError(f"partners.{name}.security.require_encrypted needs identity.decryption")
        for index, listener in enumerate(self.listeners):
            if isinstance(listener, TlsListener) and listener.cert is None and self.identity.tls is None:
                raise ValueError(f"listeners.{index}: a tls listener needs cert or identity.tls")
        asks_for_certificates = any(
            isinstance(listener, TlsListener) and (listener.client_ca or self.identity.ca_certs)
            for listener in self.listeners
        )
        for name, partner in self.partners.items():
            if partner.tls_pinned and not asks_for_certificates:
                key = "tls_client_certificate" if partner.tls_client_certificate else "tls_client_fingerprint"
                raise ValueError(
                    f"partners.{name}.{key}: no tls listener asks for client certificates "
                    "(give one client_ca, or set identity.ca_certs)"
                )
        return self

    # Convenience lookups -----------------------------------------------------------------------

    def partner_by_id(self, odette_id: str) -> tuple[str, PartnerConfig] | None:
        """The ``(name, partner)`` whose Odette ID matches (upper-cased, right-trimmed), if any."""
        wanted = odette_id.rstrip().upper()
        for name, partner in self.partners.items():
            if partner.odette_id == wanted:
                return name, partner
        return None

    def find_partner(self, name_or_id: str) -> tuple[str, PartnerConfig]:
        """A partner by configuration name or Odette ID; ``KeyError`` names what was looked for."""
        if name_or_id in self.partners:
            return name_or_id, self.partners[name_or_id]
        found = self.partner_by_id(name_or_id)
        if found is None:
            raise KeyError(f"no partner named or with Odette ID {name_or_id!r}")
        return found

    def inbox_for(self, name: str) -> Path:
        """The inbox directory of partner ``name``."""
        partner = self.partners[name]
        return partner.inbox if partner.inbox is not None else self.state_dir / "inbox" / name

    def node_name(self) -> str:
        """The node id used for ledger claims (``node_id`` or ``<host>:<state_dir>``)."""
        if self.node_id:
            return self.node_id
        import socket

        return f"{socket.gethostname()}:{self.state_dir}"

    def ledger_sqlite_path(self) -> Path:
        """The SQLite ledger file used when neither ``conn_id`` nor ``uri`` is configured."""
        return self.ledger.sqlite_path or self.state_dir / "ledger.sqlite"


# --------------------------------------------------------------------------------------------------
# Loading


def _loc(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(str(item))
        elif item in ("tcp", "tls", "relay") and parts and parts[-1].isdigit():
            continue  # discriminated-union tag adds no information to the path
        elif item.startswith("function-") or item.startswith("json-or-python"):
            continue
        else:
            parts.append(item)
    return ".".join(parts)


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    out = []
    for err in exc.errors(include_url=False):
        message = err["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        path = _loc(tuple(err["loc"]))
        # cross-field checks already name their key
        if not path and re.match(r"^[a-z_]+(\.[\w-]+)+:", message):
            path, _, message = message.partition(": ")
        out.append((path, message))
    return out


def parse_config(
    data: dict[str, Any], *, base_dir: Path | None = None, source: str = "<dict>", check_files: bool = True
) -> GatewayConfig:
    """Validate an already-parsed mapping; relative paths are resolved against ``base_dir``."""
    try:
        return GatewayConfig.model_validate(
            data, context={"base_dir": base_dir or Path.cwd(), "check_files": check_files}
        )
    except ValidationError as exc:
        raise ConfigError(source, _problems(exc)) from None


def load_config(path: str | Path, *, check_files: bool = True) -> GatewayConfig:
    """Read and validate a TOML (``.toml``) or YAML (``.yaml``/``.yml``) configuration file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [("", f"cannot read the file: {exc.strerror or exc}")]) from None
    data: Any
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(str(path), [("", f"YAML syntax error: {exc}")]) from None
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), [("", f"TOML syntax error: {exc}")]) from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), [("", "the file must contain a table/mapping at the top level")])
    return parse_config(data, base_dir=path.resolve().parent, source=str(path), check_files=check_files)
