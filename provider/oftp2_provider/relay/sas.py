"""Shared Access Signature (SAS) tokens for Azure Relay: create, parse, validate, renew.

Token format::

    SharedAccessSignature sr={url-encoded resource}&sig={url-encoded base64 HMAC}&se={unix expiry}&skn={key name}

The signature is ``HMAC-SHA256(key=UTF-8 bytes of the key string, msg=sr_as_sent + "\\n" + se)``; the
key is used as shown in the portal, not base64-decoded.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

from oftp2_provider.relay.errors import RelayConfigurationError, RelayTokenError

PREFIX = "SharedAccessSignature "
DEFAULT_TTL = 3600


def _signature(key: str, encoded_resource: str, expiry: str) -> str:
    digest = hmac.new(key.encode("utf-8"), f"{encoded_resource}\n{expiry}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def resource_uri(namespace: str, path: str = "") -> str:
    """The audience of a token: ``http://{namespace}/{path}`` (scheme forced to http, no query)."""
    host = namespace.split("://", 1)[-1].strip("/")
    path = path.strip("/")
    return f"http://{host}/{path}" if path else f"http://{host}/"


@dataclass(frozen=True)
class SasToken:
    """A parsed SAS token.  ``raw`` is the exact text sent on the wire."""

    raw: str = field(repr=False)  # contains the signature
    resource: str
    encoded_resource: str
    signature: str = field(repr=False)
    expiry: int
    key_name: str

    @classmethod
    def create(cls, resource: str, key_name: str, key: str, ttl: float = DEFAULT_TTL) -> SasToken:
        """Sign a new token for ``resource`` (see :func:`resource_uri`) valid for ``ttl`` seconds."""
        if not key_name or not key:
            raise RelayConfigurationError("a SAS token needs a key name and a key")
        if ttl <= 0:
            raise RelayConfigurationError(f"SAS token TTL must be positive, got {ttl}")
        encoded = quote(resource, safe="")
        expiry = str(int(time.time() + ttl))
        sig = _signature(key, encoded, expiry)
        raw = f"{PREFIX}sr={encoded}&sig={quote(sig, safe='')}&se={expiry}&skn={quote(key_name, safe='')}"
        return cls(raw, resource, encoded, sig, int(expiry), key_name)

    @classmethod
    def parse(cls, text: str) -> SasToken:
        """Parse a token; raise :class:`RelayTokenError` naming the missing or malformed field."""
        if not text.startswith(PREFIX):
            raise RelayTokenError("SAS token must start with 'SharedAccessSignature '")
        fields: dict[str, str] = {}
        for pair in text[len(PREFIX) :].strip().split("&"):
            name, sep, value = pair.partition("=")
            if not sep:
                raise RelayTokenError(f"SAS token field {name[:20]!r} has no value")
            fields[name] = value
        for required in ("sr", "sig", "se", "skn"):
            if not fields.get(required):
                raise RelayTokenError(f"SAS token lacks the {required!r} field")
        if not fields["se"].isdigit():
            raise RelayTokenError(f"SAS token expiry 'se' is not a unix time: {fields['se'][:20]!r}")
        return cls(
            raw=text,
            resource=unquote(fields["sr"]),
            encoded_resource=fields["sr"],
            signature=unquote(fields["sig"]),
            expiry=int(fields["se"]),
            key_name=unquote(fields["skn"]),
        )

    def remaining(self, now: float | None = None) -> float:
        """Seconds until expiry (negative once expired)."""
        return self.expiry - (time.time() if now is None else now)

    def is_expired(self, now: float | None = None) -> bool:
        """True once the expiry time has passed."""
        return self.remaining(now) <= 0

    def verify_signature(self, key: str) -> bool:
        """True when the signature was made with ``key`` (constant-time comparison)."""
        expected = _signature(key, self.encoded_resource, str(self.expiry))
        return hmac.compare_digest(expected, self.signature)

    def covers(self, host: str, path: str) -> bool:
        """True when the audience is ``host`` (any scheme/port) and a path prefix of ``path``."""
        try:
            parts = urlsplit(self.resource if "://" in self.resource else "http://" + self.resource)
            hostname = parts.hostname or ""
        except ValueError:  # e.g. an unbalanced IPv6 bracket
            return False
        if hostname.lower() != host.lower():
            return False
        audience = unquote(parts.path).strip("/").lower()
        audience = audience.removeprefix("$hc/")
        target = unquote(path).strip("/").lower()
        return not audience or target == audience or target.startswith(audience + "/")

    def validate(self, keys: dict[str, str], host: str | tuple[str, ...], path: str) -> None:
        """Check key name, signature, expiry and audience; raise :class:`RelayTokenError` if bad."""
        key = keys.get(self.key_name)
        if key is None:
            raise RelayTokenError(f"unknown SAS key name {self.key_name!r}")
        if not self.verify_signature(key):
            raise RelayTokenError("SAS signature does not match (wrong key or altered token)")
        if self.is_expired():
            raise RelayTokenError(f"SAS token expired {int(-self.remaining())} s ago")
        hosts = (host,) if isinstance(host, str) else host
        if not any(self.covers(h, path) for h in hosts):
            raise RelayTokenError(f"SAS token audience {self.resource!r} does not cover {path!r}")


@dataclass
class SasTokenProvider:
    """Creates tokens from a key name and key (``Listen``/``Send`` rule of the namespace or entity).

    Or wraps a fixed token string (``from_token``), which then cannot be renewed.
    """

    key_name: str = ""
    key: str = field(default="", repr=False)
    ttl: float = DEFAULT_TTL
    fixed_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_token(cls, token: str) -> SasTokenProvider:
        """A provider that always hands out ``token`` (validated for shape now)."""
        parsed = SasToken.parse(token)
        return cls(key_name=parsed.key_name, fixed_token=token)

    def get_token(self, resource: str) -> SasToken:
        """A token for ``resource`` (a fresh one unless this provider wraps a fixed token)."""
        if self.fixed_token is not None:
            return SasToken.parse(self.fixed_token)
        return SasToken.create(resource, self.key_name, self.key, self.ttl)


TokenSource = SasTokenProvider | Callable[[str], SasToken]


@dataclass(frozen=True)
class RelayConnectionString:
    """``Endpoint=sb://ns/;SharedAccessKeyName=…;SharedAccessKey=…[;EntityPath=…]`` as in the portal."""

    namespace: str
    key_name: str = ""
    key: str = field(default="", repr=False)
    entity_path: str = ""
    shared_access_signature: str = field(default="", repr=False)

    @classmethod
    def parse(cls, text: str) -> RelayConnectionString:
        """Parse a connection string; raise :class:`RelayConfigurationError` naming the bad part."""
        values: dict[str, str] = {}
        for part in text.strip().split(";"):
            if not part.strip():
                continue
            name, sep, value = part.partition("=")
            if not sep:
                raise RelayConfigurationError(f"connection string part {name.strip()!r} has no '='")
            values[name.strip().lower()] = value.strip()
        endpoint = values.get("endpoint")
        if not endpoint:
            raise RelayConfigurationError("connection string lacks 'Endpoint=sb://<namespace>/'")
        host = urlsplit(endpoint if "://" in endpoint else "sb://" + endpoint).hostname
        if not host:
            raise RelayConfigurationError(f"connection string Endpoint {endpoint!r} has no host")
        result = cls(
            namespace=host,
            key_name=values.get("sharedaccesskeyname", ""),
            key=values.get("sharedaccesskey", ""),
            entity_path=values.get("entitypath", ""),
            shared_access_signature=values.get("sharedaccesssignature", ""),
        )
        if not result.shared_access_signature and not (result.key_name and result.key):
            raise RelayConfigurationError(
                "connection string needs SharedAccessKeyName and SharedAccessKey (or SharedAccessSignature)"
            )
        return result

    def token_provider(self, ttl: float = DEFAULT_TTL) -> SasTokenProvider:
        """A :class:`SasTokenProvider` for this connection string."""
        if self.shared_access_signature:
            return SasTokenProvider.from_token(self.shared_access_signature)
        return SasTokenProvider(self.key_name, self.key, ttl)
