"""Where a Hybrid Connection lives, and the URLs of its listen/connect/HTTP endpoints."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from oftp2_provider.relay.errors import RelayConfigurationError
from oftp2_provider.relay.sas import resource_uri


@dataclass(frozen=True)
class HybridConnectionAddress:
    """A Hybrid Connection: ``namespace`` (FQDN, e.g. ``myns.servicebus.windows.net``) and ``path``.

    ``endpoint`` overrides where the WebSockets and HTTP requests go (e.g. ``ws://127.0.0.1:5000`` for
    the loopback emulator); the namespace still names the token audience.  URLs handed out by the
    service (``accept``/``request`` addresses) that name the namespace host are rewritten to it too.
    """

    namespace: str
    path: str
    endpoint: str | None = None

    def __post_init__(self) -> None:
        namespace = self.namespace.split("://", 1)[-1].strip("/")
        object.__setattr__(self, "namespace", namespace)
        object.__setattr__(self, "path", self.path.strip("/"))
        if not namespace:
            raise RelayConfigurationError("Hybrid Connection address needs a namespace host")
        if not self.path:
            raise RelayConfigurationError("Hybrid Connection address needs a path (entity name)")
        if self.endpoint is not None:
            parts = urlsplit(self.endpoint)
            if parts.scheme not in ("ws", "wss") or not parts.hostname:
                raise RelayConfigurationError(
                    f"endpoint override {self.endpoint!r} must look like ws://host:port or wss://host:port"
                )

    @property
    def resource(self) -> str:
        """The SAS audience: ``http://{namespace}/{path}``."""
        return resource_uri(self.namespace, self.path)

    @property
    def ws_base(self) -> str:
        """``wss://{namespace}`` or the endpoint override (no trailing slash)."""
        return (self.endpoint or f"wss://{self.namespace}").rstrip("/")

    @property
    def http_base(self) -> str:
        """``https://{namespace}`` or the override with ``ws``→``http``, ``wss``→``https``."""
        base = self.ws_base
        return "http" + base[2:] if base.startswith("ws") else base

    def _entity(self, suffix: str) -> str:
        path = quote(self.path, safe="/")
        if suffix:
            path += "/" + quote(suffix.strip("/"), safe="/")
        return path

    def listen_url(self, tracking_id: str) -> str:
        """The control-channel URL (``sb-hc-action=listen``)."""
        query = urlencode({"sb-hc-action": "listen", "sb-hc-id": tracking_id})
        return f"{self.ws_base}/$hc/{self._entity('')}?{query}"

    def connect_url(self, suffix: str = "", query: Mapping[str, str] | None = None) -> str:
        """A sender's WebSocket URL (``sb-hc-action=connect``) with optional suffix and query."""
        params = dict(query or {})
        params["sb-hc-action"] = "connect"
        return f"{self.ws_base}/$hc/{self._entity(suffix)}?{urlencode(params)}"

    def http_url(self, suffix: str = "", query: Mapping[str, str] | None = None) -> str:
        """An HTTP sender's URL: ``https://{namespace}/{path}[/{suffix}][?query]`` (no ``$hc``)."""
        url = f"{self.http_base}/{self._entity(suffix)}"
        return f"{url}?{urlencode(dict(query))}" if query else url

    def rewrite(self, url: str) -> str:
        """Apply the endpoint override to a service-issued URL that names the namespace host."""
        if self.endpoint is None:
            return url
        parts = urlsplit(url)
        if (parts.hostname or "").lower() != self.namespace.lower():
            return url
        override = urlsplit(self.endpoint)
        return urlunsplit((override.scheme, override.netloc, parts.path, parts.query, ""))
