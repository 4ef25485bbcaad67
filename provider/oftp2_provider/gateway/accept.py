"""Deciding whether to accept an incoming OFTP session.

The default policy is the partner table: an unknown SSIDCODE is refused with ESID 03, a wrong
password with ESID 04, and a protocol level the partner may not use with ESID 10.  Per-address and
total session limits answer ESID 08.  A partner with a pinned TLS client certificate
(``tls_client_certificate`` / ``tls_client_fingerprint``) that connects over plain TCP, without a
client certificate or with another one is refused with ESID 99 before its password is looked at
(so the answer tells nothing about the password).

An optional user hook (``accept_hook = "python:module.func"``) then sees the request together with
the default verdict, in the style of commercial OFTP components' *accept connection* event: it may
keep the verdict, accept, reject with any ESID code and text, or change the answered level.  It
either mutates the :class:`AcceptConnection` it receives or returns an
:class:`~oftp2_provider.protocol.api.AcceptDecision`; it may be a coroutine function.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from oftp2_provider.protocol.api import AcceptDecision, ConnectionRequest, passwords_match
from oftp2_provider.protocol.commands import ProtocolLevel
from oftp2_provider.protocol.errors import EsidReason

from .config import GatewayConfig, PartnerConfig
from .events import load_object

__all__ = ["AcceptConnection", "AcceptHook", "AcceptPolicy", "load_accept_hook"]

log = logging.getLogger("oftp2.gateway.accept")


@dataclass
class AcceptConnection:
    """What an accept hook sees and may change (mutable, like an event-arguments object).

    Read: ``connection_id``, ``client_sid_code``, ``client_password``, ``client_version``,
    ``peer_address``, ``tls``, ``partner_name`` (the matching partner, if any), ``request`` (the
    engine's full :class:`~oftp2_provider.protocol.api.ConnectionRequest`), ``peer_certificate``
    (DER of the TLS client certificate, ``None`` without one) and ``peer_certificate_sha256``.
    Write: ``accept``, ``server_version``, ``error_code``, ``error_description``.
    """

    connection_id: str
    client_sid_code: str
    client_password: str = field(repr=False)
    client_version: int
    server_version: int
    peer_address: tuple[str, int] | None
    tls: bool
    partner_name: str | None
    accept: bool
    error_code: int
    error_description: str
    request: ConnectionRequest
    peer_certificate: bytes | None = field(default=None, repr=False)
    peer_certificate_sha256: str | None = None

    def reject(self, code: int, description: str = "") -> None:
        """Refuse the session with ESID ``code``."""
        self.accept = False
        self.error_code = int(code)
        self.error_description = description

    def to_decision(self) -> AcceptDecision:
        """The engine decision this object stands for."""
        if self.accept:
            return AcceptDecision.accept(level=ProtocolLevel(self.server_version))
        return AcceptDecision.reject(self.error_code or EsidReason.UNSPECIFIED, self.error_description)


AcceptHook = Callable[[AcceptConnection], "AcceptDecision | Awaitable[AcceptDecision | None] | None"]


def load_accept_hook(ref: str) -> AcceptHook:
    """Import a ``python:module.func`` accept hook."""
    func = load_object(ref)
    if not callable(func):
        raise TypeError(f"accept_hook {ref} is not callable")
    hook: AcceptHook = func
    return hook


def _answer_level(client_level: int, proposed: int, allowed: list[int]) -> int | None:
    """The highest allowed level not above what the client offers and we propose."""
    ceiling = min(int(client_level), int(proposed))
    candidates = [lvl for lvl in allowed if lvl <= ceiling]
    return max(candidates) if candidates else None


class AcceptPolicy:
    """Partner-table policy plus the optional user hook; see the module docstring.

    Pinned TLS client certificates are read here, once, so an unreadable file fails the gateway's
    start rather than a partner's session.
    """

    def __init__(self, config: GatewayConfig, hook: AcceptHook | None = None) -> None:
        self.config = config
        self.hook = (
            hook
            if hook is not None
            else (load_accept_hook(config.accept_hook) if config.accept_hook else None)
        )
        #: Pinned SHA-256 of the TLS client certificate, by partner Odette ID.
        self.pins: dict[str, str] = {}
        for partner in config.partners.values():
            pin = partner.tls_client_pin()
            if pin is not None:
                self.pins[partner.odette_id] = pin

    def _pin_refusal(self, name: str, partner: PartnerConfig, verdict: AcceptConnection) -> str | None:
        """Why the session breaks the partner's TLS client-certificate pin (None: it does not)."""
        expected = self.pins.get(partner.odette_id)
        if expected is None:
            if partner.tls_pinned:  # a pinned partner the policy was not built for: fail closed
                return "TLS client certificate pin not loaded"
            return None
        presented = verdict.peer_certificate_sha256
        if presented is not None and hmac.compare_digest(presented, expected):
            return None
        if not verdict.tls:
            problem, text = "connected over plain TCP", "TLS with a registered client certificate required"
        elif presented is None:
            problem, text = "presented no TLS client certificate", "TLS client certificate required"
        else:
            problem = f"presented TLS client certificate sha256 {presented}"
            text = "TLS client certificate not registered for this Odette ID"
        log.warning(
            "connection %s: partner %s (%s) is pinned to TLS client certificate sha256 %s but %s",
            verdict.connection_id,
            name,
            partner.odette_id,
            expected,
            problem,
        )
        return text

    def default(
        self, request: ConnectionRequest, *, peer_certificate: bytes | None = None
    ) -> AcceptConnection:
        """Apply the partner table; returns the (mutable) verdict.

        ``peer_certificate`` is the DER of the TLS client certificate of the session
        (:attr:`~oftp2_provider.protocol.api.SessionContext.peer_certificate`).
        """
        found = self.config.partner_by_id(request.client_code)
        name, partner = found if found else (None, None)
        presented = hashlib.sha256(peer_certificate).hexdigest() if peer_certificate else None
        verdict = AcceptConnection(
            connection_id=request.connection_id,
            client_sid_code=request.client_code.rstrip(),
            client_password=request.password,
            client_version=int(request.client_level),
            server_version=int(request.server_level),
            peer_address=request.peer_address,
            tls=request.tls,
            partner_name=name,
            accept=True,
            error_code=0,
            error_description="",
            request=request,
            peer_certificate=peer_certificate,
            peer_certificate_sha256=presented,
        )
        if partner is None or name is None:
            verdict.reject(EsidReason.USER_CODE_NOT_KNOWN, "user code not known")
            return verdict
        pin_refusal = self._pin_refusal(name, partner, verdict)
        if pin_refusal is not None:
            verdict.reject(EsidReason.UNSPECIFIED, pin_refusal)
            return verdict
        if not passwords_match(partner.password.get_secret_value(), request.password):
            verdict.reject(EsidReason.INVALID_PASSWORD, "invalid password")
            return verdict
        level = _answer_level(request.client_level, request.server_level, list(partner.allowed_levels))
        if level is None:
            verdict.reject(
                EsidReason.MODE_OR_CAPABILITIES_INCOMPATIBLE,
                f"protocol level {int(request.client_level)} not allowed",
            )
            return verdict
        auth_mismatch = (
            (level < 5 or not request.client_secure_auth)
            if partner.secure_auth
            else (request.client_secure_auth and level >= 5)
        )
        if auth_mismatch:
            verdict.reject(
                EsidReason.SECURE_AUTHENTICATION_REQUIREMENTS_INCOMPATIBLE,
                "secure authentication " + ("required" if partner.secure_auth else "not supported"),
            )
            return verdict
        verdict.server_version = level
        return verdict

    async def decide(
        self, request: ConnectionRequest, *, peer_certificate: bytes | None = None
    ) -> tuple[AcceptConnection, PartnerConfig | None]:
        """Default policy, then the hook; returns the final verdict and the partner (if known)."""
        verdict = self.default(request, peer_certificate=peer_certificate)
        if self.hook is not None:
            try:
                result: Any = self.hook(verdict)
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:
                log.exception("accept hook failed for connection %s", request.connection_id)
                verdict.reject(EsidReason.UNSPECIFIED, f"accept hook failed: {type(exc).__name__}")
                result = None
            if isinstance(result, AcceptDecision):
                verdict.accept = result.accepted
                verdict.error_code = int(result.reason)
                verdict.error_description = result.text
                if result.level is not None:
                    verdict.server_version = int(result.level)
            if verdict.accept and verdict.server_version > int(request.client_level):
                verdict.reject(
                    EsidReason.MODE_OR_CAPABILITIES_INCOMPATIBLE,
                    f"hook answered level {verdict.server_version} above the client's {int(request.client_level)}",
                )
            if not verdict.accept and not verdict.error_code:
                verdict.error_code = EsidReason.UNSPECIFIED
        found = self.config.partner_by_id(request.client_code)
        return verdict, (found[1] if found else None)
