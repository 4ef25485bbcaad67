"""Deciding whether to accept an incoming OFTP session.

The default policy is the partner table: an unknown SSIDCODE is refused with ESID 03, a wrong
password with ESID 04, and a protocol level the partner may not use with ESID 10.  Per-address and
total session limits answer ESID 08.

An optional user hook (``accept_hook = "python:module.func"``) then sees the request together with
the default verdict, in the style of commercial OFTP components' *accept connection* event: it may
keep the verdict, accept, reject with any ESID code and text, or change the answered level.  It
either mutates the :class:`AcceptConnection` it receives or returns an
:class:`~oftp2_provider.protocol.api.AcceptDecision`; it may be a coroutine function.
"""

from __future__ import annotations

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
    engine's full :class:`~oftp2_provider.protocol.api.ConnectionRequest`).
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
    """Partner-table policy plus the optional user hook; see the module docstring."""

    def __init__(self, config: GatewayConfig, hook: AcceptHook | None = None) -> None:
        self.config = config
        self.hook = (
            hook
            if hook is not None
            else (load_accept_hook(config.accept_hook) if config.accept_hook else None)
        )

    def default(self, request: ConnectionRequest) -> AcceptConnection:
        """Apply the partner table; returns the (mutable) verdict."""
        found = self.config.partner_by_id(request.client_code)
        name, partner = found if found else (None, None)
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
        )
        if partner is None:
            verdict.reject(EsidReason.USER_CODE_NOT_KNOWN, "user code not known")
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

    async def decide(self, request: ConnectionRequest) -> tuple[AcceptConnection, PartnerConfig | None]:
        """Default policy, then the hook; returns the final verdict and the partner (if known)."""
        verdict = self.default(request)
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
