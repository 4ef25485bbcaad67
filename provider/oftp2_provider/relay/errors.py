"""Typed errors of the Azure Relay client, listener, forwarder and emulator."""

from __future__ import annotations


class RelayError(Exception):
    """Base class of every Azure Relay error raised by this package."""


class RelayConfigurationError(RelayError):
    """A setting is missing or malformed (connection string, address, key, endpoint override)."""


class RelayTokenError(RelayError):
    """A SAS token is malformed, forged, expired or does not cover the resource."""


class RelayConnectionError(RelayError):
    """The relay (or emulator) could not be reached or refused the WebSocket/HTTP handshake.

    ``status`` is the HTTP status of the refused handshake (``None`` for network errors) and
    ``description`` the service's explanation, when it gave one.
    """

    def __init__(self, message: str, status: int | None = None, description: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.description = description


class RelayAuthorizationError(RelayConnectionError):
    """401/403: the token was refused — a configuration problem (key name, key, rights, audience)."""


class RelayEndpointNotFoundError(RelayConnectionError):
    """404: the Hybrid Connection does not exist, or (for senders) no listener is connected."""


class RelayRejectedError(RelayConnectionError):
    """The listener rejected the sender's WebSocket with ``status`` and ``description``."""


class RelayTimeoutError(RelayError, TimeoutError):
    """An operation on the relay did not complete in time."""


class RelayProtocolError(RelayError):
    """The peer broke the Hybrid Connections (or WebSocket/HTTP) protocol."""


class RelayConnectionClosed(RelayError):
    """The WebSocket was closed; ``code`` and ``reason`` come from the close frame (1006: none)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"WebSocket closed with code {code}" + (f" ({reason})" if reason else ""))
        self.code = code
        self.reason = reason


class RelayBodyTooLargeError(RelayError):
    """An HTTP body is larger than the configured limit."""
