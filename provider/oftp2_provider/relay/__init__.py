"""Azure Relay Hybrid Connections: SAS tokens, listener, sender, azbridge-compatible TCP forwarding
and a loopback emulator.  Pure asyncio; never imports Airflow.
"""

from oftp2_provider.relay.address import HybridConnectionAddress
from oftp2_provider.relay.emulator import RelayEmulator
from oftp2_provider.relay.errors import (
    RelayAuthorizationError,
    RelayBodyTooLargeError,
    RelayConfigurationError,
    RelayConnectionClosed,
    RelayConnectionError,
    RelayEndpointNotFoundError,
    RelayError,
    RelayProtocolError,
    RelayRejectedError,
    RelayTimeoutError,
    RelayTokenError,
)
from oftp2_provider.relay.forward import (
    RelayForwardListener,
    RelayForwardSender,
    relay_forward_listener,
    relay_forward_sender,
)
from oftp2_provider.relay.listener import (
    HybridConnectionListener,
    RelayedConnectionRequest,
    RelayedHttpRequest,
    RelayEvent,
)
from oftp2_provider.relay.receiver import AzureRelayReceiver, RelayConnection
from oftp2_provider.relay.sas import RelayConnectionString, SasToken, SasTokenProvider
from oftp2_provider.relay.sender import HybridConnectionClient, RelayHttpResponse
from oftp2_provider.relay.websocket import RelayWebSocket

__all__ = [
    "AzureRelayReceiver",
    "HybridConnectionAddress",
    "HybridConnectionClient",
    "HybridConnectionListener",
    "RelayAuthorizationError",
    "RelayBodyTooLargeError",
    "RelayConfigurationError",
    "RelayConnection",
    "RelayConnectionClosed",
    "RelayConnectionError",
    "RelayConnectionString",
    "RelayEmulator",
    "RelayEndpointNotFoundError",
    "RelayError",
    "RelayEvent",
    "RelayForwardListener",
    "RelayForwardSender",
    "RelayHttpResponse",
    "RelayProtocolError",
    "RelayRejectedError",
    "RelayTimeoutError",
    "RelayTokenError",
    "RelayWebSocket",
    "RelayedConnectionRequest",
    "RelayedHttpRequest",
    "SasToken",
    "SasTokenProvider",
    "relay_forward_listener",
    "relay_forward_sender",
]
