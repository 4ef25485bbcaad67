"""``AzureRelayHook``: an Azure Relay Hybrid Connection from an ``azure_relay`` Airflow connection.

The hook only builds objects from :mod:`oftp2_provider.relay` (listener, sender, address, tokens);
the protocol lives there.  ``test_connection()`` really opens a listener control channel and closes
it, so a wrong key, missing Listen right or unknown Hybrid Connection shows up in the UI.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

from airflow.sdk import BaseHook

from oftp2_provider.connection import ConnectionConfigError
from oftp2_provider.relay import (
    HybridConnectionAddress,
    HybridConnectionClient,
    HybridConnectionListener,
    RelayAuthorizationError,
    RelayEndpointNotFoundError,
    RelayError,
    SasTokenProvider,
)
from oftp2_provider.relay_connection import AzureRelayConnectionConfig


class AzureRelayConfigError(ValueError):
    """The ``azure_relay`` connection is missing or invalid; the message names the field."""


class AzureRelayHook(BaseHook):
    """Listen on / send to the Hybrid Connection of an ``azure_relay`` connection.

    :param azure_relay_conn_id: the connection (host = namespace, login = SAS key name,
        password = SAS key, ``extra.hybrid_connection`` = path, ``extra.endpoint`` = override).
    :param hybrid_connection: use this Hybrid Connection instead of the connection's one.
    """

    conn_name_attr = "azure_relay_conn_id"
    default_conn_name = "azure_relay_default"
    conn_type = "azure_relay"
    hook_name = "Azure Relay"

    def __init__(
        self,
        azure_relay_conn_id: str = default_conn_name,
        hybrid_connection: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.azure_relay_conn_id = azure_relay_conn_id
        self.hybrid_connection = hybrid_connection
        self._config: AzureRelayConnectionConfig | None = None

    # ------------------------------------------------------------------ configuration

    def _validate(self, conn: Any) -> AzureRelayConnectionConfig:
        try:
            return AzureRelayConnectionConfig.from_connection(conn)
        except ConnectionConfigError as exc:
            raise AzureRelayConfigError(str(exc)) from None

    @property
    def config(self) -> AzureRelayConnectionConfig:
        """The validated connection (sync lookup; raises :class:`AzureRelayConfigError`)."""
        if self._config is None:
            self._config = self._validate(self.get_connection(self.azure_relay_conn_id))
        return self._config

    async def aget_config(self) -> AzureRelayConnectionConfig:
        """The validated connection, looked up without blocking the event loop (triggerer)."""
        if self._config is None:
            conn = await self.aget_connection(self.azure_relay_conn_id)
            self._config = self._validate(conn)
        return self._config

    def address(self) -> HybridConnectionAddress:
        """The Hybrid Connection address (namespace, path, endpoint override)."""
        return self.config.address(self.hybrid_connection)

    def token_provider(self) -> SasTokenProvider:
        """SAS tokens signed with the connection's key name and key."""
        return self.config.token_provider()

    # ------------------------------------------------------------------ relay objects

    @staticmethod
    def make_listener(
        config: AzureRelayConnectionConfig, hybrid_connection: str | None = None, **kwargs: Any
    ) -> HybridConnectionListener:
        """A (not yet opened) listener for ``config``; ``kwargs`` go to :class:`HybridConnectionListener`."""
        kwargs.setdefault("connect_timeout", config.extras.connect_timeout)
        kwargs.setdefault("keepalive_interval", config.extras.keepalive_interval)
        return HybridConnectionListener(
            config.address(hybrid_connection),
            config.token_provider(),
            ssl=config.ssl_context(),
            **kwargs,
        )

    def get_listener(self, **kwargs: Any) -> HybridConnectionListener:
        """A listener (``async with hook.get_listener() as listener: async for event in listener``)."""
        return self.make_listener(self.config, self.hybrid_connection, **kwargs)

    async def aget_listener(self, **kwargs: Any) -> HybridConnectionListener:
        """Like :meth:`get_listener`, with a non-blocking connection lookup."""
        return self.make_listener(await self.aget_config(), self.hybrid_connection, **kwargs)

    def get_sender(self) -> HybridConnectionClient:
        """A sender (``await hook.get_sender().request("POST", body=...)`` or ``.connect()``)."""
        c = self.config
        return HybridConnectionClient(
            c.address(self.hybrid_connection), c.token_provider(), ssl=c.ssl_context()
        )

    def get_conn(self) -> HybridConnectionClient:
        """Airflow's generic accessor: the sender."""
        return self.get_sender()

    # ------------------------------------------------------------------ connection test

    async def atest_connection(self) -> tuple[bool, str]:
        """Open a listener control channel and close it; ``(ok, message)`` naming the problem."""
        try:
            config = await self.aget_config()
            listener = self.make_listener(config, self.hybrid_connection, reconnect_delays=(1.0,))
            path = config.address(self.hybrid_connection).path
        except (AzureRelayConfigError, RelayError) as exc:
            return False, str(exc)
        except Exception as exc:  # connection lookup: not defined, secrets backend failure
            return False, f"connection {self.azure_relay_conn_id!r}: {exc}"
        try:
            await listener.open()
        except RelayAuthorizationError as exc:
            return False, f"the relay refused the SAS token: {exc}"
        except RelayEndpointNotFoundError as exc:
            return False, f"Hybrid Connection {path!r} not found: {exc}"
        except RelayError as exc:
            return False, f"cannot reach the relay: {exc}"
        await listener.close()
        return True, f"listener control channel on {config.namespace}/{path} opened and closed"

    def test_connection(self) -> tuple[bool, str]:
        """Sync wrapper of :meth:`atest_connection` (safe to call from a thread with a running loop)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.atest_connection())
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, self.atest_connection()).result()
