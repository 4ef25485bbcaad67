"""The ``azure_relay`` Airflow connection: one pydantic model validates it and generates its form.

Standard connection fields:

* ``host`` — the Relay namespace (``myns.servicebus.windows.net``; ``sb://…/`` is accepted too);
* ``login`` — the SAS key (policy) name, ``password`` — the SAS key as shown in the portal.

Everything else lives in ``extra`` and is described by :class:`AzureRelayConnectionExtras`; the
``conn-fields`` of ``get_provider_info()`` are generated from it.  Nothing here imports Airflow:
:meth:`AzureRelayConnectionConfig.from_connection` accepts any object with a connection's attributes.
"""

from __future__ import annotations

import json
import ssl
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from oftp2_provider.connection import (
    ConnectionConfigError,
    _message,
    _problems,
    model_conn_fields,
    resolve_secret,
)

if TYPE_CHECKING:  # imported lazily: get_provider_info() loads this module in every Airflow process
    from oftp2_provider.relay import HybridConnectionAddress, SasTokenProvider

PREFIX = "extra__azure_relay__"


class AzureRelayConnectionExtras(BaseModel):
    """The ``extra`` JSON of an ``azure_relay`` connection (only ``hybrid_connection`` is required)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hybrid_connection: str = Field(
        title="Hybrid Connection",
        description="Name (path) of the Hybrid Connection inside the namespace, e.g. 'oftp-webhooks'.",
        min_length=1,
    )
    endpoint: str | None = Field(
        default=None,
        title="Endpoint override",
        description="Where the WebSockets really go, e.g. ws://127.0.0.1:9351 for the loopback emulator. "
        "Empty: wss://<namespace>.",
    )
    tls_ca: str | None = Field(
        default=None,
        title="TLS CA bundle",
        description="Secret reference (file:, env:, var:, inline PEM) to a CA for a wss:// endpoint override "
        "with a private certificate. Empty: the system trust store.",
    )
    token_ttl: int = Field(
        default=3600,
        ge=60,
        le=7 * 24 * 3600,
        title="Token lifetime",
        description="Seconds each SAS token is valid; the listener renews it before expiry.",
    )
    connect_timeout: float = Field(
        default=30.0, gt=0, title="Connect timeout", description="Seconds to open a relay WebSocket."
    )
    keepalive_interval: float = Field(
        default=30.0,
        gt=0,
        title="Keep-alive interval",
        description="Seconds between two pings on the listener's control channel.",
    )

    @field_validator("hybrid_connection")
    @classmethod
    def _check_path(cls, value: str) -> str:
        path = value.strip().strip("/")
        if not path:
            raise ValueError("must name the Hybrid Connection")
        if any(c.isspace() or c in "?#" for c in path):
            raise ValueError(f"{value!r} is not a valid Hybrid Connection name (no spaces, '?' or '#')")
        return path

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError("must look like ws://host:port or wss://host:port")
        return value.rstrip("/")


class AzureRelayConnectionConfig(BaseModel):
    """A validated ``azure_relay`` connection: namespace, SAS key name and key, plus the extras."""

    model_config = ConfigDict(frozen=True)

    conn_id: str
    namespace: str = Field(min_length=1)
    key_name: str = Field(min_length=1)
    key: str = Field(min_length=1, repr=False)
    extras: AzureRelayConnectionExtras

    @field_validator("namespace")
    @classmethod
    def _check_namespace(cls, value: str) -> str:
        host = urlsplit(value if "://" in value else "sb://" + value).hostname or ""
        if not host or any(c.isspace() for c in value.strip()):
            raise ValueError(f"{value!r} is not a namespace host name")
        return host

    def address(self, hybrid_connection: str | None = None) -> HybridConnectionAddress:
        """The Hybrid Connection address (``hybrid_connection`` overrides the connection's path)."""
        from oftp2_provider.relay import HybridConnectionAddress

        return HybridConnectionAddress(
            self.namespace, hybrid_connection or self.extras.hybrid_connection, self.extras.endpoint
        )

    def token_provider(self) -> SasTokenProvider:
        """A :class:`~oftp2_provider.relay.SasTokenProvider` signing with the connection's key."""
        from oftp2_provider.relay import SasTokenProvider

        return SasTokenProvider(self.key_name, self.key, ttl=self.extras.token_ttl)

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for a ``wss://`` endpoint override with a private CA (else ``None``)."""
        if not self.extras.tls_ca:
            return None
        try:
            pem = resolve_secret(self.extras.tls_ca).decode("ascii")
            return ssl.create_default_context(cadata=pem)
        except (ValueError, ssl.SSLError, UnicodeDecodeError) as exc:
            raise ConnectionConfigError(self.conn_id, [("extra.tls_ca", str(exc))]) from None

    @classmethod
    def from_values(
        cls,
        conn_id: str,
        *,
        host: str | None,
        login: str | None,
        password: str | None,
        extra: dict[str, Any] | str | None,
    ) -> AzureRelayConnectionConfig:
        """Validate raw values; raises :class:`~oftp2_provider.connection.ConnectionConfigError` naming
        every bad field (``host``, ``login``, ``password``, ``extra.<name>``).  The key is never echoed."""
        problems: list[tuple[str, str]] = []
        if isinstance(extra, str):
            try:
                extra = json.loads(extra) if extra.strip() else {}
            except json.JSONDecodeError as exc:
                raise ConnectionConfigError(conn_id, [("extra", f"not valid JSON ({exc.msg})")]) from None
        if not isinstance(extra, dict | None):
            raise ConnectionConfigError(conn_id, [("extra", "must be a JSON object")])
        raw = dict(extra or {})
        for name in list(raw):
            if name.startswith(PREFIX):
                raw.setdefault(name.removeprefix(PREFIX), raw.pop(name))
        raw = {k: v for k, v in raw.items() if v not in ("", None)}
        extras: AzureRelayConnectionExtras | None = None
        try:
            extras = AzureRelayConnectionExtras.model_validate(raw)
        except ValidationError as exc:
            problems.extend(_problems(exc, "extra."))
        names = {"namespace": "host", "key_name": "login", "key": "password"}
        values = {"namespace": host or "", "key_name": login or "", "key": password or ""}
        for field, value in values.items():
            if not value:
                what = {
                    "namespace": "the Relay namespace",
                    "key_name": "the SAS key name",
                    "key": "the SAS key",
                }
                problems.append((names[field], f"must not be empty ({what[field]})"))
        if problems or extras is None:
            raise ConnectionConfigError(conn_id, problems)
        try:
            return cls.model_validate({"conn_id": conn_id, **values, "extras": extras})
        except ValidationError as exc:
            bad = [(names.get(str(err["loc"][0]), str(err["loc"][0])), _message(err)) for err in exc.errors()]
            raise ConnectionConfigError(conn_id, bad) from None

    @classmethod
    def from_connection(cls, conn: Any) -> AzureRelayConnectionConfig:
        """Build from an Airflow ``Connection`` (or anything with the same attributes)."""
        extra = conn.extra_dejson if hasattr(conn, "extra_dejson") else getattr(conn, "extra", None)
        return cls.from_values(
            conn.conn_id, host=conn.host, login=conn.login, password=conn.password, extra=extra
        )


def conn_fields() -> dict[str, dict[str, Any]]:
    """The ``conn-fields`` of the ``azure_relay`` connection type, generated from the extras model."""
    return model_conn_fields(AzureRelayConnectionExtras)


def ui_field_behaviour() -> dict[str, Any]:
    """Hidden fields, relabelling and placeholders of the ``azure_relay`` connection form."""
    return {
        "hidden-fields": ["schema", "port", "extra"],
        "relabeling": {"host": "Relay namespace", "login": "SAS key name", "password": "SAS key"},
        "placeholders": {
            "host": "myns.servicebus.windows.net",
            "login": "RootManageSharedAccessKey",
            "hybrid_connection": "oftp-webhooks",
            "endpoint": "ws://127.0.0.1:9351 (emulator only)",
        },
    }
