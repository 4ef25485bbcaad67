"""The ``oftp2`` Airflow connection: one pydantic model validates it and generates its form.

The standard connection fields carry the session identity of *our* side:

* ``host`` / ``port`` — the partner's OFTP listener (port 3305, or 6619 when ``tls`` is on);
* ``login`` — our Odette ID (SSIDCODE), ``password`` — our session password (SSIDPSWD).

Everything else lives in the connection's ``extra`` JSON and is described by
:class:`OFTP2ConnectionExtras`.  :func:`conn_fields` turns that model into the ``conn-fields`` JSON
schemas of ``get_provider_info()``, so the Airflow UI form and the validation can never drift apart.
Nothing in this module imports Airflow; :meth:`OFTP2ConnectionConfig.from_connection` accepts any
object with Airflow's connection attributes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PLAIN_PORT = 3305
TLS_PORT = 6619

_PRINTABLE = frozenset(chr(c) for c in range(0x20, 0x7F))


class ConnectionConfigError(ValueError):
    """The ``oftp2`` connection is invalid; the message names every offending field."""

    def __init__(self, conn_id: str, problems: list[tuple[str, str]]) -> None:
        self.conn_id = conn_id
        self.problems = problems
        detail = "; ".join(f"{name}: {msg}" for name, msg in problems)
        super().__init__(f"connection {conn_id!r} is invalid: {detail}")


def _odette_text(value: str | None, width: int, what: str) -> str | None:
    if value is None:
        return None
    if len(value) > width:
        raise ValueError(f"{what} is longer than {width} characters")
    bad = next((c for c in value if c not in _PRINTABLE), None)
    if bad is not None:
        raise ValueError(f"{what} contains {bad!r}; only printable 7-bit ASCII is allowed")
    return value


class OFTP2ConnectionExtras(BaseModel):
    """The ``extra`` JSON of an ``oftp2`` connection (every key optional except ``partner_id``).

    Secret references (``tls_ca``, ``tls_cert``, ``tls_key``, ``signing_cert``, ``signing_key``,
    ``partner_cert``) accept ``file:/path``, ``env:NAME`` (an environment variable holding the PEM),
    ``var:NAME`` (an Airflow Variable holding the PEM), an inline PEM block, or a bare file path.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    partner_id: str = Field(
        title="Partner Odette ID",
        description="The partner's Odette ID (SSIDCODE it must present; SFID destination of our files).",
        min_length=1,
    )
    partner_password: str | None = Field(
        default=None,
        repr=False,
        title="Partner password",
        description="The session password the partner must present (SSIDPSWD, up to 8 characters). "
        "Empty: not checked.",
        json_schema_extra={"format": "password"},
    )
    tls: bool = Field(
        default=False,
        title="Use TLS",
        description="Connect with TLS (RFC 5024 port 6619). The default port follows this switch.",
    )
    tls_ca: str | None = Field(
        default=None,
        title="TLS CA bundle",
        description="Secret reference to the CA certificate(s) that sign the partner's TLS certificate. "
        "Empty: the system trust store.",
    )
    tls_cert: str | None = Field(
        default=None,
        title="TLS client certificate",
        description="Secret reference to our TLS client certificate (PEM), when the partner asks for one.",
    )
    tls_key: str | None = Field(
        default=None,
        repr=False,
        title="TLS client key",
        description="Secret reference to the private key of the TLS client certificate (PEM).",
    )
    tls_key_password: str | None = Field(
        default=None,
        repr=False,
        title="TLS client key password",
        description="Password of the encrypted TLS client key.",
        json_schema_extra={"format": "password"},
    )
    tls_check_hostname: bool = Field(
        default=True,
        title="Check TLS host name",
        description="Verify that the partner's TLS certificate names the host we connect to.",
    )
    level: Literal[5, 4, 2, 1] = Field(
        default=5,
        title="Protocol level",
        description="SSIDLEV proposed: 5 = OFTP 2.0, 4 = OFTP 1.4, 2 = OFTP 1.3, 1 = OFTP 1.2.",
    )
    sdeb: int = Field(
        default=4096,
        ge=128,
        le=99999,
        title="Exchange buffer size",
        description="SSIDSDEB: largest exchange buffer proposed, in octets (128 to 99999).",
    )
    credit: int = Field(
        default=64,
        ge=1,
        le=999,
        title="Credit",
        description="SSIDCRED: data exchange buffers sent before waiting for a CDT (1 to 999).",
    )
    compression: bool = Field(
        default=False,
        title="Buffer compression",
        description="SSIDCMPR: propose run-length compression of the exchange buffers.",
    )
    restart: bool = Field(
        default=True,
        title="Restart",
        description="SSIDREST: propose restarting interrupted transfers where they stopped.",
    )
    secure_auth: bool = Field(
        default=False,
        title="Secure authentication",
        description="SSIDAUTH: challenge-response authentication (level 5); our signing key answers "
        "the partner's challenge, ours is encrypted for partner_cert.",
    )
    cipher_suite: Literal[1, 2, 3, 4, 5, 6] = Field(
        default=4,
        title="Cipher suite",
        description="SFIDCIPH for signed/encrypted files and signed receipts: 1 3DES/SHA-1, "
        "2 AES-256/SHA-1, 3 3DES/SHA-256, 4 AES-256/SHA-256, 5 3DES/SHA-512, 6 AES-256/SHA-512.",
    )
    sign_files: bool = Field(default=False, title="Sign files", description="Default: CMS-sign sent files.")
    encrypt_files: bool = Field(
        default=False, title="Encrypt files", description="Default: CMS-encrypt sent files for the partner."
    )
    compress_files: bool = Field(
        default=False, title="Compress files", description="Default: ZLIB-compress sent files (CMS)."
    )
    signed_eerp: bool = Field(
        default=False,
        title="Request signed EERP",
        description="Default: ask the partner to sign the end-to-end receipt (SFIDSIGN=Y).",
    )
    signing_cert: str | None = Field(
        default=None,
        title="Our signing certificate",
        description="Secret reference to our file-signing / receipt-signing certificate.",
    )
    signing_key: str | None = Field(
        default=None,
        repr=False,
        title="Our signing key",
        description="Secret reference to the private key of our signing certificate.",
    )
    partner_cert: str | None = Field(
        default=None,
        title="Partner certificate",
        description="Secret reference to the partner's certificate: encrypts files for it, verifies "
        "its signatures and signed receipts.",
    )
    ledger_conn_id: str | None = Field(
        default=None,
        title="Ledger connection id",
        description="Airflow SQL connection (sqlite, postgres) holding the transfer ledger. "
        "Empty: the embedded SQLite ledger at ledger_path.",
    )
    ledger_path: str | None = Field(
        default=None,
        title="Embedded ledger path",
        description="SQLite file of the embedded ledger. Empty: $AIRFLOW_HOME/oftp2/ledger.sqlite.",
    )
    inbox: str | None = Field(
        default=None,
        title="Inbox directory",
        description="Where files received by a poll are stored. Empty: $AIRFLOW_HOME/oftp2/inbox/<partner>.",
    )
    gateway_api_url: str | None = Field(
        default=None,
        title="Gateway API URL",
        description="Control API of the oftp2 gateway; receipt release goes through it when set.",
    )
    gateway_api_user: str | None = Field(
        default=None,
        title="Gateway API user",
        description="HTTP Basic user name for the gateway control API.",
    )
    gateway_api_password: str | None = Field(
        default=None,
        repr=False,
        title="Gateway API password",
        description="HTTP Basic password for the gateway control API.",
        json_schema_extra={"format": "password"},
    )
    connect_timeout: float = Field(
        default=30.0, gt=0, title="Connect timeout", description="Seconds to open the TCP/TLS connection."
    )
    response_timeout: float = Field(
        default=120.0,
        gt=0,
        title="Response timeout",
        description="Seconds to wait for the partner's next command before ending with ESID 09.",
    )

    @field_validator("partner_id")
    @classmethod
    def _check_partner_id(cls, value: str) -> str:
        return _odette_text(value, 25, "Odette ID") or value

    @field_validator("partner_password")
    @classmethod
    def _check_partner_password(cls, value: str | None) -> str | None:
        return _odette_text(value, 8, "password") or None

    @field_validator("gateway_api_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value or None

    @model_validator(mode="after")
    def _check_combinations(self) -> OFTP2ConnectionExtras:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        if self.level != 5 and (
            self.sign_files or self.encrypt_files or self.compress_files or self.signed_eerp
        ):
            raise ValueError("file security (sign/encrypt/compress files, signed EERP) needs level 5")
        if self.level != 5 and self.secure_auth:
            raise ValueError("secure_auth needs level 5")
        return self


class OFTP2ConnectionConfig(BaseModel):
    """A validated ``oftp2`` connection: standard fields plus :class:`OFTP2ConnectionExtras`."""

    model_config = ConfigDict(frozen=True)

    conn_id: str
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    odette_id: str = Field(min_length=1)
    password: str = Field(default="", repr=False)
    extras: OFTP2ConnectionExtras

    @field_validator("odette_id")
    @classmethod
    def _check_odette_id(cls, value: str) -> str:
        return _odette_text(value, 25, "Odette ID") or value

    @field_validator("password")
    @classmethod
    def _check_password(cls, value: str) -> str:
        return _odette_text(value, 8, "password") or ""

    @property
    def ledger_path(self) -> Path:
        """The embedded SQLite ledger file (used when no ``ledger_conn_id`` is set)."""
        if self.extras.ledger_path:
            return Path(self.extras.ledger_path)
        return default_home() / "oftp2" / "ledger.sqlite"

    @property
    def inbox(self) -> Path:
        """Directory where polled files land."""
        if self.extras.inbox:
            return Path(self.extras.inbox)
        return default_home() / "oftp2" / "inbox" / self.extras.partner_id

    @classmethod
    def from_values(
        cls,
        conn_id: str,
        *,
        host: str | None,
        port: int | None,
        login: str | None,
        password: str | None,
        extra: dict[str, Any] | str | None,
    ) -> OFTP2ConnectionConfig:
        """Validate raw connection values; raises :class:`ConnectionConfigError` naming each bad field."""
        import json

        problems: list[tuple[str, str]] = []
        if isinstance(extra, str):
            try:
                extra = json.loads(extra) if extra.strip() else {}
            except json.JSONDecodeError as exc:
                raise ConnectionConfigError(conn_id, [("extra", f"not valid JSON ({exc.msg})")]) from None
        raw_extra = dict(extra or {})
        # Airflow UI forms store custom fields either bare or as extra__oftp2__<name>.
        for key in list(raw_extra):
            if key.startswith("extra__oftp2__"):
                raw_extra.setdefault(key.removeprefix("extra__oftp2__"), raw_extra.pop(key))
        # Empty form fields arrive as "" or None: treat them as "not set".
        raw_extra = {k: v for k, v in raw_extra.items() if v not in ("", None)}
        extras: OFTP2ConnectionExtras | None = None
        try:
            extras = OFTP2ConnectionExtras.model_validate(raw_extra)
        except ValidationError as exc:
            problems.extend(_problems(exc, prefix="extra."))
        tls = bool(raw_extra.get("tls")) if extras is None else extras.tls
        values = {
            "conn_id": conn_id,
            "host": host or "",
            "port": port or (TLS_PORT if tls else PLAIN_PORT),
            "odette_id": login or "",
            "password": password or "",
        }
        if extras is None:
            _check_standard(values, problems)
            raise ConnectionConfigError(conn_id, problems)
        try:
            return cls.model_validate({**values, "extras": extras})
        except ValidationError as exc:
            names = {"odette_id": "login", "host": "host", "port": "port", "password": "password"}
            problems.extend(
                (names.get(str(err["loc"][0]), str(err["loc"][0])), _message(err)) for err in exc.errors()
            )
            raise ConnectionConfigError(conn_id, problems) from None

    @classmethod
    def from_connection(cls, conn: Any) -> OFTP2ConnectionConfig:
        """Build from an Airflow ``Connection`` (or anything with the same attributes)."""
        extra = conn.extra_dejson if hasattr(conn, "extra_dejson") else getattr(conn, "extra", None)
        return cls.from_values(
            conn.conn_id,
            host=conn.host,
            port=conn.port,
            login=conn.login,
            password=conn.password,
            extra=extra,
        )


def _message(err: Any) -> str:
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def _problems(exc: ValidationError, prefix: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        out.append((prefix + loc if loc else prefix.rstrip("."), _message(err)))
    return out


def _check_standard(values: dict[str, Any], problems: list[tuple[str, str]]) -> None:
    if not values["host"]:
        problems.append(("host", "must not be empty"))
    if not values["odette_id"]:
        problems.append(("login", "our Odette ID must not be empty"))
    for name, key, width, what in (
        ("login", "odette_id", 25, "Odette ID"),
        ("password", "password", 8, "password"),
    ):
        try:
            _odette_text(values[key], width, what)
        except ValueError as exc:
            problems.append((name, str(exc)))


def default_home() -> Path:
    """``$AIRFLOW_HOME`` (or ``~/airflow``), read without importing Airflow."""
    return Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow")


def _field_schema(name: str, prop: dict[str, Any], required: bool) -> dict[str, Any]:
    schema: dict[str, Any] = {}
    variants = prop.get("anyOf", [prop])
    types: list[str] = []
    enum: list[Any] = []
    for variant in variants:
        if "const" in variant:
            enum.append(variant["const"])
            types.append(variant.get("type", "string"))
        elif "enum" in variant:
            enum.extend(variant["enum"])
            types.append(variant.get("type", "string"))
        elif "type" in variant:
            types.append(variant["type"])
    unique_types = [t for t in dict.fromkeys(types) if t != "null"]
    if not required:
        unique_types.append("null")
    schema["type"] = unique_types[0] if len(unique_types) == 1 else unique_types
    if "default" in prop and prop["default"] is not None:
        schema["default"] = prop["default"]
    if enum:
        schema["enum"] = enum
    for key in ("minimum", "maximum", "exclusiveMinimum", "minLength", "format"):
        if key in prop:
            schema[key] = prop[key]
    return schema


def model_conn_fields(model: type[BaseModel]) -> dict[str, dict[str, Any]]:
    """Airflow ``conn-fields`` (label, JSON schema, description per field) generated from ``model``."""
    model_schema = model.model_json_schema()
    required = set(model_schema.get("required", []))
    return {
        name: {
            "label": prop.get("title", name),
            "schema": _field_schema(name, prop, name in required),
            "description": prop.get("description", ""),
        }
        for name, prop in model_schema["properties"].items()
    }


def conn_fields() -> dict[str, dict[str, Any]]:
    """The ``conn-fields`` of the ``oftp2`` connection type, generated from :class:`OFTP2ConnectionExtras`."""
    return model_conn_fields(OFTP2ConnectionExtras)


def ui_field_behaviour() -> dict[str, Any]:
    """Hidden fields, relabelling and placeholders of the ``oftp2`` connection form."""
    return {
        "hidden-fields": ["schema", "extra"],
        "relabeling": {"login": "Our Odette ID", "password": "Our session password"},
        "placeholders": {
            "host": "oftp.partner.example",
            "port": f"{PLAIN_PORT} (TCP) or {TLS_PORT} (TLS)",
            "login": "O0013000000OURCOMPANY",
            "password": "up to 8 characters",
            "partner_id": "O0013000000PARTNER",
            "tls_ca": "file:/etc/oftp2/partner-ca.pem",
        },
    }


def render_reference() -> str:
    """The Markdown connection reference (``docs/airflow.md`` embeds it between markers)."""
    lines = [
        "| Field | Type | Default | Description |",
        "|---|---|---|---|",
        "| `host` | string | — | Partner host name or address. |",
        f"| `port` | integer | {PLAIN_PORT}, or {TLS_PORT} with `tls` | Partner OFTP port. |",
        "| `login` | string | — | Our Odette ID (SSIDCODE), up to 25 characters. |",
        "| `password` | string | empty | Our session password (SSIDPSWD), up to 8 characters. |",
    ]
    model_schema = OFTP2ConnectionExtras.model_json_schema()
    required = set(model_schema.get("required", []))
    for name, field in conn_fields().items():
        schema = field["schema"]
        typ = schema["type"] if isinstance(schema["type"], str) else schema["type"][0]
        if "enum" in schema:
            typ += " (" + ", ".join(str(v) for v in schema["enum"]) + ")"
        if name in required:
            default = "required"
        elif "default" in schema:
            default = f"`{schema['default']!r}`".replace("True", "true").replace("False", "false")
        else:
            default = "empty"
        desc = str(field["description"]).replace("|", "\\|")
        lines.append(f"| `extra.{name}` | {typ} | {default} | {desc} |")
    return "\n".join(lines) + "\n"


def resolve_secret(ref: str) -> bytes:
    """Resolve a secret reference (``file:``, ``env:``, ``var:``, inline PEM or a path) to its bytes.

    Raises ``ValueError`` naming the reference when it cannot be resolved; the secret itself is never
    put into the message.
    """
    if ref.lstrip().startswith("-----BEGIN"):
        return ref.encode("ascii")
    if ref.startswith("env:"):
        name = ref[4:]
        value = os.environ.get(name)
        if value is None:
            raise ValueError(f"secret reference {ref!r}: environment variable {name} is not set")
        return value.encode("utf-8")
    if ref.startswith("var:"):
        from airflow.sdk import Variable

        try:
            return str(Variable.get(ref[4:])).encode("utf-8")
        except Exception as exc:  # Variable raises KeyError or an SDK error when missing
            raise ValueError(f"secret reference {ref!r}: Airflow Variable not found ({exc})") from None
    path = Path(ref.removeprefix("file:")).expanduser()
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"secret reference {ref!r}: cannot read {path} ({exc.strerror})") from None


REFERENCE_BEGIN = "<!-- BEGIN oftp2-connection-reference (generated: python -m oftp2_provider.connection) -->"
REFERENCE_END = "<!-- END oftp2-connection-reference -->"


def embed_reference(page: str) -> str:
    """Return ``page`` with the generated connection reference placed between its markers."""
    head, sep, rest = page.partition(REFERENCE_BEGIN)
    _, sep2, tail = rest.partition(REFERENCE_END)
    if not sep or not sep2:
        raise ValueError("the page has no connection-reference markers")
    return f"{head}{REFERENCE_BEGIN}\n{render_reference()}{REFERENCE_END}{tail}"


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    import sys

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/airflow.md")
    target.write_text(embed_reference(target.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"updated {target}")
